"""Benchmark 7: crm_sync drains a backlog of 10,000 facts into the fake Google Sheets API.

The facts (orders placed, reserved, paid, committed, some rejected, expired, refunded or paid
after their reservation expired) are on the bus before crm_sync starts, as after an outage;
crm_sync runs as its own process with the default quota (50 writes a minute) and talks to the
fake through the real gspread.
"""

from __future__ import annotations

import time
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
