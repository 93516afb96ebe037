"""The Orders tab takes the owner's edits, end to end: crm_sync and the inventory as real
processes, orders' facts published as the other services do, the fake Sheets API as the sheet.
A Fulfilment cell set to "shipped" with a tracking number is one OrderFulfilment fact on the bus,
once across more syncs and a kill -9 of crm_sync after the publish; a refused step's cells are
put back, its reason in the cell's note."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from nats.js import JetStreamContext

from libs import bus, subjects
from libs.contracts import OrderFulfilment
from services.crm_sync import orders_tab
from services.crm_sync.sheets import column
from tests.crm_journeys import journey, order_id
from tests.fakes.sheets import FakeSheets
from tests.harness import wait_until
from tests.test_crm_catalog import Sheet, Start, started

ORDERS = "Orders"
RUN = "edits"
FULFILMENT = column(orders_tab.FULFILMENT)
CARRIER = column(orders_tab.CARRIER)
TRACKING = column(orders_tab.TRACKING)


@pytest.fixture
async def sheets() -> AsyncIterator[FakeSheets]:
    fake = FakeSheets()
    await fake.start()
    yield fake
    await fake.stop()


def orders(sheet: Sheet) -> dict[str, int]:
    rows = sheet.fake.rows(sheet.id, ORDERS)[1:]
    return {str(cells[0]): number for number, cells in enumerate(rows, start=2) if cells}


def cell(sheet: Sheet, oid: str, col: str) -> Any:
    number = orders(sheet).get(oid)
    return sheet.fake.cell(sheet.id, ORDERS, f"{col}{number}") if number else None


def type_in(sheet: Sheet, oid: str, col: str, value: str) -> None:
    sheet.fake.set_cell(sheet.id, ORDERS, f"{col}{orders(sheet)[oid]}", value)


async def steps(js: JetStreamContext, oid: str) -> list[OrderFulfilment]:
    """Every fulfilment fact of the order on the bus."""
    subject = subjects.order_fulfilment(oid)
    info = await js.stream_info(subjects.ORDERS, subjects_filter=subject)
    count = (info.state.subjects or {}).get(subject, 0)
    if not count:
        return []
    found = []
    sub = await js.subscribe(subject, ordered_consumer=True)
    for _ in range(count):
        msg = await sub.next_msg(timeout=5)
        found.append(msgspec.json.decode(msg.data, type=OrderFulfilment))
    await sub.unsubscribe()
    return found


async def test_the_owner_ships_an_order_from_the_sheet_once_and_a_refused_step_is_put_back(
    nats_url: str,
    js: JetStreamContext,
    services: Start,
    sheets: FakeSheets,
    catalog_file: Path,
    tmp_path: Path,
) -> None:
    sheet = Sheet(sheets, tmp_path)
    first = await started(nats_url, js, services, catalog_file, sheet)
    rule = sheets.validation(sheet.id, ORDERS, f"{FULFILMENT}2")
    assert rule is not None, "the Fulfilment column is a dropdown"
    listed = [v["userEnteredValue"] for v in rule["condition"]["values"]]
    assert listed == ["packed", "shipped", "ready for pickup", "delivered", "cancelled"]

    oid = order_id(RUN, 5)  # paid straight away
    for subject, fact in journey(RUN, 5, datetime.now(UTC).replace(microsecond=0)):
        await bus.publish(js, subject, fact, msg_id=subject)
    await wait_until(lambda: cell(sheet, oid, "C") == "paid", what="the paid order's row")

    # The row is not written back after the step (its write fails), and crm_sync is killed -9
    # once the fact is on the bus: started again, it finds the step taken and takes it no more.
    sheets.fail("503", paths="POST *batchUpdate")
    type_in(sheet, oid, TRACKING, "ra 123456789 ru")
    type_in(sheet, oid, FULFILMENT, "shipped")

    async def taken(count: int) -> bool:
        return len(await steps(js, oid)) == count

    await wait_until(lambda: taken(1), what="the step on the bus")
    first.kill()
    sheets.clear_failures()
    services("crm_sync", nats_url, **sheet.settings())
    await wait_until(
        lambda: cell(sheet, oid, TRACKING) == "RA123456789RU", what="the row rewritten"
    )
    await sheet.syncs(3)
    (fact,) = await steps(js, oid)
    entry = fact.history[-1]
    assert (entry.step, entry.carrier, entry.tracking) == (
        "shipped",
        "russian_post",
        "RA123456789RU",
    )
    assert entry.by == 0, "by the sheet"
    assert cell(sheet, oid, FULFILMENT) == "shipped" and cell(sheet, oid, CARRIER) == "Почта России"

    # A step back is refused: the cells put back to what the order is, the reason in the note.
    type_in(sheet, oid, FULFILMENT, "packed")
    type_in(sheet, oid, TRACKING, "")
    where = f"{FULFILMENT}{orders(sheet)[oid]}"
    await wait_until(lambda: sheets.note(sheet.id, ORDERS, where) != "", what="the reason")
    assert "«packed» не принято: шаг назад нельзя" in sheets.note(sheet.id, ORDERS, where)
    assert cell(sheet, oid, FULFILMENT) == "shipped"
    assert cell(sheet, oid, TRACKING) == "RA123456789RU"
    await sheet.syncs(2)
    assert len(await steps(js, oid)) == 1

    # Delivered from the sheet: the second step, and the note of the refusal cleared.
    type_in(sheet, oid, FULFILMENT, "delivered")
    await wait_until(lambda: taken(2), what="delivered on the bus")
    await wait_until(lambda: sheets.note(sheet.id, ORDERS, where) == "", what="the note cleared")
    await wait_until(lambda: cell(sheet, oid, FULFILMENT) == "delivered", what="the row")
