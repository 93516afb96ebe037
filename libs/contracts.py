"""The facts on the bus and the read models, as frozen tagged msgspec Structs.

Money is an integer number of kopecks; times are timezone-aware UTC. Contracts change
additively only: a new field gets a default, a field never changes its type.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

# Ids become subject tokens and KV keys, so they are restricted to what both accept.
Token = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


class Fact(msgspec.Struct, frozen=True, tag_field="type", forbid_unknown_fields=False):
    """Base of every message on the bus."""


# orders.* (the bot) -------------------------------------------------------------------------------
class OrderLine(msgspec.Struct, frozen=True):
    sku: Token
    qty: int
    unit_price: int  # kopecks, as the customer saw it


class Contact(msgspec.Struct, frozen=True):
    name: str = ""
    phone: str = ""  # E.164
    address: str = ""
    email: str = ""
    comment: str = ""


class DeliveryChoice(msgspec.Struct, frozen=True, kw_only=True):
    """How the customer chose to get the order, at the price they were shown."""

    method_id: Token
    price: int  # kopecks
    city: str = ""  # a courier's destination (checked against the method's cities)


# How the customer pays: a card (held, then captured once the stock is committed), the Faster
# Payments System (charged at once), or cash or a card when the goods are handed over.
PaymentMethod = Literal["card", "sbp", "cash"]


class OrderPlaced(Fact, frozen=True, tag="order_placed"):
    order_id: Token
    customer_id: int  # Telegram user id
    lines: tuple[OrderLine, ...]
    total: int  # kopecks: the goods and the delivery
    placed_at: datetime
    contact: Contact = Contact()
    chat_id: int = 0
    delivery: DeliveryChoice | None = None  # None: no delivery chosen (a shop without methods)
    payment: PaymentMethod = "card"


FulfilmentStep = Literal["packed", "shipped", "ready_for_pickup", "delivered", "cancelled"]


class FulfilmentEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One step of an order after it was paid: who took it (a Telegram user id) and when."""

    step: FulfilmentStep
    at: datetime
    by: int
    by_customer: bool = False  # a cancellation asked for by the customer, not the shop
    carrier: str = ""  # shipped: libs.fulfilment.Carrier's value
    tracking: str = ""  # shipped: the tracking number, as the carrier writes it


class OrderFulfilment(Fact, frozen=True, tag="order_fulfilment"):
    """orders.fulfilment.<order id>: the order moved one step; `history` is every step so far,
    this one last. Published expecting the subject's last sequence (libs.fulfilment), so two
    desks acting at once make one change, and each fact holds the whole history."""

    order_id: Token
    history: tuple[FulfilmentEntry, ...]
    at: datetime


# inventory.* (the inventory actor: these events are the truth) ------------------------------------
class CategoryUpserted(Fact, frozen=True, tag="category_upserted"):
    category_id: Token
    title: str
    position: int
    at: datetime


class ProductUpserted(Fact, frozen=True, tag="product_upserted"):
    sku: Token
    title: str
    description: str
    price: int  # kopecks
    photo_url: str
    category_id: Token
    position: int
    at: datetime
    weight: int = 0  # grams
    visible: bool = True  # False: hidden from customers, its history and stock kept


class PriceSet(Fact, frozen=True, tag="price_set"):
    sku: Token
    price: int
    at: datetime


StockReason = Literal["restock", "write_off", "count", "refund"]


class StockAdjusted(Fact, frozen=True, tag="stock_adjusted"):
    sku: Token
    delta: int
    on_hand: int  # after the adjustment
    reason: StockReason
    adjustment_id: str  # empty for a count, which is idempotent by value
    at: datetime


class ReservedLine(msgspec.Struct, frozen=True):
    sku: Token
    qty: int
    unit_price: int  # the catalog price at reservation time, kopecks


class Reserved(Fact, frozen=True, tag="reserved"):
    order_id: Token
    lines: tuple[ReservedLine, ...]
    total: int  # kopecks: the goods at the catalog's prices and the delivery at its price
    expires_at: datetime
    at: datetime
    delivery: DeliveryChoice | None = None  # at the catalog's price


RejectReason = Literal[
    "empty_order",
    "too_many_lines",
    "unknown_sku",
    "bad_quantity",
    "price_mismatch",
    "total_mismatch",
    "out_of_stock",
    "below_minimum",  # the goods are worth less than the shop's minimum order
    "delivery_unknown",  # no such delivery method (any more)
    "delivery_city",  # the courier does not go there
    "delivery_price",  # the delivery's price is not the catalog's for this order
]


class LineProblem(msgspec.Struct, frozen=True):
    """One line that stopped the order, with the numbers the customer needs to fix it."""

    sku: Token
    requested: int
    available: int
    unit_price: int = 0  # what the order said
    catalog_price: int = 0  # what the catalog says


class Rejected(Fact, frozen=True, tag="rejected"):
    order_id: Token
    reason: RejectReason
    problems: tuple[LineProblem, ...]
    at: datetime


class Committed(Fact, frozen=True, tag="committed"):
    order_id: Token
    lines: tuple[ReservedLine, ...]
    payment_id: str
    at: datetime


CommitFailReason = Literal["stock_gone", "unknown_order", "not_reserved"]


class CommitFailed(Fact, frozen=True, tag="commit_failed"):
    order_id: Token
    reason: CommitFailReason
    payment_id: str
    problems: tuple[LineProblem, ...]
    at: datetime


ReleaseReason = Literal["expired", "payment_canceled", "payment_failed", "admin"]


class Released(Fact, frozen=True, tag="released"):
    """The order's stock is free again: a reservation that ended, or a committed order whose
    held payment was cancelled before capture (`payment_id` is then the cancelled payment)."""

    order_id: Token
    lines: tuple[ReservedLine, ...]
    reason: ReleaseReason
    at: datetime
    payment_id: str = ""  # the payment whose cancellation released it, if one did


DeliveryKind = Literal["pickup", "courier", "post"]


class DeliveryMethod(msgspec.Struct, frozen=True, kw_only=True):
    """One way the shop hands its goods over, and its price (libs.delivery prices a cart)."""

    id: Token
    title: str
    kind: DeliveryKind
    price: int  # kopecks
    free_from: int = 0  # kopecks: free for goods worth at least this (0: never free)
    cities: tuple[str, ...] = ()  # a courier's cities (empty: anywhere)
    base_weight: int = 0  # grams the price covers (post)
    per_kg: int = 0  # kopecks per started kilogram over base_weight (post)
    address: str = ""  # pickup: where
    hours: str = ""  # pickup: when


class DeliverySet(Fact, frozen=True, tag="delivery_set"):
    """The shop's delivery methods, in the order it offers them, and its minimum order."""

    methods: tuple[DeliveryMethod, ...]
    min_order: int  # kopecks of goods (0: none)
    at: datetime


class WriterClaimed(Fact, frozen=True, tag="writer_claimed"):
    """An inventory instance took over as the one writer; appends of any earlier one now fail."""

    writer_id: Token
    at: datetime


InventoryEvent = (
    CategoryUpserted
    | ProductUpserted
    | PriceSet
    | StockAdjusted
    | Reserved
    | Rejected
    | Committed
    | CommitFailed
    | Released
    | WriterClaimed
    | DeliverySet
)


# payments.* (the payments service) ----------------------------------------------------------------
class PaymentPending(Fact, frozen=True, tag="payment_pending"):
    """A payment was created: the customer can pay at `confirmation_url` until `expires_at`."""

    order_id: Token
    payment_id: str
    amount: int
    confirmation_url: str
    expires_at: datetime  # when the reservation (and so the offer) ends
    at: datetime


class PaymentAuthorized(Fact, frozen=True, tag="payment_authorized"):
    order_id: Token
    payment_id: str
    amount: int
    at: datetime


class PaymentSucceeded(Fact, frozen=True, tag="payment_succeeded"):
    order_id: Token
    payment_id: str
    amount: int
    at: datetime


class PaymentCanceled(Fact, frozen=True, tag="payment_canceled"):
    """YooKassa's `cancellation_details`: who (`party`) and why (`reason`, e.g.
    `expired_on_confirmation`, `insufficient_funds`, `canceled_by_merchant`)."""

    order_id: Token
    payment_id: str
    reason: str
    at: datetime
    party: str = ""


class PaymentFailed(Fact, frozen=True, tag="payment_failed"):
    """The payment could not be made at all (YooKassa refused the request for good)."""

    order_id: Token
    payment_id: str
    reason: str
    at: datetime


class PaymentRefunded(Fact, frozen=True, tag="payment_refunded"):
    """Money went back: `lines` are what was returned (empty: no goods were handed over)."""

    order_id: Token
    payment_id: str
    refund_id: str
    amount: int
    lines: tuple[OrderLine, ...]
    reason: str
    at: datetime
    restock: bool = True  # the goods in `lines` go back on hand (False: written off)
    # the delivery given back with everything else, at the part of `amount` that paid for it
    delivery: DeliveryChoice | None = None


class RefundRequested(Fact, frozen=True, tag="refund_requested"):
    """A command to payments: refund these lines of a paid order (none listed: all of it)."""

    request_id: Token
    order_id: Token
    reason: str
    lines: tuple[OrderLine, ...] = ()
    restock: bool = True  # the goods come back on hand (False: written off, damaged or lost)


class CashReceived(Fact, frozen=True, tag="cash_received"):
    """A command to payments: the customer paid an order that is paid on receipt (cash, or a
    card at the counter), as an admin marked it from the order desk."""

    order_id: Token
    by: int  # the admin's Telegram user id
    at: datetime


PaymentEvent = (
    PaymentPending
    | PaymentAuthorized
    | PaymentSucceeded
    | PaymentCanceled
    | PaymentFailed
    | PaymentRefunded
)


# Admin commands to the inventory (request/reply on subjects.INVENTORY_ADMIN) ----------------------
class UpsertCategory(Fact, frozen=True, tag="upsert_category"):
    category_id: Token
    title: str
    position: int = 0


class UpsertProduct(Fact, frozen=True, tag="upsert_product"):
    sku: Token
    title: str
    price: int  # kopecks
    category_id: Token
    description: str = ""
    photo_url: str = ""
    position: int = 0
    weight: int = 0  # grams (0: not given), for delivery priced by weight
    visible: bool = True  # False: hidden from customers (not sold), its history and stock kept


class SetVisible(Fact, frozen=True, tag="set_visible"):
    """Hide a product from customers (it is no longer sold) or show it again."""

    sku: Token
    visible: bool


class SetPhoto(Fact, frozen=True, tag="set_photo"):
    """A product's photo alone (a Telegram file_id or a URL; "" none), its other fields as the
    inventory has them: a photo changed in Telegram never undoes a price changed in the sheet."""

    sku: Token
    photo_url: str


class SetPrice(Fact, frozen=True, tag="set_price"):
    sku: Token
    price: int


class AdjustStock(Fact, frozen=True, tag="adjust_stock"):
    """Restock (+) or write-off (-); applied once per adjustment_id."""

    adjustment_id: Token
    sku: Token
    delta: int
    reason: Literal["restock", "write_off"]


class CountStock(Fact, frozen=True, tag="count_stock"):
    """Set on-hand to what was counted (an import, a stocktake); idempotent by value."""

    sku: Token
    on_hand: int


class ReleaseOrder(Fact, frozen=True, tag="release_order"):
    order_id: Token


class SetDelivery(Fact, frozen=True, tag="set_delivery"):
    """The shop's delivery methods and minimum order, as a whole (idempotent by value)."""

    methods: tuple[DeliveryMethod, ...]
    min_order: int = 0


AdminCommand = (
    UpsertCategory
    | UpsertProduct
    | SetPrice
    | AdjustStock
    | CountStock
    | SetVisible
    | SetPhoto
    | ReleaseOrder
    | SetDelivery
)


class AdminRequest(msgspec.Struct, frozen=True):
    commands: tuple[AdminCommand, ...]


class AdminReply(msgspec.Struct, frozen=True):
    changed: int
    unchanged: int
    errors: tuple[str, ...] = ()
    # One per command, in the request's order: "" done (or already done before), else why it
    # was refused; for a caller that answers per command (the sheet's Catalog tab, row by row).
    outcomes: tuple[str, ...] = ()


# alerts.* (crm_sync, the consumer runner; told by the bot to the admin chat) ----------------------
class CrmBehind(Fact, frozen=True, tag="crm_behind"):
    """The sheet is falling behind: the oldest fact not yet in it is older than the alert age."""

    backlog: int  # facts not yet written
    oldest_at: datetime
    error: str  # the last write's failure, for the admin ("" if it is just slow)
    at: datetime


class CrmCaughtUp(Fact, frozen=True, tag="crm_caught_up"):
    behind_since: datetime
    at: datetime


class DeadLettered(Fact, frozen=True, tag="dead_lettered", kw_only=True):
    """A service gave up on a message (it did not decode, or its handler kept failing): kept on
    the DEADLETTER stream, told to the admin chat once."""

    service: str
    stream: str
    sequence: int
    subject: str
    reason: str
    at: datetime


AlertEvent = CrmBehind | CrmCaughtUp | DeadLettered


class CrmStatus(msgspec.Struct, frozen=True, kw_only=True):
    """crm_sync's own report (KV `crm`, key `status`), read by `shop status`."""

    sink: str  # where it writes: "Google Sheet <id>" or "CSV files in <dir>"
    backlog: int = 0  # facts on the bus not yet in the sheet
    oldest_at: datetime | None = None  # the oldest of them
    written: int = 0  # facts written since the service started
    last_write_at: datetime | None = None
    error: str = ""  # why the last attempt failed ("" when the last one worked)
    behind_since: datetime | None = None  # set while an alert is out
    at: datetime  # when this report was made


# Read models in KV (written by the inventory, read by the bot) ------------------------------------
class CatalogCategory(msgspec.Struct, frozen=True):
    category_id: Token
    title: str
    position: int


class CatalogProduct(msgspec.Struct, frozen=True):
    sku: Token
    title: str
    description: str
    price: int
    photo_url: str
    category_id: Token
    position: int
    weight: int = 0  # grams
    visible: bool = True  # False: hidden from customers (the admins still see it)


class CatalogDelivery(msgspec.Struct, frozen=True):
    """KV catalog, key `delivery`: the shop's delivery methods and its minimum order."""

    methods: tuple[DeliveryMethod, ...] = ()
    min_order: int = 0  # kopecks of goods


class StockLevel(msgspec.Struct, frozen=True):
    sku: Token
    on_hand: int
    reserved: int
    available: int
    seq: int  # the INVENTORY stream sequence this level reflects
    file_restocks: int = 0  # the last restock applied from a catalog file (its restock_no)
