"""What the shop's spreadsheet should say, from the facts on the bus; no I/O.

Orders: one row per order, updated in place (keyed by the order number), derived from the
order's lifecycle state (`libs.lifecycle`: its status and everything else its facts said); the
shell keeps that state per order, and a batch's facts are folded into it. Sales: the ledger, one
row per sold line and one for a paid delivery, keyed by the fact it came from, so a redelivered
fact is never a second row; a refund adds negative rows and never edits old ones. Daily: sums of
the ledger. The shell (the Sheets or CSV writer) turns a `Plan` into as few writes as it can.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

import msgspec

from libs import delivery, fulfilment, lifecycle
from libs.contracts import (
    Committed,
    OrderLine,
    PaymentMethod,
    PaymentRefunded,
    Released,
    ReservedLine,
)
from libs.money import cell_kopecks, cell_number, format_rub, rubles

# The Orders tab's columns, and those of the versions before (a sheet made by one of them is
# upgraded in place: the missing columns inserted after the ones it has, a person's own columns
# beyond them moved right with their cells).
ORDER_COLUMNS_V1 = (
    "Order",
    "Created",
    "Status",
    "Customer",
    "Telegram user",
    "Phone",
    "Address",
    "Comment",
    "Items",
    "Total",
    "Payment id",
    "Paid at",
    "Updated",
)
ORDER_COLUMNS_V2 = (
    *ORDER_COLUMNS_V1,
    "Fulfilment",
    "Carrier",
    "Tracking",
    "Shipped at",
    "Delivered at",
)
ORDER_COLUMNS_V3 = (*ORDER_COLUMNS_V2, "Delivery")
# Each version adds its columns at the end.
ORDER_COLUMNS = (*ORDER_COLUMNS_V3, "Payment")
ORDER_COLUMN_VERSIONS = (ORDER_COLUMNS_V1, ORDER_COLUMNS_V2, ORDER_COLUMNS_V3, ORDER_COLUMNS)
SALES_COLUMNS = ("Fact", "Order", "Time", "SKU", "Title", "Qty", "Unit price", "Amount")
DAILY_COLUMNS = ("Date", "Orders", "Units", "Revenue")
STOCK_COLUMNS = ("SKU", "Title", "On hand", "Reserved", "Available", "Changed")

# A cell as the Sheets API takes and gives it (unformatted): text or a number.
Cell = str | int | float

# What crm_sync consumes: every fact of an order's lifecycle.
Fact = lifecycle.OrderFact


class OrderRow(msgspec.Struct, kw_only=True):
    """An Orders row; its fields are the columns, in their order."""

    order_id: str
    created: str = ""
    status: str = ""  # the lifecycle's status, as `status_text` writes it
    customer: str = ""
    telegram_user: str = ""
    phone: str = ""
    address: str = ""
    comment: str = ""
    items: str = ""
    total: int = 0  # kopecks
    payment_id: str = ""
    paid_at: str = ""
    updated: str = ""
    fulfilment: str = ""  # the last step after paid, and who asked for a cancellation
    carrier: str = ""
    tracking: str = ""
    shipped_at: str = ""
    delivered_at: str = ""
    delivery: str = ""  # the method and its price: "Курьер по Москве, 300 ₽"
    payment: str = ""  # how the customer pays: "card", "SBP", "on receipt"

    def values(self) -> list[str]:
        return [
            rubles(self.total) if name == "total" else getattr(self, name)
            for name in self.__struct_fields__
        ]

    def cells(self) -> list[Cell]:
        """The row for the Sheets API: the total as a number of roubles."""
        values: list[Cell] = list(self.values())
        values[_TOTAL] = cell_number(self.total)
        return values


_TOTAL = OrderRow.__struct_fields__.index("total")
assert len(OrderRow.__struct_fields__) == len(ORDER_COLUMNS)


@dataclass(frozen=True, slots=True)
class SaleRow:
    key: str  # the fact and the SKU: what makes the row exactly once
    order_id: str
    at: str
    sku: str
    title: str
    qty: int
    unit_price: int
    amount: int

    def values(self) -> list[str]:
        return [
            self.key,
            self.order_id,
            self.at,
            self.sku,
            self.title,
            str(self.qty),
            rubles(self.unit_price),
            rubles(self.amount),
        ]

    def cells(self) -> list[Cell]:
        """The row for the Sheets API: the quantity and the money as numbers."""
        return [
            *self.values()[:5],
            self.qty,
            cell_number(self.unit_price),
            cell_number(self.amount),
        ]


@dataclass
class Plan:
    """What a batch of facts makes: the rows of the orders it touched, its ledger rows (the sink
    writes those not already in the ledger), and the orders' new lifecycle states (those the
    batch changed), to be kept once the rows are written."""

    orders: dict[str, OrderRow] = field(default_factory=dict)
    sales: list[SaleRow] = field(default_factory=list)
    states: dict[str, lifecycle.Order] = field(default_factory=dict)


def text(value: Cell) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def order_row(cells: list[Cell]) -> OrderRow:
    """An order row read back from the sheet (or a CSV file); what does not parse is blank."""
    fields = OrderRow.__struct_fields__
    values = [text(c) for c in (cells + [""] * len(fields))[: len(fields)]]
    try:
        total = cell_kopecks(cells[_TOTAL]) if len(cells) > _TOTAL and cells[_TOTAL] != "" else 0
    except ValueError:
        total = 0
    texts = {name: value for name, value in zip(fields, values, strict=True) if name != "total"}
    return OrderRow(**texts, total=total)


def upgrade(header: list[str]) -> int | None:
    """Where a header row of the Orders tab made by an earlier version ends: the columns of this
    version it lacks go there (None: it is this version's, or none known)."""
    have = [cell.strip() for cell in header]
    if have[: len(ORDER_COLUMNS)] == list(ORDER_COLUMNS):
        return None
    for columns in reversed(ORDER_COLUMN_VERSIONS[:-1]):
        if have[: len(columns)] == list(columns):
            return len(columns)
    return None


def sale_row(cells: list[Cell]) -> SaleRow:
    padded = (cells + [""] * len(SALES_COLUMNS))[: len(SALES_COLUMNS)]
    values = [text(c) for c in padded]
    try:
        qty = int(float(values[5] or 0))
        unit_price, amount = cell_kopecks(padded[6] or 0), cell_kopecks(padded[7] or 0)
    except ValueError:
        qty = unit_price = amount = 0
    return SaleRow(values[0], values[1], values[2], values[3], values[4], qty, unit_price, amount)


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def items(lines: Iterable[OrderLine | ReservedLine], titles: Mapping[str, str]) -> str:
    return "; ".join(f"{titles.get(line.sku, line.sku)} × {line.qty}" for line in lines)


def status_text(status: lifecycle.Status) -> str:
    """The Status column's words for a status: "awaiting payment", "paid", "returning money"."""
    return status.value.replace("_", " ")


def fulfilment_text(order: lifecycle.Order) -> str:
    """The Fulfilment column: the last step after paid ("shipped", "cancelled by the customer")."""
    if not order.fulfilment:
        return ""
    last = order.fulfilment[-1]
    words = last.step.replace("_", " ")
    if last.step == "cancelled":
        words += " by the customer" if last.by_customer else " by the shop"
    return words


def delivery_text(order: lifecycle.Order, titles: Mapping[str, str]) -> str:
    """The Delivery column: the method's title (its id once the catalog lost it) and its price,
    as the customer pays it ("Курьер по Москве, 300 ₽", "Самовывоз, бесплатно")."""
    if order.delivery is None:
        return ""
    method_id = order.delivery.method_id
    title = titles.get(delivery.as_sku(method_id), method_id)
    price = format_rub(order.delivery.price) if order.delivery.price else "бесплатно"
    return f"{title}, {price}"


# The Payment column's words, in English like the Status column's.
PAYMENT_WORDS: dict[PaymentMethod, str] = {"card": "card", "sbp": "SBP", "cash": "on receipt"}


def payment_text(order: lifecycle.Order) -> str:
    """The Payment column: how the customer pays (empty for an order placed before the shop
    asked, or not seen as placed yet)."""
    return PAYMENT_WORDS[order.payment] if order.payment is not None else ""


def row(order: lifecycle.Order, titles: Mapping[str, str]) -> OrderRow:
    """The order's row: everything in it is what its lifecycle state says."""
    contact = order.contact
    taken = {entry.step: entry for entry in order.fulfilment}
    shipped, delivered = taken.get("shipped"), taken.get("delivered")
    return OrderRow(
        order_id=order.order_id,
        created=stamp(order.placed_at) if order.placed_at else "",
        status=status_text(order.status),
        customer=contact.name,
        telegram_user=str(order.customer_id) if order.customer_id else "",
        phone=contact.phone,
        address=contact.address,
        comment=contact.comment,
        items=items(order.lines, titles),
        total=order.charge,
        payment_id=order.payment_id,
        paid_at=stamp(order.paid_at) if order.paid_at else "",
        updated=stamp(order.updated_at) if order.updated_at else "",
        fulfilment=fulfilment_text(order),
        carrier=fulfilment.carrier_title(shipped.carrier) if shipped else "",
        tracking=shipped.tracking if shipped else "",
        shipped_at=stamp(shipped.at) if shipped else "",
        delivered_at=stamp(delivered.at) if delivered else "",
        delivery=delivery_text(order, titles),
        payment=payment_text(order),
    )


def sales(
    fact_id: str, fact: Fact, order: lifecycle.Order, titles: Mapping[str, str]
) -> list[SaleRow]:
    """Ledger rows a fact makes: sold lines and the delivery on commit, negative ones on a
    refund (the delivery's when the refund gave it back) and when a committed order's hold
    lapsed before capture (its goods went back unpaid). The delivery on commit is the order's,
    which its reservation set: told before the commit, on the same stream."""
    delivered = order.delivery
    match fact:
        case Committed(lines=lines, at=at):
            sign = 1
        case PaymentRefunded(lines=lines, at=at):
            sign, delivered = -1, fact.delivery
        case Released(lines=lines, at=at) if (
            order.committed_at is not None and fact.payment_id == order.payment_id != ""
        ):
            sign = -1
        case _:
            return []
    rows = [
        SaleRow(
            key=f"{fact_id}:{line.sku}",
            order_id=fact.order_id,
            at=stamp(at),
            sku=line.sku,
            title=titles.get(line.sku, line.sku),
            qty=sign * line.qty,
            unit_price=line.unit_price,
            amount=sign * line.qty * line.unit_price,
        )
        for line in lines
    ]
    # A free delivery is no money: the Orders tab says it, the ledger has no row of 0 for it.
    if delivered is not None and delivered.price > 0:
        sku = delivery.as_sku(delivered.method_id)
        rows.append(
            SaleRow(
                key=f"{fact_id}:{sku}",
                order_id=fact.order_id,
                at=stamp(at),
                sku=sku,
                title=titles.get(sku, delivered.method_id),
                qty=sign,
                unit_price=delivered.price,
                amount=sign * delivered.price,
            )
        )
    return rows


def plan(
    batch: Iterable[tuple[str, Fact]],
    states: Mapping[str, lifecycle.Order],
    titles: Mapping[str, str],
) -> Plan:
    """Fold a batch of (fact id, fact) into the states of its orders (what was kept of them
    before), and say what to write. Any order and any repetition of the facts, within a batch
    or across batches, gives the same rows."""
    result = Plan()
    folded: dict[str, lifecycle.Order] = {}
    facts = list(batch)
    for _, fact in facts:
        order_id = fact.order_id
        folded[order_id] = lifecycle.evolve(folded.get(order_id, states.get(order_id)), fact)
    planned: set[str] = set()
    for fact_id, fact in facts:
        for sale in sales(fact_id, fact, folded[fact.order_id], titles):
            if sale.key not in planned:
                planned.add(sale.key)
                result.sales.append(sale)
    for order_id, order in folded.items():
        result.orders[order_id] = row(order, titles)
        if order != states.get(order_id):
            result.states[order_id] = order
    return result


def daily_totals(ledger: Iterable[SaleRow]) -> list[tuple[str, int, int, int]]:
    """Per day: orders with a sale, units of goods, revenue in kopecks with the deliveries'
    (refunds count against their day)."""
    days: dict[str, tuple[set[str], int, int]] = {}
    for sale in ledger:
        day = sale.at[:10]
        order_ids, units, revenue = days.get(day, (set(), 0, 0))
        if sale.qty > 0:
            order_ids.add(sale.order_id)
        goods = 0 if sale.sku.startswith(delivery.SKU_PREFIX) else sale.qty
        days[day] = (order_ids, units + goods, revenue + sale.amount)
    return [
        (day, len(order_ids), units, revenue)
        for day, (order_ids, units, revenue) in sorted(days.items())
    ]


def daily(ledger: Iterable[SaleRow]) -> list[list[str]]:
    return [[d, str(n), str(u), rubles(r)] for d, n, u, r in daily_totals(ledger)]


def daily_cells(ledger: Iterable[SaleRow]) -> list[list[Cell]]:
    return [[d, n, u, cell_number(r)] for d, n, u, r in daily_totals(ledger)]
