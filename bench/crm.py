"""Benchmark 7: crm_sync drains a backlog of 10,000 facts into the fake Google Sheets API.

The facts (orders placed, reserved, paid, committed, some rejected, expired, refunded or paid
after their reservation expired) are on the bus before crm_sync starts, as after an outage;
crm_sync runs as its own process with the default quota (50 writes a minute) and talks to the
fake through the real gspread.

Benchmark 9 (`burst`): 100 orders paid within 10 s, with crm_sync pacing its writes to the quota
and without (each batch written at once, as before), side by side.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bench.common import BenchError, Inventory, Result, fresh_bus, running, wait_until
from libs.settings import Settings
from services.crm_sync.main import CONSUMERS
from shop.embedded_nats import free_port
from tests import crm_journeys
from tests.fakes.sheets import FakeSheets

FACTS = 10_000
# 5 paid (5 facts), 1 rejected (2), 1 expired (4), 1 refunded (6), 2 paid after expiry (7):
# one committed, one whose stock was gone (the money goes back).
FACTS_PER_10_ORDERS = 51
QUOTA = Settings().sheets_writes_per_minute  # the default, which crm_sync runs with here


async def run(workdir: Path) -> Result:
    result = Result("crm")
    orders = -(-FACTS * 10 // FACTS_PER_10_ORDERS)
    sheets = FakeSheets(quota_per_minute=60)  # Google's limit, enforced by the fake
    await sheets.start()
    try:
        async with fresh_bus(workdir) as b:
            published = await crm_journeys.publish(b.js, "b", range(orders))
            key_file = sheets.key_file(workdir)
            spreadsheet = sheets.create_spreadsheet("CRM")
            env = {
                "GOOGLE_SERVICE_ACCOUNT_FILE": str(key_file),
                "SHEETS_SPREADSHEET_ID": spreadsheet,
                "SHEETS_API_URL": sheets.url,
                "CRM_HTTP_PORT": str(free_port()),
            }
            crm = Inventory(b, {}, name="crm_sync", service="crm_sync", env=env)
            started = time.perf_counter()
            async with running(crm):

                async def drained() -> bool:
                    for stream, name, _ in CONSUMERS:
                        try:
                            info = await b.js.consumer_info(stream, name)
                        except Exception:
                            return False
                        if info.num_pending or info.num_ack_pending:
                            return False
                    return True

                await wait_until(drained, 300, "the backlog drained", crm, poll=0.05)
                elapsed = time.perf_counter() - started
            rows = len(sheets.rows(spreadsheet, "Orders")) - 1
            sales = len(sheets.rows(spreadsheet, "Sales")) - 1
            want_sales = sum(crm_journeys.expected(n).sales for n in range(orders))
            if rows != orders or sales != want_sales:
                raise BenchError(f"{rows} order rows (want {orders}), {sales} sales ({want_sales})")
            writes, reads = sheets.writes, sheets.reads
    finally:
        await sheets.stop()
    per_write = published / writes
    result.lines = [
        f"{published:,} facts ({orders:,} orders) on the bus, then crm_sync started "
        f"(default quota: {QUOTA} writes a minute)",
        f"drained in {elapsed:.1f} s from the process start: {orders:,} order rows, "
        f"{sales:,} ledger rows, each once",
        f"write requests: {writes} ({per_write:,.0f} facts per write), read requests: {reads}; "
        f"most writes in any minute: {sheets.max_writes_in_any_minute} "
        f"(quota {QUOTA}, Google's 60); 429s: {sheets.quota_rejections}",
    ]
    result.summary = [
        f"crm: {published:,} facts drained in {elapsed:.1f} s with {writes} write requests "
        f"({per_write:,.0f} facts per write), under the default quota"
    ]
    return result


BURST_ORDERS = 100
BURST_SECONDS = 10.0


@dataclass
class Burst:
    late: float  # seconds from the last order's facts to the sheet complete
    writes: int  # write requests during the burst
    rejected: int  # 429s
    most: int  # most write requests in any minute, the tabs' creation included


async def burst(workdir: Path) -> Result:
    """Benchmark 9: 100 orders paid within 10 s into the fake Google Sheets, crm_sync pacing its
    writes to the quota; then the same without pacing (each batch written at once), side by side."""
    result = Result("burst")
    paced = await _burst(workdir / "paced", pacing=True)
    unpaced = await _burst(workdir / "unpaced", pacing=False)
    result.lines = [
        f"{BURST_ORDERS} orders paid within {BURST_SECONDS:g} s (5 facts each: placed, reserved, "
        f"pending, committed, succeeded), Google's quota of 60 writes a minute enforced, "
        f"crm_sync at its default {QUOTA}",
    ]
    for name, run in (("paced", paced), ("unpaced (as before)", unpaced)):
        result.lines.append(
            f"{name}: in the sheet {run.late:.1f} s after the last order; "
            f"write requests: {run.writes} ({BURST_ORDERS * 5 / run.writes:.0f} facts per write); "
            f"429s: {run.rejected}; most writes in any minute: {run.most}"
        )
    result.summary = [
        f"crm burst: {BURST_ORDERS} paid orders in {BURST_SECONDS:g} s in the sheet "
        f"{paced.late:.1f} s after the last, {paced.writes} writes, {paced.rejected} 429s "
        f"(unpaced: {unpaced.late:.1f} s, {unpaced.writes} writes, {unpaced.rejected} 429s)"
    ]
    return result


async def _burst(workdir: Path, pacing: bool) -> Burst:
    sheets = FakeSheets(quota_per_minute=60)
    await sheets.start()
    try:
        async with fresh_bus(workdir) as b:
            spreadsheet = sheets.create_spreadsheet("CRM")
            env = {
                "GOOGLE_SERVICE_ACCOUNT_FILE": str(sheets.key_file(workdir)),
                "SHEETS_SPREADSHEET_ID": spreadsheet,
                "SHEETS_API_URL": sheets.url,
                "SHEETS_PACING": "true" if pacing else "false",
                "CRM_HTTP_PORT": str(free_port()),
            }
            crm = Inventory(b, {}, name="crm_sync", service="crm_sync", env=env)
            async with running(crm):

                def set_up() -> bool:
                    titles = sheets.sheet_titles(spreadsheet)
                    return "Stock" in titles and bool(sheets.rows(spreadsheet, "Stock"))

                await wait_until(set_up, 60, "the tabs made", crm, poll=0.05)
                before = sheets.writes
                numbers = crm_journeys.paid_straight_away(BURST_ORDERS)
                last = await crm_journeys.publish_over(b.js, "burst", numbers, BURST_SECONDS)

                def complete() -> bool:
                    orders = sheets.rows(spreadsheet, "Orders")[1:]
                    paid = sum(1 for row in orders if row and row[2] == "paid")
                    return paid == len(numbers) and len(sheets.rows(spreadsheet, "Sales")) > len(
                        numbers
                    )

                await wait_until(complete, 180, "the burst in the sheet", crm, poll=0.05)
                late = time.perf_counter() - last
            problems = _check(sheets, spreadsheet, numbers)
            if problems:
                raise BenchError("; ".join(problems[:5]))
            return Burst(
                late,
                sheets.writes - before,
                sheets.quota_rejections,
                sheets.max_writes_in_any_minute,
            )
    finally:
        await sheets.stop()


def _check(sheets: FakeSheets, spreadsheet: str, numbers: list[int]) -> list[str]:
    orders = Counter(str(row[0]) for row in sheets.rows(spreadsheet, "Orders")[1:] if row)
    sales = Counter(str(row[1]) for row in sheets.rows(spreadsheet, "Sales")[1:] if row)
    problems = [f"order {key} in {n} rows" for key, n in orders.items() if n != 1]
    for number in numbers:
        oid = crm_journeys.order_id("burst", number)
        if sales[oid] != 1:
            problems.append(f"{oid}: {sales[oid]} ledger rows, want 1")
    return problems
