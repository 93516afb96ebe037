"""Every stream, subject, consumer and bucket name on the bus, and their idempotent declaration."""

from __future__ import annotations

import asyncio
import dataclasses
from enum import StrEnum

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import (
    ConsumerConfig,
    DiscardPolicy,
    KeyValueConfig,
    ObjectStoreConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from libs import log

_log = log.get(__name__)

# Streams ------------------------------------------------------------------------------------------
ORDERS = "ORDERS"
INVENTORY = "INVENTORY"
PAYMENTS = "PAYMENTS"
DEADLETTER = "DEADLETTER"
ALERTS = "ALERTS"

# A redelivered publish (a retry after a lost ack, a double tap) is dropped within this window.
DUPLICATE_WINDOW_S = 10 * 60.0
DEADLETTER_MAX_AGE_S = 30 * 24 * 3600.0


# Subjects: facts end in the order id or the SKU ---------------------------------------------------
def order_placed(order_id: str) -> str:
    return f"orders.placed.{order_id}"


ORDERS_PLACED_ALL = "orders.placed.>"


def order_fulfilment(order_id: str) -> str:
    """An order's steps after paid, each fact expecting the last one here (libs.fulfilment)."""
    return f"orders.fulfilment.{order_id}"


ORDERS_FULFILMENT_ALL = "orders.fulfilment.>"

# inventory.<fact>.<order id | sku | category id>
INVENTORY_ALL = "inventory.>"


# The inventory's writer lease: every append expects the last message here to be its own claim.
INVENTORY_WRITER = "inventory.writer"


def inventory_fact(kind: str, key: str) -> str:
    return f"inventory.{kind}.{key}"


class PaymentKind(StrEnum):
    """payments.<kind>.<order id>: what each payment fact is called in its subject."""

    PENDING = "pending"
    AUTHORIZED = "authorized"
    SUCCEEDED = "succeeded"
    CANCELED = "canceled"
    FAILED = "failed"
    REFUNDED = "refunded"
    REFUND_REQUESTED = "refund_requested"
    CASH_RECEIVED = "cash_received"  # a command from the order desk: paid on receipt


def payment_fact(kind: PaymentKind, order_id: str) -> str:
    return f"payments.{kind}.{order_id}"


def payment_facts(*kinds: PaymentKind) -> list[str]:
    """A consumer's filter: these kinds of payment facts, for every order."""
    return [f"payments.{kind}.>" for kind in kinds]


# Payment facts the inventory acts on (commit on money, release on its absence).
REFUND_REQUESTED_ALL = f"payments.{PaymentKind.REFUND_REQUESTED}.>"
CASH_RECEIVED_ALL = f"payments.{PaymentKind.CASH_RECEIVED}.>"
PAYMENTS_RECORDS_BUCKET = "payments"  # keys: order id -> the payments service's record

PAYMENT_FACTS_FOR_INVENTORY = payment_facts(
    PaymentKind.AUTHORIZED,
    PaymentKind.SUCCEEDED,
    PaymentKind.CANCELED,
    PaymentKind.FAILED,
    PaymentKind.REFUNDED,
)


# alerts.<what>: operational alerts for the admin chat (crm_sync falling behind, catching up).
ALERTS_ALL = "alerts.>"
ALERT_CRM_BEHIND = "alerts.crm.behind"
ALERT_CRM_CAUGHT_UP = "alerts.crm.caught_up"


def alert_dead_letter(service: str) -> str:
    return f"alerts.dead_letter.{service}"


ALERTS_MAX_AGE_S = 7 * 24 * 3600.0


def dead_letter(service: str, subject: str) -> str:
    return f"deadletter.{service}.{subject}"


# Request/reply (core NATS, outside every stream's subjects) ---------------------------------------
INVENTORY_ADMIN = "admin.inventory"
INVENTORY_QUEUE = "inventory"

# Durable consumers --------------------------------------------------------------------------------
INVENTORY_ORDERS_CONSUMER = "inventory-orders"
INVENTORY_PAYMENTS_CONSUMER = "inventory-payments"
PAYMENTS_INVENTORY_CONSUMER = "payments-inventory"
INVENTORY_FACTS_FOR_BOT = [
    "inventory.reserved.>",
    "inventory.rejected.>",
    "inventory.committed.>",
    "inventory.commit_failed.>",
    "inventory.released.>",
]
PAYMENT_FACTS_FOR_BOT = payment_facts(
    PaymentKind.PENDING,
    PaymentKind.AUTHORIZED,
    PaymentKind.SUCCEEDED,
    PaymentKind.CANCELED,
    PaymentKind.FAILED,
    PaymentKind.REFUNDED,
)
PAYMENTS_REFUNDS_CONSUMER = "payments-refunds"
PAYMENTS_CASH_CONSUMER = "payments-cash"  # orders paid on receipt, as the desk marks them
PAYMENTS_FULFILMENT_CONSUMER = "payments-fulfilment"  # a cancelled order's money goes back
BOT_INVENTORY_CONSUMER = "bot-inventory"
BOT_PAYMENTS_CONSUMER = "bot-payments"
BOT_ALERTS_CONSUMER = "bot-alerts"
BOT_FULFILMENT_CONSUMER = "bot-fulfilment"  # the desks' steps, told to the customer
# crm_sync: one consumer per stream; facts that change a row of the sheet.
CRM_ORDERS_CONSUMER = "crm-orders"
CRM_INVENTORY_CONSUMER = "crm-inventory"
CRM_PAYMENTS_CONSUMER = "crm-payments"
ORDER_FACTS_FOR_CRM = [ORDERS_PLACED_ALL, ORDERS_FULFILMENT_ALL]
INVENTORY_FACTS_FOR_CRM = [
    "inventory.reserved.>",
    "inventory.rejected.>",
    "inventory.committed.>",
    "inventory.commit_failed.>",
    "inventory.released.>",
]
PAYMENT_FACTS_FOR_CRM = PAYMENT_FACTS_FOR_BOT
# Not `released`: a reservation's end never moves money (the inventory's answer does).
INVENTORY_FACTS_FOR_PAYMENTS = [
    "inventory.reserved.>",
    "inventory.committed.>",
    "inventory.commit_failed.>",
]

# Buckets ------------------------------------------------------------------------------------------
CATALOG_BUCKET = "catalog"  # keys: category.<id>, product.<sku>, delivery
CATALOG_DELIVERY_KEY = "delivery"  # the shop's delivery methods and minimum order (DeliverySet)
STOCK_BUCKET = "stock"  # keys: <sku>
SNAPSHOT_BUCKET = "inventory-snapshots"  # object store: the actor's last snapshot
SNAPSHOT_NAME = "state"
CRM_BUCKET = "crm"  # key `status`: crm_sync's report (backlog, last write, error)
CRM_STATUS_KEY = "status"
CRM_ORDERS_BUCKET = "crm-orders"  # keys: order id -> the order's lifecycle state (libs.lifecycle)
# keys: sku -> what the Catalog tab and the catalog last agreed on (crm_sync.catalog_tab.Synced)
CRM_CATALOG_BUCKET = "crm-catalog"
CRM_WRITER_BUCKET = "crm-writer"  # key `writer`: which crm_sync replica writes the sheet (a lease)
# The bot's own documents (services.bot.model), one type per bucket.
BOT_CARTS_BUCKET = "bot-carts"  # user id -> Cart
BOT_CUSTOMERS_BUCKET = "bot-customers"  # user id -> Contact last used
BOT_ORDERS_BUCKET = "bot-orders"  # order id -> OrderView
BOT_USER_ORDERS_BUCKET = "bot-user-orders"  # user id -> RecentOrders
BOT_AWAITING_BUCKET = "bot-awaiting"  # order id -> Awaiting: a reminder may still be due
BOT_PEOPLE_BUCKET = "bot-people"  # user id -> Person: the names of the admins who took steps
BOT_OPEN_ORDERS_BUCKET = "bot-open-orders"  # order id -> OpenOrder: sold, not yet delivered
# <sku>.<user id> -> Watcher: told once when the product is back (services.bot.back_in_stock)
BOT_BACK_IN_STOCK_BUCKET = "bot-back-in-stock"
BOT_CONVERSATIONS_BUCKET = "bot-fsm"  # aiogram's FSM: chat -> Conversation
BOT_POLLER_BUCKET = "bot-poller"  # key `holder`: which bot replica polls Telegram (a lease)

STREAMS: tuple[StreamConfig, ...] = tuple(
    StreamConfig(
        name=name,
        subjects=subjects,
        storage=StorageType.FILE,
        retention=RetentionPolicy.LIMITS,
        discard=DiscardPolicy.OLD,
        duplicate_window=DUPLICATE_WINDOW_S,
        max_age=max_age,
        allow_atomic=atomic or None,
    )
    for name, subjects, max_age, atomic in (
        (ORDERS, ["orders.>"], 0.0, False),
        # The inventory appends its events in atomic batches (group commit with fencing).
        (INVENTORY, [INVENTORY_ALL], 0.0, True),
        (PAYMENTS, ["payments.>"], 0.0, False),
        (DEADLETTER, ["deadletter.>"], DEADLETTER_MAX_AGE_S, False),
        (ALERTS, [ALERTS_ALL], ALERTS_MAX_AGE_S, False),
    )
)


class ReplicasRefused(Exception):
    """NATS would not give a stream the replica count asked for (STREAM_REPLICAS); the message
    says which stream and why (one nats-server has no room for three copies, say)."""


async def declare_streams(js: JetStreamContext, *, replicas: int | None = None) -> None:
    """Create the streams, or bring an existing one to this configuration; safe to run anywhere.

    `replicas` (STREAM_REPLICAS): each stream's copies, changed in place on an existing stream.
    None leaves an existing stream's count as it is (tools and tests that only need the streams
    there must not scale a cluster's streams down); a new one then gets one copy.
    """
    for config in STREAMS:
        await _declare_stream(js, config, replicas)


async def _declare_stream(js: JetStreamContext, config: StreamConfig, replicas: int | None) -> None:
    config = dataclasses.replace(config, num_replicas=replicas or 1)
    try:
        await js.add_stream(config)
        return
    except nats.js.errors.ServiceUnavailableError:
        raise  # no JetStream leader (an election): not a refusal; the caller waits and asks again
    except nats.js.errors.APIError as exc:
        refused: nats.js.errors.APIError = exc
    # Exists with another configuration (an older release, another replica count): converge.
    assert config.name is not None
    try:
        have = (await js.stream_info(config.name)).config.num_replicas or 1
    except nats.js.errors.NotFoundError:
        raise _refused(config.name, config.num_replicas, refused) from None
    if replicas is None:
        config.num_replicas = have
    try:
        await js.update_stream(config)
    except nats.js.errors.APIError as exc:
        raise _refused(config.name, config.num_replicas, exc) from None
    if config.num_replicas != have:
        await _settled(js, config.name, config.num_replicas or 1, have)


def _refused(stream: str, replicas: int | None, exc: nats.js.errors.APIError) -> ReplicasRefused:
    return ReplicasRefused(
        f"NATS refused stream {stream} with {replicas} replica(s) (STREAM_REPLICAS): "
        f"{exc.description or exc}"
    )


async def key_value(
    js: JetStreamContext, config: KeyValueConfig, *, replicas: int | None = None
) -> KeyValue:
    """A KV bucket, created with `replicas` copies or, if it exists, brought to that count in
    place (None: an existing bucket keeps its count)."""
    config = dataclasses.replace(config, replicas=replicas or 1)
    try:
        return await js.create_key_value(config)
    except nats.js.errors.ServiceUnavailableError:
        raise  # no JetStream leader (an election): not a refusal; the caller waits and asks again
    except nats.js.errors.APIError as exc:
        # Exists with another configuration. nats-py's create does not update: set the copies
        # on the bucket's own stream, then create again (the same call, now a no-op).
        have = await _rescale(js, f"KV_{config.bucket}", replicas, exc)
        return await js.create_key_value(dataclasses.replace(config, replicas=have))


async def object_store(
    js: JetStreamContext, bucket: str, config: ObjectStoreConfig, *, replicas: int | None = None
) -> ObjectStore:
    """An object store, created with `replicas` copies or brought to that count in place."""
    config = dataclasses.replace(config, replicas=replicas or 1)
    try:
        return await js.create_object_store(bucket, config)
    except nats.js.errors.ServiceUnavailableError:
        raise  # no JetStream leader (an election): not a refusal; the caller waits and asks again
    except nats.js.errors.APIError as exc:
        have = await _rescale(js, f"OBJ_{bucket}", replicas, exc)
        return await js.create_object_store(bucket, dataclasses.replace(config, replicas=have))


async def _rescale(
    js: JetStreamContext, stream: str, replicas: int | None, refused: nats.js.errors.APIError
) -> int:
    """A bucket's stream brought to `replicas` copies (None: as it has); its copies now.
    Re-raises `refused` if the copies are not what differs."""
    try:
        info = await js.stream_info(stream)
    except nats.js.errors.NotFoundError:
        raise _refused(stream, replicas, refused) from None
    have = info.config.num_replicas or 1
    if replicas is None and have != 1:
        return have  # created with one copy above: that was the difference
    if replicas is None or replicas == have:
        raise refused
    try:
        await js.update_stream(dataclasses.replace(info.config, num_replicas=replicas))
    except nats.js.errors.APIError as exc:
        raise _refused(stream, replicas, exc) from None
    await _settled(js, stream, replicas, have)
    return replicas


SCALE_WAIT_S = 30.0


async def _settled(js: JetStreamContext, stream: str, replicas: int, was: int) -> None:
    """After a change of copies, wait (bounded) until the stream has a leader and every new copy
    has caught up: a write right after the change would otherwise time out during the election."""
    deadline = asyncio.get_running_loop().time() + SCALE_WAIT_S
    while True:
        try:
            cluster = (await js.stream_info(stream)).cluster
        except (nats.js.errors.APIError, nats.errors.TimeoutError):
            pass  # no leader to answer yet
        else:
            peers = (cluster.replicas or []) if cluster else []
            if cluster is None or (  # None: not a cluster (one copy is all there is)
                cluster.leader and len(peers) == replicas - 1 and all(p.current for p in peers)
            ):
                break
        if asyncio.get_running_loop().time() > deadline:
            _log.warning("stream.replicas_not_settled", stream=stream, replicas=replicas)
            return
        await asyncio.sleep(0.1)
    _log.info("stream.replicas_changed", stream=stream, was=was, now=replicas)


async def declare_consumer(js: JetStreamContext, stream: str, config: ConsumerConfig) -> None:
    try:
        await js.add_consumer(stream, config)
    except nats.js.errors.BadRequestError:
        # Exists with another configuration: the server updates it in place on a second add.
        await js.add_consumer(stream, config)


async def declare_buckets(
    js: JetStreamContext, *, replicas: int | None = None
) -> tuple[KeyValue, KeyValue, ObjectStore]:
    """The inventory's read models (history of one, file storage) and its snapshot store."""
    file = StorageType.FILE
    catalog = await key_value(
        js, KeyValueConfig(bucket=CATALOG_BUCKET, history=1, storage=file), replicas=replicas
    )
    stock = await key_value(
        js, KeyValueConfig(bucket=STOCK_BUCKET, history=1, storage=file), replicas=replicas
    )
    snapshots = await object_store(
        js, SNAPSHOT_BUCKET, ObjectStoreConfig(storage=file), replicas=replicas
    )
    return catalog, stock, snapshots
