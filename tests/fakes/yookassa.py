"""FakeYooKassa: the sandbox YooKassa on its own local server, with failure injection and hooks.

The API logic is services.payments.sandbox's; this adds what tests need around it:

* ``fail(mode, count=, seconds=, paths=)`` makes matching API requests fail *before* they reach
  the sandbox, so nothing is performed and no idempotent answer is stored (a retry with the same
  Idempotence-Key then performs the operation exactly once). Modes: ``"500"``, ``"429"``,
  ``"202"`` (YooKassa's "processing" answer) and ``"timeout"`` (the request is held unanswered
  for ``hold_seconds`` or until ``stop()``, then answered 500 if anyone is still listening).
  ``count`` limits the rule to the next N matching requests, ``seconds`` to a time window from
  now; with both, whichever runs out first; with neither, until ``clear_failures()``. ``paths``
  is an fnmatch pattern on ``"METHOD /path"``, the path relative to ``api_url`` (so
  ``"POST /payments"`` is creation only, ``"POST /payments/*/capture"`` captures,
  ``"* /refunds*"`` anything about refunds); a pattern starting with ``/`` means any method;
  ``""`` matches every API request. Rules are checked in the order added; the first live match
  applies. The checkout page is never failed.
* ``requests``: every API request as (method, path relative to api_url, Idempotence-Key or
  None, status answered); a held ("timeout") request is recorded with status 0 when it arrives.
* ``after_create``: called with each new payment once it is stored, before it is answered.
* ``captures``: how many times each payment was actually captured (an idempotent repeat of a
  capture is answered from the stored answer and not counted); YooKassa refuses a second capture,
  so anything above 1 would mean the fake itself is wrong.
* ``payment_receipts``: the receipt each payment was created with, by payment id (YooKassa
  registers it and its API never gives it back). Like YooKassa, the sandbox refuses a payment,
  refund or receipt whose items do not add up to its amount.
* ``receipts``: the receipts made on their own (``POST /receipts``: a settlement on delivery).
* ``expire(payment_id)``: what YooKassa does to a payment nobody paid: pending -> canceled
  (``yoo_money``, ``expired_on_confirmation``), notified.
"""

from __future__ import annotations

import asyncio
import inspect
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from services.payments.sandbox import ApiFailure, SandboxYooKassa, utc_stamp
from tests.fakes.faults import Faults

API = "/api/v3"
MODES = ("500", "429", "202", "timeout")


class _HookedSandbox(SandboxYooKassa):
    def __init__(self, fake: FakeYooKassa, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._fake = fake

    async def on_payment_created(self, payment: dict[str, Any]) -> None:
        await self._fake._created(payment)

    def _new_payment(self, request: web.Request, body: dict[str, Any]) -> dict[str, Any]:
        payment = super()._new_payment(request, body)  # raises unless the receipt adds up
        if body.get("receipt") is not None:
            self._fake.payment_receipts[payment["id"]] = body["receipt"]
        return payment

    def _capture_now(self, request: web.Request, body: dict[str, Any]) -> dict[str, Any]:
        payment = super()._capture_now(request, body)  # raises unless it was waiting_for_capture
        self._fake.captures[payment["id"]] += 1
        return payment


class FakeYooKassa:
    """A YooKassa API for the real SDK: ``Configuration.configure(shop_id, secret_key,
    api_url=api_url)``. Checkout pages are at ``{url}/checkout/{payment_id}``."""

    shop_id = "test-shop"
    secret_key = "test-secret"

    def __init__(self, *, webhook_url: str | None = None, store_path: Path | None = None) -> None:
        self.sandbox = _HookedSandbox(
            self,
            shop_id=self.shop_id,
            secret_key=self.secret_key,
            public_url="",
            webhook_url=webhook_url,
            store_path=store_path,
        )
        self.requests: list[tuple[str, str, str | None, int]] = []
        self.created = 0
        self.captures: Counter[str] = Counter()
        self.payment_receipts: dict[str, dict[str, Any]] = {}
        self.after_create: Callable[[dict[str, Any]], Awaitable[None] | None] | None = None
        self.hold_seconds = 60.0
        self._faults = Faults(MODES)
        self._released = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._url = ""

    async def start(self) -> None:
        app = web.Application(middlewares=[self._middleware])
        self.sandbox.add_routes(app, "")
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self._url = f"http://{host}:{port}"
        self.sandbox.public_url = self._url
        self._released.clear()

    async def stop(self) -> None:
        self._released.set()
        await self.sandbox.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def url(self) -> str:
        return self._url

    @property
    def api_url(self) -> str:
        return self._url + API

    @property
    def webhook_url(self) -> str | None:
        return self.sandbox.webhook_url

    @webhook_url.setter
    def webhook_url(self, value: str | None) -> None:
        self.sandbox.webhook_url = value

    @property
    def auto_notify(self) -> bool:
        return self.sandbox.auto_notify

    @auto_notify.setter
    def auto_notify(self, value: bool) -> None:
        self.sandbox.auto_notify = value

    @property
    def payments(self) -> dict[str, dict[str, Any]]:
        return self.sandbox.payments

    @property
    def refunds(self) -> dict[str, dict[str, Any]]:
        return self.sandbox.refunds

    @property
    def receipts(self) -> dict[str, dict[str, Any]]:
        return self.sandbox.receipts

    def checkout_url(self, payment_id: str) -> str:
        return self.sandbox.checkout_url(payment_id)

    # -- failure injection ------------------------------------------------------------------

    def fail(
        self,
        mode: str,
        *,
        count: int | None = None,
        seconds: float | None = None,
        paths: str = "",
    ) -> None:
        self._faults.add(mode, count, seconds, paths)

    def clear_failures(self) -> None:
        self._faults.clear()

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith(API + "/"):
            return await handler(request)
        method, path = request.method, request.path[len(API) :]
        key = request.headers.get("Idempotence-Key")
        mode = self._faults.take(method, path)
        if mode == "timeout":
            self.requests.append((method, path, key, 0))
            try:
                await asyncio.wait_for(self._released.wait(), self.hold_seconds)
            except TimeoutError:
                pass
            return _injected("500")  # whoever sent it has long given up
        if mode is not None:
            response = _injected(mode)
            self.requests.append((method, path, key, response.status))
            return response
        try:
            answer = await handler(request)
        except web.HTTPException as exc:
            self.requests.append((method, path, key, exc.status))
            raise
        self.requests.append((method, path, key, answer.status))
        return answer

    async def _created(self, payment: dict[str, Any]) -> None:
        self.created += 1
        if self.after_create is not None:
            result = self.after_create(payment)
            if inspect.isawaitable(result):
                await result

    # -- what the buyer and YooKassa do -----------------------------------------------------

    async def pay(self, payment_id: str) -> dict[str, Any]:
        return await self.sandbox.pay(payment_id)

    async def decline(self, payment_id: str) -> dict[str, Any]:
        return await self.sandbox.decline(payment_id)

    async def expire(self, payment_id: str) -> dict[str, Any]:
        """Nobody paid: YooKassa cancels a pending payment itself, and notifies."""
        payment = self.sandbox.payments[payment_id]
        if payment["status"] != "pending":
            return payment
        self.set_status(payment_id, "canceled")
        if self.auto_notify:
            await self.sandbox.notify(payment_id)
        return payment

    async def notify(self, payment_id: str, event: str | None = None, times: int = 1) -> list[int]:
        """Send `times` notifications concurrently; their HTTP statuses (0: unreachable)."""
        sends = (self.sandbox.notify(payment_id, event) for _ in range(times))
        return list(await asyncio.gather(*sends))

    def set_status(self, payment_id: str, status: str, **fields: Any) -> dict[str, Any]:
        """Force a payment's state, with the fields YooKassa would set unless given."""
        payment = self.sandbox.payments[payment_id]
        now = datetime.now(UTC)
        defaults: dict[str, dict[str, Any]] = {
            "pending": {"paid": False},
            "waiting_for_capture": {
                "paid": True,
                "expires_at": utc_stamp(now + timedelta(days=7)),
            },
            "succeeded": {"paid": True, "refundable": True, "captured_at": utc_stamp(now)},
            "canceled": {
                "paid": False,
                "cancellation_details": {
                    "party": "yoo_money",
                    "reason": "expired_on_confirmation",
                },
            },
        }
        payment.update(status=status, **{**defaults.get(status, {}), **fields})
        self.sandbox.save()
        return payment


def _injected(mode: str) -> web.Response:
    if mode == "202":
        processing = {"type": "processing", "description": "Request accepted", "retry_after": 1800}
        return web.json_response(processing, status=202)
    if mode == "429":
        failure = ApiFailure(429, "too_many_requests", "Too many requests")
    else:
        failure = ApiFailure(500, "internal_server_error", "Internal server error")
    return web.json_response(failure.body, status=failure.status)
