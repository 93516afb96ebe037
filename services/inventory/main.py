"""The inventory process: the actor wired to its inputs (orders, payment facts, admin requests)."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from libs import bus, health, log, shutdown, subjects
from libs.contracts import (
    AdminReply,
    AdminRequest,
    OrderPlaced,
    PaymentAuthorized,
    PaymentCanceled,
    PaymentEvent,
    PaymentFailed,
    PaymentPending,
    PaymentRefunded,
    PaymentSucceeded,
    ReleaseOrder,
    WriterClaimed,
)
from libs.runner import Consumer, Delivery, Runner
from libs.settings import Settings
from services.inventory import catalog
from services.inventory.actor import MAX_BATCH, Actor, Job, PaymentOnBus
from services.inventory.core import Command, Commit, Release, Reserve, ReturnStock
from services.inventory.store import EventLog, ReadModels

_log = log.get(__name__)
SERVICE = "inventory"
# What a killed instance held comes back after this (the actor acks once a batch is appended).
ACK_WAIT_S = 10.0


def payment_command(fact: PaymentEvent) -> Command | None:
    match fact:
        case PaymentRefunded():
            # Written-off goods (damaged, lost) were refunded but never come back on hand.
            return ReturnStock(fact.order_id, fact.refund_id, fact.lines) if fact.restock else None
        case PaymentPending():
            return None
        case PaymentAuthorized() | PaymentSucceeded():
            return Commit(fact.order_id, fact.payment_id)
        case PaymentCanceled():
            return Release(fact.order_id, "payment_canceled", fact.payment_id)
        case PaymentFailed():
            return Release(fact.order_id, "payment_failed", fact.payment_id)


def payment_on_bus(js: JetStreamContext) -> PaymentOnBus:
    """The id of the order's payment if the PAYMENTS stream holds one (held or taken)."""
    decode = msgspec.json.Decoder(PaymentAuthorized | PaymentSucceeded).decode

    async def look(order_id: str) -> str | None:
        for kind in (subjects.PaymentKind.AUTHORIZED, subjects.PaymentKind.SUCCEEDED):
            try:
                msg = await js.get_last_msg(
                    subjects.PAYMENTS, subjects.payment_fact(kind, order_id)
                )
            except nats.js.errors.NotFoundError:
                continue
            fact: PaymentAuthorized | PaymentSucceeded = decode(msg.data or b"")
            return fact.payment_id
        return None

    return look


def health_check(nc: Client, js: JetStreamContext, runner: Runner, actor: Actor) -> health.Check:
    """Connected, consuming, and the role: `writer` when the last claim on the event log is
    this instance's, else `standby` (which takes the log over when it has something to write).

    The role is read from the stream, not the actor's own view: an instance that has not
    appended since another claimed the log still believes it writes.
    """
    decode = msgspec.json.Decoder(WriterClaimed).decode

    async def role() -> str:
        try:
            msg = await js.get_last_msg(subjects.INVENTORY, subjects.INVENTORY_WRITER)
        except nats.js.errors.NotFoundError:
            return "standby"
        except (*bus.TRANSIENT, nats.js.errors.Error):
            return "unknown"
        return "writer" if decode(msg.data or b"").writer_id == actor.writer_id else "standby"

    async def check() -> health.Report:
        return {**health.basics(nc, runner), "role": await role(), "seq": actor.seq}

    return check


async def serve(settings: Settings) -> None:
    assert settings.nats_url, "shop run/up sets NATS_URL"
    stop = shutdown.on_signals()
    nc, js = await bus.attach(
        settings.nats_url, SERVICE, replicas=settings.stream_replicas, stop=stop
    )
    _, _, snapshots = await bus.outlasting(
        lambda: subjects.declare_buckets(js, replicas=settings.stream_replicas),
        "declare buckets",
        stop,
    )
    actor = Actor(
        EventLog(nc, js, snapshots),
        ReadModels(nc),
        settings.snapshot_every,
        payment_on_bus=payment_on_bus(js),
    )
    await bus.outlasting(actor.load, "load the event log", stop)
    if not actor.state.products and not actor.state.categories:
        await _import_first_catalog(actor, settings, stop)

    async def on_orders(deliveries: list[Delivery[OrderPlaced]]) -> None:
        jobs = []
        for d in deliveries:
            placed = d.value
            # An order paid on receipt is held until the customer comes (CASH_HOLD).
            ttl = settings.cash_hold if placed.payment == "cash" else settings.reservation_ttl
            reserve = Reserve(placed.order_id, placed.lines, placed.total, ttl, placed.delivery)
            jobs.append(Job(reserve, d.msg))
        await actor.queue.put(jobs)

    async def on_payments(deliveries: list[Delivery[PaymentEvent]]) -> None:
        jobs = []
        for d in deliveries:
            command = payment_command(d.value)
            if command is None:  # not the inventory's business (the consumer's filter excludes it)
                await d.msg.ack()
            else:
                jobs.append(Job(command, d.msg))
        await actor.queue.put(jobs)

    admin_decode = msgspec.json.Decoder(AdminRequest).decode

    async def on_admin(msg: Msg) -> None:
        try:
            request = admin_decode(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            await msg.respond(bus.encode(AdminReply(0, 0, (f"bad request: {exc}",))))
            return
        commands: list[Command] = [
            Release(c.order_id, "admin") if isinstance(c, ReleaseOrder) else c
            for c in request.commands
        ]
        outcomes = await asyncio.gather(*(actor.submit(c) for c in commands))
        reply = AdminReply(
            changed=sum(1 for o in outcomes if isinstance(o, list) and o),
            unchanged=sum(1 for o in outcomes if isinstance(o, list) and not o),
            errors=tuple(o for o in outcomes if isinstance(o, str)),
            outcomes=tuple(o if isinstance(o, str) else "" for o in outcomes),
        )
        await msg.respond(bus.encode(reply))
        _log.info("admin.applied", changed=reply.changed, errors=len(reply.errors))

    admin = await nc.subscribe(
        subjects.INVENTORY_ADMIN, queue=subjects.INVENTORY_QUEUE, cb=on_admin
    )
    consumers: list[Consumer[Any]] = [
        Consumer[OrderPlaced](
            stream=subjects.ORDERS,
            durable=subjects.INVENTORY_ORDERS_CONSUMER,
            subjects=[subjects.ORDERS_PLACED_ALL],
            kind=OrderPlaced,
            handle_batch=on_orders,
            batch=MAX_BATCH,
            ack_wait=ACK_WAIT_S,
        ),
        Consumer[PaymentEvent](
            stream=subjects.PAYMENTS,
            durable=subjects.INVENTORY_PAYMENTS_CONSUMER,
            subjects=subjects.PAYMENT_FACTS_FOR_INVENTORY,
            kind=PaymentEvent,
            handle_batch=on_payments,
            batch=MAX_BATCH,
            ack_wait=ACK_WAIT_S,
        ),
    ]
    consuming = Runner(nc, js, SERVICE, max_deliveries=settings.max_deliveries, stop=stop)
    listener = await health.serve(
        settings.inventory_http_host,
        settings.inventory_http_port,
        health_check(nc, js, consuming, actor),
        required=False,
    )
    _log.info("inventory.started", seq=actor.seq, products=len(actor.state.products))
    try:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(actor.run(stop))
            tasks.create_task(consuming.run(consumers))
    finally:
        await health.close(listener)
        await admin.unsubscribe()
        await actor.close()
        await nc.drain()
    _log.info("inventory.stopped", seq=actor.seq)


async def _import_first_catalog(actor: Actor, settings: Settings, stop: asyncio.Event) -> None:
    """No catalog in the event log means a new shop: start it with the configured (or demo) one."""
    path = settings.catalog_file or catalog.DEMO_CATALOG
    try:
        commands = catalog.load(path)
    except catalog.CatalogError as exc:
        _log.error("catalog.unusable", error=str(exc))
        return
    for start in range(0, len(commands), MAX_BATCH):
        await actor.apply([Job(c) for c in commands[start : start + MAX_BATCH]], stop)
    _log.info("catalog.imported", file=str(path), commands=len(commands), seq=actor.seq)
