"""Benchmark 3: a flash sale, 5,000 orders at once for 50 units: exactly 50 reserved."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from bench.common import (
    BenchError,
    Inventory,
    Outcomes,
    Result,
    fresh_bus,
    inventory_ready,
    ms,
    order,
    percentile,
    running,
    wait_until,
)
from libs import bus, subjects

ORDERS = 5_000
UNITS = 50
SKU = "FLASH"
TARGET_P99 = 1.0  # seconds


async def run(workdir: Path) -> Result:
    result = Result("flash sale")
    async with fresh_bus(workdir) as b:
        outcomes = Outcomes()
        await outcomes.start(b.nc)
        inventory = Inventory(b, {SKU: UNITS})
        async with running(inventory):
            await wait_until(lambda: inventory_ready(b.js, SKU), 60, "catalog import", inventory)
            facts = [order(f"f{i}", SKU, customer_id=i) for i in range(ORDERS)]
            sent: dict[str, float] = {}

            async def send(i: int) -> None:
                fact = facts[i]
                sent[fact.order_id] = time.perf_counter()
                await bus.publish(b.js, subjects.order_placed(fact.order_id), fact, fact.order_id)

            started = time.perf_counter()
            await asyncio.gather(*(send(i) for i in range(ORDERS)))
            published = time.perf_counter() - started
            ids = [f.order_id for f in facts]
            await wait_until(
                lambda: outcomes.answered(ids) == ORDERS, 60, "every order answered", inventory
            )
            everything = time.perf_counter() - started
    reserved = sum(1 for oid in ids if outcomes.kinds[oid] == "reserved")
    rejected = sum(1 for oid in ids if outcomes.kinds[oid] == "rejected")
    if reserved != UNITS or rejected != ORDERS - UNITS:
        raise BenchError(f"expected {UNITS} reserved, got {reserved} ({rejected} rejected)")
    answer = sorted(outcomes.arrived[oid] - sent[oid] for oid in ids)
    p50, p99 = percentile(answer, 0.50), percentile(answer, 0.99)
    verdict = "ok" if p99 < TARGET_P99 else "ABOVE TARGET"
    result.lines += [
        f"{ORDERS:,} concurrent orders for {UNITS} units: {reserved} reserved, {rejected:,} "
        f"rejected, every order answered (published in {published:.2f} s, all answered in "
        f"{everything:.2f} s)",
        f"publish start to outcome received: p50 {ms(p50)}, p99 {ms(p99)}, max {ms(answer[-1])} "
        f"(target p99 < {TARGET_P99:g} s) {verdict}",
    ]
    result.summary.append(
        f"flash sale: {ORDERS:,} orders for {UNITS} units, exactly {reserved} reserved, all "
        f"answered; p50 {ms(p50)}, p99 {ms(p99)} (target < {TARGET_P99:g} s)"
    )
    return result
