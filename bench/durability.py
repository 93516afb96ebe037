"""Benchmarks 9 and 10: what durability costs. Reservations per second through the inventory
actor on one node syncing every write to disk (NATS_SYNC_INTERVAL=always, the default) against
nats-server's own 2-minute sync; and on a three-node cluster with three copies (STREAM_REPLICAS=3)
against one copy, and against the raw acked publish rate at three copies."""

from __future__ import annotations

from pathlib import Path

from bench.common import (
    Bus,
    Inventory,
    Result,
    fresh_bus,
    fresh_cluster,
    inventory_events,
    inventory_ready,
    running,
    wait_until,
)
from bench.throughput import SKU, orders, publish_all, raw_publish
from libs import subjects

N = 10_000  # orders per measurement
RAW_RUNS = 1
TARGET = 0.5  # reservations at least half the raw acked publish rate, same copies


async def reservation_rate(b: Bus, n: int = N) -> float:
    """Reservations a second through the inventory actor, as benchmark 1 measures them: `n`
    orders queued while it is down, then its first outcome to its last by the server's clock."""
    inventory = Inventory(b, {SKU: n * 10})
    async with running(inventory):
        await wait_until(lambda: inventory_ready(b.js, SKU), 60, "catalog import", inventory)
    base = await inventory_events(b.js)
    await publish_all(b.nc, orders("o", n, "orders.placed"))

    async def answered() -> bool:
        return await inventory_events(b.js) >= base + n + 1  # + its claim as the writer

    async with running(inventory):
        await wait_until(answered, 180, f"{n:,} outcomes", inventory, poll=0.05)
    first = await b.js.get_msg(subjects.INVENTORY, base + 2)
    last = await b.js.get_msg(subjects.INVENTORY, base + n + 1)
    assert first.time is not None and last.time is not None
    return (n - 1) / (last.time - first.time).total_seconds()


async def sync(workdir: Path) -> Result:
    result = Result("sync")
    rates: dict[str, tuple[float, float]] = {}
    for mode in ("always", "120s"):
        async with fresh_bus(workdir / f"sync-{mode}", sync_interval=mode) as b:
            raw, _, _ = await raw_publish(b, N, RAW_RUNS)
            rates[mode] = (raw, await reservation_rate(b))
    for mode, (raw, actor) in rates.items():
        what = "every write on disk before its ack" if mode == "always" else "nats-server's default"
        result.lines.append(
            f"NATS_SYNC_INTERVAL={mode} ({what}): reservations {actor:,.0f}/s, "
            f"raw acked publish {raw:,.0f}/s"
        )
    durable, relaxed = rates["always"][1], rates["120s"][1]
    result.lines.append(
        f"syncing every write keeps {durable / relaxed:.2f} of the relaxed reservation rate"
    )
    result.summary.append(
        f"one node, reservations: {durable:,.0f}/s syncing every write (the default), "
        f"{relaxed:,.0f}/s with a 2-minute sync; ratio {durable / relaxed:.2f}"
    )
    return result


async def replicas(workdir: Path) -> Result:
    result = Result("replicas")
    rates: dict[int, tuple[float, float]] = {}
    for copies in (1, 3):
        async with fresh_cluster(workdir / f"r{copies}", copies) as b:
            raw, _, _ = await raw_publish(b, N, RAW_RUNS)
            rates[copies] = (raw, await reservation_rate(b))
    (raw1, r1), (raw3, r3) = rates[1], rates[3]
    ratio = r3 / raw3
    verdict = "ok" if ratio >= TARGET else "BELOW TARGET"
    result.lines += [
        "three nats-servers on this machine (deploy/nats-cluster.conf, every write synced):",
        f"R1: reservations {r1:,.0f}/s, raw acked publish {raw1:,.0f}/s",
        f"R3: reservations {r3:,.0f}/s, raw acked publish {raw3:,.0f}/s",
        f"R3 reservations / R1 reservations {r3 / r1:.2f}; "
        f"R3 reservations / raw R3 publish {ratio:.2f} (target >= {TARGET}) {verdict}",
    ]
    result.summary.append(
        f"cluster, reservations: R3 {r3:,.0f}/s, R1 {r1:,.0f}/s (ratio {r3 / r1:.2f}); raw R3 "
        f"acked publish {raw3:,.0f}/s, ratio {ratio:.2f} (target >= {TARGET})"
    )
    return result
