"""Benchmark 2: reservation latency (publish start to outcome received) at a steady order rate."""

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

RATE = 1_000  # orders per second
SECONDS = 5.0
WARMUP_SECONDS = 0.5  # paced like the rest, left out of the numbers
SKU = "STEADY"


async def run(workdir: Path) -> Result:
    result = Result("latency")
    warmup = int(RATE * WARMUP_SECONDS)
    measured = int(RATE * SECONDS)
    total = warmup + measured
    async with fresh_bus(workdir) as b:
        outcomes = Outcomes()
        await outcomes.start(b.nc)
        inventory = Inventory(b, {SKU: total * 10})
        async with running(inventory):
            await wait_until(lambda: inventory_ready(b.js, SKU), 60, "catalog import", inventory)
            sent: dict[str, float] = {}

            async def send(order_id: str) -> None:
                fact = order(order_id, SKU)
                sent[order_id] = time.perf_counter()
                await bus.publish(b.js, subjects.order_placed(order_id), fact, msg_id=order_id)

            # Each order goes at its scheduled time in its own task (a slow ack never holds the
            # next order back); if the loop falls behind, the late ones go at once.
            tasks: list[asyncio.Task[None]] = []
            start = time.perf_counter() + 0.01
            for i in range(total):
                delay = start + i / RATE - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(send(f"s{i}")))
            await asyncio.gather(*tasks)
            ids = [f"s{i}" for i in range(warmup, total)]
            await wait_until(
                lambda: outcomes.answered(ids) == measured, 30, "every outcome", inventory
            )
    first, last = sent[ids[0]], sent[ids[-1]]
    achieved = (measured - 1) / (last - first)
    latencies = sorted(outcomes.arrived[oid] - sent[oid] for oid in ids)
    if any(outcomes.kinds[oid] != "reserved" for oid in ids):
        raise BenchError("a steady-rate order was rejected; the SKU had stock for all")
    p50, p99 = percentile(latencies, 0.50), percentile(latencies, 0.99)
    result.lines += [
        f"{measured:,} orders at {RATE:,}/s for {SECONDS:g} s (after a {WARMUP_SECONDS:g} s "
        f"warm-up); achieved {achieved:,.0f}/s",
        f"publish start to outcome received: p50 {ms(p50)}, p99 {ms(p99)}, max {ms(latencies[-1])}",
    ]
    result.summary.append(
        f"latency at {achieved:,.0f} orders/s: p50 {ms(p50)}, p99 {ms(p99)}, "
        f"max {ms(latencies[-1])}"
    )
    return result
