"""A spreadsheet made by an earlier version is upgraded in place: this version's Orders columns
inserted where its own end, a person's own columns after them kept with their cells, every row
kept; in Google Sheets (through the fake, with the real gspread) and in the CSV files alike. And
the Orders row of an order after paid: its fulfilment, carrier, tracking and times, its
delivery."""

from __future__ import annotations

import csv
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from libs import lifecycle
from libs.contracts import (
    Committed,
    DeliveryChoice,
    FulfilmentEntry,
    OrderFulfilment,
    OrderLine,
    OrderPlaced,
    PaymentSucceeded,
    Reserved,
    ReservedLine,
)
from services.crm_sync import core
from services.crm_sync.csv_sheet import CsvSheet
from services.crm_sync.sheets import GoogleSheet
from tests.fakes.sheets import FakeSheets

T = datetime(2026, 12, 1, 10, tzinfo=UTC)
OLD = list(core.ORDER_COLUMNS_V1)
NEW_COLUMNS = [
    *("Fulfilment", "Carrier", "Tracking", "Shipped at", "Delivered at"),
    *("Delivery", "Payment"),
]
BLANK = [""] * len(NEW_COLUMNS)
OLD_ROWS = [
    [
        *("o-1", "2026-11-30 10:00:00", "paid", "Анна", "7", "+79001234567", "Москва", ""),
        *("A × 1", "990.00", "pay-1", "2026-11-30 10:01:00", "2026-11-30 10:01:00", "позвонить"),
    ],
    [
        *("o-2", "2026-11-30 11:00:00", "expired", "Борис", "8", "", "", "", "B × 2"),
        *("20.00", "", "", "2026-11-30 11:15:00", ""),
    ],
]


def shipped_order() -> lifecycle.Order:
    lines = (OrderLine("A", 1, 99000),)
    post = DeliveryChoice(method_id="russian-post", price=35000)
    packed = FulfilmentEntry(step="packed", at=T, by=42)
    shipped = FulfilmentEntry(
        step="shipped", at=T.replace(hour=12), by=42, carrier="russian_post", tracking="RA1RU"
    )
    order = lifecycle.fold(
        [
            OrderPlaced("o-3", 7, lines, 134000, T, delivery=post),
            Reserved("o-3", (ReservedLine("A", 1, 99000),), 134000, T, T, delivery=post),
            PaymentSucceeded("o-3", "pay-3", 134000, T),
            Committed("o-3", (ReservedLine("A", 1, 99000),), "pay-3", T),
            OrderFulfilment("o-3", (packed, shipped), T.replace(hour=12)),
        ]
    )
    assert order is not None
    return order


def test_the_row_of_a_shipped_order() -> None:
    row = core.row(shipped_order(), {"A": "Чай", "delivery:russian-post": "Почтой"})
    assert (row.status, row.fulfilment, row.carrier, row.tracking) == (
        "shipped",
        "shipped",
        "Почта России",
        "RA1RU",
    )
    assert (row.delivery, row.total) == ("Почтой, 350 ₽", 134000)
    assert (row.shipped_at, row.delivered_at) == ("2026-12-01 12:00:00", "")
    assert core.order_row(row.cells()) == row  # read back from the sheet, the same row


def test_which_headers_are_upgraded() -> None:
    assert core.upgrade(OLD) == len(OLD)
    assert core.upgrade([*OLD, "Notes"]) == len(OLD)
    v2, v3 = list(core.ORDER_COLUMNS_V2), list(core.ORDER_COLUMNS_V3)
    assert core.upgrade([*v2, "Notes"]) == len(v2) == len(core.ORDER_COLUMNS) - 2
    assert core.upgrade([*v3, "Notes"]) == len(v3) == len(core.ORDER_COLUMNS) - 1
    assert core.upgrade(list(core.ORDER_COLUMNS)) is None
    assert core.upgrade([*core.ORDER_COLUMNS, "Notes"]) is None
    assert core.upgrade(["Order", "Created", "Сумма"]) is None  # not ours: refused elsewhere


async def test_csv_orders_of_an_earlier_version_upgraded_with_the_owners_column(
    tmp_path: Path,
) -> None:
    path = tmp_path / "orders.csv"
    with path.open("w", encoding="utf-8", newline="") as file:
        csv.writer(file).writerows([[*OLD, "Notes"], *OLD_ROWS])
    sheet = CsvSheet(tmp_path)
    await sheet.open()
    header, *rows = list(csv.reader(path.open(encoding="utf-8")))
    assert header == [*OLD, *NEW_COLUMNS, "Notes"]
    assert rows[0] == [*OLD_ROWS[0][:13], *BLANK, "позвонить"]
    assert rows[1][:13] == OLD_ROWS[1][:13] and len(rows) == 2

    plan = core.Plan(orders={"o-3": core.row(shipped_order(), {})})
    await sheet.apply(plan)
    header, *rows = list(csv.reader(path.open(encoding="utf-8")))
    assert header == [*OLD, *NEW_COLUMNS, "Notes"]
    assert [row[0] for row in rows] == ["o-1", "o-2", "o-3"]
    assert rows[0][-1] == "позвонить" and rows[2][13:] == [
        "shipped",
        "Почта России",
        "RA1RU",
        "2026-12-01 12:00:00",
        "",
        "russian-post, 350 ₽",  # the method's id: the catalog has no title for it
        "card",
        "",
    ]
    again = CsvSheet(tmp_path)  # a restart: nothing more to upgrade, nothing lost
    await again.open()
    assert set(again.orders) == {"o-1", "o-2", "o-3"} and again.extra["o-1"] == ["позвонить"]


async def test_csv_orders_of_the_version_before_get_the_delivery_column(tmp_path: Path) -> None:
    """A sheet with the fulfilment columns (the version before) gains Delivery before the
    owner's own column."""
    v2 = list(core.ORDER_COLUMNS_V2)
    shipped = core.row(shipped_order(), {}).values()[: len(v2)]
    path = tmp_path / "orders.csv"
    with path.open("w", encoding="utf-8", newline="") as file:
        csv.writer(file).writerows([[*v2, "Notes"], [*shipped, "позвонить"]])
    sheet = CsvSheet(tmp_path)
    await sheet.open()
    header, row = list(csv.reader(path.open(encoding="utf-8")))
    assert header == [*v2, "Delivery", "Payment", "Notes"]
    assert row == [*shipped, "", "", "позвонить"]
    await sheet.apply(core.Plan(orders={"o-3": core.row(shipped_order(), {})}))
    _, row = list(csv.reader(path.open(encoding="utf-8")))
    assert row[len(v2) :] == ["russian-post, 350 ₽", "card", "позвонить"]


async def test_csv_orders_of_the_version_before_get_the_payment_column(tmp_path: Path) -> None:
    """A sheet with the Delivery column (the version before) gains Payment before the owner's
    own column; a row of an order placed before keeps it empty, a row written now fills it."""
    v3 = list(core.ORDER_COLUMNS_V3)
    shipped = core.row(shipped_order(), {}).values()[: len(v3)]
    path = tmp_path / "orders.csv"
    with path.open("w", encoding="utf-8", newline="") as file:
        csv.writer(file).writerows(
            [[*v3, "Notes"], [*shipped, "позвонить"], ["o-1", *[""] * (len(v3) - 1), "x"]]
        )
    sheet = CsvSheet(tmp_path)
    await sheet.open()
    header, *rows = list(csv.reader(path.open(encoding="utf-8")))
    by_id = {row[0]: row for row in rows}
    assert header == [*v3, "Payment", "Notes"]
    assert by_id["o-3"] == [*shipped, "", "позвонить"]
    assert by_id["o-1"][len(v3) :] == ["", "x"]
    sbp = msgspec.structs.replace(shipped_order(), payment="sbp")
    await sheet.apply(core.Plan(orders={"o-3": core.row(sbp, {})}))
    _, *rows = list(csv.reader(path.open(encoding="utf-8")))
    by_id = {row[0]: row for row in rows}
    assert by_id["o-3"][len(v3) :] == ["SBP", "позвонить"]
    assert by_id["o-1"][len(v3) :] == ["", "x"]


@pytest.fixture
async def sheets() -> AsyncIterator[FakeSheets]:
    fake = FakeSheets()
    await fake.start()
    yield fake
    await fake.stop()


async def test_google_orders_tab_of_an_earlier_version_upgraded_with_the_owners_column(
    sheets: FakeSheets, tmp_path: Path
) -> None:
    book = sheets.create_spreadsheet("CRM")
    key_file = sheets.key_file(tmp_path)
    first = GoogleSheet(key_file, book, sheets.url, timeout=3)
    await first.open()  # the tabs made; then the Orders tab as an earlier version left it
    sheets.set_rows(book, "Orders", [[*OLD, "Notes"], *OLD_ROWS])

    sheet = GoogleSheet(key_file, book, sheets.url, timeout=3)
    await sheet.open()
    header, *rows = sheets.rows(book, "Orders")
    assert header == [*OLD, *NEW_COLUMNS, "Notes"]
    assert rows[0][:13] == OLD_ROWS[0][:13] and rows[0][13:] == [*BLANK, "позвонить"]
    assert rows[1][:13] == OLD_ROWS[1][:13]
    await sheet.apply(core.Plan(orders={"o-3": core.row(shipped_order(), {})}))
    header, *rows = sheets.rows(book, "Orders")
    assert [row[0] for row in rows] == ["o-1", "o-2", "o-3"]
    assert rows[2][13:16] == ["shipped", "Почта России", "RA1RU"]
    assert rows[2][18:20] == ["russian-post, 350 ₽", "card"] and rows[0][20] == "позвонить"
    again = GoogleSheet(key_file, book, sheets.url, timeout=3)
    await again.open()  # opened again: already this version's, nothing moves
    assert sheets.rows(book, "Orders")[0] == [*OLD, *NEW_COLUMNS, "Notes"]
