"""The order lifecycle: what an order's facts, in any order and however often they came, say it is.

One vocabulary (`Status`) and one fold, read by the bot (the customer's and the admin's messages,
My orders) and crm_sync (the Orders tab); nobody keeps a second copy of these rules. The state is
a record of what each kind of fact said. Taking in a fact only adds what it says (a time, a
reason, a refund), joined so that the result does not depend on which came first, so any order
and any duplication of an order's facts give the same state. The status is derived from that
record, never stored beside it: it is what the facts mean together, not a rank that only goes up
(a payment after expiry that the inventory committed makes the order paid).

The invariant this serves: money taken (or held) <=> stock committed. The inventory answers every
payment once, `committed` or `commit_failed`, and payments keeps or returns the money on that
answer only; so "paid" here is "the stock is committed", and a payment the inventory refused is
money on its way back.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from typing import TypeVar

import msgspec

from libs.contracts import (
    CommitFailed,
    Committed,
    Contact,
    DeliveryChoice,
    FulfilmentEntry,
    OrderFulfilment,
    OrderLine,
    OrderPlaced,
    PaymentAuthorized,
    PaymentCanceled,
    PaymentFailed,
    PaymentMethod,
    PaymentPending,
    PaymentRefunded,
    PaymentSucceeded,
    Rejected,
    Released,
    Reserved,
    ReservedLine,
)


class Status(StrEnum):
    """Where an order is, in the shop's one vocabulary (the locales have its words)."""

    PLACED = "placed"  # sent by the bot, the inventory has not answered yet
    REJECTED = "rejected"  # the inventory refused it (out of stock, a stale price...)
    RESERVED = "reserved"  # the stock is held for it, the payment is being made
    PAY_ON_RECEIPT = "pay_on_receipt"  # held for it, paid in cash (or card) when handed over
    AWAITING_PAYMENT = "awaiting_payment"  # the customer has a Pay button
    CONFIRMING = "confirming"  # money came; the inventory has not answered yet
    PAID = "paid"  # the stock is committed and the money held or taken
    PACKED = "packed"  # paid, and the shop packed it (libs.fulfilment: the steps after paid)
    SHIPPED = "shipped"  # handed to a carrier (maybe with a tracking number)
    READY_FOR_PICKUP = "ready_for_pickup"  # waiting for the customer at the pickup point
    DELIVERED = "delivered"  # delivered or picked up
    RETURNING_MONEY = "returning_money"  # paid, but the stock was gone: the money goes back
    EXPIRED = "expired"  # the reservation ended unpaid
    CANCELLED = "cancelled"  # ended without a sale (payment declined, released, money returned,
    # or cancelled by the shop or the customer after paid, once the money is back)
    PARTLY_REFUNDED = "partly_refunded"  # paid, and part of it refunded
    REFUNDED = "refunded"  # paid, and all of it refunded


# Statuses no later fact of the ordinary flow changes (a refund still can change a paid one).
ENDED = frozenset({Status.REJECTED, Status.EXPIRED, Status.CANCELLED, Status.REFUNDED})

OrderFact = (
    OrderPlaced
    | Reserved
    | Rejected
    | Released
    | Committed
    | CommitFailed
    | PaymentPending
    | PaymentAuthorized
    | PaymentSucceeded
    | PaymentCanceled
    | PaymentFailed
    | PaymentRefunded
    | OrderFulfilment
)


class Refund(msgspec.Struct, frozen=True):
    refund_id: str
    amount: int  # kopecks
    lines: tuple[OrderLine, ...]  # goods that came back (empty: the money only)
    at: datetime


class Order(msgspec.Struct, frozen=True, kw_only=True):
    """What the facts said about one order; `status` and the rest are derived from it."""

    order_id: str
    # orders.placed
    customer_id: int = 0
    chat_id: int = 0
    contact: Contact = Contact()
    lines: tuple[OrderLine, ...] = ()
    total: int = 0  # kopecks, as placed
    placed_at: datetime | None = None
    # the delivery the customer chose: as placed until the inventory reserves the order, then the
    # inventory's (at the catalog's price, which `amount` includes); None: none chosen
    delivery: DeliveryChoice | None = None
    # how the customer pays, as placed; None: not known (the order as placed not seen yet, or
    # a state kept before the way to pay was asked, when every order was paid by card)
    payment: PaymentMethod | None = None
    # the inventory
    reserved_at: datetime | None = None
    amount: int = 0  # kopecks, as reserved (the catalog's prices): what the customer pays
    expires_at: datetime | None = None
    rejected: str = ""  # the RejectReason
    released: str = ""  # the ReleaseReason
    released_at: datetime | None = None
    committed_at: datetime | None = None
    commit_failed: str = ""  # the CommitFailReason
    # payments
    payment_id: str = ""
    pay_url: str = ""
    authorized_at: datetime | None = None  # money held (two-stage)
    paid_at: datetime | None = None  # money taken
    payment_canceled: str = ""  # YooKassa's cancellation reason
    payment_failed: str = ""
    refunds: tuple[Refund, ...] = ()  # by refund id
    # orders.fulfilment (the shop's desks): every step after paid, the latest last
    fulfilment: tuple[FulfilmentEntry, ...] = ()
    updated_at: datetime | None = None  # the latest fact's time

    @property
    def status(self) -> Status:
        money_came = self.authorized_at is not None or self.paid_at is not None
        if self.committed_at is not None:
            step = self.last_step.step if self.last_step else None
            refunded = self.refunded
            money_back = refunded >= self.charge or (
                bool(self.payment_canceled) and self.paid_at is None
            )
            if step == "cancelled":
                return Status.CANCELLED if money_back else Status.RETURNING_MONEY
            if refunded and refunded >= self.charge:
                return Status.REFUNDED
            if self.payment_canceled and self.paid_at is None:
                return Status.CANCELLED  # the hold lapsed before capture: the stock went back
            if step is not None:
                return Status(step)
            if refunded:
                return Status.PARTLY_REFUNDED
            return Status.PAID
        if self.commit_failed:
            if money_came and not (self.payment_canceled or self.refunds):
                return Status.RETURNING_MONEY
            return Status.CANCELLED
        if self.rejected:
            return Status.REJECTED
        if money_came and not self.payment_canceled:
            return Status.CONFIRMING
        if self.released == "expired":
            return Status.EXPIRED
        if self.released or self.payment_canceled or self.payment_failed:
            return Status.CANCELLED
        if self.payment_id:
            return Status.AWAITING_PAYMENT
        if self.reserved_at is not None:
            return Status.PAY_ON_RECEIPT if self.payment == "cash" else Status.RESERVED
        return Status.PLACED

    @property
    def last_step(self) -> FulfilmentEntry | None:
        """The latest step after paid (libs.fulfilment), if any."""
        return self.fulfilment[-1] if self.fulfilment else None

    @property
    def kept(self) -> bool:
        """The sale stands: stock committed, money held or taken and not all of it given back."""
        return (
            self.committed_at is not None
            and not (self.payment_canceled and self.paid_at is None)
            and self.refunded < self.charge
        )

    @property
    def late(self) -> bool:
        """Paid after the reservation had ended (the inventory took the stock again, or not)."""
        return bool(self.released) and (self.committed_at is not None or bool(self.commit_failed))

    @property
    def charge(self) -> int:
        """What the customer pays: the reserved total (the catalog's), else the placed one."""
        return self.amount or self.total

    @property
    def delivery_price(self) -> int:
        """Kopecks of the charge that pay for the delivery (0: none, or free)."""
        return self.delivery.price if self.delivery is not None else 0

    @property
    def goods(self) -> int:
        """Kopecks of the charge that pay for the goods: the charge less the delivery."""
        return self.charge - self.delivery_price

    @property
    def refunded(self) -> int:
        return sum(refund.amount for refund in self.refunds)

    @property
    def money_back(self) -> bool:
        """A payment the inventory refused has been given back (hold released or refunded)."""
        return bool(self.commit_failed) and bool(self.payment_canceled or self.refunds)


Line = TypeVar("Line", OrderLine, ReservedLine)


def not_returned(
    lines: Iterable[Line], returned: Iterable[OrderLine]
) -> tuple[tuple[Line, int], ...]:
    """Each line with how many of it are still the customer's: a SKU's returns are taken from
    its lines in order, never more than a line holds."""
    back: dict[str, int] = {}
    for gone in returned:
        back[gone.sku] = back.get(gone.sku, 0) + gone.qty
    left: list[tuple[Line, int]] = []
    for line in lines:
        taken = min(line.qty, back.get(line.sku, 0))
        back[line.sku] = back.get(line.sku, 0) - taken
        left.append((line, line.qty - taken))
    return tuple(left)


def _earliest(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else min(a, b)


def _latest(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else max(a, b)


def _word(a: str, b: str) -> str:
    """Two copies of one fact say the same; if they ever do not, pick the same one either way."""
    return max(a, b)


def _keeps_its_reservation(order: Order, fact: Reserved) -> bool:
    """An order is reserved once (the inventory answers an order id once); were it ever told two
    different reservations, the earliest (then the smaller) is kept, whichever came first."""
    if order.reserved_at is None:
        return False
    kept = (order.reserved_at, order.amount, msgspec.json.encode(order.delivery))
    return kept <= (fact.at, fact.total, msgspec.json.encode(fact.delivery))


def evolve(order: Order | None, fact: OrderFact) -> Order:
    """The order after one more of its facts (a fact already taken in changes nothing)."""
    current = order or Order(order_id=fact.order_id)
    replace = msgspec.structs.replace
    match fact:
        case OrderPlaced():
            changed = replace(
                current,
                customer_id=fact.customer_id,
                chat_id=fact.chat_id,
                contact=fact.contact,
                lines=fact.lines,
                total=fact.total,
                placed_at=_earliest(current.placed_at, fact.placed_at),
                # once reserved, the inventory's word on the delivery stands
                delivery=fact.delivery if current.reserved_at is None else current.delivery,
                payment=fact.payment,
            )
            return replace(changed, updated_at=_latest(current.updated_at, fact.placed_at))
        case Reserved():
            if not _keeps_its_reservation(current, fact):
                changed = replace(
                    current,
                    reserved_at=fact.at,
                    amount=fact.total,
                    expires_at=fact.expires_at,
                    delivery=fact.delivery,
                )
            else:
                changed = current
        case Rejected():
            changed = replace(current, rejected=_word(current.rejected, fact.reason))
        case Released():
            changed = replace(
                current,
                released=_word(current.released, fact.reason),
                released_at=_earliest(current.released_at, fact.at),
            )
        case Committed():
            changed = replace(current, committed_at=_earliest(current.committed_at, fact.at))
        case CommitFailed():
            changed = replace(current, commit_failed=_word(current.commit_failed, fact.reason))
        case PaymentPending():
            changed = replace(
                current,
                payment_id=_word(current.payment_id, fact.payment_id),
                pay_url=_word(current.pay_url, fact.confirmation_url),
                expires_at=current.expires_at or fact.expires_at,
            )
        case PaymentAuthorized():
            changed = replace(
                current,
                payment_id=_word(current.payment_id, fact.payment_id),
                authorized_at=_earliest(current.authorized_at, fact.at),
            )
        case PaymentSucceeded():
            changed = replace(
                current,
                payment_id=_word(current.payment_id, fact.payment_id),
                paid_at=_earliest(current.paid_at, fact.at),
            )
        case PaymentCanceled():
            changed = replace(
                current, payment_canceled=_word(current.payment_canceled, fact.reason)
            )
        case PaymentFailed():
            changed = replace(current, payment_failed=_word(current.payment_failed, fact.reason))
        case PaymentRefunded():
            if any(r.refund_id == fact.refund_id for r in current.refunds):
                changed = current
            else:
                refund = Refund(fact.refund_id, fact.amount, fact.lines, fact.at)
                refunds = tuple(sorted((*current.refunds, refund), key=lambda r: r.refund_id))
                changed = replace(current, refunds=refunds)
        case OrderFulfilment():
            # Each fact holds the whole history so far: the longest is the latest (two of the
            # same length are one fact told twice, or, never by the desks, a pick either way).
            mine, theirs = current.fulfilment, fact.history
            if (len(theirs), msgspec.json.encode(theirs)) > (len(mine), msgspec.json.encode(mine)):
                changed = replace(current, fulfilment=theirs)
            else:
                changed = current
        case _:
            raise TypeError(f"not an order fact: {fact!r}")  # pragma: no cover
    return replace(changed, updated_at=_latest(current.updated_at, fact.at))


def fold(facts: Iterable[OrderFact], order: Order | None = None) -> Order | None:
    """An order's state after all these facts (None if there were none)."""
    for fact in facts:
        order = evolve(order, fact)
    return order
