"""What the shop's spreadsheet should say, from the facts on the bus; no I/O.

Orders: one row per order, updated in place as it moves (keyed by the order number). Sales: the
ledger, one row per sold line, keyed by the fact it came from, so a redelivered fact is never
a second row; a refund adds negative rows and never edits old ones. Daily: sums of the ledger.
The shell (the Sheets or CSV writer) turns a `Plan` into as few writes as it can.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

import msgspec

from libs.contracts import (
    Committed,
    OrderLine,
    OrderPlaced,
    PaymentCanceled,
    PaymentFailed,
    PaymentPending,
    PaymentRefunded,
    PaymentSucceeded,
    Rejected,
    Released,
    Reserved,
    ReservedLine,
)

ORDER_COLUMNS = (
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
SALES_COLUMNS = ("Fact", "Order", "Time", "SKU", "Title", "Qty", "Unit price", "Amount")
DAILY_COLUMNS = ("Date", "Orders", "Units", "Revenue")

# How far along an order is; a fact never moves it back (facts of one order may come late or
# twice), except that a paid order can still be refunded.
RANK = {
    "placed": 0,
    "reserved": 1,
    "awaiting payment": 2,
    "paid": 3,
    "cancelled": 4,
    "expired": 4,
    "refunded": 5,
}

Fact = (
    OrderPlaced
    | Reserved
    | Rejected
    | Released
    | Committed
    | PaymentPending
    | PaymentSucceeded
    | PaymentCanceled
    | PaymentFailed
    | PaymentRefunded
)


class OrderRow(msgspec.Struct, kw_only=True):
    order_id: str
    created: str = ""
    status: str = "placed"
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

    def values(self) -> list[str]:
        return [
            self.order_id,
            self.created,
            self.status,
            self.customer,
            self.telegram_user,
            self.phone,
            self.address,
            self.comment,
            self.items,
            rub(self.total),
            self.payment_id,
            self.paid_at,
            self.updated,
        ]


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
            rub(self.unit_price),
            rub(self.amount),
        ]


@dataclass
class Plan:
    """What to write for a batch of facts: changed order rows, new ledger rows."""

    orders: dict[str, OrderRow] = field(default_factory=dict)
    sales: list[SaleRow] = field(default_factory=list)


def rub(kopecks: int) -> str:
    """As the sheet shows money: '1234.50', '-990.00'."""
    sign = "-" if kopecks < 0 else ""
    whole, part = divmod(abs(kopecks), 100)
    return f"{sign}{whole}.{part:02d}"


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def items(lines: Iterable[OrderLine | ReservedLine], titles: Mapping[str, str]) -> str:
    return "; ".join(f"{titles.get(line.sku, line.sku)} × {line.qty}" for line in lines)


def _moved(row: OrderRow, status: str) -> str:
    return status if RANK[status] >= RANK[row.status] else row.status


def fold(row: OrderRow | None, fact: Fact, titles: Mapping[str, str]) -> OrderRow:
    """The order's row after one more fact about it."""
    order_id = fact.order_id
    current = row or OrderRow(order_id=order_id)
    changes: dict[str, object] = {}
    match fact:
        case OrderPlaced():
            contact = fact.contact
            changes = {
                "created": stamp(fact.placed_at),
                "customer": contact.name,
                "telegram_user": str(fact.customer_id),
                "phone": contact.phone,
                "address": contact.address,
                "comment": contact.comment,
                "items": items(fact.lines, titles),
                "total": fact.total,
            }
        case Reserved():
            changes = {"status": _moved(current, "reserved")}
        case PaymentPending():
            changes = {"status": _moved(current, "awaiting payment"), "payment_id": fact.payment_id}
        case PaymentSucceeded():
            changes = {
                "status": _moved(current, "paid"),
                "payment_id": fact.payment_id,
                "paid_at": stamp(fact.at),
            }
        case Committed():
            pass  # the stock is the customer's; "paid" comes with the payment's own fact
        case Rejected() | PaymentCanceled() | PaymentFailed():
            if current.status != "paid":
                changes = {"status": _moved(current, "cancelled")}
        case Released(reason="expired"):
            if current.status != "paid":
                changes = {"status": _moved(current, "expired")}
        case Released():
            if current.status != "paid":
                changes = {"status": _moved(current, "cancelled")}
        case PaymentRefunded():
            changes = {"status": "refunded"}
    at = getattr(fact, "at", None) or getattr(fact, "placed_at", None)
    if at is not None:
        changes["updated"] = stamp(at)
    return msgspec.structs.replace(current, **changes)


def sales(fact_id: str, fact: Fact, titles: Mapping[str, str]) -> list[SaleRow]:
    """Ledger rows a fact makes: sold lines on commit, negative ones on a refund of goods."""
    match fact:
        case Committed(lines=lines, at=at):
            sign = 1
        case PaymentRefunded(lines=lines, at=at):
            sign = -1
        case _:
            return []
    return [
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


def plan(
    batch: Iterable[tuple[str, Fact]],
    orders: Mapping[str, OrderRow],
    in_ledger: set[str],
    titles: Mapping[str, str],
) -> Plan:
    """Fold a batch of (fact id, fact) into what to write; rows already in the ledger are not
    planned again (a crash between the write and the ack, a redelivery)."""
    result = Plan()
    planned = set(in_ledger)
    for fact_id, fact in batch:
        row = result.orders.get(fact.order_id) or orders.get(fact.order_id)
        result.orders[fact.order_id] = fold(row, fact, titles)
        for sale in sales(fact_id, fact, titles):
            if sale.key not in planned:
                planned.add(sale.key)
                result.sales.append(sale)
    return result


def daily(ledger: Iterable[SaleRow]) -> list[list[str]]:
    """Per day: orders with a sale, units, revenue (refunds count against their day)."""
    days: dict[str, tuple[set[str], int, int]] = {}
    for sale in ledger:
        day = sale.at[:10]
        order_ids, units, revenue = days.get(day, (set(), 0, 0))
        if sale.qty > 0:
            order_ids.add(sale.order_id)
        days[day] = (order_ids, units + sale.qty, revenue + sale.amount)
    return [
        [day, str(len(order_ids)), str(units), rub(revenue)]
        for day, (order_ids, units, revenue) in sorted(days.items())
    ]
