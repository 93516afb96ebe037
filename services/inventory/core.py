"""The inventory's pure core: `decide(state, command, now) -> events` and `evolve(state, event)`.

No I/O here. The state is immutable (persistent maps), so the shell can decide a whole batch
ahead and throw the result away if its append is fenced off. Every command is idempotent by its
id: deciding it again against a state that already holds its effect yields no events.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from datetime import datetime, timedelta

import msgspec
from immutables import Map

from libs import delivery
from libs.contracts import (
    AdjustStock,
    CategoryUpserted,
    CommitFailed,
    CommitFailReason,
    Committed,
    CountStock,
    DeliveryChoice,
    DeliveryMethod,
    DeliverySet,
    InventoryEvent,
    LineProblem,
    OrderLine,
    PriceSet,
    ProductUpserted,
    Rejected,
    RejectReason,
    Released,
    ReleaseReason,
    Reserved,
    ReservedLine,
    SetDelivery,
    SetPhoto,
    SetPrice,
    SetVisible,
    StockAdjusted,
    UpsertCategory,
    UpsertProduct,
    WriterClaimed,
)

MAX_LINE_QTY = 1_000  # more than any small shop sells in one line; above it is a typo or an attack
MAX_LINES = 50
MAX_PRICE = 100_000_000_00  # kopecks


# Commands that come from facts (the shell builds them); admin commands are the contracts' own.
class Reserve(msgspec.Struct, frozen=True, tag="reserve"):
    order_id: str
    lines: tuple[OrderLine, ...]
    total: int
    ttl_seconds: int
    delivery: DeliveryChoice | None = None


class Commit(msgspec.Struct, frozen=True, tag="commit"):
    order_id: str
    payment_id: str


class Release(msgspec.Struct, frozen=True, tag="release"):
    order_id: str
    reason: ReleaseReason
    payment_id: str = ""  # the payment that was cancelled or failed, if that is the reason


class Expire(msgspec.Struct, frozen=True, tag="expire"):
    order_id: str


class ReturnStock(msgspec.Struct, frozen=True, tag="return_stock"):
    """Goods of a paid order came back with a refund: they are on hand again."""

    order_id: str
    refund_id: str
    lines: tuple[OrderLine, ...]


Command = (
    Reserve
    | Commit
    | Release
    | Expire
    | ReturnStock
    | UpsertCategory
    | UpsertProduct
    | SetPrice
    | AdjustStock
    | CountStock
    | SetVisible
    | SetPhoto
    | SetDelivery
)


class CommandRefused(Exception):
    """An admin command that cannot apply (orders get a `Rejected` fact instead)."""


# State --------------------------------------------------------------------------------------------
class Category(msgspec.Struct, frozen=True):
    category_id: str
    title: str
    position: int


class Product(msgspec.Struct, frozen=True):
    sku: str
    title: str
    description: str
    price: int
    photo_url: str
    category_id: str
    position: int
    on_hand: int = 0
    reserved: int = 0
    weight: int = 0  # grams
    visible: bool = True  # False: not sold (customers do not see it), history and stock kept
    file_restocks: int = 0  # the highest n of the catalog file's restocks applied (file_restock_id)

    @property
    def available(self) -> int:
        return self.on_hand - self.reserved


class Order(msgspec.Struct, frozen=True):
    # reserved | committed | released | rejected | commit_failed | hold_lapsed (committed, then
    # its held payment was cancelled before capture: the goods went back, the order is over)
    status: str
    lines: tuple[ReservedLine, ...] = ()
    expires_at: datetime | None = None
    # committed: the payment that took the stock; released: the payment that was cancelled
    payment_id: str = ""
    cancelled: tuple[str, ...] = ()  # payments cancelled for it: none of them takes its stock


class State(msgspec.Struct, frozen=True):
    categories: Map[str, Category] = Map()
    products: Map[str, Product] = Map()
    orders: Map[str, Order] = Map()
    adjustments: Map[str, int] = Map()  # applied adjustment id -> delta
    delivery: tuple[DeliveryMethod, ...] = ()  # the shop's methods, in its order
    min_order: int = 0  # kopecks of goods (0: none)

    def reservations(self) -> list[tuple[datetime, str]]:
        """(expires_at, order_id) of every live reservation: the shell's timers after a load."""
        return [
            (order.expires_at, order_id)
            for order_id, order in self.orders.items()
            if order.status == "reserved" and order.expires_at is not None
        ]


EMPTY = State()


def file_restock_id(sku: str, n: int) -> str:
    """The AdjustStock id of a product's `n`th restock from a catalog file (`restock:` in
    `shop catalog import`): the export writes the last n as `restock_no`, so importing one file
    twice sends the same id, and an edit in a new export the next. A Token: at most 64
    characters, so a long SKU is hashed."""
    name = f"file-{sku}-{n}"
    if len(name) <= 64:
        return name
    return f"file-{hashlib.sha1(sku.encode()).hexdigest()[:20]}-{n}"


def _upserted(product: Product, now: datetime) -> ProductUpserted:
    """The product as it is in the state, changed in one field by the caller (SetVisible,
    SetPhoto): every other field from the state, so no one's concurrent change is undone."""
    return ProductUpserted(
        sku=product.sku,
        title=product.title,
        description=product.description,
        price=product.price,
        photo_url=product.photo_url,
        category_id=product.category_id,
        position=product.position,
        at=now,
        weight=product.weight,
        visible=product.visible,
    )


def _file_restock_no(sku: str, adjustment_id: str) -> int:
    """n if `adjustment_id` is the SKU's file_restock_id(sku, n), else 0."""
    _, _, tail = adjustment_id.rpartition("-")
    if not tail.isdigit() or not adjustment_id.startswith("file-"):
        return 0
    n = int(tail)
    return n if file_restock_id(sku, n) == adjustment_id else 0


# decide -------------------------------------------------------------------------------------------
def decide(state: State, command: Command, now: datetime) -> list[InventoryEvent]:
    match command:
        case Reserve():
            return _reserve(state, command, now)
        case Commit(order_id=order_id, payment_id=payment_id):
            return _commit(state, order_id, payment_id, now)
        case Release(order_id=order_id, reason=reason, payment_id=payment_id):
            return _release(state, order_id, reason, payment_id, now)
        case Expire(order_id=order_id):
            order = state.orders.get(order_id)
            if order is None or order.status != "reserved" or order.expires_at is None:
                return []
            if order.expires_at > now:
                return []
            return [Released(order_id=order_id, lines=order.lines, reason="expired", at=now)]
        case ReturnStock():
            return _return_stock(state, command, now)
        case UpsertCategory(category_id=category_id, title=title, position=position):
            if not title.strip():
                raise CommandRefused(f"category {category_id}: empty title")
            if state.categories.get(category_id) == Category(category_id, title, position):
                return []
            return [
                CategoryUpserted(category_id=category_id, title=title, position=position, at=now)
            ]
        case UpsertProduct():
            return _upsert_product(state, command, now)
        case SetVisible(sku=sku, visible=visible):
            product = _product(state, sku)
            if product.visible == visible:
                return []
            return [_upserted(msgspec.structs.replace(product, visible=visible), now)]
        case SetPhoto(sku=sku, photo_url=photo_url):
            product = _product(state, sku)
            if product.photo_url == photo_url:
                return []
            return [_upserted(msgspec.structs.replace(product, photo_url=photo_url), now)]
        case SetPrice(sku=sku, price=price):
            product = _product(state, sku)
            _check_price(sku, price)
            return [] if product.price == price else [PriceSet(sku=sku, price=price, at=now)]
        case AdjustStock(adjustment_id=adjustment_id, sku=sku, delta=delta, reason=reason):
            if adjustment_id in state.adjustments:
                return []
            product = _product(state, sku)
            if delta == 0:
                raise CommandRefused(f"{sku}: an adjustment of zero")
            if (reason == "restock" and delta < 0) or (reason == "write_off" and delta > 0):
                raise CommandRefused(f"{sku}: a {reason} of {delta:+d}")
            if delta < 0 and -delta > product.available:
                raise CommandRefused(
                    f"{sku}: cannot write off {-delta}, only {product.available} available"
                )
            return [
                StockAdjusted(
                    sku=sku,
                    delta=delta,
                    on_hand=product.on_hand + delta,
                    reason=reason,
                    adjustment_id=adjustment_id,
                    at=now,
                )
            ]
        case SetDelivery(methods=methods, min_order=min_order):
            _check_delivery(methods, min_order)
            if (state.delivery, state.min_order) == (methods, min_order):
                return []
            return [DeliverySet(methods=methods, min_order=min_order, at=now)]
        case CountStock(sku=sku, on_hand=on_hand):
            product = _product(state, sku)
            if on_hand < product.reserved:
                raise CommandRefused(
                    f"{sku}: counted {on_hand}, but {product.reserved} are reserved by open orders"
                )
            delta = on_hand - product.on_hand
            if delta == 0:
                return []
            return [
                StockAdjusted(
                    sku=sku,
                    delta=delta,
                    on_hand=on_hand,
                    reason="count",
                    adjustment_id="",
                    at=now,
                )
            ]
    raise TypeError(f"not an inventory command: {command!r}")  # pragma: no cover


def _product(state: State, sku: str) -> Product:
    product = state.products.get(sku)
    if product is None:
        raise CommandRefused(f"unknown SKU {sku}")
    return product


def _check_price(sku: str, price: int) -> None:
    if not 0 < price <= MAX_PRICE:
        raise CommandRefused(f"{sku}: price {price} kopecks is out of range")


def _check_delivery(methods: tuple[DeliveryMethod, ...], min_order: int) -> None:
    seen: set[str] = set()
    for method in methods:
        if method.id in seen:
            raise CommandRefused(f"delivery {method.id}: listed twice")
        seen.add(method.id)
        if not method.title.strip():
            raise CommandRefused(f"delivery {method.id}: empty title")
        for name, value in (
            ("price", method.price),
            ("free_from", method.free_from),
            ("per_kg", method.per_kg),
        ):
            if not 0 <= value <= MAX_PRICE:
                raise CommandRefused(f"delivery {method.id}: {name} {value} out of range")
        if method.base_weight < 0:
            raise CommandRefused(f"delivery {method.id}: a negative base weight")
    if not 0 <= min_order <= MAX_PRICE:
        raise CommandRefused(f"delivery: minimum order {min_order} out of range")


def _upsert_product(state: State, command: UpsertProduct, now: datetime) -> list[InventoryEvent]:
    if not command.title.strip():
        raise CommandRefused(f"{command.sku}: empty title")
    if command.category_id not in state.categories:
        raise CommandRefused(f"{command.sku}: unknown category {command.category_id}")
    _check_price(command.sku, command.price)
    current = state.products.get(command.sku)
    fields = (
        command.title,
        command.description,
        command.price,
        command.photo_url,
        command.category_id,
        command.position,
        command.weight,
        command.visible,
    )
    if command.weight < 0:
        raise CommandRefused(f"{command.sku}: a negative weight")
    if current is not None and fields == (
        current.title,
        current.description,
        current.price,
        current.photo_url,
        current.category_id,
        current.position,
        current.weight,
        current.visible,
    ):
        return []
    return [
        ProductUpserted(
            sku=command.sku,
            title=command.title,
            description=command.description,
            price=command.price,
            photo_url=command.photo_url,
            category_id=command.category_id,
            position=command.position,
            at=now,
            weight=command.weight,
            visible=command.visible,
        )
    ]


def _reserve(state: State, command: Reserve, now: datetime) -> list[InventoryEvent]:
    if command.order_id in state.orders:
        return []

    def reject(reason: RejectReason, *problems: LineProblem) -> list[InventoryEvent]:
        return [Rejected(order_id=command.order_id, reason=reason, problems=problems, at=now)]

    lines = command.lines
    if not lines:
        return reject("empty_order")
    if len(lines) > MAX_LINES:
        return reject("too_many_lines")
    products = state.products
    unknown: list[LineProblem] = []
    bad_qty: list[LineProblem] = []
    wrong_price: list[LineProblem] = []
    wanted: dict[str, int] = {}
    total = 0
    for line in lines:
        product = products.get(line.sku)
        if product is None or not product.visible:  # a hidden product is not sold
            unknown.append(LineProblem(line.sku, line.qty, 0))
            continue
        if not 1 <= line.qty <= MAX_LINE_QTY:
            bad_qty.append(LineProblem(line.sku, line.qty, product.available))
        if line.unit_price != product.price:
            wrong_price.append(
                LineProblem(
                    line.sku,
                    line.qty,
                    product.available,
                    unit_price=line.unit_price,
                    catalog_price=product.price,
                )
            )
        total += line.qty * line.unit_price
        wanted[line.sku] = wanted.get(line.sku, 0) + line.qty
    if unknown:
        return reject("unknown_sku", *unknown)
    if bad_qty:
        return reject("bad_quantity", *bad_qty)
    if wrong_price:
        return reject("price_mismatch", *wrong_price)
    if total < state.min_order:
        return reject("below_minimum")
    chosen = command.delivery
    if chosen is not None:
        method = next((m for m in state.delivery if m.id == chosen.method_id), None)
        if method is None:
            return reject("delivery_unknown")
        if not delivery.serves(method, chosen.city):
            return reject("delivery_city")
        grams = delivery.weight(lines, {sku: products[sku].weight for sku in wanted})
        priced = delivery.price(method, total, grams)
        if chosen.price != priced:
            return reject("delivery_price")
        chosen = msgspec.structs.replace(chosen, price=priced)
    if command.total != total + (chosen.price if chosen else 0):
        return reject("total_mismatch")
    short = [
        LineProblem(sku, qty, products[sku].available)
        for sku, qty in wanted.items()
        if qty > products[sku].available
    ]
    if short:
        return reject("out_of_stock", *short)
    return [
        Reserved(
            order_id=command.order_id,
            lines=tuple(ReservedLine(line.sku, line.qty, line.unit_price) for line in lines),
            total=command.total,
            expires_at=now + timedelta(seconds=command.ttl_seconds),
            at=now,
            delivery=chosen,
        )
    ]


def _release(
    state: State, order_id: str, reason: ReleaseReason, payment_id: str, now: datetime
) -> list[InventoryEvent]:
    """A reservation ends; and a committed order whose held payment was cancelled before it was
    captured (a hold that lapsed) gives its stock back: no money, no goods."""
    order = state.orders.get(order_id)
    if order is None:
        return []
    lapsed_hold = (
        order.status == "committed"
        and reason == "payment_canceled"
        and payment_id != ""
        and payment_id == order.payment_id
    )
    if (
        order.status == "released"
        and reason == "payment_canceled"
        and payment_id not in ("", order.payment_id, *order.cancelled)
    ):
        # Its payment was cancelled after the reservation ended (a lapsed late hold, told
        # before the payment itself came): remember it, so that payment never takes the stock.
        return [Released(order_id=order_id, lines=(), reason=reason, at=now, payment_id=payment_id)]
    if order.status != "reserved" and not lapsed_hold:
        return []
    return [
        Released(order_id=order_id, lines=order.lines, reason=reason, at=now, payment_id=payment_id)
    ]


def _return_stock(state: State, command: ReturnStock, now: datetime) -> list[InventoryEvent]:
    """Only what a committed order took can come back, and each refund's lines only once."""
    order = state.orders.get(command.order_id)
    if order is None or order.status != "committed":
        return []  # nothing was taken from the stock (a refund of a payment that never committed)
    sold: dict[str, int] = {}
    for line in order.lines:
        sold[line.sku] = sold.get(line.sku, 0) + line.qty
    returned: dict[str, int] = {}
    for back in command.lines:
        if back.sku in sold:
            returned[back.sku] = min(sold[back.sku], returned.get(back.sku, 0) + back.qty)
    events: list[InventoryEvent] = []
    for sku, qty in returned.items():
        adjustment_id = f"refund:{command.refund_id}:{sku}"
        if qty < 1 or adjustment_id in state.adjustments or sku not in state.products:
            continue
        on_hand = state.products[sku].on_hand + sum(
            e.delta for e in events if isinstance(e, StockAdjusted) and e.sku == sku
        )
        events.append(
            StockAdjusted(
                sku=sku,
                delta=qty,
                on_hand=on_hand + qty,
                reason="refund",
                adjustment_id=adjustment_id,
                at=now,
            )
        )
    return events


def _commit(state: State, order_id: str, payment_id: str, now: datetime) -> list[InventoryEvent]:
    order = state.orders.get(order_id)

    def fail(reason: CommitFailReason, *problems: LineProblem) -> list[InventoryEvent]:
        return [
            CommitFailed(
                order_id=order_id,
                reason=reason,
                payment_id=payment_id,
                problems=problems,
                at=now,
            )
        ]

    if order is None:
        return fail("unknown_order")
    if order.status == "reserved":
        return [Committed(order_id=order_id, lines=order.lines, payment_id=payment_id, at=now)]
    if order.status == "hold_lapsed" or (
        order.status == "released" and payment_id in (order.payment_id, *order.cancelled)
    ):
        return []  # its payment was cancelled: it takes nothing (a redelivery)
    if order.status == "released":
        # A late payment: take the stock again if it is still there, else the money goes back.
        wanted: Counter[str] = Counter()
        for line in order.lines:
            wanted[line.sku] += line.qty
        short = [
            LineProblem(sku, qty, state.products[sku].available)
            for sku, qty in wanted.items()
            if qty > state.products[sku].available
        ]
        if short:
            return fail("stock_gone", *short)
        return [Committed(order_id=order_id, lines=order.lines, payment_id=payment_id, at=now)]
    if order.status == "rejected":
        return fail("not_reserved")
    return []  # committed or commit_failed already: this is a redelivery


# evolve -------------------------------------------------------------------------------------------
def _add(
    products: Map[str, Product], lines: tuple[ReservedLine, ...], on_hand: int, reserved: int
) -> Map[str, Product]:
    """Move every line's quantity by the given signs (+1, 0 or -1) on on_hand and reserved."""
    mutable = products.mutate()
    for line in lines:
        product = mutable[line.sku]
        mutable[line.sku] = msgspec.structs.replace(
            product,
            on_hand=product.on_hand + on_hand * line.qty,
            reserved=product.reserved + reserved * line.qty,
        )
    return mutable.finish()


def evolve(state: State, event: InventoryEvent) -> State:
    replace = msgspec.structs.replace
    match event:
        case Reserved(order_id=order_id, lines=lines, expires_at=expires_at):
            return replace(
                state,
                products=_add(state.products, lines, 0, +1),
                orders=state.orders.set(order_id, Order("reserved", lines, expires_at)),
            )
        case Rejected(order_id=order_id):
            return replace(state, orders=state.orders.set(order_id, Order("rejected")))
        case Committed(order_id=order_id, lines=lines, payment_id=payment_id):
            was_reserved = state.orders[order_id].status == "reserved"
            return replace(
                state,
                products=_add(state.products, lines, -1, -1 if was_reserved else 0),
                orders=state.orders.set(order_id, Order("committed", lines, None, payment_id)),
            )
        case CommitFailed(order_id=order_id):
            order = state.orders.get(order_id)
            if order is None:
                # A payment for an order we never saw: remember nothing, so the order id stays
                # free (a payment cannot precede its reservation in the real flow).
                return state
            return replace(
                state, orders=state.orders.set(order_id, replace(order, status="commit_failed"))
            )
        case Released(order_id=order_id, lines=lines, payment_id=payment_id, reason=reason):
            # A reservation frees what it held; a committed order (a lapsed hold) puts its
            # goods back on hand.
            # A cancelled payment told after the reservation ended (no lines) is remembered
            # beside the order's own lines.
            before = state.orders[order_id]
            if before.status == "committed":
                products, status = _add(state.products, lines, +1, 0), "hold_lapsed"
            else:
                products, status = _add(state.products, lines, 0, -1), "released"
            cancelled = before.cancelled
            if payment_id and reason == "payment_canceled" and payment_id not in cancelled:
                cancelled = (*cancelled, payment_id)
            order = Order(status, lines or before.lines, None, payment_id, cancelled)
            return replace(state, products=products, orders=state.orders.set(order_id, order))
        case StockAdjusted(sku=sku, delta=delta, adjustment_id=adjustment_id):
            product = state.products[sku]
            adjustments = (
                state.adjustments.set(adjustment_id, delta) if adjustment_id else state.adjustments
            )
            file_restocks = max(product.file_restocks, _file_restock_no(sku, adjustment_id))
            product = replace(product, on_hand=product.on_hand + delta, file_restocks=file_restocks)
            return replace(
                state, products=state.products.set(sku, product), adjustments=adjustments
            )
        case PriceSet(sku=sku, price=price):
            return replace(
                state,
                products=state.products.set(sku, replace(state.products[sku], price=price)),
            )
        case ProductUpserted():
            current = state.products.get(event.sku)
            product = Product(
                sku=event.sku,
                title=event.title,
                description=event.description,
                price=event.price,
                photo_url=event.photo_url,
                category_id=event.category_id,
                position=event.position,
                on_hand=current.on_hand if current else 0,
                reserved=current.reserved if current else 0,
                weight=event.weight,
                visible=event.visible,
                file_restocks=current.file_restocks if current else 0,
            )
            return replace(state, products=state.products.set(event.sku, product))
        case CategoryUpserted(category_id=category_id, title=title, position=position):
            return replace(
                state,
                categories=state.categories.set(
                    category_id, Category(category_id, title, position)
                ),
            )
        case DeliverySet(methods=methods, min_order=min_order):
            return replace(state, delivery=methods, min_order=min_order)
        case WriterClaimed():
            return state  # about who may write, not about the stock
    raise TypeError(f"not an inventory event: {event!r}")  # pragma: no cover


def fold(state: State, events: list[InventoryEvent]) -> State:
    for event in events:
        state = evolve(state, event)
    return state


# Snapshots ----------------------------------------------------------------------------------------
class _SnapshotBody(msgspec.Struct, frozen=True):
    seq: int
    stream_created: str
    categories: dict[str, Category]
    products: dict[str, Product]
    orders: dict[str, Order]
    adjustments: dict[str, int]


def encode_snapshot(state: State, seq: int, stream_created: str) -> bytes:
    return msgspec.msgpack.encode(
        _SnapshotBody(
            seq=seq,
            stream_created=stream_created,
            categories=dict(state.categories),
            products=dict(state.products),
            orders=dict(state.orders),
            adjustments=dict(state.adjustments),
        )
    )


def decode_snapshot(data: bytes) -> tuple[State, int, str]:
    body = msgspec.msgpack.decode(data, type=_SnapshotBody)
    state = State(
        categories=Map(body.categories),
        products=Map(body.products),
        orders=Map(body.orders),
        adjustments=Map(body.adjustments),
    )
    return state, body.seq, body.stream_created
