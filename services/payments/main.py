"""The payments process: YooKassa payments for reservations, verified webhooks, a reconciler.

Inputs: inventory facts (reserved, committed, commit_failed), refund requests, and
YooKassa's notifications. Outputs: `payments.*` facts, each told once (`Nats-Msg-Id` is the
payment id and status). YooKassa is the truth about money: a notification is only a hint to
re-read the payment from the API.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import nats.errors
import nats.js.errors
from nats.js import JetStreamContext

from libs import bus, delivery, log, metrics, shutdown, subjects
from libs.catalog_view import CatalogView
from libs.contracts import (
    CashReceived,
    CommitFailed,
    Committed,
    Contact,
    InventoryEvent,
    OrderFulfilment,
    OrderLine,
    OrderPlaced,
    RefundRequested,
    Reserved,
)
from libs.kv import Documents
from libs.runner import Consumer, Runner
from libs.settings import Settings
from services.payments import core, web
from services.payments.core import PaymentRecord
from services.payments.provider import (
    PaymentNotFound,
    PaymentRefused,
    ProviderUnavailable,
    YooKassa,
)

_log = log.get(__name__)
SERVICE = "payments"
# What a killed instance held comes back after this; a live one keeps its inputs as long as its
# YooKassa calls take (the runner keeps them alive).
ACK_WAIT_S = 15.0
SANDBOX_CREDENTIALS = ("sandbox", "sandbox")  # the local sandbox API only; never a real account

_decode_order = msgspec.json.Decoder(OrderPlaced).decode
_decode_reserved = msgspec.json.Decoder(Reserved).decode


class Records:
    """Per-order records in the `payments` KV bucket, updated by compare-and-set."""

    def __init__(self, documents: Documents[PaymentRecord]) -> None:
        self._docs = documents

    async def get(self, order_id: str) -> PaymentRecord | None:
        return await self._docs.get(order_id)

    async def create(self, record: PaymentRecord) -> PaymentRecord:
        """Store a new record; if another instance was first, theirs."""
        return await self._docs.create(record.order_id, record)

    async def update(
        self, order_id: str, change: Callable[[PaymentRecord], PaymentRecord]
    ) -> PaymentRecord:
        """Apply `change` to the current record, again if someone else wrote in between."""

        def changed(record: PaymentRecord | None) -> PaymentRecord:
            if record is None:
                raise KeyError(order_id)
            return msgspec.structs.replace(change(record), updated_at=_now())

        return await self._docs.update(order_id, changed)

    async def all(self) -> list[PaymentRecord]:
        return await self._docs.values()


TOLD = metrics.Counter(
    "shop_payments",
    "Payment facts told on the bus, by status (a fact told again after a crash counts again)",
    ["status"],
    registry=metrics.REGISTRY,
)


class Payments:
    """What the service does; the consumers, the webhook and the reconciler all call in here."""

    def __init__(
        self,
        js: JetStreamContext,
        records: Records,
        catalog: CatalogView,
        api: YooKassa,
        settings: Settings,
    ) -> None:
        self._js = js
        self.records = records
        self._catalog = catalog
        self.api = api
        self._settings = settings
        self._two_stage = settings.payments_capture == "two_stage"
        self._receipt = (
            core.ReceiptConfig(
                settings.receipt_vat_code,
                settings.receipt_payment_subject,
                settings.receipt_payment_mode,
            )
            if settings.receipts
            else None
        )
        self.reconciled_at: datetime | None = None

    # inventory facts ------------------------------------------------------------------------------
    async def on_inventory(self, event: InventoryEvent) -> None:
        match event:
            case Reserved():
                await self.reserved(event)
            case Committed(order_id=order_id):
                await self.settle(order_id, "committed")
            case CommitFailed(order_id=order_id):
                await self.settle(order_id, "commit_failed")

    async def reserved(self, event: Reserved) -> None:
        record = await self.records.get(event.order_id)
        if record is None:
            order = await self._order(event.order_id)
            contact = order.contact if order else Contact()
            method = order.payment if order else "card"
            record = await self.records.create(core.new_record(event, contact, _now(), method))
        await self.ensure_created(record)

    async def ensure_created(self, record: PaymentRecord) -> None:
        """Create the order's payment (once, whatever happens) and tell that it is pending; an
        order paid on receipt has none (the desk says when its money came)."""
        if record.method == "cash":
            return
        if record.status == "creating":
            params = core.create_params(
                record,
                self._settings.payments_return_url or f"{self._settings.payments_base_url}/return",
                self._titles(record),
                capture=not core.two_stage(record, self._two_stage),
                receipt=self._receipt,
            )
            try:
                payment = await self.api.create(
                    params, core.idempotence_key("pay", record.order_id)
                )
            except PaymentRefused as exc:
                _log.warning("payment.refused", order_id=record.order_id, error=str(exc))
                await self._tell(core.refused(record, exc.code, _now()))
                await self.records.update(record.order_id, core.failed)
                return
            record = await self.records.update(record.order_id, lambda r: core.created(r, payment))
            _log.info("payment.created", order_id=record.order_id, payment_id=record.payment_id)
        tell = core.pending(record, _now())
        if tell is not None:
            await self._tell(tell)
            await self.records.update(record.order_id, lambda r: core.told(r, "pending"))

    async def settle(self, order_id: str, answer: core.Answer) -> None:
        """The inventory answered the order's payment: keep the money or give it back.

        Only this answer moves money; a released reservation does not (the customer may still
        pay it, and then the inventory decides), so money taken <=> stock committed.
        """
        record = await self._record(order_id)
        if record is None:
            return
        two_stage = core.two_stage(record, self._two_stage)
        if not core.settles(answer, two_stage):
            return
        payment = await self._payment(record)
        match core.settlement(answer, str(payment.get("status", "")), two_stage):
            case "capture":
                key = core.idempotence_key("capture", record.payment_id)
                payment = await self.api.capture(record.payment_id, key)
                _log.info("payment.captured", order_id=order_id, payment_id=record.payment_id)
            case "cancel":
                key = core.idempotence_key("cancel", record.payment_id)
                payment = await self.api.cancel(record.payment_id, key)
                _log.info("payment.hold_released", order_id=order_id, payment_id=record.payment_id)
            case "refund":
                await self.refund(record, (), "stock_gone", f"stock-gone-{order_id}")
        await self.observe(record, payment)

    # refunds --------------------------------------------------------------------------------------
    async def on_refund_requested(self, request: RefundRequested) -> None:
        record = await self._record(request.order_id)
        if record is None or not core.refundable(record):
            _log.warning(
                "refund.refused",
                order_id=request.order_id,
                reason="the order has no succeeded payment",
                status=record.status if record else None,
            )
            return
        await self.refund(
            record, request.lines or None, request.reason, request.request_id, request.restock
        )

    async def on_fulfilment(self, fact: OrderFulfilment) -> None:
        step = fact.history[-1].step if fact.history else None
        if step == "cancelled":
            await self.cancelled(fact)
        elif step == "delivered" and self._receipt is not None:
            await self.settle_receipt(fact.order_id, self._receipt)

    async def settle_receipt(self, order_id: str, config: core.ReceiptConfig) -> None:
        """The goods were handed over: the receipt that settles the prepayment, made once
        (its Idempotence-Key, then the record says so); retried while YooKassa is away."""
        record = await self._record(order_id)
        if record is None or record.settled:
            return
        params = core.settlement_receipt(record, self._titles(record), config)
        if params is not None:
            made = await self.api.receipt(params, core.idempotence_key("settle", order_id))
            _log.info("receipt.settled", order_id=order_id, receipt_id=made.get("id"))
        await self.records.update(order_id, lambda r: msgspec.structs.replace(r, settled=True))

    async def cancelled(self, fact: OrderFulfilment) -> None:
        """A paid order was cancelled (by the shop or its customer): all its money goes back,
        the hold cancelled or the payment refunded; the inventory takes the goods back on that.
        Read again on each delivery, so a capture that came first is refunded instead."""
        record = await self._record(fact.order_id)
        if record is None:
            return
        payment = await self._payment(record)
        two_stage = core.two_stage(record, self._two_stage)
        match core.settlement("cancelled", str(payment.get("status", "")), two_stage):
            case "cancel":
                key = core.idempotence_key("cancel", record.payment_id)
                payment = await self.api.cancel(record.payment_id, key)
                _log.info("payment.hold_released", order_id=fact.order_id, why="cancelled")
            case "refund":
                await self.refund(record, None, "cancelled", f"cancel-{fact.order_id}")
        await self.observe(record, payment)

    async def refund(
        self,
        record: PaymentRecord,
        lines: tuple[OrderLine, ...] | None,
        reason: str,
        request_id: str,
        restock: bool = True,
    ) -> None:
        """Refund `lines` (None: everything that is left; (): the money only, no goods back);
        `restock`: the goods go back on hand (else they are written off)."""
        refund = core.refund_for(record, lines)
        if refund is None:
            _log.warning("refund.nothing_left", order_id=record.order_id, request_id=request_id)
            return
        if record.method == "cash":
            # Paid over the counter, given back over the counter: the desk hears it.
            refund_id = f"cash-{request_id}"
        else:
            titles = self._titles(record) if self._receipt is not None else {}
            params = core.refund_params(record, refund, reason, titles, self._receipt)
            made = await self.api.refund(params, core.idempotence_key("refund", request_id))
            refund_id = str(made["id"])
        await self._tell(core.refund_fact(record, refund, refund_id, reason, _now(), restock))
        await self.records.update(record.order_id, lambda r: core.refunded(r, refund, refund_id))
        _log.info(
            "payment.refunded", order_id=record.order_id, refund_id=refund_id, amount=refund.amount
        )

    async def on_cash_received(self, command: CashReceived) -> None:
        """The desk marked an order paid on receipt: its money is taken, told once (the
        inventory commits the stock on that). Its record has no payment id until then, so it
        is read as it is, not through `_record`."""
        record = await self.records.get(command.order_id)
        if record is None:
            # The desk saw the order held before this instance took in its reservation (its
            # consumer behind, after a restart or an election): take it in from the stream now.
            reserved = await self._reserved(command.order_id)
            if reserved is not None:
                await self.reserved(reserved)
                record = await self.records.get(command.order_id)
        if record is None or record.method != "cash" or record.status not in ("due", "succeeded"):
            _log.warning(
                "cash.refused",
                order_id=command.order_id,
                reason="not an order paid on receipt, or not due",
                method=record.method if record else None,
                status=record.status if record else None,
            )
            return
        # In the till first, then told: the inventory's answer to the fact (commit_failed: the
        # money goes back) needs the record's payment id; a crash in between is told on the
        # command's redelivery.
        record = await self.records.update(command.order_id, core.in_till)
        tell = core.cash_paid(record, command.at)
        if tell is not None:
            await self._tell(tell)
            await self.records.update(command.order_id, lambda r: core.told(r, "succeeded"))
            _log.info("cash.received", order_id=command.order_id, by=command.by)

    async def _payment(self, record: PaymentRecord) -> dict[str, Any]:
        """The order's payment as YooKassa has it now; one paid on receipt, as the record has it."""
        if record.method == "cash":
            return {"id": record.payment_id, "status": record.status}
        return await self.api.get(record.payment_id)

    # what YooKassa says ---------------------------------------------------------------------------
    async def observe(self, record: PaymentRecord, payment: dict[str, Any]) -> None:
        """YooKassa's payment, as read from its API: tell the fact its status makes true, once."""
        if record.method == "cash":
            return  # no YooKassa payment: the desk's word was told when it came
        status = str(payment.get("status", ""))
        tell = core.observed(record, payment, _now())
        if tell is not None:
            await self._tell(tell, give_up_after=5.0)
            _log.info(
                "payment.told",
                order_id=record.order_id,
                payment_id=record.payment_id,
                status=status,
            )
        if status in core.RECORDED:
            await self.records.update(record.order_id, lambda r: core.seen(r, status))

    async def notified(self, claimed: dict[str, Any]) -> tuple[int, str]:
        """A payment notification's object (trusted for nothing): re-read, check, tell."""
        payment_id = claimed.get("id")
        if not isinstance(payment_id, str) or not payment_id:
            return 400, "no payment id"
        try:
            payment = await self.api.get(payment_id)
        except PaymentNotFound:
            return 400, f"unknown payment {payment_id}"
        except (PaymentRefused, ProviderUnavailable) as exc:
            return 503, f"cannot read the payment now: {exc}"
        why = core.claimed_mismatch(claimed, payment)
        if why is not None:
            return 400, why
        order_id = (payment.get("metadata") or {}).get("order_id")
        record = await self.records.get(order_id) if isinstance(order_id, str) else None
        if record is None:
            return 400, f"payment {payment_id} is not for an order of this shop"
        why = core.mismatch(record, payment)
        if why is not None:
            return 400, why
        await self.observe(record, payment)
        return 200, "ok"

    async def reconcile(self) -> None:
        """Open payments not heard of for a while: ask YooKassa (a notification may be lost)."""
        quiet_since = _now() - timedelta(seconds=self._settings.payments_reconcile_after)
        for record in await self.records.all():
            if not core.quiet(record, quiet_since):
                continue
            try:
                if record.status == "creating":
                    await self.ensure_created(record)
                    continue
                payment = await self.api.get(record.payment_id)
                if core.mismatch(record, payment) is None:
                    await self.observe(record, payment)
            except (PaymentRefused, ProviderUnavailable, *bus.TRANSIENT) as exc:
                _log.warning("reconcile.failed", order_id=record.order_id, error=str(exc))
        self.reconciled_at = _now()

    # helpers --------------------------------------------------------------------------------------
    async def _record(self, order_id: str) -> PaymentRecord | None:
        record = await self.records.get(order_id)
        if record is None or not record.payment_id:
            return None
        return record

    async def _tell(self, tell: core.Tell, give_up_after: float = 60.0) -> None:
        subject = subjects.payment_fact(tell.kind, tell.fact.order_id)
        await bus.publish(
            self._js, subject, tell.fact, msg_id=tell.msg_id, give_up_after=give_up_after
        )
        TOLD.labels(tell.kind.value).inc()

    async def _reserved(self, order_id: str) -> Reserved | None:
        """The inventory's reservation of the order, from the INVENTORY stream."""
        subject = subjects.inventory_fact("reserved", order_id)
        try:
            msg = await self._js.get_last_msg(subjects.INVENTORY, subject)
            return _decode_reserved(msg.data or b"")
        except (nats.js.errors.NotFoundError, msgspec.DecodeError, msgspec.ValidationError):
            return None

    async def _order(self, order_id: str) -> OrderPlaced | None:
        """The order as placed (for the customer's contact), from the ORDERS stream."""
        try:
            msg = await self._js.get_last_msg(subjects.ORDERS, subjects.order_placed(order_id))
            return _decode_order(msg.data or b"")
        except (nats.js.errors.NotFoundError, msgspec.DecodeError, msgspec.ValidationError):
            return None

    def _titles(self, record: PaymentRecord) -> dict[str, str]:
        """The products' titles for the payment's description and receipt, and the delivery
        methods' (by `delivery.as_sku`), from memory."""
        titles = self._catalog.titles(line.sku for line in record.lines)
        if record.delivery is not None:
            titles |= delivery.titles(self._catalog.delivery().methods)
        return titles


def _refusals_logged(act: Callable[[Any], Awaitable[None]]) -> Callable[[Any], Awaitable[None]]:
    """YooKassa refusing a call (a capture of a canceled payment, say) is an answer, not a
    failure: logged, and the fact is done."""

    async def acting(fact: Any) -> None:
        try:
            await act(fact)
        except PaymentRefused as exc:
            _log.warning("delivery.refused", fact=type(fact).__name__, error=str(exc))

    return acting


async def serve(settings: Settings) -> None:
    assert settings.nats_url, "shop run/up sets NATS_URL"
    stop = shutdown.on_signals()
    replicas = settings.stream_replicas
    # Every step waits out a bus outage (a NATS election, JetStream not up yet); SIGTERM ends it.
    nc, js = await bus.attach(settings.nats_url, SERVICE, replicas=replicas, stop=stop)
    catalog = await CatalogView.open(nc, js, replicas=replicas, stop=stop)
    records = Records(
        await Documents.open(
            js, subjects.PAYMENTS_RECORDS_BUCKET, PaymentRecord, replicas=replicas, stop=stop
        )
    )
    if settings.sandbox:
        shop_id, secret = SANDBOX_CREDENTIALS
        api_url = f"http://{_local(settings.payments_http_host)}:{settings.payments_http_port}"
        api_url += f"{web.SANDBOX_PREFIX}/api/v3"
    else:
        assert settings.yookassa_shop_id and settings.yookassa_secret_key
        shop_id, secret, api_url = (
            settings.yookassa_shop_id,
            settings.yookassa_secret_key,
            settings.yookassa_api_url,
        )
    payments = Payments(js, records, catalog, YooKassa(shop_id, secret, api_url), settings)

    consuming = Runner(nc, js, SERVICE, max_deliveries=settings.max_deliveries, stop=stop)
    runner = await web.start(payments, nc, consuming, settings)
    _log.info(
        "payments.started",
        provider="sandbox" if settings.sandbox else "yookassa",
        capture=settings.payments_capture,
        receipts=settings.receipts,
        listen=f"{settings.payments_http_host}:{settings.payments_http_port}",
    )
    consumers: list[Consumer[Any]] = [
        Consumer[InventoryEvent](
            stream=subjects.INVENTORY,
            durable=subjects.PAYMENTS_INVENTORY_CONSUMER,
            subjects=subjects.INVENTORY_FACTS_FOR_PAYMENTS,
            kind=InventoryEvent,
            handle=_refusals_logged(payments.on_inventory),
            ack_wait=ACK_WAIT_S,
            retry_on=(ProviderUnavailable, nats.errors.Error),
        ),
        Consumer[OrderFulfilment](
            stream=subjects.ORDERS,
            durable=subjects.PAYMENTS_FULFILMENT_CONSUMER,
            subjects=[subjects.ORDERS_FULFILMENT_ALL],
            kind=OrderFulfilment,
            handle=payments.on_fulfilment,  # a refusal is retried: the status is read again
            ack_wait=ACK_WAIT_S,
            retry_on=(ProviderUnavailable, nats.errors.Error),
        ),
        Consumer[RefundRequested](
            stream=subjects.PAYMENTS,
            durable=subjects.PAYMENTS_REFUNDS_CONSUMER,
            subjects=[subjects.REFUND_REQUESTED_ALL],
            kind=RefundRequested,
            handle=_refusals_logged(payments.on_refund_requested),
            ack_wait=ACK_WAIT_S,
            retry_on=(ProviderUnavailable, nats.errors.Error),
        ),
        Consumer[CashReceived](
            stream=subjects.PAYMENTS,
            durable=subjects.PAYMENTS_CASH_CONSUMER,
            subjects=[subjects.CASH_RECEIVED_ALL],
            kind=CashReceived,
            handle=payments.on_cash_received,
            ack_wait=ACK_WAIT_S,
            retry_on=(nats.errors.Error,),
        ),
    ]
    try:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(consuming.run(consumers))
            tasks.create_task(_reconciler(payments, settings, stop))
    finally:
        await runner.cleanup()
        await catalog.close()
        await nc.drain()
    _log.info("payments.stopped")


async def _reconciler(payments: Payments, settings: Settings, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            await payments.reconcile()
        except (*bus.TRANSIENT, nats.errors.Error) as exc:
            _log.warning("reconcile.failed", error=repr(exc))
        except Exception:  # the reconciler is the safety net: it must outlive any surprise
            _log.exception("reconcile.failed")
        await shutdown.sleep_or_stop(stop, settings.payments_reconcile_every)


def _local(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host


def _now() -> datetime:
    return datetime.now(UTC)
