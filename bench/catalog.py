"""Benchmark 12: a catalog of 2,000 products run from the sheet's Catalog tab.

The inventory and crm_sync run as real processes on a fresh nats-server, crm_sync talking to the
fake Google Sheets API (Google's 60 writes a minute enforced) through the real gspread, with
CATALOG_SYNC_EVERY at 2 s. The tab is filled from the catalog first; then the owner types a new
price into a row a few times, and the bench watches the catalog read model the bot reads
(libs.catalog_view.CatalogView, opened here as the bot opens it) until the price shows.

Measured: the requests per sync with nothing edited and with an edit (each sync reads the whole
tab in one request), and the time from the owner's edit to the bot's read model showing it,
split into the wait for the next sync's read and the sync itself.
"""

from __future__ import annotations

import asyncio
import random
import statistics
from dataclasses import dataclass
from pathlib import Path

from bench.common import (
    BenchError,
    Inventory,
    Result,
    fresh_bus,
    inventory_ready,
    running,
    wait_until,
)
from libs.catalog_view import CatalogView
from services.crm_sync.catalog_tab import PRICE
from shop.embedded_nats import free_port
from tests.fakes.sheets import READ_KINDS, WRITE_KINDS, FakeSheets, SheetsCall

PRODUCTS = 2_000
EVERY_S = 2.0  # CATALOG_SYNC_EVERY
IDLE_SYNCS = 5
EDITS = 7
TAB = "Catalog"
CATALOG_READ = "values.batchGet"  # with no orders on the bus, only the tab's sync reads
SEED = 12


@dataclass
class Edit:
    total: float  # the owner's edit to the read model showing it
    read: float  # the edit to the next sync reading the tab


async def run(workdir: Path) -> Result:
    result = Result("catalog")
    skus = [f"P{n:04d}" for n in range(PRODUCTS)]
    sheets = FakeSheets(quota_per_minute=60)
    await sheets.start()
    try:
        async with fresh_bus(workdir) as b:
            spreadsheet = sheets.create_spreadsheet("CRM")
            env = {
                "GOOGLE_SERVICE_ACCOUNT_FILE": str(sheets.key_file(workdir)),
                "SHEETS_SPREADSHEET_ID": spreadsheet,
                "SHEETS_API_URL": sheets.url,
                "CRM_HTTP_PORT": str(free_port()),
                "CATALOG_SYNC_EVERY": str(EVERY_S),
            }
            # crm_sync's process wrapper writes an empty catalog file; the inventory's, made
            # after, is the one the inventory reads.
            crm = Inventory(b, {}, name="crm_sync", service="crm_sync", env=env)
            inventory = Inventory(b, dict.fromkeys(skus, 100))
            async with running(inventory):
                await wait_until(
                    lambda: inventory_ready(b.js, skus[-1]), 60, "the inventory", inventory
                )
                view = await CatalogView.open(b.nc, b.js)
                try:
                    loop = asyncio.get_running_loop()
                    started = loop.time()
                    async with running(crm):

                        def filled() -> bool:
                            if TAB not in sheets.sheet_titles(spreadsheet):
                                return False
                            return len(sheets.rows(spreadsheet, TAB)) == PRODUCTS + 1

                        await wait_until(filled, 120, "the tab filled", crm, poll=0.05)
                        fill_s = loop.time() - started
                        fill_writes = sheets.writes
                        idle = await _idle(sheets, crm)
                        edits, busy = await _edits(sheets, spreadsheet, view, skus, crm)
                finally:
                    await view.close()
    finally:
        await sheets.stop()

    totals = sorted(e.total for e in edits)
    reads = sorted(e.read for e in edits)
    syncing = sorted(e.total - e.read for e in edits)
    result.lines = [
        f"{PRODUCTS:,} products in the Catalog tab, CATALOG_SYNC_EVERY={EVERY_S:g} s, "
        f"Google's quota of 60 writes a minute enforced",
        f"the tab made and filled in {fill_s:.1f} s from crm_sync's start "
        f"({fill_writes} write requests)",
        f"per sync with nothing edited ({idle.syncs} syncs): {idle.per_sync()}",
        f"per sync with a price edited ({EDITS} edits over {busy.syncs} syncs): {busy.per_sync()}",
        f"a price typed in the sheet to the bot's catalog showing it: median "
        f"{statistics.median(totals):.2f} s, worst {totals[-1]:.2f} s "
        f"(waiting for the next sync's read: median {statistics.median(reads):.2f} s, "
        f"worst {reads[-1]:.2f} s; the sync itself: median {statistics.median(syncing):.2f} s, "
        f"worst {syncing[-1]:.2f} s)",
    ]
    result.summary = [
        f"catalog: {PRODUCTS:,} products, {idle.reads_per_sync:g} read per sync; a sheet edit "
        f"shown to the bot in {statistics.median(totals):.2f} s median, "
        f"{totals[-1]:.2f} s worst (syncing every {EVERY_S:g} s)"
    ]
    return result


@dataclass
class Requests:
    syncs: int
    reads: int
    writes: int

    @property
    def reads_per_sync(self) -> float:
        return self.reads / self.syncs

    def per_sync(self) -> str:
        return (
            f"read requests {self.reads_per_sync:.2g}, "
            f"write requests {self.writes / self.syncs:.2g}"
        )


def _calls(sheets: FakeSheets, since: int) -> Requests:
    calls: list[SheetsCall] = sheets.calls[since:]
    return Requests(
        sum(c.kind == CATALOG_READ and c.status == 200 for c in calls),
        sum(c.kind in READ_KINDS and c.status == 200 for c in calls),
        sum(c.kind in WRITE_KINDS and c.applied for c in calls),
    )


async def _idle(sheets: FakeSheets, crm: Inventory) -> Requests:
    """Requests over IDLE_SYNCS syncs with nothing edited, from one sync's read to another's."""
    await _next_read(sheets, crm)
    since = len(sheets.calls) - 1
    start = sheets.count(CATALOG_READ)
    await wait_until(
        lambda: sheets.count(CATALOG_READ) >= start + IDLE_SYNCS, 60, "idle syncs", crm
    )
    # The last read's sync may still write: count up to that read only, one read per sync.
    seen = _calls(sheets, since)
    return Requests(seen.syncs - 1, seen.reads - 1, seen.writes)


async def _next_read(sheets: FakeSheets, crm: Inventory) -> None:
    start = sheets.count(CATALOG_READ)
    await wait_until(lambda: sheets.count(CATALOG_READ) > start, 30, "a sync", crm)


async def _edits(
    sheets: FakeSheets, spreadsheet: str, view: CatalogView, skus: list[str], crm: Inventory
) -> tuple[list[Edit], Requests]:
    loop = asyncio.get_running_loop()
    rng = random.Random(SEED)
    edits: list[Edit] = []
    await _next_read(sheets, crm)
    since = len(sheets.calls) - 1
    for n in range(EDITS):
        # An owner types at any moment of the sync's cycle: a random phase, not a blind wait.
        await asyncio.sleep(rng.uniform(0, EVERY_S))
        sku = rng.choice(skus)
        row = skus.index(sku) + 2  # the tab is filled in the catalog's order, below the header
        if sheets.rows(spreadsheet, TAB)[row - 1][0] != sku:
            raise BenchError(f"row {row} is not {sku}")
        rubles = 200 + n
        reads_before = sheets.count(CATALOG_READ)
        sheets.set_cell(spreadsheet, TAB, f"{chr(65 + PRICE)}{row}", rubles)
        typed = loop.time()

        def shown(sku: str = sku, rubles: int = rubles) -> bool:
            product = view.product(sku)
            return product is not None and product.price == rubles * 100

        await wait_until(shown, 30, f"{sku}'s new price in the read model", crm, poll=0.002)
        total = loop.time() - typed
        read_at = next(
            c.at
            for c in [c for c in sheets.calls if c.kind == CATALOG_READ][reads_before:]
            if c.at >= typed
        )
        edits.append(Edit(total, read_at - typed))
    await _next_read(sheets, crm)  # the last edit's sync has written its Result
    seen = _calls(sheets, since)
    return edits, Requests(seen.syncs - 1, seen.reads - 1, seen.writes)
