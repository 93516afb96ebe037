"""crm_sync as a real process: the facts on a real NATS into CSV files or a fake Google Sheet."""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
from nats.js import JetStreamContext

from libs import subjects
from libs.contracts import StockLevel
from libs.embedded_nats import free_port
from services.crm_sync import core
from tests import crm_journeys
from tests.harness import ServiceProcess, wait_until

Start = Callable[..., ServiceProcess]


def _csv(path: Path) -> list[list[str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return list(csv.reader(io.StringIO(text)))[1:]


def check(orders: list[list[Any]], sales: list[list[Any]], run: str, count: int) -> list[str]:
    """What is wrong with the tabs for orders 0..count-1 of `run` (empty: all is right)."""
    problems: list[str] = []
    keys = Counter(str(row[0]) for row in orders if row)
    problems += [f"order {k} in {n} rows" for k, n in keys.items() if n > 1]
    ledger = Counter(str(row[0]) for row in sales if row)
    problems += [f"ledger row {k} {n} times" for k, n in ledger.items() if n > 1]
    status = {str(row[0]): str(row[2]) for row in orders if row}
    sold: Counter[str] = Counter()
    units: Counter[str] = Counter()
    for row in sales:
        sold[str(row[1])] += 1
        units[str(row[1])] += int(float(row[5]))
    for number in range(count):
        oid = crm_journeys.order_id(run, number)
        want = crm_journeys.expected(number)
        if status.get(oid) != want.status:
            problems.append(f"{oid}: status {status.get(oid)!r}, want {want.status!r}")
        if sold[oid] != want.sales or units[oid] != want.units:
            problems.append(f"{oid}: {sold[oid]} ledger rows, {units[oid]} units; want {want}")
    return problems


def csv_problems(directory: Path, run: str, count: int) -> list[str]:
    return check(_csv(directory / "orders.csv"), _csv(directory / "sales.csv"), run, count)


async def test_csv_every_order_and_sale_once_through_a_kill(
    nats_url: str, js: JetStreamContext, services: Start, tmp_path: Path
) -> None:
    crm = tmp_path / "data" / "crm"
    service = services("crm_sync", nats_url, crm_stock_every=1, crm_http_port=free_port())
    _, stock, _ = await subjects.declare_buckets(js)
    await stock.put("TEA", msgspec.json.encode(StockLevel("TEA", 50, 3, 47, 1)))

    await crm_journeys.publish(js, "c", range(0, 200))
    await wait_until(lambda: len(_csv(crm / "orders.csv")) >= 50, what="the first rows")
    service.kill()  # in the middle of the stream of batches
    await crm_journeys.publish(js, "c", range(200, 300))
    services("crm_sync", nats_url, crm_stock_every=1, crm_http_port=free_port())

    await wait_until(lambda: not csv_problems(crm, "c", 300), 60, "all 300 orders, once each")
    daily = _csv(crm / "daily.csv")
    want = [crm_journeys.expected(n) for n in range(300)]
    assert [int(daily[0][2]), core.kopecks(daily[0][3])] == [
        sum(w.units for w in want),
        sum(w.revenue for w in want),
    ]
    await wait_until(
        lambda: [row[:5] for row in _csv(crm / "stock.csv")] == [["TEA", "TEA", "50", "3", "47"]],
        what="the Stock tab",
    )
