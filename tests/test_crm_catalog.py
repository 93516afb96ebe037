"""The Catalog tab end to end: crm_sync and the inventory as real processes, the fake Sheets API
as the owner's sheet."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext

from libs import bus, subjects
from libs.contracts import (
    AdminReply,
    AdminRequest,
    CatalogProduct,
    PaymentAuthorized,
    PaymentCanceled,
    SetPrice,
)
from services.crm_sync.catalog_tab import (
    AVAILABLE,
    CATALOG_COLUMNS,
    ON_HAND,
    PRICE,
    RESTOCK,
    RESULT,
    restock_id,
)
from services.crm_sync.sheets import GoogleSheet
from shop.embedded_nats import free_port
from tests.fakes.sheets import FakeSheets
from tests.harness import (
    Facts,
    ServiceProcess,
    http_get,
    inventory_ready,
    order,
    place,
    stock_level,
    wait_until,
)

Start = Callable[..., ServiceProcess]
TAB = "Catalog"


@pytest.fixture
async def sheets() -> AsyncIterator[FakeSheets]:
    fake = FakeSheets()
    await fake.start()
    yield fake
    await fake.stop()


class Sheet:
    def __init__(self, fake: FakeSheets, tmp_path: Path) -> None:
        self.fake = fake
        self.key_file = fake.key_file(tmp_path)
        self.id = fake.create_spreadsheet("CRM")

    def settings(self) -> dict[str, Any]:
        return {
            "google_service_account_file": self.key_file,
            "sheets_spreadsheet_id": self.id,
            "sheets_api_url": self.fake.url,
            "sheets_timeout": 3,
            "crm_http_port": free_port(),
            "catalog_sync_every": 1,
        }

    def rows(self) -> dict[str, tuple[int, list[Any]]]:
        """SKU -> (row number, cells padded to the columns)."""
        if TAB not in self.fake.sheet_titles(self.id):
            return {}
        found = {}
        for number, cells in enumerate(self.fake.rows(self.id, TAB)[1:], start=2):
            if cells:
                padded = list(cells) + [""] * (len(CATALOG_COLUMNS) - len(cells))
                found[str(cells[0])] = (number, padded)
        return found

    def cell(self, sku: str, column: int) -> Any:
        found = self.rows().get(sku)
        return found[1][column] if found else None

    def type(self, sku: str, column: int, value: Any) -> None:
        number, _ = self.rows()[sku]
        self.fake.set_cell(self.id, TAB, f"{chr(65 + column)}{number}", value)

    def add_row(self, cells: list[Any]) -> None:
        number = len(self.fake.rows(self.id, TAB)) + 1
        for column, value in enumerate(cells):
            if value != "":
                self.fake.set_cell(self.id, TAB, f"{chr(65 + column)}{number}", value)

    async def syncs(self, count: int) -> None:
        """Wait for `count` more reads of the tab (each sync reads it once)."""
        start = self.fake.count("values.batchGet")
        await wait_until(
            lambda: self.fake.count("values.batchGet") >= start + count, 20, "more syncs"
        )


async def product(js: JetStreamContext, sku: str) -> CatalogProduct | None:
    kv = await js.key_value(subjects.CATALOG_BUCKET)
    try:
        entry = await kv.get(f"product.{sku}")
    except Exception:
        return None
    return msgspec.json.decode(entry.value or b"", type=CatalogProduct)


async def on_hand(js: JetStreamContext, sku: str) -> int | None:
    level = await stock_level(js, sku)
    return level.on_hand if level else None


async def started(
    nats_url: str, js: JetStreamContext, services: Start, catalog_file: Path, sheet: Sheet
) -> ServiceProcess:
    services("inventory", nats_url, catalog_file=catalog_file)
    await wait_until(lambda: inventory_ready(js), what="inventory ready")
    crm = services("crm_sync", nats_url, **sheet.settings())
    await wait_until(lambda: set(sheet.rows()) == {"LAST", "MANY", "FEW"}, what="the tab filled")
    return crm


async def test_the_tab_is_filled_and_the_owners_edits_reach_the_catalog(
    nats_url: str,
    nc: Client,
    js: JetStreamContext,
    services: Start,
    sheets: FakeSheets,
    catalog_file: Path,
    tmp_path: Path,
) -> None:
    sheet = Sheet(sheets, tmp_path)
    await started(nats_url, js, services, catalog_file, sheet)
    assert sheets.rows(sheet.id, TAB)[0] == list(CATALOG_COLUMNS)
    assert sheet.rows()["FEW"][1][:10] == ["FEW", "Goods", "A few", "", 990, "", 0, True, 50, 50]

    # A price edited, a bad row beside a good one: the good one applies, the bad one says why.
    sheet.type("FEW", PRICE, 1090)
    sheet.type("LAST", PRICE, "дорого")
    sheet.type("MANY", PRICE, "30,5")

    async def prices() -> bool:
        few, many = await product(js, "FEW"), await product(js, "MANY")
        return bool(few and many and (few.price, many.price) == (109000, 3050))

    await wait_until(prices, what="the new prices in the catalog")
    await wait_until(lambda: sheet.cell("LAST", RESULT) != "", what="the bad row's Result")
    assert sheet.cell("LAST", RESULT) == "⚠ цена: не число, осталось 100 ₽"
    assert str(sheet.cell("FEW", RESULT)).startswith("цена: 1\u00a0090 ₽ · ")
    last = await product(js, "LAST")
    assert last is not None and last.price == 10000

    # A price changed in Telegram shows up in the sheet and is not undone by the next syncs.
    response = await nc.request(
        subjects.INVENTORY_ADMIN,
        bus.encode(AdminRequest((SetPrice(sku="FEW", price=120000),))),
        timeout=10,
    )
    assert msgspec.json.decode(response.data, type=AdminReply).errors == ()
    await wait_until(lambda: sheet.cell("FEW", PRICE) == 1200, what="Telegram's price in the tab")
    await sheet.syncs(3)
    few = await product(js, "FEW")
    assert few is not None and few.price == 120000 and sheet.cell("FEW", PRICE) == 1200

    # A new row makes a product, its new category, and its first stock.
    sheet.add_row(["NEW", "+Новинки", "Новинка", "", 50, "", "", "", "", "", "+3", ""])
    await wait_until(lambda: _is(on_hand(js, "NEW"), 3), what="the new product in stock")
    new = await product(js, "NEW")
    assert new is not None and new.category_id == "novinki" and new.price == 5000
    await wait_until(lambda: sheet.cell("NEW", RESTOCK) == "", what="its Restock cleared")
    assert str(sheet.cell("NEW", RESULT)).startswith("#1 новая категория «Новинки», создан, +3")


async def test_a_restock_is_applied_once_across_a_kill_after_the_command(
    nats_url: str,
    js: JetStreamContext,
    services: Start,
    sheets: FakeSheets,
    catalog_file: Path,
    tmp_path: Path,
) -> None:
    """The command goes, the write-back is refused (so Restock still says +10), crm_sync is
    killed -9 and started again: the restock is not applied a second time."""
    sheet = Sheet(sheets, tmp_path)
    first = await started(nats_url, js, services, catalog_file, sheet)
    sheets.fail("503", paths="POST *values:batchUpdate")
    sheet.type("FEW", RESTOCK, "+10")
    await wait_until(lambda: _is(on_hand(js, "FEW"), 60), what="the restock applied")
    await sheet.syncs(2)  # sent again while the write fails: the inventory applies it once
    first.kill()
    sheets.clear_failures()
    assert sheet.cell("FEW", RESTOCK) == "+10", "the cell not cleared before the kill"
    services("crm_sync", nats_url, **sheet.settings())
    await wait_until(lambda: sheet.cell("FEW", RESTOCK) == "", what="Restock cleared")
    assert str(sheet.cell("FEW", RESULT)).startswith("#1 +10 применено")
    await sheet.syncs(2)
    assert await on_hand(js, "FEW") == 60

    # Typed again after it cleared: a new restock.
    sheet.type("FEW", RESTOCK, 5)
    await wait_until(lambda: _is(on_hand(js, "FEW"), 65), what="the second restock")
    await wait_until(lambda: str(sheet.cell("FEW", RESULT)).startswith("#2 +5"), what="#2")


async def test_a_restock_is_applied_once_by_two_replicas_across_a_kill_of_the_holder(
    nats_url: str,
    js: JetStreamContext,
    facts: Facts,
    services: Start,
    sheets: FakeSheets,
    catalog_file: Path,
    tmp_path: Path,
) -> None:
    """Two crm_sync replicas on one sheet and bus: only the writer-lease holder syncs. The
    holder sends +10, its write-back is refused (Restock still says +10), it is killed -9: the
    standby takes the lease over and finishes the write-back without applying it again."""
    sheet = Sheet(sheets, tmp_path)
    holder = await started(nats_url, js, services, catalog_file, sheet)
    # A replica of its own (the lease's holder id is host and data directory).
    second = {**sheet.settings(), "data_dir": tmp_path / "replica-2"}
    services("crm_sync", nats_url, **second)
    await wait_until(lambda: _role(second["crm_http_port"], "standby"), what="a standby")

    sheets.fail("503", paths="POST *values:batchUpdate")
    sheet.type("FEW", RESTOCK, "+10")
    await wait_until(lambda: _is(on_hand(js, "FEW"), 60), what="the restock applied")
    holder.kill()
    sheets.clear_failures()
    assert sheet.cell("FEW", RESTOCK) == "+10", "the cell not cleared before the kill"

    # The lease runs out (LEASE_S) before the standby may take it.
    await wait_until(lambda: _role(second["crm_http_port"], "writer"), 60, "the standby writing")
    await wait_until(lambda: sheet.cell("FEW", RESTOCK) == "", what="Restock cleared")
    assert str(sheet.cell("FEW", RESULT)).startswith("#1 +10 применено")
    await sheet.syncs(2)
    assert await on_hand(js, "FEW") == 60
    restocks = [f for f in facts.by_kind["stock_adjusted"] if f.sku == "FEW" and f.adjustment_id]
    assert [(f.delta, f.adjustment_id) for f in restocks] == [(10, restock_id("FEW", 1))]


async def test_a_restock_while_orders_are_reserved_adds_up_exactly(
    nats_url: str,
    js: JetStreamContext,
    facts: Facts,
    services: Start,
    sheets: FakeSheets,
    catalog_file: Path,
    tmp_path: Path,
) -> None:
    """Orders reserve, are paid (committed) or cancelled (released) at every read of the tab,
    between crm_sync's read and its command, while the owner restocks twice: on hand is the
    initial stock plus the restocks less what was sold, no sale overwritten, no restock lost or
    doubled."""
    sheet = Sheet(sheets, tmp_path)
    await started(nats_url, js, services, catalog_file, sheet)
    stop = asyncio.Event()
    flow = asyncio.create_task(_customers(js, facts, sheet, "FEW", 99000, stop))
    await sheet.syncs(2)

    sheet.type("FEW", RESTOCK, "+7")
    await wait_until(lambda: sheet.cell("FEW", RESTOCK) == "", what="the first restock cleared")
    await sheet.syncs(2)
    sheet.type("FEW", RESTOCK, 5)
    await wait_until(
        lambda: str(sheet.cell("FEW", RESULT)).startswith("#2 +5 применено"), what="#2"
    )
    assert sheet.cell("FEW", RESTOCK) == ""
    await sheet.syncs(2)
    stop.set()
    placed = await flow

    paid, cancelled, left = placed[0::3], placed[1::3], placed[2::3]
    await wait_until(
        lambda: (
            all(facts.kinds(o) == ["reserved", "committed"] for o in paid)
            and all(facts.kinds(o) == ["reserved", "released"] for o in cancelled)
        ),
        what="the payments committed and the cancellations released",
    )
    assert all(facts.kinds(o) == ["reserved"] for o in left)
    restocks = [f for f in facts.by_kind["stock_adjusted"] if f.sku == "FEW" and f.adjustment_id]
    assert [(f.delta, f.adjustment_id) for f in restocks] == [
        (7, restock_id("FEW", 1)),
        (5, restock_id("FEW", 2)),
    ]
    sold = sum(line.qty for o in paid for line in facts.of(o, "committed")[0].lines)
    level = await stock_level(js, "FEW")
    assert level is not None
    assert (level.on_hand, level.reserved) == (50 + 7 + 5 - sold, len(left)), (len(paid), level)
    assert level.available == level.on_hand - level.reserved
    # The tab shows the same once the service has written it back.
    await wait_until(
        lambda: (
            (sheet.cell("FEW", ON_HAND), sheet.cell("FEW", AVAILABLE))
            == (level.on_hand, level.available)
        ),
        what="the tab's On hand and Available",
    )


async def _customers(
    js: JetStreamContext, facts: Facts, sheet: Sheet, sku: str, price: int, stop: asyncio.Event
) -> list[str]:
    """Three orders of one `sku` at every read of the tab (each answered before the next read's):
    the first paid, the second's payment cancelled, the third left reserved. The ids placed."""
    placed: list[str] = []
    while not stop.is_set():
        await sheet.syncs(1)
        batch = [f"o-{len(placed) + n}" for n in range(3)]
        await place(js, *(order(o, (sku, 1, price)) for o in batch))
        placed += batch
        await wait_until(functools.partial(_answered, facts, batch), what="the orders answered")
        assert all(facts.kinds(o) == ["reserved"] for o in batch), "out of stock: too few"
        now = datetime.now(UTC)
        paid, cancelled = batch[0], batch[1]
        await bus.publish(
            js,
            subjects.payment_fact(subjects.PaymentKind.AUTHORIZED, paid),
            PaymentAuthorized(paid, f"pay-{paid}", price, now),
            msg_id=f"pay-{paid}:authorized",
        )
        await bus.publish(
            js,
            subjects.payment_fact(subjects.PaymentKind.CANCELED, cancelled),
            PaymentCanceled(cancelled, f"pay-{cancelled}", "expired_on_confirmation", now),
            msg_id=f"pay-{cancelled}:canceled",
        )
    return placed


def _answered(facts: Facts, order_ids: list[str]) -> bool:
    return facts.outcomes(order_ids) == len(order_ids)


async def _role(port: int, want: str) -> bool:
    status, body = await http_get(port, "/healthz")
    return bool(status) and json.loads(body).get("role") == want


async def _is(value: Awaitable[int | None], want: int) -> bool:
    return await value == want


async def test_a_sheet_of_an_earlier_version_gets_the_catalog_tab(
    sheets: FakeSheets, tmp_path: Path
) -> None:
    book = sheets.create_spreadsheet("CRM")
    key_file = sheets.key_file(tmp_path)
    await GoogleSheet(key_file, book, sheets.url, timeout=3).open()
    sheets.delete_sheet(book, TAB)  # as an earlier version left it: four tabs
    sheets.set_cell(book, "Orders", "A2", "o-1")
    await GoogleSheet(key_file, book, sheets.url, timeout=3).open()
    assert TAB in sheets.sheet_titles(book)
    assert sheets.rows(book, TAB) == [list(CATALOG_COLUMNS)]
    assert sheets.cell(book, "Orders", "A2") == "o-1"
