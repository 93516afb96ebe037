"""Benchmark 4: how long the actor's load takes over 100,000 events, with and without a snapshot."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

from bench.common import BenchError, Result, fresh_bus
from libs import subjects
from libs.contracts import CountStock, InventoryEvent, OrderLine, UpsertCategory, UpsertProduct
from services.inventory.core import (
    EMPTY,
    Command,
    Release,
    Reserve,
    State,
    decide,
    encode_snapshot,
    evolve,
)
from services.inventory.store import EventLog

EVENTS = 100_000
PARTIAL = 90_000  # the snapshot for the third run: 10,000 events left to replay
SKUS = [f"R{k}" for k in range(4)]
PRICE = 100_00
LIVE = 50  # reservations held open at any time: each order is released 50 orders later
CHUNK = 1_000  # events per pipelined append


def history() -> tuple[list[InventoryEvent], State, State]:
    """A consistent history made by the pure core itself: a catalog, then reserve/release.

    Returns the events, the state after all of them, and the state after the first PARTIAL.
    """
    now = datetime.now(UTC)
    state = EMPTY
    events: list[InventoryEvent] = []
    partial = EMPTY

    def run(command: Command) -> None:
        nonlocal state, partial
        for event in decide(state, command, now):
            if len(events) == EVENTS:
                return
            state = evolve(state, event)
            events.append(event)
            if len(events) == PARTIAL:
                partial = state

    run(UpsertCategory("bench", "Bench"))
    for sku in SKUS:
        run(UpsertProduct(sku=sku, title=sku, price=PRICE, category_id="bench"))
        run(CountStock(sku, 1_000_000))
    i = 0
    while len(events) < EVENTS:
        qty = 1 + i % 3
        line = OrderLine(SKUS[i % len(SKUS)], qty, PRICE)
        run(Reserve(f"r{i}", (line,), qty * PRICE, ttl_seconds=3600))
        if i >= LIVE:
            run(Release(f"r{i - LIVE}", "admin"))
        i += 1
    return events, state, partial


async def run(workdir: Path) -> Result:
    result = Result("replay")
    generated = time.perf_counter()
    events, final, partial = history()
    generated = time.perf_counter() - generated
    async with fresh_bus(workdir) as b:
        _, _, snapshots = await subjects.declare_buckets(b.js)
        writer = EventLog(b.nc, b.js, snapshots)
        appended = time.perf_counter()
        for start in range(0, EVENTS, CHUNK):
            await writer.append(events[start : start + CHUNK], after_seq=start, lease_seq=None)
        appended = time.perf_counter() - appended

        async def load() -> float:
            """A fresh EventLog's load, as the actor does at start; checked against the truth."""
            started = time.perf_counter()
            state, seq = await EventLog(b.nc, b.js, snapshots).load()
            seconds = time.perf_counter() - started
            if seq != EVENTS or state != final:
                raise BenchError(f"load ended at seq {seq:,} with a different state")
            return seconds

        without = await load()
        writer.stream_created = str((await b.js.stream_info(subjects.INVENTORY)).created)
        await writer.write_snapshot(final, EVENTS)
        size = len(encode_snapshot(final, EVENTS, writer.stream_created))
        with_full = await load()
        await writer.write_snapshot(partial, PARTIAL)
        with_partial = await load()
    result.lines += [
        f"{EVENTS:,} events ({len(final.orders):,} orders, {len(SKUS)} SKUs) made by the core "
        f"in {generated:.2f} s, appended in {appended:.2f} s",
        f"load without a snapshot (replay {EVENTS:,}): {without:.2f} s "
        f"= {EVENTS / without:,.0f} events/s",
        f"load from a snapshot at the last event ({size / 1e6:.1f} MB): {with_full:.3f} s "
        f"({without / with_full:.0f}x faster)",
        f"load from a snapshot at {PARTIAL:,} + replay {EVENTS - PARTIAL:,}: {with_partial:.3f} s "
        f"({without / with_partial:.1f}x faster)",
    ]
    result.summary.append(
        f"replay of {EVENTS:,} events: {without:.2f} s without a snapshot, {with_full:.3f} s from "
        f"a snapshot ({without / with_full:.0f}x), {with_partial:.3f} s from a snapshot "
        f"{EVENTS - PARTIAL:,} events back"
    )
    return result
