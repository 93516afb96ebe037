"""The YooKassa fake (and so the sandbox provider) driven by the real, unmodified yookassa SDK."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from yookassa import Configuration, Payment, Refund
from yookassa.domain.exceptions import (
    BadRequestError,
    InternalServerError,
    NotFoundError,
    ResponseProcessingError,
    TooManyRequestsError,
    UnauthorizedError,
)
from yookassa.domain.notification import RefundWebhookNotification, WebhookNotificationFactory

from services.payments.sandbox import SandboxYooKassa
from tests.fakes.yookassa import FakeYooKassa
from tests.harness import wait_until

RETURN_URL = "https://shop.example/return?order=1"


def params(value: str = "100.00", *, capture: bool = False, **extra: Any) -> dict[str, Any]:
    return {
        "amount": {"value": value, "currency": "RUB"},
        "capture": capture,
        "confirmation": {"type": "redirect", "return_url": RETURN_URL},
        "description": "Order 1",
        "metadata": {"order_id": "o-1"},
        **extra,
    }


def receipt(*prices: str) -> dict[str, Any]:
    items = [
        {
            "description": f"item {n}",
            "quantity": "1",
            "amount": {"value": price, "currency": "RUB"},
            "vat_code": 1,
            "payment_subject": "commodity",
            "payment_mode": "full_payment",
        }
        for n, price in enumerate(prices)
    ]
    return {"customer": {"phone": "79000000000"}, "items": items}


def refund(payment_id: str, value: str) -> dict[str, Any]:
    return {"payment_id": payment_id, "amount": {"value": value, "currency": "RUB"}}


def basic_auth(fake: FakeYooKassa) -> dict[str, str]:
    return {"Authorization": aiohttp.encode_basic_auth(fake.shop_id, fake.secret_key)}


async def sdk(fn: Any, *args: Any) -> Any:
    return await asyncio.to_thread(fn, *args)


@pytest.fixture
async def fake() -> AsyncIterator[FakeYooKassa]:
    fake = FakeYooKassa()
    await fake.start()
    Configuration.configure(fake.shop_id, fake.secret_key, api_url=fake.api_url)
    yield fake
    await fake.stop()


class Receiver:
    """A webhook endpoint on a free local port that keeps what it is sent."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        async def hook(request: web.Request) -> web.Response:
            self.bodies.append(await request.json())
            return web.Response(status=200)

        app = web.Application()
        app.router.add_post("/hook", hook)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}/hook"

    async def stop(self) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    def events(self) -> list[str]:
        return [body["event"] for body in self.bodies]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    await receiver.start()
    yield receiver
    await receiver.stop()


async def test_create_is_idempotent(fake: FakeYooKassa) -> None:
    key = str(uuid.uuid4())
    first = await sdk(Payment.create, params(), key)
    again = await sdk(Payment.create, params(), key)
    assert first.id == again.id
    assert fake.created == 1
    assert first.status == "pending" and first.paid is False and first.test is True
    assert first.confirmation.confirmation_url == fake.checkout_url(first.id)
    assert str(first.amount.value) == "100.00" and first.metadata["order_id"] == "o-1"
    with pytest.raises(BadRequestError) as refused:
        await sdk(Payment.create, params("99.00"), key)
    assert refused.value.content["code"] == "invalid_request"
    assert "Idempotence key duplicated" in refused.value.content["description"]
    assert fake.created == 1
    assert [r[2] for r in fake.requests] == [key, key, key]
    assert [r[3] for r in fake.requests] == [200, 200, 400]
    with pytest.raises(NotFoundError):
        await sdk(Payment.find_one, str(uuid.uuid4()))


async def test_missing_idempotence_key_is_refused(fake: FakeYooKassa) -> None:
    async with (
        aiohttp.ClientSession(headers=basic_auth(fake)) as session,
        session.post(f"{fake.api_url}/payments", json=params()) as response,
    ):
        assert response.status == 400
        assert (await response.json())["code"] == "invalid_request"
    assert fake.created == 0


async def test_wrong_credentials_are_refused(fake: FakeYooKassa) -> None:
    Configuration.configure(fake.shop_id, "not-the-secret", api_url=fake.api_url)
    with pytest.raises(UnauthorizedError) as refused:
        await sdk(Payment.create, params(), str(uuid.uuid4()))
    assert refused.value.content["code"] == "invalid_credentials"
    assert fake.created == 0


async def test_receipt_must_add_up(fake: FakeYooKassa) -> None:
    with pytest.raises(BadRequestError) as refused:
        await sdk(Payment.create, params("100.00", receipt=receipt("60.00", "30.00")))
    assert refused.value.content["parameter"] == "receipt.items"
    payment = await sdk(Payment.create, params("100.00", receipt=receipt("60.00", "40.00")))
    assert payment.receipt_registration == "pending"
    assert fake.created == 1
    (kept,) = fake.payment_receipts.values()  # the one it took, as sent, for tests to read
    assert [item["amount"]["value"] for item in kept["items"]] == ["60.00", "40.00"]
    assert list(fake.payment_receipts) == [payment.id]


async def test_pay_capture_refund(fake: FakeYooKassa) -> None:
    payment = await sdk(Payment.create, params("100.00"))
    await fake.pay(payment.id)
    found = await sdk(Payment.find_one, payment.id)
    assert found.status == "waiting_for_capture" and found.paid is True and found.expires_at
    captured = await sdk(Payment.capture, payment.id)
    assert captured.status == "succeeded" and captured.refundable is True and captured.captured_at
    first = await sdk(Refund.create, refund(payment.id, "30.00"))
    second = await sdk(Refund.create, refund(payment.id, "50.00"))
    assert first.status == second.status == "succeeded" and first.id != second.id
    assert (await sdk(Refund.find_one, first.id)).payment_id == payment.id
    assert str((await sdk(Payment.find_one, payment.id)).refunded_amount.value) == "80.00"
    with pytest.raises(BadRequestError):
        await sdk(Refund.create, refund(payment.id, "20.01"))
    last = await sdk(Refund.create, refund(payment.id, "20.00"))
    assert last.status == "succeeded"
    assert (await sdk(Payment.find_one, payment.id)).refundable is False


async def test_auto_capture_payment_succeeds_on_pay(fake: FakeYooKassa) -> None:
    payment = await sdk(Payment.create, params(capture=True))
    await fake.pay(payment.id)
    assert (await sdk(Payment.find_one, payment.id)).status == "succeeded"
    with pytest.raises(BadRequestError):
        await sdk(Payment.capture, payment.id)


async def test_cancel(fake: FakeYooKassa) -> None:
    payment = await sdk(Payment.create, params())
    with pytest.raises(BadRequestError):
        await sdk(Payment.cancel, payment.id)
    await fake.pay(payment.id)
    canceled = await sdk(Payment.cancel, payment.id)
    assert canceled.status == "canceled"
    assert canceled.cancellation_details.party == "merchant"
    assert canceled.cancellation_details.reason == "canceled_by_merchant"
    assert (await sdk(Payment.cancel, payment.id)).status == "canceled"
    with pytest.raises(BadRequestError):
        await sdk(Payment.capture, payment.id)


async def test_set_status_forces_a_state(fake: FakeYooKassa) -> None:
    payment = await sdk(Payment.create, params())
    fake.set_status(payment.id, "canceled")
    found = await sdk(Payment.find_one, payment.id)
    assert found.status == "canceled"
    assert found.cancellation_details.party == "yoo_money"
    assert found.cancellation_details.reason == "expired_on_confirmation"


@pytest.mark.parametrize(
    ("mode", "error"),
    [("500", InternalServerError), ("429", TooManyRequestsError), ("202", ResponseProcessingError)],
)
async def test_injected_failures_do_nothing(
    fake: FakeYooKassa, mode: str, error: type[Exception]
) -> None:
    fake.fail(mode, count=2, paths="POST /payments")
    key = str(uuid.uuid4())
    for _ in range(2):
        with pytest.raises(error):
            await sdk(Payment.create, params(), key)
    assert fake.created == 0 and not fake.payments
    payment = await sdk(Payment.create, params(), key)
    assert (await sdk(Payment.create, params(), key)).id == payment.id
    assert fake.created == 1
    statuses = [status for method, path, _, status in fake.requests]
    assert statuses == [int(mode), int(mode), 200, 200]


async def test_failure_filter_and_window(fake: FakeYooKassa) -> None:
    payment = await sdk(Payment.create, params())
    fake.fail("500", seconds=60, paths="/payments/*")  # reads and actions, not creation
    for _ in range(3):
        with pytest.raises(InternalServerError):
            await sdk(Payment.find_one, payment.id)
    await sdk(Payment.create, params())
    assert fake.created == 2
    fake.clear_failures()
    assert (await sdk(Payment.find_one, payment.id)).id == payment.id
    fake.fail("429", seconds=0.2)
    with pytest.raises(TooManyRequestsError):
        await sdk(Payment.find_one, payment.id)

    async def answered() -> bool:
        try:
            await sdk(Payment.find_one, payment.id)
        except TooManyRequestsError:
            return False
        return True

    await wait_until(answered, timeout=5, what="the failure window to pass")


async def test_timeout_holds_and_performs_nothing(fake: FakeYooKassa) -> None:
    fake.fail("timeout", count=1)
    key = str(uuid.uuid4())
    headers = {"Idempotence-Key": key, **basic_auth(fake)}
    async with aiohttp.ClientSession() as session:
        with pytest.raises(TimeoutError):
            await session.post(
                f"{fake.api_url}/payments",
                json=params(),
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=0.3),
            )
    assert fake.created == 0
    assert fake.requests == [("POST", "/payments", key, 0)]
    payment = await sdk(Payment.create, params(), key)
    assert payment.status == "pending" and fake.created == 1


async def test_after_create_runs_before_the_answer(fake: FakeYooKassa) -> None:
    seen: list[str] = []
    gate = asyncio.Event()

    async def hook(payment: dict[str, Any]) -> None:
        seen.append(payment["id"])
        await gate.wait()

    fake.after_create = hook
    call = asyncio.ensure_future(sdk(Payment.create, params()))
    await wait_until(lambda: bool(seen), what="the after_create hook")
    assert not call.done()
    assert seen[0] in fake.payments
    gate.set()
    assert (await call).id == seen[0]


async def test_notifications(fake: FakeYooKassa, receiver: Receiver) -> None:
    fake.webhook_url = receiver.url
    payment = await sdk(Payment.create, params())
    await fake.pay(payment.id)
    assert receiver.events() == ["payment.waiting_for_capture"]
    notification = WebhookNotificationFactory().create(receiver.bodies[0])
    assert notification.object.id == payment.id
    assert notification.object.status == "waiting_for_capture"
    assert await fake.notify(payment.id, times=5) == [200] * 5
    assert len(receiver.bodies) == 6
    await sdk(Payment.capture, payment.id)
    returned = await sdk(Refund.create, refund(payment.id, "100.00"))
    await wait_until(lambda: "refund.succeeded" in receiver.events(), what="refund notification")
    parsed = WebhookNotificationFactory().create(receiver.bodies[-1])
    assert isinstance(parsed, RefundWebhookNotification) and parsed.object.id == returned.id
    declined = await sdk(Payment.create, params())
    await fake.decline(declined.id)
    assert receiver.bodies[-1]["event"] == "payment.canceled"
    fake.auto_notify = False
    quiet = await sdk(Payment.create, params())
    await fake.pay(quiet.id)
    assert receiver.bodies[-1]["object"]["id"] == declined.id
    await receiver.stop()
    await receiver.start()  # a new port: the old webhook_url is now unreachable
    assert await fake.notify(quiet.id) == [0]


async def test_checkout_page(fake: FakeYooKassa) -> None:
    payment = await sdk(Payment.create, params(description="<b>Tea & cake</b>"))
    other = await sdk(Payment.create, params())
    async with aiohttp.ClientSession() as session:
        async with session.get(payment.confirmation.confirmation_url) as response:
            assert response.status == 200
            page = await response.text()
        assert "TEST" in page and "100.00" in page
        assert "&lt;b&gt;Tea &amp; cake&lt;/b&gt;" in page and "<b>Tea" not in page
        pay = f"{fake.checkout_url(payment.id)}/pay"
        for _ in range(2):  # a second press changes nothing
            async with session.post(pay, allow_redirects=False) as response:
                assert response.status == 303
                assert response.headers["Location"] == RETURN_URL
            assert fake.payments[payment.id]["status"] == "waiting_for_capture"
        decline = f"{fake.checkout_url(other.id)}/decline"
        async with session.post(decline, allow_redirects=False) as response:
            assert response.status == 303
        details = fake.payments[other.id]["cancellation_details"]
        assert details == {"party": "payment_network", "reason": "general_decline"}
        async with session.get(fake.checkout_url(payment.id)) as response:
            assert "waiting_for_capture" in await response.text()
    assert [path for _, path, _, _ in fake.requests] == ["/payments", "/payments"]


async def test_state_survives_a_restart(tmp_path: Path) -> None:
    store = tmp_path / "sandbox" / "payments.json"
    first = FakeYooKassa(store_path=store)
    await first.start()
    Configuration.configure(first.shop_id, first.secret_key, api_url=first.api_url)
    key = str(uuid.uuid4())
    payment = await sdk(Payment.create, params(), key)
    await first.pay(payment.id)
    await first.stop()

    reborn = SandboxYooKassa(
        shop_id="s", secret_key="k", public_url="http://x", webhook_url=None, store_path=store
    )
    assert reborn.payments[payment.id]["status"] == "waiting_for_capture"

    second = FakeYooKassa(store_path=store)
    await second.start()
    try:
        Configuration.configure(second.shop_id, second.secret_key, api_url=second.api_url)
        assert (await sdk(Payment.create, params(), key)).id == payment.id
        assert second.created == 0
        assert (await sdk(Payment.find_one, payment.id)).status == "waiting_for_capture"
    finally:
        await second.stop()
