"""A local YooKassa look-alike: the sandbox payment provider, and the base of the test fake.

Used when no real YooKassa credentials are set. It serves the part of YooKassa's API v3 the
shop uses (payments: create, get, capture, cancel; refunds: create, get) to the official SDK
unchanged, with Basic auth and Idempotence-Key semantics, plus a checkout page plainly marked
TEST whose Pay and Decline buttons move a payment on and send YooKassa-shaped notifications to
the shop's webhook. No money moves anywhere. Payments, refunds and idempotent answers can be
kept in a JSON file so that a restart of the process loses nothing.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import copy
import hmac
import html
import json
import os
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp import web

from libs import log, money

_log = log.get(__name__)

JSON = dict[str, Any]
IDEMPOTENCE_TTL = timedelta(hours=24)  # how long YooKassa remembers a key
PAYMENT_METHOD_TYPES = ("bank_card", "sbp")  # what the shop asks for (payment_method_data)
METHOD_WORDS = {
    "bank_card": "Bank card · Банковская карта",
    "sbp": "SBP, the Faster Payments System · СБП, Система быстрых платежей",
}
WAIT_FOR_CAPTURE = timedelta(days=7)  # bank cards: a waiting_for_capture payment expires then
EVENTS = {
    "waiting_for_capture": "payment.waiting_for_capture",
    "succeeded": "payment.succeeded",
    "canceled": "payment.canceled",
}


def utc_stamp(moment: datetime | None = None) -> str:
    """ISO 8601 UTC with milliseconds and Z, as YooKassa writes its times."""
    moment = moment or datetime.now(UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _amount(kopecks: int, currency: str) -> JSON:
    return {"value": money.rubles(kopecks), "currency": currency}


class ApiFailure(Exception):
    """A request YooKassa would refuse: becomes its error JSON."""

    def __init__(self, status: int, code: str, description: str, parameter: str | None = None):
        super().__init__(description)
        self.status = status
        self.body: JSON = {"type": "error", "id": str(uuid.uuid4()), "code": code}
        self.body["description"] = description
        if parameter:
            self.body["parameter"] = parameter


def _invalid(description: str, parameter: str | None = None) -> ApiFailure:
    return ApiFailure(400, "invalid_request", description, parameter)


def _money(raw: Any, parameter: str) -> tuple[int, str]:
    """An amount object as (kopecks, currency)."""
    if not isinstance(raw, dict):
        raise _invalid(f"{parameter} is required", parameter)
    try:
        value = money.kopecks(raw.get("value"))
    except ValueError:
        raise _invalid(
            f"{parameter}.value is not a number in kopecks", f"{parameter}.value"
        ) from None
    if value <= 0:
        raise _invalid(f"{parameter}.value must be positive, in kopecks", f"{parameter}.value")
    currency = raw.get("currency")
    if not isinstance(currency, str) or len(currency) != 3 or not currency.isupper():
        raise _invalid(f"{parameter}.currency is not ISO-4217", f"{parameter}.currency")
    return value, currency


def _check_receipt(receipt: Any, total: int, currency: str) -> None:
    if not isinstance(receipt, dict):
        raise _invalid("receipt must be an object", "receipt")
    customer = receipt.get("customer")
    if not isinstance(customer, dict) or not (customer.get("phone") or customer.get("email")):
        raise _invalid("receipt.customer needs a phone or an email", "receipt.customer")
    items = receipt.get("items")
    if not isinstance(items, list) or not items:
        raise _invalid("receipt.items is empty", "receipt.items")
    summed = Decimal(0)
    for n, item in enumerate(items):
        where = f"receipt.items[{n}]"
        if not isinstance(item, dict) or not item.get("description"):
            raise _invalid(f"{where}.description is required", f"{where}.description")
        try:
            quantity = Decimal(str(item.get("quantity")))
        except InvalidOperation:
            raise _invalid(f"{where}.quantity is not a number", f"{where}.quantity") from None
        if not quantity.is_finite() or quantity <= 0:
            raise _invalid(f"{where}.quantity must be positive", f"{where}.quantity")
        price, item_currency = _money(item.get("amount"), f"{where}.amount")
        if item_currency != currency:
            raise _invalid(f"{where}.amount.currency differs", f"{where}.amount.currency")
        if item.get("vat_code") is None and receipt.get("tax_system_code") is None:
            raise _invalid(f"{where}.vat_code is required", f"{where}.vat_code")
        summed += quantity * price  # a weighed item's quantity may be a fraction
    kopecks = int(summed.to_integral_value())  # to the nearest kopeck, as YooKassa counts
    if kopecks != total:
        why = f"Receipt items sum to {money.rubles(kopecks)}, not {money.rubles(total)}"
        raise _invalid(why, "receipt.items")


class SandboxYooKassa:
    """YooKassa's API v3 subset and a TEST checkout page, served by aiohttp under a prefix."""

    def __init__(
        self,
        *,
        shop_id: str,
        secret_key: str,
        public_url: str,
        webhook_url: str | None,
        store_path: Path | None,
    ) -> None:
        self.shop_id = shop_id
        self.secret_key = secret_key
        self.public_url = public_url.rstrip("/")
        self.webhook_url = webhook_url
        self.store_path = store_path
        self.auto_notify = True
        self.prefix = ""
        self.payments: dict[str, JSON] = {}
        self.refunds: dict[str, JSON] = {}
        self.receipts: dict[str, JSON] = {}  # made by POST /receipts (a settlement, say)
        self._capture: dict[str, bool] = {}  # the `capture` flag each payment was created with
        self._answers: dict[str, JSON] = {}  # Idempotence-Key -> request, status, body, at
        self._tasks: set[asyncio.Task[int]] = set()
        if store_path is not None and store_path.exists():
            state = json.loads(store_path.read_text(encoding="utf-8"))
            self.payments = state["payments"]
            self.refunds = state["refunds"]
            self.receipts = state.get("receipts", {})
            self._capture = state["capture"]
            self._answers = state["idempotence"]

    # -- wiring ---------------------------------------------------------------------------

    def routes(self, prefix: str) -> list[web.RouteDef]:
        self.prefix = prefix.rstrip("/")
        api, page = f"{self.prefix}/api/v3", f"{self.prefix}/checkout/{{id}}"
        return [
            web.post(f"{api}/payments", self._create_payment),
            web.get(f"{api}/payments/{{id}}", self._get_payment),
            web.post(f"{api}/payments/{{id}}/capture", self._capture_payment),
            web.post(f"{api}/payments/{{id}}/cancel", self._cancel_payment),
            web.post(f"{api}/refunds", self._create_refund),
            web.get(f"{api}/refunds/{{id}}", self._get_refund),
            web.post(f"{api}/receipts", self._create_receipt),
            web.get(page, self._checkout),
            web.post(f"{page}/pay", self._checkout_pay),
            web.post(f"{page}/decline", self._checkout_decline),
        ]

    def add_routes(self, app: web.Application, prefix: str) -> None:
        app.add_routes(self.routes(prefix))

    def checkout_url(self, payment_id: str) -> str:
        return f"{self.public_url}{self.prefix}/checkout/{quote(payment_id)}"

    def save(self) -> None:
        """Write the state to store_path (if any) atomically: a temp file, then os.replace."""
        if self.store_path is None:
            return
        horizon = utc_stamp(datetime.now(UTC) - IDEMPOTENCE_TTL)
        self._answers = {k: a for k, a in self._answers.items() if a["at"] >= horizon}
        state = {
            "payments": self.payments,
            "refunds": self.refunds,
            "receipts": self.receipts,
            "capture": self._capture,
            "idempotence": self._answers,
        }
        self.store_path.parent.mkdir(parents=True, exist_ok=True)
        temp = self.store_path.with_name(f".{self.store_path.name}.{os.getpid()}.tmp")
        temp.write_text(json.dumps(state, ensure_ascii=False), encoding="utf-8")
        os.replace(temp, self.store_path)

    async def on_payment_created(self, payment: JSON) -> None:
        """Called once a new payment is stored, before it is answered. A seam for tests."""

    async def close(self) -> None:
        """Cancel notifications still being sent in the background."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- the API ----------------------------------------------------------------------------

    def _authorized(self, request: web.Request) -> bool:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(token, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return hmac.compare_digest(user.encode(), self.shop_id.encode()) & hmac.compare_digest(
            password.encode(), self.secret_key.encode()
        )

    async def _answer(
        self,
        request: web.Request,
        operation: Callable[[web.Request, JSON], JSON],
        after: Callable[[JSON], Awaitable[None]] | None = None,
    ) -> web.Response:
        """Auth, then Idempotence-Key: a repeat gets the stored answer, a changed body 400."""
        if not self._authorized(request):
            denied = ApiFailure(401, "invalid_credentials", "Authentication failed")
            return web.json_response(denied.body, status=401)
        key = request.headers.get("Idempotence-Key", "")
        try:
            if not key or len(key) > 64:
                raise _invalid("Idempotence-Key must be 1 to 64 characters", "Idempotence-Key")
            text = await request.text()
            try:
                body = json.loads(text) if text.strip() else {}
            except ValueError:
                raise _invalid("The request body is not JSON") from None
            if not isinstance(body, dict):
                raise _invalid("The request body must be a JSON object")
        except ApiFailure as failure:
            return web.json_response(failure.body, status=failure.status)
        fingerprint = f"{request.method} {request.path} {json.dumps(body, sort_keys=True)}"
        stored = self._answers.get(key)
        if stored is not None:
            if stored["request"] != fingerprint:
                duplicated = _invalid("Idempotence key duplicated", "Idempotence-Key")
                return web.json_response(duplicated.body, status=400)
            return web.json_response(stored["body"], status=stored["status"])
        try:
            status, result = 200, operation(request, body)
        except ApiFailure as failure:
            status, result = failure.status, failure.body
        self._answers[key] = {
            "request": fingerprint,
            "status": status,
            "body": copy.deepcopy(result),  # the answer as it was, not the object as it becomes
            "at": utc_stamp(),
        }
        self.save()
        if status == 200 and after is not None:
            await after(result)
        return web.json_response(result, status=status)

    def _read(self, request: web.Request, table: dict[str, JSON]) -> web.Response:
        if not self._authorized(request):
            denied = ApiFailure(401, "invalid_credentials", "Authentication failed")
            return web.json_response(denied.body, status=401)
        found = table.get(request.match_info["id"])
        if found is None:
            missing = ApiFailure(404, "not_found", "Object not found", "id")
            return web.json_response(missing.body, status=404)
        return web.json_response(found)

    async def _get_payment(self, request: web.Request) -> web.Response:
        return self._read(request, self.payments)

    async def _get_refund(self, request: web.Request) -> web.Response:
        return self._read(request, self.refunds)

    async def _create_payment(self, request: web.Request) -> web.Response:
        return await self._answer(request, self._new_payment, self.on_payment_created)

    def _new_payment(self, _: web.Request, body: JSON) -> JSON:
        value, currency = _money(body.get("amount"), "amount")
        confirmation = body.get("confirmation")
        if not isinstance(confirmation, dict) or confirmation.get("type") != "redirect":
            raise _invalid("The sandbox supports confirmation.type redirect only", "confirmation")
        description = body.get("description")
        if description is not None and (not isinstance(description, str) or len(description) > 128):
            raise _invalid("description must be a string of at most 128 characters", "description")
        metadata = body.get("metadata") or {}
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            raise _invalid("metadata must map keys to strings", "metadata")
        capture = body.get("capture", False)
        if not isinstance(capture, bool):
            raise _invalid("capture must be a boolean", "capture")
        method = body.get("payment_method_data") or {"type": "bank_card"}
        if not isinstance(method, dict) or method.get("type") not in PAYMENT_METHOD_TYPES:
            raise _invalid(
                "payment_method_data.type must be one of " + ", ".join(PAYMENT_METHOD_TYPES),
                "payment_method_data",
            )
        if method["type"] == "sbp" and not capture:
            # YooKassa holds no SBP payment: it is charged at once.
            raise _invalid("SBP payments do not support two-stage capture", "capture")
        if body.get("receipt") is not None:
            _check_receipt(body["receipt"], value, currency)
        payment_id = str(uuid.uuid4())
        payment: JSON = {
            "id": payment_id,
            "status": "pending",
            "paid": False,
            "amount": _amount(value, currency),
            "recipient": {"account_id": self.shop_id, "gateway_id": self.shop_id},
            "created_at": utc_stamp(),
            "confirmation": {"type": "redirect", "confirmation_url": self.checkout_url(payment_id)},
            "test": True,
            "refundable": False,
            "refunded_amount": _amount(0, currency),
            "metadata": metadata,
            "payment_method": {"type": method["type"], "id": payment_id, "saved": False},
        }
        if description is not None:
            payment["description"] = description
        if confirmation.get("return_url"):
            payment["confirmation"]["return_url"] = confirmation["return_url"]
        if body.get("receipt") is not None:
            payment["receipt_registration"] = "pending"
        self.payments[payment_id] = payment
        self._capture[payment_id] = capture
        _log.info("sandbox.payment_created", payment_id=payment_id, amount=money.rubles(value))
        return payment

    def _payment_for(self, request: web.Request) -> JSON:
        payment = self.payments.get(request.match_info["id"])
        if payment is None:
            raise ApiFailure(404, "not_found", "Payment not found", "payment_id")
        return payment

    async def _capture_payment(self, request: web.Request) -> web.Response:
        return await self._answer(request, self._capture_now)

    def _capture_now(self, request: web.Request, body: JSON) -> JSON:
        payment = self._payment_for(request)
        if payment["status"] != "waiting_for_capture":
            raise _invalid(f"Payment is {payment['status']}, not waiting_for_capture")
        total, currency = money.kopecks(payment["amount"]["value"]), payment["amount"]["currency"]
        if body.get("amount") is not None:
            value, asked_currency = _money(body["amount"], "amount")
            if asked_currency != currency or value > total:
                raise _invalid("Capture amount exceeds the payment amount", "amount")
            total = value
        self._succeed(payment)
        payment["amount"] = _amount(total, currency)
        return payment

    def _succeed(self, payment: JSON) -> None:
        payment.pop("expires_at", None)
        payment.update(status="succeeded", paid=True, captured_at=utc_stamp(), refundable=True)
        if "receipt_registration" in payment:
            payment["receipt_registration"] = "succeeded"

    async def _cancel_payment(self, request: web.Request) -> web.Response:
        return await self._answer(request, self._cancel_now)

    def _cancel_now(self, request: web.Request, _: JSON) -> JSON:
        payment = self._payment_for(request)
        if payment["status"] == "canceled":
            return payment
        if payment["status"] != "waiting_for_capture":
            raise _invalid(f"Payment is {payment['status']}: only waiting_for_capture cancels")
        payment.pop("expires_at", None)
        details = {"party": "merchant", "reason": "canceled_by_merchant"}
        payment.update(status="canceled", paid=False, cancellation_details=details)
        return payment

    async def _create_refund(self, request: web.Request) -> web.Response:
        return await self._answer(request, self._new_refund, self._refunded)

    def _new_refund(self, _: web.Request, body: JSON) -> JSON:
        payment = self.payments.get(str(body.get("payment_id")))
        if payment is None:
            raise _invalid("payment_id is not a known payment", "payment_id")
        if payment["status"] != "succeeded":
            raise _invalid(f"Payment is {payment['status']}: only succeeded ones refund")
        value, currency = _money(body.get("amount"), "amount")
        total = money.kopecks(payment["amount"]["value"])
        refunded = money.kopecks(payment["refunded_amount"]["value"]) + value
        if currency != payment["amount"]["currency"]:
            raise _invalid("Refund currency differs from the payment's", "amount.currency")
        if refunded > total:
            raise _invalid("Refund amount exceeds what is left of the payment", "amount.value")
        if body.get("receipt") is not None:
            _check_receipt(body["receipt"], value, currency)
        refund: JSON = {
            "id": str(uuid.uuid4()),
            "payment_id": payment["id"],
            "status": "succeeded",
            "amount": _amount(value, currency),
            "created_at": utc_stamp(),
        }
        if isinstance(body.get("description"), str):
            refund["description"] = body["description"]
        if body.get("receipt") is not None:
            refund["receipt_registration"] = "succeeded"
        self.refunds[refund["id"]] = refund
        payment["refunded_amount"] = _amount(refunded, currency)
        payment["refundable"] = refunded < total
        return refund

    async def _create_receipt(self, request: web.Request) -> web.Response:
        return await self._answer(request, self._new_receipt)

    def _new_receipt(self, _: web.Request, body: JSON) -> JSON:
        """A receipt of its own (54-FZ): here, the settlement of a succeeded prepayment."""
        payment = self.payments.get(str(body.get("payment_id")))
        if payment is None:
            raise _invalid("payment_id is not a known payment", "payment_id")
        if payment["status"] != "succeeded":
            raise _invalid(f"Payment is {payment['status']}: nothing to settle", "payment_id")
        if body.get("type") not in ("payment", "refund"):
            raise _invalid("type must be payment or refund", "type")
        settlements = body.get("settlements")
        if not isinstance(settlements, list) or not settlements:
            raise _invalid("settlements is empty", "settlements")
        currency = payment["amount"]["currency"]
        total = 0
        for n, settlement in enumerate(settlements):
            if not isinstance(settlement, dict) or settlement.get("type") not in (
                "cashless",
                "prepayment",
                "postpayment",
                "consideration",
            ):
                raise _invalid(f"settlements[{n}].type is unknown", f"settlements[{n}].type")
            value, settled_in = _money(settlement.get("amount"), f"settlements[{n}].amount")
            if settled_in != currency:
                raise _invalid(f"settlements[{n}] currency differs", f"settlements[{n}].amount")
            total += value
        _check_receipt({k: body.get(k) for k in ("customer", "items")}, total, currency)
        receipt: JSON = {
            "id": str(uuid.uuid4()),
            "type": body["type"],
            "payment_id": payment["id"],
            "status": "succeeded",
            "items": body["items"],
            "settlements": settlements,
        }
        self.receipts[receipt["id"]] = receipt
        return receipt

    async def _refunded(self, refund: JSON) -> None:
        # YooKassa notifies after answering: never make the caller wait for its own webhook.
        if self.auto_notify:
            task = asyncio.create_task(self.notify(refund["id"]))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    # -- what the buyer does on the checkout page --------------------------------------------

    async def pay(self, payment_id: str) -> JSON:
        """The Pay button: pending -> waiting_for_capture (or succeeded if capture), notify."""
        payment = self.payments[payment_id]
        if payment["status"] != "pending":
            return payment
        if self._capture.get(payment_id):
            self._succeed(payment)
        else:
            expires = utc_stamp(datetime.now(UTC) + WAIT_FOR_CAPTURE)
            payment.update(status="waiting_for_capture", paid=True, expires_at=expires)
        self.save()
        _log.info("sandbox.paid", payment_id=payment_id, status=payment["status"])
        if self.auto_notify:
            await self.notify(payment_id)
        return payment

    async def decline(self, payment_id: str) -> JSON:
        """The Decline button: pending -> canceled by the payment network, notify."""
        payment = self.payments[payment_id]
        if payment["status"] != "pending":
            return payment
        details = {"party": "payment_network", "reason": "general_decline"}
        payment.update(status="canceled", cancellation_details=details)
        self.save()
        _log.info("sandbox.declined", payment_id=payment_id)
        if self.auto_notify:
            await self.notify(payment_id)
        return payment

    async def notify(self, payment_id: str, event: str | None = None) -> int:
        """POST a notification about a payment (or a refund, by its id) to webhook_url.

        Returns the HTTP status, or 0 when there is no webhook_url or it cannot be reached.
        """
        if payment_id in self.refunds:
            obj, event = self.refunds[payment_id], event or "refund.succeeded"
        else:
            obj = self.payments[payment_id]
            event = event or EVENTS.get(obj["status"])
            if event is None:
                raise ValueError(f"a {obj['status']} payment has no notification event")
        if not self.webhook_url:
            return 0
        body = json.dumps({"type": "notification", "event": event, "object": obj})
        headers = {"Content-Type": "application/json"}
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
                session.post(self.webhook_url, data=body, headers=headers) as response,
            ):
                status = response.status
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            _log.warning("sandbox.notify_failed", id=payment_id, kind=event, error=repr(exc))
            return 0
        if status >= 300:
            _log.warning("sandbox.notify_refused", id=payment_id, kind=event, status=status)
        return status

    # -- the checkout page ------------------------------------------------------------------

    async def _checkout(self, request: web.Request) -> web.Response:
        payment = self.payments.get(request.match_info["id"])
        if payment is None:
            return _page("<h2>No such payment</h2>", status=404)
        amount = payment["amount"]
        method = (payment.get("payment_method") or {}).get("type", "bank_card")
        lines = [
            f"<p>{html.escape(payment.get('description') or '')}</p>",
            f"<p class=sum>{html.escape(amount['value'])} {html.escape(amount['currency'])}</p>",
            f"<p>{METHOD_WORDS.get(method, '')}</p>",
        ]
        if payment["status"] == "pending":
            here = quote(payment["id"])
            lines += [
                f"<form method=post action='{here}/pay'><button class=pay>Pay</button></form>",
                f"<form method=post action='{here}/decline'><button>Decline</button></form>",
            ]
        else:
            lines.append(f"<p>Status: <b>{html.escape(payment['status'])}</b></p>")
        return _page("".join(lines))

    async def _checkout_pay(self, request: web.Request) -> web.Response:
        return await self._after_button(request, self.pay)

    async def _checkout_decline(self, request: web.Request) -> web.Response:
        return await self._after_button(request, self.decline)

    async def _after_button(
        self, request: web.Request, press: Callable[[str], Awaitable[JSON]]
    ) -> web.Response:
        payment_id = request.match_info["id"]
        if payment_id not in self.payments:
            return _page("<h2>No such payment</h2>", status=404)
        payment = await press(payment_id)
        target = payment["confirmation"].get("return_url") or self.checkout_url(payment_id)
        raise web.HTTPSeeOther(target)


def _page(body: str, status: int = 200) -> web.Response:
    text = (
        "<!doctype html><html><head><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width,initial-scale=1'>"
        "<title>TEST payment</title><style>"
        "body{font-family:sans-serif;max-width:30rem;margin:2rem auto;padding:0 1rem}"
        ".test{background:#b00;color:#fff;padding:1rem;font-size:1.3rem;font-weight:bold;"
        "text-align:center;border-radius:.5rem}.sum{font-size:2rem}"
        "button{font-size:1.2rem;padding:.7rem 2rem;margin:.3rem 0;width:100%}"
        ".pay{background:#080;color:#fff}</style></head><body>"
        "<div class=test>TEST PAYMENT — no money is charged<br>"
        "ТЕСТОВЫЙ ПЛАТЁЖ — деньги не списываются</div>"
        f"{body}</body></html>"
    )
    return web.Response(text=text, status=status, content_type="text/html")
