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
STOCK_COLUMNS = ("SKU", "Title", "On hand", "Reserved", "Available", "Changed")

# A cell as the Sheets API takes and gives it (unformatted): text or a number.
Cell = str | int | float

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

    def cells(self) -> list[Cell]:
        """The row for the Sheets API: the total as a number of roubles."""
        values: list[Cell] = list(self.values())
        values[9] = money(self.total)
        return values


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

    def cells(self) -> list[Cell]:
        """The row for the Sheets API: the quantity and the money as numbers."""
        return [*self.values()[:5], self.qty, money(self.unit_price), money(self.amount)]


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


def money(kopecks: int) -> int | float:
    """Roubles as a number for the sheet (exact: a whole number, or its shortest decimal)."""
    return kopecks // 100 if kopecks % 100 == 0 else kopecks / 100


def kopecks(value: Cell) -> int:
    """Back from a cell: 2870.5, 2870, "2870.50" or "-990.00" as kopecks."""
    if isinstance(value, int | float):
        return round(value * 100)
    text = value.strip().replace(" ", "").replace(",", ".")
    whole, _, part = text.lstrip("-").partition(".")
    amount = int(whole or 0) * 100 + int((part + "00")[:2])
    return -amount if text.startswith("-") else amount


def text(value: Cell) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def order_row(cells: list[Cell]) -> OrderRow:
    """An order row read back from the sheet (or a CSV file); what does not parse is blank."""
    values = [text(c) for c in (cells + [""] * len(ORDER_COLUMNS))[: len(ORDER_COLUMNS)]]
    try:
        total = kopecks(cells[9]) if len(cells) > 9 and cells[9] != "" else 0
    except ValueError:
        total = 0
    return OrderRow(
        order_id=values[0],
        created=values[1],
        status=values[2] if values[2] in RANK else "placed",
        customer=values[3],
        telegram_user=values[4],
        phone=values[5],
        address=values[6],
        comment=values[7],
        items=values[8],
        total=total,
        payment_id=values[10],
        paid_at=values[11],
        updated=values[12],
    )


def sale_row(cells: list[Cell]) -> SaleRow:
    padded = (cells + [""] * len(SALES_COLUMNS))[: len(SALES_COLUMNS)]
    values = [text(c) for c in padded]
    try:
        qty = int(float(values[5] or 0))
        unit_price, amount = kopecks(padded[6] or 0), kopecks(padded[7] or 0)
    except ValueError:
        qty = unit_price = amount = 0
    return SaleRow(values[0], values[1], values[2], values[3], values[4], qty, unit_price, amount)


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


def daily_totals(ledger: Iterable[SaleRow]) -> list[tuple[str, int, int, int]]:
    """Per day: orders with a sale, units, revenue in kopecks (refunds count against their day)."""
    days: dict[str, tuple[set[str], int, int]] = {}
    for sale in ledger:
        day = sale.at[:10]
        order_ids, units, revenue = days.get(day, (set(), 0, 0))
        if sale.qty > 0:
            order_ids.add(sale.order_id)
        days[day] = (order_ids, units + sale.qty, revenue + sale.amount)
    return [
        (day, len(order_ids), units, revenue)
        for day, (order_ids, units, revenue) in sorted(days.items())
    ]


def daily(ledger: Iterable[SaleRow]) -> list[list[str]]:
    return [[d, str(n), str(u), rub(r)] for d, n, u, r in daily_totals(ledger)]


def daily_cells(ledger: Iterable[SaleRow]) -> list[list[Cell]]:
    return [[d, n, u, money(r)] for d, n, u, r in daily_totals(ledger)]
