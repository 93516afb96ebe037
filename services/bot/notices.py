"""Who is told what when an order moves: a pure function of its state before and after a fact.

The order's status is the lifecycle's (libs.lifecycle); this module only decides what to say on
each change of it, so the bot keeps no rules of its own about what a fact means. A fact that
changes nothing (a redelivery, a duplicate) changes no status, so it tells nothing. A status
can come back (expired, then a late payment being confirmed, then its hold cancelled: expired
again), so each notice but a refund's is said once per order: the caller keeps what was `said`.
No I/O here: the Notifier renders these notices and sends them.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from libs.lifecycle import Order, Refund, Status

Audience = Literal["customer", "admin"]

# Statuses of a sale: the stock was committed to the order, the money held or taken (and the
# steps the shop took with it since: libs.fulfilment).
SOLD = frozenset(
    {
        Status.PAID,
        Status.PARTLY_REFUNDED,
        Status.REFUNDED,
        Status.PACKED,
        Status.SHIPPED,
        Status.READY_FOR_PICKUP,
        Status.DELIVERED,
    }
)


class Kind(StrEnum):
    """What a notice says (how it is worded is the Notifier's and the locales')."""

    PAY = "pay"  # the order's message becomes the Pay button
    ON_RECEIPT = "on_receipt"  # held for a customer who pays when the goods are handed over
    REJECTED = "rejected"  # the inventory refused it: what to fix, with one-tap fixes
    EXPIRED = "expired"  # the reservation ended unpaid
    PAYMENT_CANCELED = "payment_canceled"  # YooKassa cancelled the payment: no money taken
    PAYMENT_FAILED = "payment_failed"  # no payment could be made
    CANCELLED = "cancelled"  # ended by the shop, no money taken
    PAID = "paid"  # the stock is committed: the goods are the customer's
    STOCK_GONE = "stock_gone"  # paid after the hold ended and the stock is gone: money goes back
    MONEY_BACK = "money_back"  # that money is back
    PAID_CANCELLED = "paid_cancelled"  # a paid order whose held payment lapsed (for the admin)
    REFUNDED = "refunded"  # one refund of a paid order
    # After paid (libs.fulfilment): the steps that matter to the customer.
    SHIPPED = "shipped"  # handed to a carrier: which, and the tracking link
    READY_FOR_PICKUP = "ready_for_pickup"
    DELIVERED = "delivered"  # a short thank-you
    ORDER_CANCELLED = "order_cancelled"  # a paid order cancelled: how much comes back, and when
    CANCEL_MONEY_BACK = "cancel_money_back"  # that money is back
    CUSTOMER_CANCELLED = "customer_cancelled"  # the customer cancelled it (for the admin chat)


# The fulfilment statuses the customer hears of (packed is the shop's own business).
STEP_KINDS = {
    Status.SHIPPED: Kind.SHIPPED,
    Status.READY_FOR_PICKUP: Kind.READY_FOR_PICKUP,
    Status.DELIVERED: Kind.DELIVERED,
}


@dataclass(frozen=True)
class Notice:
    to: Audience
    kind: Kind
    late: bool = False  # paid after the reservation had ended
    refund: Refund | None = None  # the refund told (Kind.REFUNDED)

    @property
    def key(self) -> str:
        """What `said` remembers of it ("" for a refund: each is told, the state says which)."""
        return "" if self.refund else f"{self.to}.{self.kind}"


ON_RECEIPT_CARD = Notice("admin", Kind.ON_RECEIPT)


def notices(before: Order, after: Order, said: Collection[str] = ()) -> list[Notice]:
    """What to tell the customer and the admin chat about `before` becoming `after`, but for
    what was `said` already (the keys of the notices told for this order)."""
    told: list[Notice] = []
    if _where(after) != _where(before):
        told += [n for n in _entered(before, after) if n.key not in said]
    if ON_RECEIPT_CARD.key in said:  # its card is in the admin chat: edited in place, not again
        told = [n for n in told if n != Notice("admin", Kind.PAID, late=n.late)]
    told += [
        notice
        for refund in _refunds_told(after)
        if refund not in _refunds_told(before)
        for notice in (
            Notice("customer", Kind.REFUNDED, refund=refund),
            Notice("admin", Kind.REFUNDED, refund=refund),
        )
    ]
    return told


def _where(order: Order) -> tuple[Status, bool]:
    """Where the order is, as far as telling goes: its status and, for a payment the inventory
    refused, whether its money is back (cancelled before that money was seen here, and
    cancelled with it returned, are two different news)."""
    return order.status, order.money_back


def _entered(before: Order, after: Order) -> list[Notice]:
    match after.status:
        case Status.AWAITING_PAYMENT:
            return [Notice("customer", Kind.PAY)]
        case Status.PAY_ON_RECEIPT:
            # The admin chat gets the order's card now, with "paid on receipt" on it.
            return [Notice("customer", Kind.ON_RECEIPT), Notice("admin", Kind.ON_RECEIPT)]
        case Status.REJECTED:
            return [Notice("customer", Kind.REJECTED)]
        case Status.EXPIRED:
            return [Notice("customer", Kind.EXPIRED)]
        case Status.RETURNING_MONEY if cancelled(after):
            return _cancelled_by_desk(after)
        case Status.RETURNING_MONEY:
            return [Notice("customer", Kind.STOCK_GONE), Notice("admin", Kind.STOCK_GONE)]
        case Status.CANCELLED if cancelled(after):
            return [*_cancelled_by_desk(after), Notice("customer", Kind.CANCEL_MONEY_BACK)]
        case Status.CANCELLED:
            return _cancelled(before, after)
        case status if status in SOLD:
            told = []
            if before.status not in SOLD:
                # Told once, when the order becomes a sale (a refund seen before the commit
                # included).
                told += [
                    Notice("customer", Kind.PAID, late=after.late),
                    Notice("admin", Kind.PAID, late=after.late),
                ]
            if status in STEP_KINDS:
                told.append(Notice("customer", STEP_KINDS[status]))
            return told
    return []  # placed, reserved, confirming, or from one sold status to another: nothing new


def cancelled(order: Order) -> bool:
    """Cancelled by a desk (the shop or the customer) after it was paid."""
    return order.last_step is not None and order.last_step.step == "cancelled"


def _cancelled_by_desk(order: Order) -> list[Notice]:
    told = [Notice("customer", Kind.ORDER_CANCELLED)]
    if order.fulfilment[-1].by_customer:
        told.append(Notice("admin", Kind.CUSTOMER_CANCELLED))
    return told


def _cancelled(before: Order, after: Order) -> list[Notice]:
    """Why it ended, as far as the facts so far tell."""
    if after.money_back:
        # The admin hears of the stock gone once, here if the money came back before the news.
        return [Notice("admin", Kind.STOCK_GONE), Notice("customer", Kind.MONEY_BACK)]
    if after.commit_failed:
        return []  # a payment was refused before its money was seen here: told with the money
    if before.status in SOLD:
        return [Notice("customer", Kind.PAYMENT_CANCELED), Notice("admin", Kind.PAID_CANCELLED)]
    if after.payment_failed or after.released == "payment_failed":
        return [Notice("customer", Kind.PAYMENT_FAILED), Notice("admin", Kind.PAYMENT_FAILED)]
    if after.payment_canceled or after.released == "payment_canceled":
        return [Notice("customer", Kind.PAYMENT_CANCELED)]
    return [Notice("customer", Kind.CANCELLED)]


def _refunds_told(order: Order) -> tuple[Refund, ...]:
    """Refunds of a sale are told as such; money returned for a refused payment is told apart."""
    return order.refunds if order.status in SOLD else ()
