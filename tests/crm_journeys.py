"""Orders' facts as the other services publish them, for crm_sync's tests and its benchmark.

Every tenth order is rejected, every tenth (offset 1) expires unpaid, every tenth (offset 2) is
paid and then one unit refunded, every tenth (offset 3) expires and is then paid, the inventory
taking the stock again, every tenth (offset 4) expires and is then paid but the stock is gone, so
the money goes back; the rest are paid. `expected` says what the sheet must show.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from nats.js import JetStreamContext

from libs import bus, subjects
from libs.contracts import (
    CommitFailed,
    Committed,
    Contact,
    OrderLine,
    OrderPlaced,
    PaymentAuthorized,
    PaymentCanceled,
    PaymentPending,
    PaymentRefunded,
    PaymentSucceeded,
    Rejected,
    Released,
    Reserved,
    ReservedLine,
)

PRICE = 69000  # kopecks
TITLE = "Сенча"  # the catalog title of SKU TEA in tests that import a catalog; else the SKU


@dataclass(frozen=True)
class Expected:
    status: str
    sales: int  # ledger rows
    units: int  # net units sold
    revenue: int  # net kopecks


def order_id(run: str, number: int) -> str:
    return f"{run}-{number:05d}"


def journey(run: str, number: int, at: datetime) -> list[tuple[str, msgspec.Struct]]:
    oid = order_id(run, number)
    qty = 1 + number % 3
    line = OrderLine("TEA", qty, PRICE)
    reserved_line = ReservedLine("TEA", qty, PRICE)
    total = qty * PRICE
    contact = Contact("Анна", "+79123456789", "Москва, ул. Ленина, д. 5", comment="позвонить")
    facts: list[tuple[str, msgspec.Struct]] = [
        (
            subjects.order_placed(oid),
            OrderPlaced(
                order_id=oid,
                customer_id=1000 + number,
                lines=(line,),
                total=total,
                placed_at=at,
                contact=contact,
            ),
        )
    ]
    if number % 10 == 0:
        facts.append(
            (subjects.inventory_fact("rejected", oid), Rejected(oid, "out_of_stock", (), at))
        )
        return facts
    expires = at + timedelta(minutes=15)
    pay = f"pay-{oid}"
    facts += [
        (
            subjects.inventory_fact("reserved", oid),
            Reserved(oid, (reserved_line,), total, expires, at),
        ),
        (
            subjects.payment_fact(subjects.PaymentKind.PENDING, oid),
            PaymentPending(oid, pay, total, f"https://pay/{pay}", expires, at),
        ),
    ]
    if number % 10 in (1, 3, 4):
        released = Released(oid, (reserved_line,), "expired", at)
        facts.append((subjects.inventory_fact("released", oid), released))
    if number % 10 == 1:
        return facts
    if number % 10 in (3, 4):  # the customer pays after all, a few seconds late
        authorized = PaymentAuthorized(oid, pay, total, at)
        facts.append((subjects.payment_fact(subjects.PaymentKind.AUTHORIZED, oid), authorized))
    if number % 10 == 4:
        failed = CommitFailed(oid, "stock_gone", pay, (), at)
        canceled = PaymentCanceled(oid, pay, "canceled_by_merchant", at)
        facts.append((subjects.inventory_fact("commit_failed", oid), failed))
        facts.append((subjects.payment_fact(subjects.PaymentKind.CANCELED, oid), canceled))
        return facts
    facts += [
        (subjects.inventory_fact("committed", oid), Committed(oid, (reserved_line,), pay, at)),
        (
            subjects.payment_fact(subjects.PaymentKind.SUCCEEDED, oid),
            PaymentSucceeded(oid, pay, total, at),
        ),
    ]
    if number % 10 == 2:
        refund = PaymentRefunded(
            oid, pay, f"ref-{oid}", PRICE, (OrderLine("TEA", 1, PRICE),), "", at
        )
        facts.append((subjects.payment_fact(subjects.PaymentKind.REFUNDED, oid), refund))
    return facts


def expected(number: int) -> Expected:
    qty = 1 + number % 3
    if number % 10 == 0:
        return Expected("rejected", 0, 0, 0)
    if number % 10 == 1:
        return Expected("expired", 0, 0, 0)
    if number % 10 == 2:
        status = "refunded" if qty == 1 else "partly refunded"
        return Expected(status, 2, qty - 1, (qty - 1) * PRICE)
    if number % 10 == 4:
        return Expected("cancelled", 0, 0, 0)
    return Expected("paid", 1, qty, qty * PRICE)


async def publish(js: JetStreamContext, run: str, numbers: range, window: int = 500) -> int:
    """Publish the journeys of these orders, many at a time; returns the number of facts."""
    at = datetime.now(UTC).replace(microsecond=0)
    facts: list[tuple[str, Any]] = [f for n in numbers for f in journey(run, n, at)]
    for start in range(0, len(facts), window):
        chunk = facts[start : start + window]
        await asyncio.gather(
            *(bus.publish(js, subject, fact, msg_id=subject) for subject, fact in chunk)
        )
    return len(facts)


def paid_straight_away(count: int) -> list[int]:
    """The numbers of the first `count` orders paid straight away (no expiry, no refund)."""
    return [n for n in range(count * 2) if n % 10 >= 5][:count]


async def publish_over(js: JetStreamContext, run: str, numbers: list[int], seconds: float) -> float:
    """A burst: each order's journey at once, the orders evenly over `seconds` (the load's own
    schedule); returns when the last order's facts were stored (time.perf_counter)."""
    at = datetime.now(UTC).replace(microsecond=0)
    started = time.perf_counter()
    for index, number in enumerate(numbers):
        due = started + index * seconds / max(1, len(numbers) - 1)
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        facts = journey(run, number, at)
        await asyncio.gather(*(bus.publish(js, s, fact, msg_id=s) for s, fact in facts))
    return time.perf_counter()
