"""Run every benchmark, each on its own fresh nats-server, and print the results and a summary."""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from bench import (
    browse,
    catalog,
    checkout,
    crm,
    durability,
    flash_sale,
    latency,
    replay,
    throughput,
    webhook,
)
from bench.common import BenchError, Result
from libs import log
from libs.settings import Settings

# (name, title, run): `python -m bench 8` or `python -m bench browse` runs one alone.
BENCHMARKS: list[tuple[str, str, Callable[[Path], Awaitable[Result]]]] = [
    ("throughput", "1. durable reservations vs raw JetStream publish", throughput.run),
    ("latency", "2. reservation latency at a steady rate", latency.run),
    ("flash_sale", "3. flash sale", flash_sale.run),
    ("replay", "4. replay with and without a snapshot", replay.run),
    ("webhook", "5. payments webhook", webhook.run),
    ("checkout", "6. checkout: Confirm to the Pay button", checkout.run),
    ("crm", "7. crm_sync: a 10,000-fact backlog into Google Sheets", crm.run),
    ("browse", "8. browsing: 200 customers in the catalog at once", browse.run),
    ("burst", "9. crm_sync: a burst of 100 paid orders into Google Sheets", crm.burst),
    (
        "sync",
        "10. one node: every write synced to disk vs nats-server's 2-minute sync",
        durability.sync,
    ),
    ("replicas", "11. three-node cluster: reservations at R3 vs R1 vs raw R3", durability.replicas),
    (
        "catalog",
        "12. crm_sync: a 2,000-product catalog run from the sheet's Catalog tab",
        catalog.run,
    ),
]


async def main(only: list[str]) -> int:
    started = time.perf_counter()
    results: list[Result] = []
    failed = 0
    with tempfile.TemporaryDirectory(prefix="shop-bench-") as tmp:
        for number, (name, title, benchmark) in enumerate(BENCHMARKS, 1):
            if only and str(number) not in only and name not in only:
                continue
            print(f"\n{title}", flush=True)
            t0 = time.perf_counter()
            try:
                result = await benchmark(Path(tmp) / f"bench{number}")
            except BenchError as exc:
                failed += 1
                print(f"  FAILED: {exc}", flush=True)
                continue
            results.append(result)
            for line in result.lines:
                print(f"  {line}", flush=True)
            print(f"  ({time.perf_counter() - t0:.1f} s)", flush=True)
    print(f"\nsummary ({time.perf_counter() - started:.0f} s, {_machine()}):")
    for result in results:
        for line in result.summary:
            print(f"  {line}")
    return 1 if failed else 0


def _machine() -> str:
    import os
    import platform

    return f"{os.cpu_count()} cores, Python {platform.python_version()}"


if __name__ == "__main__":
    # The bench's own use of the shop's code (EventLog.load) logs at info: keep the output clean.
    log.configure("bench", Settings(log_level="warning", log_format="console"))
    sys.exit(asyncio.run(main(sys.argv[1:])))  # `python -m bench 7` or `crm`: just that one
