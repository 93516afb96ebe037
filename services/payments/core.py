"""The payments service's decisions, without I/O: what to ask YooKassa, what to believe, what
each answer makes the order's record, which facts to tell, and how much money a refund gives back.

A `PaymentRecord` is what the service keeps per order (in the `payments` KV bucket): enough to
create the payment again with the same key, to check what YooKassa reports against what was
asked, and to know which facts were already told. Each step has two functions: one says what
to tell (a `Tell`, or None), one what the record becomes; the shell (`main.py`) publishes the
first and writes the second by compare-and-set, so a function of the record alone.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, cast

import msgspec

from libs import lifecycle, money
from libs.contracts import (
    Contact,
    DeliveryChoice,
    OrderLine,
    PaymentAuthorized,
    PaymentCanceled,
    PaymentEvent,
    PaymentFailed,
    PaymentMethod,
    PaymentPending,
    PaymentRefunded,
    PaymentSucceeded,
    Reserved,
    ReservedLine,
)
from libs.delivery import as_sku
from libs.subjects import PaymentKind

# "due": an order paid on receipt (cash), waiting for the desk to say the customer paid.
Status = Literal[
    "creating", "pending", "waiting_for_capture", "succeeded", "canceled", "failed", "due"
]
OPEN: frozenset[str] = frozenset({"creating", "pending", "waiting_for_capture"})
CURRENCY = "RUB"


class PaymentRecord(msgspec.Struct, frozen=True, kw_only=True):
    order_id: str
    amount: int  # kopecks
    lines: tuple[ReservedLine, ...]
    expires_at: datetime  # the reservation's
    contact: Contact = Contact()
    delivery: DeliveryChoice | None = None  # the reservation's, its price part of `amount`
    method: PaymentMethod = "card"  # the order's: card, SBP, or on receipt (no YooKassa)
    status: Status = "creating"
    payment_id: str = ""
    confirmation_url: str = ""
    refunded: int = 0  # kopecks
    returned: tuple[OrderLine, ...] = ()  # goods that came back with refunds
    delivery_back: bool = False  # the delivery's price was given back (with the rest of it all)
    refund_ids: tuple[str, ...] = ()
    told: tuple[str, ...] = ()  # statuses already published as facts
    settled: bool = False  # the settlement receipt on delivery was made (54-FZ)
    updated_at: datetime | None = None


class Tell(msgspec.Struct, frozen=True):
    """A fact to publish on `payments.<kind>.<order id>`, once: `msg_id` makes a repeat (after a
    crash, by another instance) a no-op on the stream."""

    kind: PaymentKind
    fact: PaymentEvent
    msg_id: str


class ReceiptConfig(msgspec.Struct, frozen=True):
    vat_code: int
    payment_subject: str
    payment_mode: str


def amount_field(kopecks: int) -> dict[str, str]:
    """Kopecks as YooKassa's amount object."""
    return {"value": money.rubles(kopecks), "currency": CURRENCY}


def idempotence_key(kind: str, ident: str, attempt: int = 1) -> str:
    """One key per operation: a retry after a timeout or a crash is the same request."""
    return f"shop-{kind}-{ident}-{attempt}"


def create_params(
    record: PaymentRecord,
    return_url: str,
    titles: dict[str, str],
    capture: bool,
    receipt: ReceiptConfig | None,
) -> dict[str, Any]:
    params: dict[str, Any] = {
        "amount": amount_field(record.amount),
        "capture": capture,
        "confirmation": {"type": "redirect", "return_url": return_url},
        "description": f"Заказ №{record.order_id}"[:128],
        "metadata": {"order_id": record.order_id},
    }
    if record.method == "sbp":  # the customer pays in their bank's app; YooKassa charges at once
        params["payment_method_data"] = {"type": "sbp"}
    if receipt is not None:
        params["receipt"] = receipt_params(
            record.lines, record.contact, titles, receipt, record.delivery
        )
    return params


def receipt_params(
    lines: tuple[ReservedLine, ...] | tuple[OrderLine, ...],
    contact: Contact,
    titles: dict[str, str],
    config: ReceiptConfig,
    delivery: DeliveryChoice | None = None,
) -> dict[str, Any]:
    """A 54-FZ receipt: one item per line, and the delivery's own if it costs anything (the
    items must add up to the money, or YooKassa refuses); the customer by phone (digits only)
    or email. `titles` has the products' by SKU and the delivery's by `as_sku` (libs.delivery)."""
    customer: dict[str, str] = {}
    if contact.phone:
        customer["phone"] = contact.phone.lstrip("+")
    if contact.email:
        customer["email"] = contact.email
    if contact.name:
        customer["full_name"] = contact.name[:256]
    items = [
        {
            "description": titles.get(line.sku, line.sku)[:128],
            "quantity": f"{line.qty}.00",
            "amount": amount_field(line.unit_price),
            "vat_code": config.vat_code,
            "payment_subject": config.payment_subject,
            "payment_mode": config.payment_mode,
        }
        for line in lines
    ]
    if delivery is not None and delivery.price > 0:
        items.append(delivery_item(delivery, titles, config))
    return {"customer": customer, "items": items}


def delivery_item(
    delivery: DeliveryChoice, titles: dict[str, str], config: ReceiptConfig
) -> dict[str, Any]:
    """The delivery as a receipt's item: a service, named by its method ("Доставка: Курьер по
    Москве"; plain "Доставка" once the method is gone from the catalog)."""
    title = titles.get(as_sku(delivery.method_id))
    return {
        "description": (f"Доставка: {title}" if title else "Доставка")[:128],
        "quantity": "1.00",
        "amount": amount_field(delivery.price),
        "vat_code": config.vat_code,
        "payment_subject": "service",
        "payment_mode": config.payment_mode,
    }


# With a prepayment receipt at payment time, 54-FZ asks for a second one when the goods are
# handed over: the settlement of the prepayment ("чек зачёта предоплаты").
SETTLED_ON_DELIVERY = frozenset({"full_prepayment"})


def settlement_receipt(
    record: PaymentRecord, titles: dict[str, str], config: ReceiptConfig
) -> dict[str, Any] | None:
    """The receipt that settles the prepayment once the goods are delivered: what was not
    returned and the delivery (unless its money went back), now `full_payment`, paid by the
    prepayment (None: nothing to settle). An order paid on receipt made no prepayment through
    YooKassa: the till's receipt is the courier's or the counter's."""
    if config.payment_mode not in SETTLED_ON_DELIVERY or record.status != "succeeded":
        return None
    if record.method == "cash":
        return None
    lines = not_returned(record)
    if not lines:
        return None
    delivery = None if record.delivery_back else record.delivery
    handed = msgspec.structs.replace(config, payment_mode="full_payment")
    receipt = receipt_params(lines, record.contact, titles, handed, delivery)
    total = sum(line.qty * line.unit_price for line in lines)
    total += delivery.price if delivery is not None else 0
    return {
        **receipt,
        "type": "payment",
        "payment_id": record.payment_id,
        "send": True,
        "settlements": [{"type": "prepayment", "amount": amount_field(total)}],
    }


def mismatch(record: PaymentRecord, payment: dict[str, Any]) -> str | None:
    """Why YooKassa's payment is not the one this order asked for, or None if it is."""
    if payment.get("id") != record.payment_id:
        return f"payment {payment.get('id')} is not the order's ({record.payment_id or 'none'})"
    metadata = payment.get("metadata") or {}
    if metadata.get("order_id") != record.order_id:
        return f"metadata.order_id {metadata.get('order_id')!r} is not {record.order_id!r}"
    amount = payment.get("amount") or {}
    if amount.get("currency") != CURRENCY:
        return f"currency {amount.get('currency')!r}, not {CURRENCY}"
    try:
        value = money.kopecks(amount.get("value"))
    except ValueError as exc:
        return str(exc)
    if value != record.amount:
        return f"amount {value} kopecks, the order's is {record.amount}"
    return None


def claimed_mismatch(claimed: dict[str, Any], actual: dict[str, Any]) -> str | None:
    """Why a notification's copy of the payment disagrees with the API's, or None."""
    for field in ("amount", "metadata"):
        mine, theirs = claimed.get(field) or {}, actual.get(field) or {}
        if field == "amount":
            try:
                same = money.kopecks(mine.get("value")) == money.kopecks(theirs.get("value"))
                same = same and mine.get("currency") == theirs.get("currency")
            except ValueError:
                same = False
        else:
            same = mine.get("order_id") == theirs.get("order_id")
        if not same:
            return f"the notification's {field} does not match the payment's"
    return None


# The record's story: what each step of the payment makes it, and which facts it tells.


def new_record(
    reserved: Reserved, contact: Contact, now: datetime, method: PaymentMethod = "card"
) -> PaymentRecord:
    """A reservation to be paid: amount and lines are the inventory's, the contact and the way
    to pay the order's. An order paid on receipt has no payment to create: it is due."""
    return PaymentRecord(
        order_id=reserved.order_id,
        amount=reserved.total,
        lines=reserved.lines,
        expires_at=reserved.expires_at,
        contact=contact,
        delivery=reserved.delivery,
        method=method,
        status="due" if method == "cash" else "creating",
        updated_at=now,
    )


def two_stage(record: PaymentRecord, configured: bool) -> bool:
    """Whether the order's money is held first and captured once the stock is committed: a card
    payment in a shop that holds (PAYMENTS_CAPTURE=two_stage). YooKassa takes SBP at once, and
    money paid on receipt is in the till."""
    return configured and record.method == "card"


def in_till(record: PaymentRecord) -> PaymentRecord:
    """The record once the desk said the customer of an order paid on receipt paid: the money is
    taken, and the record says so (with its payment id) before it is told, so the inventory's
    answer to the fact always finds a payment to settle."""
    if record.method != "cash" or record.status != "due":
        return record
    return msgspec.structs.replace(record, status="succeeded", payment_id=cash_payment_id(record))


def cash_paid(record: PaymentRecord, now: datetime) -> Tell | None:
    """The money of an order paid on receipt, in the till (`in_till`), to be told: the inventory
    commits the stock on this fact, or refuses it and the money goes back over the counter.
    None: not such an order, not paid, or told already."""
    if record.method != "cash" or record.status != "succeeded" or "succeeded" in record.told:
        return None
    fact = PaymentSucceeded(record.order_id, record.payment_id, record.amount, now)
    return Tell(PaymentKind.SUCCEEDED, fact, f"{record.payment_id}:succeeded")


def cash_payment_id(record: PaymentRecord) -> str:
    return f"cash-{record.order_id}"


def created(record: PaymentRecord, payment: dict[str, Any]) -> PaymentRecord:
    """YooKassa made the payment: the customer pays at its confirmation URL. A record another
    instance already moved past "creating" keeps its status."""
    confirmation = payment.get("confirmation") or {}
    return msgspec.structs.replace(
        record,
        status="pending" if record.status == "creating" else record.status,
        payment_id=str(payment["id"]),
        confirmation_url=str(confirmation.get("confirmation_url", "")),
    )


def refused(record: PaymentRecord, code: str, now: datetime) -> Tell:
    """YooKassa refused to create the payment for good (`code` says why): the order cannot be
    paid, and the inventory releases its stock on this fact."""
    fact = PaymentFailed(record.order_id, "", code, now)
    return Tell(PaymentKind.FAILED, fact, f"failed:{record.order_id}")


def failed(record: PaymentRecord) -> PaymentRecord:
    return msgspec.structs.replace(record, status="failed")


def pending(record: PaymentRecord, now: datetime) -> Tell | None:
    """The customer can pay: told once, when the payment exists."""
    if not record.payment_id or "pending" in record.told:
        return None
    fact = PaymentPending(
        record.order_id,
        record.payment_id,
        record.amount,
        record.confirmation_url,
        record.expires_at,
        now,
    )
    return Tell(PaymentKind.PENDING, fact, f"{record.payment_id}:pending")


def told(record: PaymentRecord, status: str) -> PaymentRecord:
    """The record once the fact of `status` is on the stream."""
    return (
        record
        if status in record.told
        else msgspec.structs.replace(record, told=(*record.told, status))
    )


# What each YooKassa status means: the fact it makes true (None: nothing worth telling yet).
_FACT_KIND: dict[str, PaymentKind] = {
    "waiting_for_capture": PaymentKind.AUTHORIZED,
    "succeeded": PaymentKind.SUCCEEDED,
    "canceled": PaymentKind.CANCELED,
}
# The statuses the record keeps; another (one YooKassa adds some day) leaves the record as it is.
RECORDED: frozenset[str] = OPEN | {"succeeded", "canceled"}


def observed(record: PaymentRecord, payment: dict[str, Any], now: datetime) -> Tell | None:
    """YooKassa's payment, read from its API: the fact its status makes true, unless told."""
    status = str(payment.get("status", ""))
    if status in record.told:
        return None
    fact = fact_for(record, payment, now)
    if fact is None:
        return None
    return Tell(_FACT_KIND[status], fact, f"{record.payment_id}:{status}")


def seen(record: PaymentRecord, status: str) -> PaymentRecord:
    """The record once YooKassa said `status` (and its fact, if it has one, is on the stream)."""
    if status not in RECORDED:
        return record
    changed = msgspec.structs.replace(record, status=cast(Status, status))
    return told(changed, status) if status in _FACT_KIND else changed


def quiet(record: PaymentRecord, since: datetime) -> bool:
    """An open payment not heard of since `since`: the reconciler asks YooKassa about it (a
    notification may be lost, or the instance that was creating it killed)."""
    if record.status not in OPEN:
        return False
    return record.updated_at is None or record.updated_at <= since


def fact_for(record: PaymentRecord, payment: dict[str, Any], now: datetime) -> PaymentEvent | None:
    """The fact YooKassa's payment status makes true, if it is one worth telling."""
    status = payment.get("status")
    pid = record.payment_id
    match status:
        case "waiting_for_capture":
            return PaymentAuthorized(record.order_id, pid, record.amount, now)
        case "succeeded":
            return PaymentSucceeded(record.order_id, pid, record.amount, now)
        case "canceled":
            details = payment.get("cancellation_details") or {}
            return PaymentCanceled(
                record.order_id,
                pid,
                str(details.get("reason", "canceled")),
                now,
                party=str(details.get("party", "")),
            )
    return None


# Refunds: per line, never more than was paid. The delivery's price goes back only with
# everything that is left (a cancellation, the stock gone): a return of some of the goods
# refunds those goods, and the delivery, made, stays paid.


class Refund(msgspec.Struct, frozen=True):
    """Money to give back for an order and the goods that come back with it."""

    amount: int  # kopecks, more than 0 and at most what is left of the payment
    lines: tuple[OrderLine, ...]  # the goods that come back (empty: the money only)
    receipt: tuple[OrderLine, ...]  # what the refund's 54-FZ receipt lists, the delivery apart
    delivery: int = 0  # kopecks of `amount` for the delivery (its receipt line when above 0)


def refundable(record: PaymentRecord) -> bool:
    """Only money taken can go back: a payment that succeeded."""
    return record.status == "succeeded"


def not_returned(record: PaymentRecord) -> tuple[OrderLine, ...]:
    """The order's lines less what earlier refunds took back."""
    return tuple(
        OrderLine(line.sku, left, line.unit_price)
        for line, left in lifecycle.not_returned(record.lines, record.returned)
        if left
    )


def returnable(record: PaymentRecord, asked: tuple[OrderLine, ...]) -> tuple[OrderLine, ...]:
    """The asked lines that can come back: no more of a line than the order has not returned
    yet, and never at more than the customer paid for it (a request is not trusted for that)."""
    lines = not_returned(record)
    left = [line.qty for line in lines]
    back: list[OrderLine] = []
    for want in asked:
        wanted = want.qty
        for n, have in enumerate(lines):
            if wanted <= 0:
                break
            if have.sku != want.sku or left[n] == 0:
                continue
            take = min(wanted, left[n])
            back.append(OrderLine(want.sku, take, max(0, min(want.unit_price, have.unit_price))))
            left[n] -= take
            wanted -= take
    return tuple(back)


def refund_for(record: PaymentRecord, lines: tuple[OrderLine, ...] | None) -> Refund | None:
    """What a refund of `lines` gives back (None: everything that is left; (): the money only,
    no goods back), or None if there is nothing to give back."""
    left = record.amount - record.refunded
    everything = tuple(OrderLine(ln.sku, ln.qty, ln.unit_price) for ln in record.lines)
    delivery = 0
    if not lines:  # everything that is left, or the money only: the delivery's price too
        if record.delivery is not None and not record.delivery_back:
            delivery = min(record.delivery.price, left)
        back, amount = not_returned(record) if lines is None else (), left
        # the money only lists the whole order; everything left lists what is left of it (with
        # the goods all back already, the delivery alone), the whole order if nothing is
        receipt = back if lines is None and (back or delivery) else everything
    else:
        back = returnable(record, lines)
        amount = sum(line.qty * line.unit_price for line in back)
        receipt = back
    amount = min(amount, left)
    if amount <= 0:
        return None
    return Refund(amount, back, receipt, delivery)


def refund_params(
    record: PaymentRecord,
    refund: Refund,
    reason: str,
    titles: dict[str, str],
    receipt: ReceiptConfig | None,
) -> dict[str, Any]:
    params: dict[str, Any] = {
        "payment_id": record.payment_id,
        "amount": amount_field(refund.amount),
        "description": f"Возврат по заказу №{record.order_id}: {reason}"[:250],
    }
    if receipt is not None:
        delivery = refund_delivery(record, refund)
        params["receipt"] = receipt_params(
            refund.receipt, record.contact, titles, receipt, delivery
        )
    return params


def refund_delivery(record: PaymentRecord, refund: Refund) -> DeliveryChoice | None:
    """The delivery as the refund's receipt lists it (None: the refund leaves it paid)."""
    if record.delivery is None or refund.delivery <= 0:
        return None
    return msgspec.structs.replace(record.delivery, price=refund.delivery)


def refund_fact(
    record: PaymentRecord,
    refund: Refund,
    refund_id: str,
    reason: str,
    now: datetime,
    restock: bool = True,
) -> Tell:
    """YooKassa made refund `refund_id`: the money and the goods that came back."""
    fact = PaymentRefunded(
        record.order_id,
        record.payment_id,
        refund_id,
        refund.amount,
        refund.lines,
        reason,
        now,
        restock=restock,
        delivery=refund_delivery(record, refund),
    )
    return Tell(PaymentKind.REFUNDED, fact, f"refund:{refund_id}")


def refunded(record: PaymentRecord, refund: Refund, refund_id: str) -> PaymentRecord:
    """The record counting refund `refund_id`, once."""
    if refund_id in record.refund_ids:
        return record
    return msgspec.structs.replace(
        record,
        refunded=record.refunded + refund.amount,
        returned=(*record.returned, *refund.lines),
        delivery_back=record.delivery_back or refund.delivery > 0,
        refund_ids=(*record.refund_ids, refund_id),
    )


# The inventory's answer to a payment (or the shop's cancellation of a paid order), and what it
# makes payments do with the money.
Answer = Literal["committed", "commit_failed", "cancelled"]
Settlement = Literal["capture", "cancel", "refund"] | None


def settles(answer: Answer, two_stage: bool) -> bool:
    """Whether the answer can move money at all: a one-stage payment's commit cannot (its money
    was taken with the payment), so the payment need not even be read."""
    return answer != "committed" or two_stage


def settlement(answer: Answer, status: str, two_stage: bool) -> Settlement:
    """Money taken <=> stock committed: capture a hold the inventory committed; give back the
    money of a payment it refused or of an order cancelled after paid (cancel the hold, or
    refund a taken payment); nothing else. `status` is YooKassa's, read just now."""
    if answer == "committed":
        return "capture" if two_stage and status == "waiting_for_capture" else None
    if status == "waiting_for_capture":
        return "cancel"
    if status == "succeeded":
        return "refund"
    return None
