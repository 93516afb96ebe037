"""crm_sync as a real process: the facts on a real NATS into CSV files or a fake Google Sheet."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import aiohttp
import msgspec
import nats.js.errors
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext

from libs import bus, lifecycle, money, subjects
from libs.catalog_view import CatalogView
from libs.contracts import (
    AlertEvent,
    CatalogDelivery,
    DeliveryChoice,
    DeliveryMethod,
    OrderPlaced,
    PaymentRefunded,
    Reserved,
    StockLevel,
)
from libs.kv import Documents
from services.crm_sync import core
from services.crm_sync import main as crm
from services.crm_sync.csv_sheet import CsvSheet
from shop.embedded_nats import EmbeddedNats, free_port
from shop.embedded_nats import binary as nats_binary
from tests import crm_journeys
from tests.fakes.sheets import FakeSheets
from tests.harness import ServiceProcess, http_get, metric, shop, wait_until

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
    assert [int(daily[0][2]), money.cell_kopecks(daily[0][3])] == [
        sum(w.units for w in want),
        sum(w.revenue for w in want),
    ]
    await wait_until(
        lambda: [row[:5] for row in _csv(crm / "stock.csv")] == [["TEA", "TEA", "50", "3", "47"]],
        what="the Stock tab",
    )


async def test_csv_paid_after_expiry_is_paid_and_a_restart_between_facts_keeps_the_row(
    nats_url: str, js: JetStreamContext, services: Start, tmp_path: Path
) -> None:
    """The reservation expires, the customer pays a few seconds later: the inventory takes the
    stock again (order 3) or has none left, so the money goes back (order 4). crm_sync is
    restarted between the expiry and the payment; the row keeps what the order said."""
    crm = tmp_path / "data" / "crm"
    first = services("crm_sync", nats_url, crm_http_port=free_port())
    at = datetime.now(UTC).replace(microsecond=0)
    journeys = {n: crm_journeys.journey("late", n, at) for n in (3, 4)}
    expiry = 4  # placed, reserved, pending, released (expired)

    async def publish(facts: list[tuple[str, Any]]) -> None:
        for subject, fact in facts:
            await bus.publish(js, subject, fact, msg_id=subject)

    def rows() -> dict[str, list[str]]:
        return {row[0]: row for row in _csv(crm / "orders.csv")}

    for facts in journeys.values():
        await publish(facts[:expiry])
    late, refused = crm_journeys.order_id("late", 3), crm_journeys.order_id("late", 4)
    await wait_until(
        lambda: [rows().get(oid, [""] * 3)[2] for oid in (late, refused)] == ["expired"] * 2,
        what="both orders expired",
    )
    before = rows()
    assert before[late][3:8] == [
        "Анна",
        "1003",
        "+79123456789",
        "Москва, ул. Ленина, д. 5",
        "позвонить",
    ]
    first.kill()  # a new process: nothing of the orders in memory
    services("crm_sync", nats_url, crm_http_port=free_port())
    for facts in journeys.values():
        await publish(facts[expiry:])

    await wait_until(
        lambda: [rows().get(oid, [""] * 3)[2] for oid in (late, refused)] == ["paid", "cancelled"],
        what="the late payment paid, the refused one cancelled",
    )
    after = rows()
    pay = f"pay-{late}"
    assert after[late][10:12] == [pay, core.stamp(at)], "its payment id and when it was paid"
    for oid in (late, refused):
        assert after[oid][:2] == before[oid][:2] and after[oid][3:10] == before[oid][3:10], (
            "the customer, contact, items and total kept through the restart"
        )
    sold = [(row[1], row[5]) for row in _csv(crm / "sales.csv")]
    assert sold == [(late, str(1 + 3 % 3))], "the late payment sold once; the refused one never"


async def test_csv_a_couriered_order_shows_its_delivery_and_sells_it_once(
    nats_url: str, js: JetStreamContext, services: Start, tmp_path: Path
) -> None:
    """The Delivery column with the method's title from the catalog, and the delivery's price as
    a line of Sales and in the day's revenue."""
    crm = tmp_path / "data" / "crm"
    catalog, _, _ = await subjects.declare_buckets(js)
    courier = DeliveryMethod(
        id="courier-msk", title="Курьер по Москве", kind="courier", price=30000
    )
    await catalog.put(
        subjects.CATALOG_DELIVERY_KEY, msgspec.json.encode(CatalogDelivery((courier,)))
    )
    services("crm_sync", nats_url, crm_http_port=free_port())
    chosen = DeliveryChoice(method_id="courier-msk", price=30000, city="Москва")
    oid = crm_journeys.order_id("dlv", 5)  # three of TEA, paid
    goods = 3 * crm_journeys.PRICE
    facts = [
        (subject, msgspec.structs.replace(fact, delivery=chosen, total=goods + 30000))
        if isinstance(fact, OrderPlaced | Reserved)
        else (subject, fact)
        for subject, fact in crm_journeys.journey("dlv", 5, datetime.now(UTC))
    ]
    for subject, fact in facts:
        await bus.publish(js, subject, fact, msg_id=subject)

    def written() -> bool:
        orders, sales, days = (_csv(crm / f"{tab}.csv") for tab in ("orders", "sales", "daily"))
        return len(sales) == 2 and bool(orders) and orders[0][2] == "paid" and len(days) == 1

    await wait_until(written, what="the order paid, its sales and the day")
    (row,) = _csv(crm / "orders.csv")
    delivery = core.ORDER_COLUMNS.index("Delivery")
    assert (row[0], row[delivery]) == (oid, "Курьер по Москве, 300 ₽")
    assert [r[3:] for r in _csv(crm / "sales.csv")] == [
        ["TEA", "TEA", "3", "690.00", "2070.00"],  # no products in this catalog: the SKU
        ["delivery:courier-msk", "Курьер по Москве", "1", "300.00", "300.00"],
    ]
    (day,) = _csv(crm / "daily.csv")
    assert day[1:] == ["1", "3", "2370.00"], "one order, three units, the delivery in the revenue"


class _WithoutJetStream(EmbeddedNats):
    """A nats-server that takes clients but has no JetStream: what a service starting during an
    election sees (its JetStream requests go unanswered), for as long as a test wants."""

    def _command(self, log_file: Path) -> tuple[list[str], dict[str, str] | None]:
        argv = [str(nats_binary()), "--addr", self.host, "--port", str(self.port)]
        return [*argv, "--log", str(log_file)], None


def _waits_for_bus(service: ServiceProcess) -> list[dict[str, Any]]:
    lines = service.log().splitlines()
    return [json.loads(line) for line in lines if '"start.waiting_for_bus"' in line]


async def test_started_before_jetstream_it_waits_then_writes_the_rows(
    services: Start, tmp_path: Path
) -> None:
    """crm_sync started while NATS has no JetStream (a cluster electing its leaders) waits,
    saying so, and never exits; once JetStream is there it declares, takes the writer's lease,
    and writes every row."""
    bare = _WithoutJetStream(tmp_path / "bare-nats")
    bare.start()
    server = EmbeddedNats(tmp_path / "nats", port=bare.port)
    try:
        service = services("crm_sync", bare.url, crm_http_port=free_port())
        await wait_until(lambda: len(_waits_for_bus(service)) >= 2, what="two retries logged")
        assert service.alive()
        first = _waits_for_bus(service)[0]
        assert first["step"] == "declare streams" and first["attempt"] == 1, first
        bare.stop()
        server.start()  # the same port: crm_sync's connection comes back to a JetStream
        nc = await bus.connect(server.url, name="test")
        js = nc.jetstream(timeout=10)
        await subjects.declare_streams(js)
        await crm_journeys.publish(js, "j", range(30))
        crm = tmp_path / "data" / "crm"
        await wait_until(lambda: not csv_problems(crm, "j", 30), 60, "all 30 orders, once each")
        assert service.alive() and '"crm.writing"' in service.log()
        await nc.close()
    finally:
        bare.stop()
        server.stop()


async def test_stopped_while_waiting_for_the_bus_it_ends_cleanly(
    services: Start, tmp_path: Path
) -> None:
    """SIGTERM while a start waits for JetStream ends the process at once, with 0."""
    bare = _WithoutJetStream(tmp_path / "bare-nats")
    bare.start()
    try:
        service = services("crm_sync", bare.url, crm_http_port=free_port())
        await wait_until(lambda: bool(_waits_for_bus(service)), what="a retry logged")
        assert service.terminate(timeout=10) == 0, service.log()[-2000:]
        assert '"service.stopped_starting"' in service.log()
    finally:
        bare.stop()


class _Killed(Exception):
    """The process dies here."""


class _DiesAfterTheSheetConfirms(CsvSheet):
    async def apply(self, plan: core.Plan) -> int:
        await super().apply(plan)
        raise _Killed


async def test_killed_right_after_the_sheet_took_the_rows_the_next_process_keeps_the_row(
    nc: Client, js: JetStreamContext, tmp_path: Path
) -> None:
    """The first process writes an order's rows and dies before anything else (its facts are
    not acked); the next one gets the order's later facts first: the row keeps what the order
    said (the state went to KV before the rows went to the sheet)."""
    at = datetime.now(UTC).replace(microsecond=0)
    facts = crm_journeys.journey("late", 3, at)
    expiry = 4  # placed, reserved, pending, released (expired)
    batch = [(f"orders:{n}", cast(core.Fact, fact)) for n, (_, fact) in enumerate(facts)]
    catalog = await CatalogView.open(nc, js)
    try:
        states = crm.OrderStates(
            await Documents.open(js, subjects.CRM_ORDERS_BUCKET, lifecycle.Order)
        )
        first = crm.Writer(_DiesAfterTheSheetConfirms(tmp_path), crm.Titles(catalog), states)
        with pytest.raises(_Killed):
            await first.apply(batch[:expiry])
        sheet = CsvSheet(tmp_path)
        await crm.Writer(sheet, crm.Titles(catalog), states).apply(batch[expiry:])
    finally:
        await catalog.close()
    row = {r[0]: r for r in _csv(tmp_path / "orders.csv")}[crm_journeys.order_id("late", 3)]
    assert row[1] == core.stamp(at) and row[2] == "paid", "created when placed, and paid"
    assert row[3:8] == ["Анна", "1003", "+79123456789", "Москва, ул. Ленина, д. 5", "позвонить"]


# The Google Sheet, through the fake Sheets API --------------------------------------------------
@pytest.fixture
async def sheets(tmp_path: Path) -> AsyncIterator[FakeSheets]:
    fake = FakeSheets()
    await fake.start()
    yield fake
    await fake.stop()


class Sheet:
    """A crm_sync pointed at a fresh spreadsheet of the fake."""

    def __init__(self, fake: FakeSheets, tmp_path: Path) -> None:
        self.fake = fake
        self.key_file = fake.key_file(tmp_path)
        self.id = fake.create_spreadsheet("CRM")
        self.port = free_port()

    def settings(self, **extra: Any) -> dict[str, Any]:
        return {
            "google_service_account_file": self.key_file,
            "sheets_spreadsheet_id": self.id,
            "sheets_api_url": self.fake.url,
            "sheets_timeout": 3,
            "crm_http_port": self.port,
            "crm_stock_every": 1,
            **extra,
        }

    def rows(self, tab: str) -> list[list[Any]]:
        return self.fake.rows(self.id, tab)[1:] if self.header(tab) else []

    def header(self, tab: str) -> list[Any]:
        if tab not in self.fake.sheet_titles(self.id):
            return []
        rows = self.fake.rows(self.id, tab)
        return rows[0] if rows else []

    def set_up(self) -> bool:
        """The tabs are added by one request, their header rows written by the next."""
        return all(self.header(tab) for tab in ("Orders", "Sales", "Daily", "Stock"))

    def problems(self, run: str, count: int) -> list[str]:
        return check(self.rows("Orders"), self.rows("Sales"), run, count)

    async def health(self) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.port}/healthz"
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            body: dict[str, Any] = await response.json()
            return body


def _status(sheet: Sheet, order_id: str) -> str | None:
    return next((str(row[2]) for row in sheet.rows("Orders") if row[0] == order_id), None)


def shop_status(nats_url: str) -> str:
    done = shop("status", env={**os.environ, "NATS_URL": nats_url, "LOG_FORMAT": "json"})
    return done.stdout + done.stderr


async def _alerts(js: JetStreamContext, subject: str) -> list[Any]:
    try:
        msg = await js.get_last_msg(subjects.ALERTS, subject)
    except nats.js.errors.NotFoundError:
        return []
    return [msgspec.json.decode(msg.data or b"", type=AlertEvent)]


async def test_sheet_made_then_1000_orders_through_a_30_s_outage(
    nats_url: str, js: JetStreamContext, services: Start, sheets: FakeSheets, tmp_path: Path
) -> None:
    sheet = Sheet(sheets, tmp_path)
    services("crm_sync", nats_url, **sheet.settings(crm_alert_after=5))
    await wait_until(sheet.set_up, what="the tabs with their header rows")
    assert sheet.header("Orders") == list(core.ORDER_COLUMNS)
    assert sheet.header("Sales") == list(core.SALES_COLUMNS)
    added = [r["addSheet"]["properties"] for r in sheets.batch_updates if "addSheet" in r]
    assert all(p["gridProperties"]["frozenRowCount"] == 1 for p in added) and len(added) == 5

    await crm_journeys.publish(js, "s", range(0, 500))
    await wait_until(lambda: not sheet.problems("s", 500), 30, "the first 500 orders")
    outage = datetime.now(UTC)
    sheets.fail("503", seconds=30)
    await crm_journeys.publish(js, "s", range(500, 1000))
    # On a slow machine the first 500 may already have raised an alert (cleared or not): the
    # admins are alerted when the last word is "behind", and the all-clear is one given after
    # this outage began.

    async def behind() -> bool:
        alerted = await _alerts(js, subjects.ALERT_CRM_BEHIND)
        cleared = await _alerts(js, subjects.ALERT_CRM_CAUGHT_UP)
        return bool(alerted) and (not cleared or cleared[-1].at < alerted[-1].at)

    await wait_until(behind, 30, "the admins alerted")

    async def failing() -> bool:  # the writer may still be gathering when the alert goes
        return "503" in (await sheet.health())["error"]

    await wait_until(failing, 30, "the error on /healthz")
    health = await sheet.health()
    assert health["backlog"] > 0 and health["oldest_age_s"] > 5 and "503" in health["error"]
    assert (await http_get(sheet.port, "/healthz"))[0] == 503, "behind: not healthy"
    assert (await metric(sheet.port, "shop_crm_backlog") or 0) > 0
    assert (await metric(sheet.port, "shop_crm_oldest_fact_age_seconds") or 0) > 5
    status = shop_status(nats_url)
    assert "facts not yet written" in status and "503" in status, status

    async def caught_up() -> bool:
        return any(a.at >= outage for a in await _alerts(js, subjects.ALERT_CRM_CAUGHT_UP))

    await wait_until(lambda: not sheet.problems("s", 1000), 90, "all 1,000 orders, once each")
    await wait_until(caught_up, 20, "the all-clear")
    daily = sheet.rows("Daily")
    want = [crm_journeys.expected(n) for n in range(1000)]
    assert daily[0][2] == sum(w.units for w in want)
    assert money.cell_kopecks(daily[0][3]) == sum(w.revenue for w in want)
    assert (await sheet.health())["backlog"] == 0
    assert await metric(sheet.port, "shop_crm_backlog") == 0
    assert (await http_get(sheet.port, "/healthz"))[0] == 200


async def test_killed_between_the_write_and_its_answer_no_row_twice(
    nats_url: str, js: JetStreamContext, services: Start, sheets: FakeSheets, tmp_path: Path
) -> None:
    sheet = Sheet(sheets, tmp_path)
    first = services("crm_sync", nats_url, **sheet.settings())
    await wait_until(sheet.set_up, what="the tabs with their header rows")
    # The ledger append lands, its answer never comes: kill -9 while the writer waits for it.
    sheets.fail("apply_then_timeout", count=1, paths="POST */values/Sales*")
    await crm_journeys.publish(js, "k", range(0, 300))

    def held() -> bool:  # performed, its answer not given: the writer waits, nothing acked
        return any(
            c.kind == "values.append" and "/Sales" in c.path and c.applied and not c.status
            for c in sheets.calls
        )

    await wait_until(held, what="a ledger append landed, its answer held")
    first.kill()
    assert sheet.rows("Sales"), "the ledger rows are in the sheet"
    sheets.clear_failures()
    # The answer lost again, now to the client's timeout: retried, found written, not appended.
    sheets.fail("apply_then_timeout", count=1, paths="POST */values/Orders*")
    services("crm_sync", nats_url, **sheet.settings())
    await crm_journeys.publish(js, "k", range(300, 400))
    await wait_until(lambda: not sheet.problems("k", 400), 60, "all 400 orders, once each")


async def test_a_429_storm_stays_under_quota_and_converges(
    nats_url: str, js: JetStreamContext, services: Start, sheets: FakeSheets, tmp_path: Path
) -> None:
    sheet = Sheet(sheets, tmp_path)
    sheets.quota_per_minute = 60  # Google's own limit, enforced by the fake
    services("crm_sync", nats_url, **sheet.settings())
    await wait_until(sheet.set_up, what="the tabs with their header rows")
    sheets.fail("429", seconds=8)
    for wave in range(20):  # orders trickle in, so there are many small batches
        await crm_journeys.publish(js, "q", range(wave * 15, wave * 15 + 15))
        await asyncio.sleep(0.2)
    await wait_until(lambda: not sheet.problems("q", 300), 90, "all 300 orders, once each")
    refused = [r for r in sheets.requests if r[2] == 429]
    assert refused, "the storm happened"
    assert sheets.max_writes_in_any_minute <= 50


async def test_people_in_the_sheet_deleted_row_edited_key_changed_header(
    nats_url: str, js: JetStreamContext, services: Start, sheets: FakeSheets, tmp_path: Path
) -> None:
    sheet = Sheet(sheets, tmp_path)
    service = services("crm_sync", nats_url, **sheet.settings())
    refunded = ("p-00003", "p-00013")  # by hand, below: "refunded", not what the journey says
    await crm_journeys.publish(js, "p", range(0, 20))
    await wait_until(lambda: not sheet.problems("p", 20), 30, "20 orders")

    # Someone deletes order 3's row: the rows below move up. An update of order 12 must land
    # on its own row, and order 3 comes back when it next changes.
    row_of_3 = 2 + [row[0] for row in sheet.rows("Orders")].index("p-00003")
    sheets.delete_row(sheet.id, "Orders", row_of_3)
    for number in (13, 3):
        oid = crm_journeys.order_id("p", number)
        whole = (1 + number % 3) * crm_journeys.PRICE  # the money only: the goods are kept
        refund = PaymentRefunded(oid, f"pay-{oid}", f"r-{oid}", whole, (), "", datetime.now(UTC))
        await bus.publish(
            js, subjects.payment_fact(subjects.PaymentKind.REFUNDED, oid), refund, f"r-{oid}"
        )
    await wait_until(
        lambda: _status(sheet, "p-00013") == _status(sheet, "p-00003") == "refunded",
        what="both refunds shown",
    )
    keys = [row[0] for row in sheet.rows("Orders")]
    assert len(keys) == len(set(keys)) == 20
    assert "crm.row_missing" in service.log()

    # Someone changes the header: one clear line, nothing written, until it is put back.
    sheets.set_cell(sheet.id, "Orders", "J1", "Сумма")
    await crm_journeys.publish(js, "p", range(20, 25))
    await wait_until(lambda: "header row of the Orders tab" in service.log(), what="the log line")
    assert not any(str(row[0]).startswith("p-0002") for row in sheet.rows("Orders"))
    sheets.set_cell(sheet.id, "Orders", "J1", "Total")
    await wait_until(
        lambda: not [p for p in sheet.problems("p", 25) if not p.startswith(refunded)],
        60,
        "written once it is fixed",
    )
    assert service.alive()


async def test_key_missing_sheet_not_shared_tab_renamed_one_clear_line_each(
    nats_url: str, js: JetStreamContext, services: Start, sheets: FakeSheets, tmp_path: Path
) -> None:
    sheet = Sheet(sheets, tmp_path)
    key = tmp_path / "secrets" / "google.json"  # not there yet
    other = sheets.create_spreadsheet("Someone else's", share_with="someone@example.com")
    settings = sheet.settings(sheets_spreadsheet_id=other, google_service_account_file=key)
    service = services("crm_sync", nats_url, **settings)
    await crm_journeys.publish(js, "n", range(0, 5))

    def said(text: str) -> int:
        """How many times a failed write was logged with `text` in its error."""
        events = [json.loads(line) for line in service.log().splitlines() if line.startswith("{")]
        return sum(text in e["error"] for e in events if e["event"] == "crm.write_failed")

    await wait_until(
        lambda: said(f"GOOGLE_SERVICE_ACCOUNT_FILE {key}: cannot use it") > 0, what="key"
    )
    key.parent.mkdir()
    key.write_bytes(sheet.key_file.read_bytes())  # the operator puts the key in place
    await wait_until(lambda: said("share the spreadsheet with crm@") > 0, what="the hint to share")
    assert service.alive()

    async def reported() -> bool:
        health = await sheet.health()
        return bool(health["backlog"] > 0 and "share the spreadsheet" in health["error"])

    await wait_until(reported, what="the error on /healthz")
    assert said("GOOGLE_SERVICE_ACCOUNT_FILE") == 1 and said("share the spreadsheet") == 1, (
        "each said once, not at every retry"
    )
    sheets.share(other, FakeSheets.default_email)  # the owner follows the hint
    sheet.id = other
    await wait_until(lambda: not sheet.problems("n", 5), 60, "written once shared")

    # A person renames the Orders tab: one line naming it, no second (empty) Orders tab.
    sheets.rename_sheet(other, "Orders", "Заказы")
    await crm_journeys.publish(js, "n", range(5, 10))
    await wait_until(lambda: said("the Orders tab was renamed to 'Заказы'") > 0, what="the line")
    assert "Orders" not in sheets.sheet_titles(other)
    assert not said("is gone or was renamed"), "the precise line, not a vague one first"
    sheets.rename_sheet(other, "Заказы", "Orders")
    await wait_until(lambda: not sheet.problems("n", 10), 60, "written once renamed back")


async def test_a_burst_of_100_paid_orders_in_a_few_writes_without_a_429(
    nats_url: str, js: JetStreamContext, services: Start, sheets: FakeSheets, tmp_path: Path
) -> None:
    """100 orders paid within 10 s: in the sheet within 15 s of the last, in at most 15 write
    requests, no 429 from Google's own quota. Written at once, batch by batch, the same burst
    took over 50 writes and then stood still for most of a minute."""
    sheet = Sheet(sheets, tmp_path)
    sheets.quota_per_minute = 60  # Google's own limit, enforced by the fake
    services("crm_sync", nats_url, **sheet.settings(crm_stock_every=10))
    await wait_until(sheet.set_up, what="the tabs with their header rows")
    before = sheets.writes
    numbers = crm_journeys.paid_straight_away(100)
    last = await crm_journeys.publish_over(js, "b", numbers, 10.0)

    def complete() -> bool:
        paid = [row for row in sheet.rows("Orders") if row[2] == "paid"]
        return len(paid) == len(numbers) and len(sheet.rows("Sales")) == len(numbers)

    await wait_until(complete, 60, "the burst in the sheet")
    late = time.perf_counter() - last
    assert sheets.writes - before <= 15, f"{sheets.writes - before} write requests"
    assert sheets.quota_rejections == 0
    assert late < 20.0, f"in the sheet {late:.1f} s after the last order (15 s on an idle machine)"
    orders = Counter(str(row[0]) for row in sheet.rows("Orders"))
    assert set(orders.values()) == {1} and len(orders) == len(numbers), "each order once"
