"""The payments HTTP listener: YooKassa's webhook, health, the return page, the sandbox.

The webhook trusts nothing in the body. The caller must be in YooKassa's networks (a
forwarded-for header counts only from a configured proxy); the payment is then re-read from the
API and checked against the order. 200 only once the fact is in JetStream: if NATS is down the
answer is 503 and YooKassa delivers again.
"""

from __future__ import annotations

import html
import ipaddress
import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web
from nats.aio.client import Client
from yookassa.domain.common import SecurityHelper
from yookassa.domain.notification import (
    WebhookNotificationEventType,
    WebhookNotificationFactory,
)

from libs import bus, health, log, metrics
from libs.runner import Runner
from libs.settings import Settings

if TYPE_CHECKING:
    from services.payments.main import Payments

_log = log.get(__name__)
SANDBOX_PREFIX = "/sandbox"
WEBHOOK_PATH = "/yookassa/webhook"
MAX_BODY = 64 * 1024
KNOWN_EVENTS = frozenset(
    value for name, value in vars(WebhookNotificationEventType).items() if name.isupper()
)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
REFUSED = metrics.Counter(
    "shop_webhook_refusals",
    "Webhook calls refused, by HTTP status (403 not YooKassa, 400 not a notification, 503 ...)",
    ["status"],
    registry=metrics.REGISTRY,
)


def networks(spec: str) -> list[Network]:
    return [
        ipaddress.ip_network(part.strip(), strict=False) for part in spec.split(",") if part.strip()
    ]


class Webhook:
    def __init__(self, payments: Payments, settings: Settings) -> None:
        self._payments = payments
        trusted = settings.yookassa_trusted_networks or ",".join(SecurityHelper.YOOKASSA_NETWORKS)
        self._trusted = networks(trusted)
        if settings.sandbox:
            self._trusted += networks("127.0.0.1/32,::1/128")  # the sandbox notifies from here
        self._proxies = networks(settings.payments_trusted_proxies)

    def caller(self, request: web.Request) -> str:
        peer = request.remote or ""
        forwarded = request.headers.get("X-Forwarded-For", "")
        if forwarded and _within(peer, self._proxies):
            return forwarded.split(",")[-1].strip()  # what our proxy saw, not what the client says
        return peer

    async def handle(self, request: web.Request) -> web.Response:
        caller = self.caller(request)
        if not _within(caller, self._trusted):
            return _refuse(403, "caller not in YooKassa's networks", caller)
        if request.content_length is not None and request.content_length > MAX_BODY:
            return _refuse(400, "body too large", caller)
        try:
            body = json.loads(await request.read())
            notification = WebhookNotificationFactory().create(body)
        except Exception as exc:  # the SDK raises ValueError/TypeError/KeyError alike
            return _refuse(400, f"not a YooKassa notification: {type(exc).__name__}", caller)
        event = str(notification.event)
        claimed = body.get("object")
        if event not in KNOWN_EVENTS or not isinstance(claimed, dict):
            return _refuse(400, f"not a YooKassa notification: event {event[:64]!r}", caller)
        if not event.startswith("payment."):
            _log.info("webhook.ignored", notification_event=event)
            return web.Response(text="ignored")
        try:
            status, reason = await self._payments.notified(claimed)
        except (*bus.TRANSIENT, ConnectionError) as exc:
            status, reason = 503, f"facts cannot be stored now: {exc!r}"
        if status != 200:
            return _refuse(status, reason, caller, payment_id=claimed.get("id"))
        return web.Response(text="ok")


def _within(address: str, nets: list[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in nets)


def _refuse(status: int, reason: str, caller: str, **fields: Any) -> web.Response:
    _log.warning("webhook.refused", status=status, reason=reason, caller=caller, **fields)
    REFUSED.labels(str(status)).inc()
    return web.Response(status=status, text=reason)


async def start(
    payments: Payments, nc: Client, consuming: Runner, settings: Settings
) -> web.AppRunner:
    app = web.Application(client_max_size=MAX_BODY)
    hook = Webhook(payments, settings)

    async def check() -> health.Report:
        reconciled: datetime | None = payments.reconciled_at
        return {
            **health.basics(nc, consuming),
            "provider": "sandbox" if settings.sandbox else "yookassa",
            "reconciler_last_run": reconciled.isoformat() if reconciled else None,
        }

    async def returned(_: web.Request) -> web.Response:
        page = (
            "<!doctype html><meta charset=utf-8><title>Спасибо</title>"
            "<body style='font-family:sans-serif;text-align:center;margin-top:20vh'>"
            f"<h1>{html.escape('Спасибо! Вернитесь в Telegram: бот пришлёт подтверждение.')}</h1>"
        )
        return web.Response(text=page, content_type="text/html")

    app.router.add_post(WEBHOOK_PATH, hook.handle)
    health.add_routes(app, check)
    app.router.add_get("/return", returned)
    if settings.sandbox:
        from services.payments.sandbox import SandboxYooKassa

        host = "127.0.0.1" if settings.payments_http_host in ("0.0.0.0", "::") else None
        local = f"http://{host or settings.payments_http_host}:{settings.payments_http_port}"
        sandbox = SandboxYooKassa(
            shop_id="sandbox",
            secret_key="sandbox",
            public_url=settings.payments_base_url,
            webhook_url=f"{local}{WEBHOOK_PATH}",
            store_path=settings.data_dir / "sandbox" / "payments.json",
        )
        sandbox.add_routes(app, SANDBOX_PREFIX)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.payments_http_host, settings.payments_http_port)
    await site.start()
    return runner
