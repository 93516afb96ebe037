"""The payments service on a real nats-server with the real inventory, and the real yookassa SDK
talking to a fake YooKassa over HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import nats.js.errors
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext

from libs import bus, fulfilment, lifecycle, subjects
from libs.catalog_view import CatalogView
from libs.contracts import (
    CashReceived,
    Committed,
    Contact,
    DeadLettered,
    DeliveryChoice,
    OrderFulfilment,
    OrderLine,
    OrderPlaced,
    PaymentEvent,
    RefundRequested,
    Released,
    Reserved,
    ReservedLine,
)
from libs.kv import Documents
from libs.money import kopecks
from libs.settings import load
from services.payments.core import PaymentRecord
from services.payments.main import Payments, Records
from services.payments.provider import YooKassa
from shop.embedded_nats import free_port
from tests.fakes.yookassa import FakeYooKassa
from tests.harness import (
    CATALOG,
    Facts,
    ServiceProcess,
    inventory_ready,
    metric,
    order,
    place,
    stock_level,
    wait_until,
)

Start = Callable[..., ServiceProcess]
YOOKASSA_IP = "185.71.76.10"  # inside YooKassa's published 185.71.76.0/27


@pytest.fixture
async def fake() -> AsyncIterator[FakeYooKassa]:
    server = FakeYooKassa()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def money(js: JetStreamContext) -> Facts:
    """Every fact on the PAYMENTS stream (and the commands on it)."""
    collected = Facts("payments.>", PaymentEvent | RefundRequested | CashReceived)
    await collected.start(js)
    return collected


class Shop:
    """The inventory and payments processes, and how to reach the payments listener."""

    def __init__(self, payments: ServiceProcess, port: int) -> None:
        self.payments = payments
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    async def healthy(self) -> bool:
        try:
            async with aiohttp.ClientSession() as http, http.get(f"{self.url}/healthz") as reply:
                return reply.status == 200
        except aiohttp.ClientError:
            return False

    async def health(self) -> dict[str, Any]:
        async with aiohttp.ClientSession() as http, http.get(f"{self.url}/healthz") as reply:
            report: dict[str, Any] = await reply.json()
            return report

    async def notify(self, body: dict[str, Any], caller: str = YOOKASSA_IP) -> int:
        """A notification as if from `caller`, through the trusted proxy (127.0.0.1)."""
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{self.url}/yookassa/webhook", json=body, headers={"X-Forwarded-For": caller}
            ) as reply,
        ):
            return reply.status


async def _start(
    services: Start,
    nats_url: str,
    catalog_file: Path | None,
    js: JetStreamContext,
    fake: FakeYooKassa | None,
    **settings: Any,
) -> Shop:
    """Payments against `fake` (the sandbox if None), with the real inventory unless
    `catalog_file` is None (then the test tells the inventory's facts itself)."""
    port = free_port()
    env: dict[str, Any] = {
        "payments_http_port": port,
        "payments_reconcile_every": 1,
        "payments_reconcile_after": 2,
        "payments_trusted_proxies": "127.0.0.1/32",
    }
    if fake is not None:
        fake.webhook_url = f"http://127.0.0.1:{port}/yookassa/webhook"
        env |= {
            "yookassa_shop_id": fake.shop_id,
            "yookassa_secret_key": fake.secret_key,
            "yookassa_api_url": fake.api_url,
            "yookassa_trusted_networks": "127.0.0.1/32",
        }
    env |= settings
    inventory_settings = {
        key: settings[key] for key in ("reservation_ttl", "cash_hold") if key in settings
    }
    if catalog_file is not None:
        services("inventory", nats_url, catalog_file=catalog_file, **inventory_settings)
    payments = services("payments", nats_url, **env)
    shop = Shop(payments, port)
    if catalog_file is not None:
        await wait_until(lambda: inventory_ready(js), what="inventory ready")
    await wait_until(shop.healthy, what="payments healthy")
    return shop


def _payment_id(money: Facts, order_id: str) -> str:
    (pending,) = [
        f for f in money.by_order[order_id] if f.__struct_config__.tag == "payment_pending"
    ]
    return str(pending.payment_id)


async def _three_sold(
    js: JetStreamContext, facts: Facts, money: Facts, fake: FakeYooKassa, order_id: str
) -> str:
    """Three of FEW ordered and paid: the payment's id, once the stock is committed."""
    await place(js, order(order_id, ("FEW", 3, 99000)))
    await wait_until(lambda: "payment_pending" in money.kinds(order_id), what="pending")
    payment_id = _payment_id(money, order_id)
    await fake.pay(payment_id)
    await wait_until(lambda: "committed" in facts.kinds(order_id), what="committed")
    await wait_until(lambda: _stock_is(js, "FEW", 47, 0), what="three sold")
    return payment_id


async def _reconciled(shop: Shop) -> bool:
    return (await shop.health())["reconciler_last_run"] is not None


async def _stock_is(js: JetStreamContext, sku: str, on_hand: int, reserved: int) -> bool:
    level = await stock_level(js, sku)
    return level is not None and (level.on_hand, level.reserved) == (on_hand, reserved)


@pytest.mark.parametrize("capture", ["two_stage", "one_stage"])
async def test_happy_path(
    capture: str,
    nats_url: str,
    js: JetStreamContext,
    facts: Facts,
    money: Facts,
    services: Start,
    catalog_file: Path,
    fake: FakeYooKassa,
) -> None:
    shop = await _start(services, nats_url, catalog_file, js, fake, payments_capture=capture)
    await place(js, order("happy", ("FEW", 2, 99000)))
    await wait_until(lambda: "payment_pending" in money.kinds("happy"), what="pending")
    payment_id = _payment_id(money, "happy")
    created = fake.payments[payment_id]
    assert created["amount"] == {"value": "1980.00", "currency": "RUB"}
    assert created["metadata"]["order_id"] == "happy"
    assert created["confirmation"]["confirmation_url"]

    await fake.pay(payment_id)
    await wait_until(lambda: "payment_succeeded" in money.kinds("happy"), what="succeeded")
    await wait_until(lambda: "committed" in facts.kinds("happy"), what="committed")
    expected = ["payment_pending", "payment_succeeded"]
    if capture == "two_stage":
        expected.insert(1, "payment_authorized")
    assert money.kinds("happy") == expected
    assert fake.payments[payment_id]["status"] == "succeeded"
    captures = [r for r in fake.requests if r[0] == "POST" and r[1].endswith("/capture")]
    assert len(captures) == (1 if capture == "two_stage" else 0)
    await wait_until(lambda: _stock_is(js, "FEW", 48, 0), what="two sold")
    report = await shop.health()
    assert report["nats"] == "connected" and report["provider"] == "yookassa"
    assert report["consuming"] is True, report
    assert await metric(shop.port, "shop_payments_total", status="succeeded") == 1
    await wait_until(lambda: _reconciled(shop), what="the reconciler ran")


async def test_ten_identical_notifications_make_one_fact(
    nats_url: str,
    js: JetStreamContext,
    facts: Facts,
    money: Facts,
    services: Start,
    catalog_file: Path,
    fake: FakeYooKassa,
) -> None:
    await _start(services, nats_url, catalog_file, js, fake, payments_capture="one_stage")
    await place(js, order("tenfold", ("FEW", 1, 99000)))
    await wait_until(lambda: "payment_pending" in money.kinds("tenfold"), what="pending")
    payment_id = _payment_id(money, "tenfold")
    fake.auto_notify = False
    await fake.pay(payment_id)
    statuses = await fake.notify(payment_id, times=10)
    assert statuses == [200] * 10
    await wait_until(lambda: "committed" in facts.kinds("tenfold"), what="committed")
    assert money.kinds("tenfold") == ["payment_pending", "payment_succeeded"]
    assert facts.kinds("tenfold") == ["reserved", "committed"]


async def test_forged_notifications_are_refused(
    nats_url: str,
    js: JetStreamContext,
    facts: Facts,
    money: Facts,
    services: Start,
    catalog_file: Path,
    fake: FakeYooKassa,
) -> None:
    # YooKassa's own networks are trusted (the default), behind our proxy at 127.0.0.1.
    shop = await _start(services, nats_url, catalog_file, js, fake, yookassa_trusted_networks="")
    await place(js, order("forged", ("FEW", 1, 99000)))
    await wait_until(lambda: "payment_pending" in money.kinds("forged"), what="pending")
    payment_id = _payment_id(money, "forged")
    fake.auto_notify = False
    await fake.pay(payment_id)  # really paid: only the notifications below are forged
    real = {"type": "notification", "event": "payment.waiting_for_capture"}
    paid = dict(fake.payments[payment_id])

    assert await shop.notify(real | {"object": paid}, caller="203.0.113.7") == 403
    unknown = paid | {"id": "2f000000-000f-5000-8000-000000000000"}
    assert await shop.notify(real | {"object": unknown}) == 400
    cheaper = paid | {"amount": {"value": "1.00", "currency": "RUB"}}
    assert await shop.notify(real | {"object": cheaper}) == 400
    other = paid | {"metadata": {"order_id": "someone-else"}}
    assert await shop.notify(real | {"object": other}) == 400
    assert await shop.notify({"type": "notification", "event": "nonsense"}) == 400
    log = shop.payments.log()
    assert log.count('"webhook.refused"') == 5, log[-3000:]
    assert await metric(shop.port, "shop_webhook_refusals_total", status="403") == 1
    assert await metric(shop.port, "shop_webhook_refusals_total", status="400") == 4

    assert money.kinds("forged") == ["payment_pending"], "nothing published"
    assert facts.kinds("forged") == ["reserved"], "nothing committed"
    # The genuine notification from YooKassa's network is believed.
    assert await shop.notify(real | {"object": paid}) == 200
    await wait_until(lambda: "committed" in facts.kinds("forged"), what="committed")


async def test_yookassa_down_for_30_seconds_during_creation(
    nats_url: str,
    js: JetStreamContext,
    money: Facts,
    services: Start,
    catalog_file: Path,
    fake: FakeYooKassa,
) -> None:
    fake.fail("500", seconds=30, paths="POST /payments")
    await _start(services, nats_url, catalog_file, js, fake)
    await place(js, order("outage", ("FEW", 1, 99000)))
    await wait_until(lambda: "payment_pending" in money.kinds("outage"), timeout=75, what="pending")
    creates = [r for r in fake.requests if r[0] == "POST" and r[1].endswith("/payments")]
    assert len(creates) > 3, "retried"
    assert len({r[2] for r in creates}) == 1, "always with the same Idempotence-Key"
    assert fake.created == 1


async def test_killed_after_the_payment_was_created(
    nats_url: str,
    js: JetStreamContext,
    facts: Facts,
    money: Facts,
    services: Start,
    catalog_file: Path,
    fake: FakeYooKassa,
) -> None:
    shop = await _start(services, nats_url, catalog_file, js, fake)

    def crash(_: dict[str, Any]) -> None:
        fake.after_create = None
        shop.payments.kill()

    fake.after_create = crash
    await place(js, order("crash", ("FEW", 1, 99000)))
    await wait_until(lambda: not shop.payments.alive(), what="the crash")
    assert fake.created == 1
    assert money.kinds("crash") == []
    shop.payments.start()
    await wait_until(lambda: "payment_pending" in money.kinds("crash"), timeout=30, what="pending")
    assert fake.created == 1, "the same payment, not a second one"
    await fake.pay(_payment_id(money, "crash"))
    await wait_until(lambda: "payment_succeeded" in money.kinds("crash"), what="succeeded")
    assert facts.kinds("crash") == ["reserved", "committed"]


async def test_lost_notification_is_reconciled(
    nats_url: str,
    js: JetStreamContext,
    facts: Facts,
    money: Facts,
    services: Start,
    catalog_file: Path,
    fake: FakeYooKassa,
) -> None:
    shop = await _start(services, nats_url, catalog_file, js, fake)
    await place(js, order("lost", ("FEW", 1, 99000)))
    await wait_until(lambda: "payment_pending" in money.kinds("lost"), what="pending")
    fake.auto_notify = False
    await fake.pay(_payment_id(money, "lost"))
    await wait_until(lambda: "payment_succeeded" in money.kinds("lost"), what="reconciled")
    assert money.kinds("lost") == ["payment_pending", "payment_authorized", "payment_succeeded"]
    assert facts.kinds("lost") == ["reserved", "committed"]
    assert '"webhook' not in shop.payments.log(), "no notification came: the reconciler did it"


@pytest.mark.parametrize("capture", ["two_stage", "one_stage"])
async def test_late_payment_after_the_stock_was_sold(
    capture: str,
    nats_url: str,
    js: JetStreamContext,
    facts: Facts,
    money: Facts,
    services: Start,
    catalog_file: Path,
    fake: FakeYooKassa,
) -> None:
    await _start(
        services, nats_url, catalog_file, js, fake, payments_capture=capture, reservation_ttl=2
    )
    await place(js, order("late", ("LAST", 10, 10000)))
    await wait_until(lambda: "payment_pending" in money.kinds("late"), what="pending")
    await wait_until(lambda: "released" in facts.kinds("late"), what="the reservation expired")
    await place(js, order("prompt", ("LAST", 10, 10000)))
    await wait_until(lambda: "payment_pending" in money.kinds("prompt"), what="prompt pending")
    await fake.pay(_payment_id(money, "prompt"))
    await wait_until(lambda: "committed" in facts.kinds("prompt"), what="prompt committed")

    late_payment = _payment_id(money, "late")
    await fake.pay(late_payment)  # the first customer pays after all
    await wait_until(lambda: "commit_failed" in facts.kinds("late"), what="commit refused")
    if capture == "two_stage":
        await wait_until(lambda: "payment_canceled" in money.kinds("late"), what="hold released")
        assert fake.payments[late_payment]["status"] == "canceled"
    else:
        await wait_until(lambda: "payment_refunded" in money.kinds("late"), what="refunded")
        refunded = [
            f for f in money.by_order["late"] if f.__struct_config__.tag == "payment_refunded"
        ]
        assert refunded[0].amount == 100000 and refunded[0].lines == ()
    await wait_until(lambda: _stock_is(js, "LAST", 0, 0), what="sold once, to the prompt one")


async def test_a_released_reservation_never_cancels_a_hold_the_inventory_commits(
    nats_url: str, js: JetStreamContext, money: Facts, services: Start, fake: FakeYooKassa
) -> None:
    """The money-and-stock defect: the reservation expired, the customer paid around then, the
    inventory took the stock again; payments saw `released` while the payment waited for capture
    and cancelled it, so the goods were committed without money. Only the inventory's answer
    moves money: the hold is captured."""
    await _start(services, nats_url, None, js, fake, payments_capture="two_stage")
    now = datetime.now(UTC)
    lines = (ReservedLine("FEW", 1, 99000),)
    reserved = Reserved("slow", lines, 99000, now + timedelta(seconds=1), now)
    await bus.publish(js, subjects.inventory_fact("reserved", "slow"), reserved, msg_id="r")
    await wait_until(lambda: "payment_pending" in money.kinds("slow"), what="pending")
    payment_id = _payment_id(money, "slow")
    await fake.pay(payment_id)
    await wait_until(lambda: "payment_authorized" in money.kinds("slow"), what="held")

    # The inventory's facts in the order that broke it: expired, then the late payment taken.
    released = Released("slow", lines, "expired", now + timedelta(seconds=1))
    await bus.publish(js, subjects.inventory_fact("released", "slow"), released, msg_id="x")
    committed = Committed("slow", lines, payment_id, now + timedelta(seconds=2))
    await bus.publish(js, subjects.inventory_fact("committed", "slow"), committed, msg_id="c")

    await wait_until(
        lambda: fake.payments[payment_id]["status"] != "waiting_for_capture", what="settled"
    )
    assert fake.payments[payment_id]["status"] == "succeeded", "the stock is committed: captured"
    cancels = [r for r in fake.requests if r[0] == "POST" and r[1].endswith("/cancel")]
    assert cancels == []
    await wait_until(lambda: "payment_succeeded" in money.kinds("slow"), what="told")
    assert "payment_canceled" not in money.kinds("slow")


async def test_sandbox_checkout_pay_and_decline(
    nats_url: str,
    js: JetStreamContext,
    facts: Facts,
    money: Facts,
    services: Start,
    catalog_file: Path,
) -> None:
    await _start(services, nats_url, catalog_file, js, None)
    await place(js, order("sb-pay", ("FEW", 1, 99000)), order("sb-decline", ("FEW", 1, 99000)))
    await wait_until(
        lambda: all("payment_pending" in money.kinds(o) for o in ("sb-pay", "sb-decline")),
        what="pending",
    )
    urls = {o: money.of(o, "payment_pending")[0].confirmation_url for o in ("sb-pay", "sb-decline")}
    async with aiohttp.ClientSession() as http:
        async with http.get(urls["sb-pay"]) as page:
            text = await page.text()
            assert page.status == 200 and "TEST" in text
        async with http.post(f"{urls['sb-pay']}/pay", allow_redirects=False) as reply:
            assert reply.status == 303
        async with http.post(f"{urls['sb-decline']}/decline", allow_redirects=False) as reply:
            assert reply.status == 303
    await wait_until(lambda: "committed" in facts.kinds("sb-pay"), what="paid and committed")
    await wait_until(lambda: "payment_succeeded" in money.kinds("sb-pay"), what="captured")
    await wait_until(lambda: "released" in facts.kinds("sb-decline"), what="declined, released")
    (canceled,) = money.of("sb-decline", "payment_canceled")
    assert canceled.reason == "general_decline"


async def test_refund_by_lines_then_the_rest_returns_the_stock(
    nats_url: str,
    js: JetStreamContext,
    facts: Facts,
    money: Facts,
    services: Start,
    catalog_file: Path,
    fake: FakeYooKassa,
) -> None:
    await _start(services, nats_url, catalog_file, js, fake, payments_capture="one_stage")
    await _three_sold(js, facts, money, fake, "refund")

    one = RefundRequested("r1", "refund", "returned by the customer", (OrderLine("FEW", 1, 99000),))
    for attempt in range(2):  # the same request twice: one refund
        await bus.publish(
            js,
            subjects.payment_fact(subjects.PaymentKind.REFUND_REQUESTED, "refund"),
            one,
            msg_id=f"r1-{attempt}",
        )
    await wait_until(lambda: "payment_refunded" in money.kinds("refund"), what="refunded")
    await wait_until(lambda: _stock_is(js, "FEW", 48, 0), what="one back on the shelf")
    rest = RefundRequested("r2", "refund", "order cancelled")
    await bus.publish(
        js,
        subjects.payment_fact(subjects.PaymentKind.REFUND_REQUESTED, "refund"),
        rest,
        msg_id="r2",
    )
    await wait_until(lambda: len(money.of("refund", "payment_refunded")) == 2, what="the rest")
    await wait_until(lambda: _stock_is(js, "FEW", 50, 0), what="all back")
    first, second = money.of("refund", "payment_refunded")
    assert (first.amount, second.amount) == (99000, 198000)
    assert sorted(r["amount"]["value"] for r in fake.refunds.values()) == ["1980.00", "990.00"]
    assert len(money.of("refund", "payment_refunded")) == 2, "the repeated request refunded once"


async def test_receipts_go_with_payments_and_a_final_refusal_releases_the_stock(
    nats_url: str,
    js: JetStreamContext,
    facts: Facts,
    money: Facts,
    services: Start,
    catalog_file: Path,
    fake: FakeYooKassa,
) -> None:
    await _start(services, nats_url, catalog_file, js, fake, receipts="true")
    with_phone = msgspec.structs.replace(
        order("receipt", ("FEW", 2, 99000)), contact=Contact(name="Анна", phone="+79001234567")
    )
    # No phone and no email: YooKassa refuses the receipt (400), for good.
    await place(js, with_phone, order("no-contact", ("FEW", 1, 99000)))
    await wait_until(lambda: "payment_pending" in money.kinds("receipt"), what="pending")
    assert fake.payments[_payment_id(money, "receipt")]["receipt_registration"] == "pending"
    await wait_until(lambda: "payment_failed" in money.kinds("no-contact"), what="failed")
    (failed,) = money.of("no-contact", "payment_failed")
    assert failed.reason == "invalid_request"
    await wait_until(lambda: "released" in facts.kinds("no-contact"), what="stock released")


async def test_yookassa_cancels_with_its_reason_and_retries_on_429_and_202(
    nats_url: str,
    js: JetStreamContext,
    facts: Facts,
    money: Facts,
    services: Start,
    catalog_file: Path,
    fake: FakeYooKassa,
) -> None:
    fake.fail("429", count=2, paths="POST /payments")
    fake.fail("202", count=2, paths="POST /payments")
    await _start(services, nats_url, catalog_file, js, fake)
    await place(js, order("gone", ("FEW", 1, 99000)))
    await wait_until(lambda: "payment_pending" in money.kinds("gone"), what="pending")
    assert fake.created == 1
    statuses = [r[3] for r in fake.requests if r[:2] == ("POST", "/payments")]
    assert statuses == [429, 429, 202, 202, 200]
    payment_id = _payment_id(money, "gone")
    fake.set_status(payment_id, "canceled")  # YooKassa gave up waiting for the customer
    assert await fake.notify(payment_id) == [200]
    await wait_until(lambda: "released" in facts.kinds("gone"), what="stock released")
    (canceled,) = money.of("gone", "payment_canceled")
    assert (canceled.party, canceled.reason) == ("yoo_money", "expired_on_confirmation")
    (released,) = facts.of("gone", "released")
    assert released.reason == "payment_canceled"


async def test_a_poison_fact_is_dead_lettered_and_told_while_the_rest_go_on(
    nats_url: str, js: JetStreamContext, money: Facts, services: Start, fake: FakeYooKassa
) -> None:
    """A fact the handler cannot take (here the order's record in KV is unreadable, say written
    by hand) is retried MAX_DELIVERIES times, then kept on DEADLETTER and told to the admins;
    the other orders are served meanwhile."""
    await _start(services, nats_url, None, js, fake, max_deliveries=2)
    records = await js.key_value(subjects.PAYMENTS_RECORDS_BUCKET)
    await records.put("poison", b"{not a record")
    now = datetime.now(UTC)
    lines = (ReservedLine("FEW", 1, 99000),)
    for order_id in ("poison", "fine"):
        reserved = Reserved(order_id, lines, 99000, now + timedelta(minutes=15), now)
        await bus.publish(js, subjects.inventory_fact("reserved", order_id), reserved, order_id)
    await wait_until(lambda: "payment_pending" in money.kinds("fine"), what="the other order")

    async def dead_lettered() -> bool:
        return (await js.stream_info(subjects.DEADLETTER)).state.messages > 0

    await wait_until(dead_lettered, timeout=30, what="the poison dead-lettered")
    msg = await js.get_last_msg(
        subjects.DEADLETTER, "deadletter.payments.inventory.reserved.poison"
    )
    reason = (msg.headers or {})["Shop-Dead-Reason"]
    assert reason.endswith("(after 2 deliveries)")
    alert = await js.get_last_msg(subjects.ALERTS, subjects.alert_dead_letter("payments"))
    told = msgspec.json.decode(alert.data or b"", type=DeadLettered)
    assert told.subject == "inventory.reserved.poison" and told.reason == reason
    assert "payment_pending" not in money.kinds("poison")


# After paid: a cancellation or a return moves the money and the stock together ----------------
def _lifecycle(facts: Facts, money: Facts, order_id: str) -> lifecycle.Order:
    told = [
        f for f in money.by_order[order_id] if not isinstance(f, RefundRequested | CashReceived)
    ]
    state = lifecycle.fold([*facts.by_order[order_id], *told])
    assert state is not None
    return state


@pytest.mark.parametrize("held", [False, True], ids=["captured", "held"])
async def test_a_paid_order_cancelled_by_the_shop_gives_the_money_and_the_stock_back(
    held: bool,
    nats_url: str,
    js: JetStreamContext,
    facts: Facts,
    money: Facts,
    services: Start,
    catalog_file: Path,
    fake: FakeYooKassa,
) -> None:
    if held:  # YooKassa does not capture yet: the shop cancels while the money is only held
        fake.fail("500", paths="POST /payments/*/capture")
    await _start(services, nats_url, catalog_file, js, fake, payments_capture="two_stage")
    payment_id = await _three_sold(js, facts, money, fake, "cx")
    if not held:
        await wait_until(lambda: "payment_succeeded" in money.kinds("cx"), what="captured")

    cancelled = await fulfilment.take(
        js, _lifecycle(facts, money, "cx"), "cancelled", 42, datetime.now(UTC)
    )
    assert isinstance(cancelled, OrderFulfilment)
    gone = "payment_canceled" if held else "payment_refunded"
    await wait_until(lambda: gone in money.kinds("cx"), what=gone)
    await wait_until(lambda: _stock_is(js, "FEW", 50, 0), what="all three back on hand")
    assert fake.payments[payment_id]["status"] == ("canceled" if held else "succeeded")
    assert sum(float(r["amount"]["value"]) for r in fake.refunds.values()) == (0 if held else 2970)
    fake.clear_failures()
    state = lifecycle.evolve(_lifecycle(facts, money, "cx"), cancelled)
    assert state.status == lifecycle.Status.CANCELLED and not state.kept
    if held:
        assert fake.captures[payment_id] == 0


async def test_a_return_written_off_refunds_the_money_and_keeps_the_stock_as_it_is(
    nats_url: str,
    js: JetStreamContext,
    facts: Facts,
    money: Facts,
    services: Start,
    catalog_file: Path,
    fake: FakeYooKassa,
) -> None:
    await _start(services, nats_url, catalog_file, js, fake, payments_capture="one_stage")
    await _three_sold(js, facts, money, fake, "wo")
    lines = (OrderLine("FEW", 1, 99000),)
    for count, (request_id, restock) in enumerate((("broken", False), ("back", True)), start=1):
        request = RefundRequested(request_id, "wo", "returned", lines, restock=restock)
        await bus.publish(
            js,
            subjects.payment_fact(subjects.PaymentKind.REFUND_REQUESTED, "wo"),
            request,
            msg_id=request_id,
        )
        await wait_until(
            lambda n=count: len(money.of("wo", "payment_refunded")) == n,  # type: ignore[misc]
            what="refund",
        )
    written_off, returned = money.of("wo", "payment_refunded")
    assert (written_off.restock, returned.restock) == (False, True)
    await wait_until(lambda: _stock_is(js, "FEW", 48, 0), what="only the good one back")
    assert _lifecycle(facts, money, "wo").status == lifecycle.Status.PARTLY_REFUNDED


async def test_the_settlement_receipt_on_delivery_is_made_once_across_a_kill(
    nats_url: str,
    js: JetStreamContext,
    facts: Facts,
    money: Facts,
    services: Start,
    catalog_file: Path,
    fake: FakeYooKassa,
) -> None:
    """54-FZ with full prepayment: a second receipt when the goods are handed over, settling the
    prepayment for what was not returned; one, whatever YooKassa and the process go through."""
    shop = await _start(
        services, nats_url, catalog_file, js, fake, receipts="true", payments_capture="one_stage"
    )
    with_phone = msgspec.structs.replace(
        order("st", ("FEW", 3, 99000)), contact=Contact(name="Анна", phone="+79001234567")
    )
    await place(js, with_phone)
    await wait_until(lambda: "payment_pending" in money.kinds("st"), what="pending")
    payment_id = _payment_id(money, "st")
    await fake.pay(payment_id)
    await wait_until(lambda: _stock_is(js, "FEW", 47, 0), what="three sold")
    one_back = RefundRequested("st-r", "st", "returned", (OrderLine("FEW", 1, 99000),))
    subject = subjects.payment_fact(subjects.PaymentKind.REFUND_REQUESTED, "st")
    await bus.publish(js, subject, one_back, msg_id="st-r")
    await wait_until(lambda: "payment_refunded" in money.kinds("st"), what="one returned")

    fake.fail("500", paths="POST /receipts")  # YooKassa cannot make receipts for a while
    state = _lifecycle(facts, money, "st")
    delivered = await fulfilment.take(js, state, "delivered", 42, datetime.now(UTC))
    assert isinstance(delivered, OrderFulfilment)
    await wait_until(
        lambda: any(r[1] == "/receipts" for r in fake.requests), what="a receipt tried"
    )
    shop.payments.kill()
    fake.clear_failures()
    shop.payments.start()
    await wait_until(lambda: len(fake.receipts) == 1, timeout=30, what="the settlement receipt")
    (receipt,) = fake.receipts.values()
    assert receipt["payment_id"] == payment_id and receipt["type"] == "payment"
    assert receipt["settlements"] == [
        {"type": "prepayment", "amount": {"value": "1980.00", "currency": "RUB"}}
    ]
    assert [(float(i["quantity"]), i["payment_mode"]) for i in receipt["items"]] == [
        (2, "full_payment")
    ]
    keys = {r[2] for r in fake.requests if r[1] == "/receipts"}
    assert len(keys) == 1, "always with the same Idempotence-Key"
    # Told again (a redelivery, a second desk): no second receipt.
    await bus.publish(js, subjects.order_fulfilment("st"), delivered, msg_id="again")

    async def handled() -> bool:
        info = await js.consumer_info(subjects.ORDERS, subjects.PAYMENTS_FULFILMENT_CONSUMER)
        return bool(info.num_pending == info.num_ack_pending == 0 and info.delivered.stream_seq)

    await wait_until(handled, what="the fact handled again")
    assert len(fake.receipts) == 1


COURIER_CATALOG = (
    CATALOG
    + """
delivery:
  methods:
    - {id: courier-msk, title: Курьер по Москве, kind: courier, price: 300, cities: [Москва]}
"""
)


def _kopecks(items: list[dict[str, Any]]) -> int:
    return sum(int(float(i["quantity"])) * kopecks(i["amount"]["value"]) for i in items)


async def test_a_courier_delivery_is_its_own_line_in_the_receipts_and_goes_back_on_a_cancel(
    nats_url: str,
    js: JetStreamContext,
    facts: Facts,
    money: Facts,
    services: Start,
    tmp_path: Path,
    fake: FakeYooKassa,
) -> None:
    """Two of FEW brought by a courier for 300 ₽: YooKassa takes 2280 ₽ only with receipt items
    that add up to it, so the delivery is a line of its own (a service), at payment, when the
    goods are handed over, and in the refund of an order cancelled once paid."""
    catalog_file = tmp_path / "delivery.yaml"
    catalog_file.write_text(COURIER_CATALOG)
    await _start(
        services, nats_url, catalog_file, js, fake, receipts="true", payments_capture="one_stage"
    )
    couriered = msgspec.structs.replace(
        order("courier", ("FEW", 2, 99000)),
        contact=Contact(name="Анна", phone="+79001234567", address="Москва, Тверская, 1"),
        delivery=DeliveryChoice(method_id="courier-msk", price=30000, city="Москва"),
        total=198000 + 30000,
    )
    await place(js, couriered)
    await wait_until(lambda: "payment_pending" in money.kinds("courier"), what="pending")
    payment_id = _payment_id(money, "courier")
    assert fake.payments[payment_id]["amount"] == {"value": "2280.00", "currency": "RUB"}
    items = fake.payment_receipts[payment_id]["items"]
    assert [(i["description"], i["payment_subject"], i["payment_mode"]) for i in items] == [
        ("A few", "commodity", "full_prepayment"),
        ("Доставка: Курьер по Москве", "service", "full_prepayment"),
    ]
    assert (float(items[1]["quantity"]), items[1]["amount"]["value"]) == (1, "300.00")
    assert _kopecks(items) == 228000

    await fake.pay(payment_id)
    await wait_until(lambda: "committed" in facts.kinds("courier"), what="committed")
    state = _lifecycle(facts, money, "courier")
    assert (state.charge, state.goods, state.delivery) == (228000, 198000, couriered.delivery)
    await fulfilment.take(js, state, "delivered", 42, datetime.now(UTC))
    await wait_until(lambda: len(fake.receipts) == 1, what="the settlement receipt")
    (settled,) = fake.receipts.values()
    assert [(i["description"], i["payment_mode"]) for i in settled["items"]] == [
        ("A few", "full_payment"),
        ("Доставка: Курьер по Москве", "full_payment"),
    ]
    assert settled["settlements"] == [
        {"type": "prepayment", "amount": {"value": "2280.00", "currency": "RUB"}}
    ]

    # Another one cancelled by the shop once paid: all of it back, the delivery with its line
    # in the refund's receipt (without it, the fake refuses the refund as YooKassa would).
    await place(js, msgspec.structs.replace(couriered, order_id="courier-cx"))
    await wait_until(lambda: "payment_pending" in money.kinds("courier-cx"), what="pending")
    await fake.pay(_payment_id(money, "courier-cx"))
    await wait_until(lambda: "committed" in facts.kinds("courier-cx"), what="committed")
    paid = _lifecycle(facts, money, "courier-cx")
    await fulfilment.take(js, paid, "cancelled", 42, datetime.now(UTC))
    await wait_until(lambda: "payment_refunded" in money.kinds("courier-cx"), what="refunded")
    (refunded,) = money.of("courier-cx", "payment_refunded")
    assert (refunded.amount, refunded.delivery) == (228000, couriered.delivery)
    (made,) = fake.refunds.values()
    assert (made["amount"]["value"], made["receipt_registration"]) == ("2280.00", "succeeded")


# The way to pay: SBP is charged at once, an order paid on receipt has no YooKassa payment -------
def _paid_by(method: str, placed: OrderPlaced) -> OrderPlaced:
    return msgspec.structs.replace(placed, payment=method)


def _no_capture(fake: FakeYooKassa) -> bool:
    return not [r for r in fake.requests if r[0] == "POST" and r[1].endswith("/capture")]


async def test_an_sbp_payment_is_charged_at_once_where_card_payments_are_held(
    nats_url: str,
    js: JetStreamContext,
    facts: Facts,
    money: Facts,
    services: Start,
    catalog_file: Path,
    fake: FakeYooKassa,
) -> None:
    """YooKassa holds no SBP payment (the fake refuses one with capture false, as it does): in
    a shop that holds card payments, the SBP one is asked for SBP, charged when paid, and the
    inventory commits on that, with no capture."""
    await _start(services, nats_url, catalog_file, js, fake, payments_capture="two_stage")
    await place(js, _paid_by("sbp", order("sbp", ("FEW", 2, 99000))))
    await wait_until(lambda: "payment_pending" in money.kinds("sbp"), what="pending")
    payment_id = _payment_id(money, "sbp")
    created = fake.payments[payment_id]
    assert created["payment_method"]["type"] == "sbp", "asked for SBP (payment_method_data)"
    assert created["amount"] == {"value": "1980.00", "currency": "RUB"}

    await fake.pay(payment_id)
    await wait_until(lambda: "committed" in facts.kinds("sbp"), what="committed")
    # Created with capture true (the fake refuses SBP otherwise), so paid is charged: no hold.
    assert money.kinds("sbp") == ["payment_pending", "payment_succeeded"], "never only held"
    assert fake.payments[payment_id]["status"] == "succeeded"
    assert _no_capture(fake)
    await wait_until(lambda: _stock_is(js, "FEW", 48, 0), what="two sold")
    state = _lifecycle(facts, money, "sbp")
    assert state.status == lifecycle.Status.PAID and state.kept


async def test_an_sbp_payment_for_stock_sold_meanwhile_is_refunded_in_full(
    nats_url: str,
    js: JetStreamContext,
    facts: Facts,
    money: Facts,
    services: Start,
    catalog_file: Path,
    fake: FakeYooKassa,
) -> None:
    """The SBP customer pays after the reservation ended and another took the stock: the
    money was taken at once, so it is refunded (a held card payment would be cancelled)."""
    await _start(
        services, nats_url, catalog_file, js, fake, payments_capture="two_stage", reservation_ttl=2
    )
    await place(js, _paid_by("sbp", order("late-sbp", ("LAST", 10, 10000))))
    await wait_until(lambda: "payment_pending" in money.kinds("late-sbp"), what="pending")
    await wait_until(lambda: "released" in facts.kinds("late-sbp"), what="the reservation ended")
    await place(js, order("prompt", ("LAST", 10, 10000)))
    await wait_until(lambda: "payment_pending" in money.kinds("prompt"), what="prompt pending")
    await fake.pay(_payment_id(money, "prompt"))
    await wait_until(lambda: "committed" in facts.kinds("prompt"), what="prompt committed")

    late = _payment_id(money, "late-sbp")
    await fake.pay(late)
    await wait_until(lambda: "commit_failed" in facts.kinds("late-sbp"), what="commit refused")
    await wait_until(lambda: "payment_refunded" in money.kinds("late-sbp"), what="refunded")
    (refunded,) = money.of("late-sbp", "payment_refunded")
    assert (refunded.amount, refunded.lines, refunded.payment_id) == (100000, (), late)
    (made,) = fake.refunds.values()
    assert (made["payment_id"], made["amount"]["value"]) == (late, "1000.00")
    assert fake.payments[late]["refunded_amount"]["value"] == "1000.00"
    await wait_until(lambda: _stock_is(js, "LAST", 0, 0), what="sold once, to the prompt one")
    # Money taken <=> stock committed: the late order keeps neither, the prompt one both.
    assert not _lifecycle(facts, money, "late-sbp").kept
    assert _lifecycle(facts, money, "late-sbp").status == lifecycle.Status.CANCELLED
    assert _lifecycle(facts, money, "prompt").kept


async def _cash_record(js: JetStreamContext, order_id: str) -> dict[str, Any] | None:
    records = await js.key_value(subjects.PAYMENTS_RECORDS_BUCKET)
    try:
        entry = await records.get(order_id)
    except nats.js.errors.KeyNotFoundError:
        return None
    record: dict[str, Any] = msgspec.json.decode(entry.value or b"")
    return record


async def test_an_order_paid_on_receipt_is_held_for_cash_hold_and_committed_when_paid(
    nats_url: str,
    js: JetStreamContext,
    facts: Facts,
    money: Facts,
    services: Start,
    catalog_file: Path,
    fake: FakeYooKassa,
) -> None:
    """No YooKassa payment: the goods are held for CASH_HOLD (not RESERVATION_TTL) until the
    desk says the customer paid; said twice, the money is told once, and the stock committed."""
    await _start(services, nats_url, catalog_file, js, fake, reservation_ttl=2, cash_hold=3600)
    placed_at = datetime.now(UTC)
    await place(js, _paid_by("cash", order("cash", ("FEW", 2, 99000))))
    await wait_until(lambda: "reserved" in facts.kinds("cash"), what="reserved")
    (reserved,) = facts.of("cash", "reserved")
    held = (reserved.expires_at - placed_at).total_seconds()
    assert 3590 < held < 3610, held

    async def recorded() -> bool:
        return await _cash_record(js, "cash") is not None

    await wait_until(recorded, what="the payments record")
    record = await _cash_record(js, "cash")
    assert record is not None and (record["status"], record["method"]) == ("due", "cash")
    assert fake.created == 0 and money.kinds("cash") == [], "no YooKassa payment, no Pay button"

    subject = subjects.payment_fact(subjects.PaymentKind.CASH_RECEIVED, "cash")
    for n in range(2):  # two admins press "paid" (or one twice)
        await bus.publish(js, subject, CashReceived("cash", 42, datetime.now(UTC)), f"cash-{n}")
    await wait_until(lambda: "committed" in facts.kinds("cash"), what="committed")

    async def both_handled() -> bool:
        info = await js.consumer_info(subjects.PAYMENTS, subjects.PAYMENTS_CASH_CONSUMER)
        return bool(info.num_pending == info.num_ack_pending == 0) and (
            (info.delivered.consumer_seq or 0) >= 2
        )

    await wait_until(both_handled, what="both commands handled")
    (succeeded,) = money.of("cash", "payment_succeeded")
    assert (succeeded.payment_id, succeeded.amount) == ("cash-cash", 198000)
    (committed,) = facts.of("cash", "committed")
    assert committed.payment_id == "cash-cash"
    await wait_until(lambda: _stock_is(js, "FEW", 48, 0), what="two sold")
    assert fake.created == 0 and fake.requests == [], "YooKassa never heard of it"
    assert "released" not in facts.kinds("cash")


async def test_an_order_paid_on_receipt_nobody_came_for_is_released_at_the_holds_end(
    nats_url: str,
    js: JetStreamContext,
    facts: Facts,
    money: Facts,
    services: Start,
    catalog_file: Path,
    fake: FakeYooKassa,
) -> None:
    await _start(services, nats_url, catalog_file, js, fake, cash_hold=2)
    await place(js, _paid_by("cash", order("walked", ("FEW", 3, 99000))))
    await wait_until(lambda: "reserved" in facts.kinds("walked"), what="reserved")
    await wait_until(lambda: _stock_is(js, "FEW", 50, 3), what="three held")
    await wait_until(lambda: "released" in facts.kinds("walked"), what="the hold's end")
    (released,) = facts.of("walked", "released")
    assert released.reason == "expired"
    await wait_until(lambda: _stock_is(js, "FEW", 50, 0), what="all back")
    record = await _cash_record(js, "walked")
    assert record is not None and record["status"] == "due", "nothing paid"
    assert money.kinds("walked") == [] and fake.created == 0


async def test_cash_paid_after_the_hold_for_stock_sold_meanwhile_goes_back_over_the_counter(
    nats_url: str,
    js: JetStreamContext,
    facts: Facts,
    money: Facts,
    services: Start,
    catalog_file: Path,
    fake: FakeYooKassa,
) -> None:
    """The desk takes the money after the hold ended and another customer bought the stock: the
    inventory refuses it, and the money is given back (told, with no YooKassa call)."""
    await _start(services, nats_url, catalog_file, js, fake, cash_hold=2)
    await place(js, _paid_by("cash", order("late-cash", ("LAST", 10, 10000))))
    await wait_until(lambda: "released" in facts.kinds("late-cash"), what="the hold's end")
    await place(js, order("prompt", ("LAST", 10, 10000)))
    await wait_until(lambda: "payment_pending" in money.kinds("prompt"), what="prompt pending")
    await fake.pay(_payment_id(money, "prompt"))
    await wait_until(lambda: "committed" in facts.kinds("prompt"), what="prompt committed")

    subject = subjects.payment_fact(subjects.PaymentKind.CASH_RECEIVED, "late-cash")
    await bus.publish(js, subject, CashReceived("late-cash", 42, datetime.now(UTC)), "late")
    await wait_until(lambda: "commit_failed" in facts.kinds("late-cash"), what="refused")
    await wait_until(lambda: "payment_refunded" in money.kinds("late-cash"), what="given back")
    (refunded,) = money.of("late-cash", "payment_refunded")
    assert (refunded.payment_id, refunded.amount) == ("cash-late-cash", 100000)
    assert refunded.refund_id == "cash-stock-gone-late-cash"
    assert fake.created == 1, "the prompt one's payment only"
    assert not fake.refunds and not [r for r in fake.requests if r[1].startswith("/refunds")]
    await wait_until(lambda: _stock_is(js, "LAST", 0, 0), what="sold once, to the prompt one")
    assert not _lifecycle(facts, money, "late-cash").kept


async def test_cash_marked_paid_before_payments_took_in_the_reservation_is_not_lost(
    nats_url: str,
    nc: Client,
    js: JetStreamContext,
    services: Start,
    catalog_file: Path,
    facts: Facts,
    fake: FakeYooKassa,
) -> None:
    """The desk saw the order held (the bot took in its reservation) while payments was behind
    on the INVENTORY stream (restarted, or an election): the desk's CashReceived finds no record
    yet. Payments takes the reservation in from the stream then, and the money is told. (Found
    by the cluster chaos test: the command was refused and the cash never reached the stock.)"""
    services("inventory", nats_url, catalog_file=catalog_file, cash_hold=3600)
    await wait_until(lambda: inventory_ready(js), what="inventory ready")
    await place(js, _paid_by("cash", order("ahead", ("FEW", 1, 99000))))
    await wait_until(lambda: "reserved" in facts.kinds("ahead"), what="reserved")
    catalog = await CatalogView.open(nc, js)
    records = await Documents.open(js, subjects.PAYMENTS_RECORDS_BUCKET, PaymentRecord)
    settings = load({"NATS_URL": nats_url})
    api = YooKassa(fake.shop_id, fake.secret_key, fake.api_url)
    payments = Payments(js, Records(records), catalog, api, settings)  # no consumer running
    try:
        await payments.on_cash_received(CashReceived("ahead", 42, datetime.now(UTC)))
    finally:
        await catalog.close()
    await wait_until(lambda: "committed" in facts.kinds("ahead"), what="the stock committed")
    (committed,) = facts.of("ahead", "committed")
    assert committed.payment_id == "cash-ahead" and fake.created == 0
