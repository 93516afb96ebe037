"""Every stream, subject, consumer and bucket name on the bus, and their idempotent declaration."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

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


def payment_fact(kind: PaymentKind, order_id: str) -> str:
    return f"payments.{kind}.{order_id}"


def payment_facts(*kinds: PaymentKind) -> list[str]:
    """A consumer's filter: these kinds of payment facts, for every order."""
    return [f"payments.{kind}.>" for kind in kinds]


# Payment facts the inventory acts on (commit on money, release on its absence).
REFUND_REQUESTED_ALL = f"payments.{PaymentKind.REFUND_REQUESTED}.>"
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
CRM_WRITER_BUCKET = "crm-writer"  # key `writer`: which crm_sync replica writes the sheet (a lease)
# The bot's own documents (services.bot.model), one type per bucket.
BOT_CARTS_BUCKET = "bot-carts"  # user id -> Cart
BOT_CUSTOMERS_BUCKET = "bot-customers"  # user id -> Contact last used
BOT_ORDERS_BUCKET = "bot-orders"  # order id -> OrderView
BOT_USER_ORDERS_BUCKET = "bot-user-orders"  # user id -> RecentOrders
BOT_AWAITING_BUCKET = "bot-awaiting"  # order id -> Awaiting: a reminder may still be due
BOT_PEOPLE_BUCKET = "bot-people"  # user id -> Person: the names of the admins who took steps
BOT_OPEN_ORDERS_BUCKET = "bot-open-orders"  # order id -> OpenOrder: sold, not yet delivered
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


async def declare_streams(js: JetStreamContext) -> None:
    """Create the streams, or bring an existing one to this configuration; safe to run anywhere."""
    for config in STREAMS:
        try:
            await js.add_stream(config)
        except nats.js.errors.BadRequestError:
            # Exists with another configuration (an older release): converge to this one.
            await js.update_stream(config)


async def declare_consumer(js: JetStreamContext, stream: str, config: ConsumerConfig) -> None:
    try:
        await js.add_consumer(stream, config)
    except nats.js.errors.BadRequestError:
        # Exists with another configuration: the server updates it in place on a second add.
        await js.add_consumer(stream, config)


async def declare_buckets(js: JetStreamContext) -> tuple[Any, Any, Any]:
    """The inventory's read models (history of one, file storage) and its snapshot store."""
    catalog = await js.create_key_value(
        KeyValueConfig(bucket=CATALOG_BUCKET, history=1, storage=StorageType.FILE)
    )
    stock = await js.create_key_value(
        KeyValueConfig(bucket=STOCK_BUCKET, history=1, storage=StorageType.FILE)
    )
    snapshots = await js.create_object_store(
        SNAPSHOT_BUCKET, ObjectStoreConfig(storage=StorageType.FILE)
    )
    return catalog, stock, snapshots
