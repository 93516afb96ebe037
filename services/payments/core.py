"""The payments service's decisions, without I/O: what to ask YooKassa, what to believe.

A `PaymentRecord` is what the service keeps per order (in the `payments` KV bucket): enough to
create the payment again with the same key, to check what YooKassa reports against what was
asked, and to know which facts were already told.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import msgspec

from libs import money
from libs.contracts import (
    Contact,
    OrderLine,
    PaymentAuthorized,
    PaymentCanceled,
    PaymentEvent,
    PaymentSucceeded,
    ReservedLine,
)

Status = Literal["creating", "pending", "waiting_for_capture", "succeeded", "canceled", "failed"]
OPEN: frozenset[str] = frozenset({"creating", "pending", "waiting_for_capture"})
CURRENCY = "RUB"


class PaymentRecord(msgspec.Struct, frozen=True, kw_only=True):
    order_id: str
    amount: int  # kopecks
    lines: tuple[ReservedLine, ...]
    expires_at: datetime  # the reservation's
    contact: Contact = Contact()
    status: Status = "creating"
    payment_id: str = ""
    confirmation_url: str = ""
    refunded: int = 0  # kopecks
    returned: tuple[OrderLine, ...] = ()  # goods that came back with refunds
    refund_ids: tuple[str, ...] = ()
    told: tuple[str, ...] = ()  # statuses already published as facts
    updated_at: datetime | None = None


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
    if receipt is not None:
        params["receipt"] = receipt_params(record.lines, record.contact, titles, receipt)
    return params


def receipt_params(
    lines: tuple[ReservedLine, ...] | tuple[OrderLine, ...],
    contact: Contact,
    titles: dict[str, str],
    config: ReceiptConfig,
) -> dict[str, Any]:
    """A 54-FZ receipt: one item per line; the customer by phone (digits only) or email."""
    customer: dict[str, str] = {}
    if contact.phone:
        customer["phone"] = contact.phone.lstrip("+")
    if contact.email:
        customer["email"] = contact.email
    if contact.name:
        customer["full_name"] = contact.name[:256]
    return {
        "customer": customer,
        "items": [
            {
                "description": titles.get(line.sku, line.sku)[:128],
                "quantity": f"{line.qty}.00",
                "amount": amount_field(line.unit_price),
                "vat_code": config.vat_code,
                "payment_subject": config.payment_subject,
                "payment_mode": config.payment_mode,
            }
            for line in lines
        ],
    }


def not_returned(record: PaymentRecord) -> tuple[OrderLine, ...]:
    """The order's lines less what earlier refunds took back."""
    back: dict[str, int] = {}
    for returned in record.returned:
        back[returned.sku] = back.get(returned.sku, 0) + returned.qty
    left = []
    for line in record.lines:
        taken = min(line.qty, back.get(line.sku, 0))
        back[line.sku] = back.get(line.sku, 0) - taken
        if line.qty > taken:
            left.append(OrderLine(line.sku, line.qty - taken, line.unit_price))
    return tuple(left)


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


# The inventory's answer to a payment, and what it makes payments do with the money.
Answer = Literal["committed", "commit_failed"]
Settlement = Literal["capture", "cancel", "refund"] | None


def settlement(answer: Answer, status: str, two_stage: bool) -> Settlement:
    """Money taken <=> stock committed: capture a hold the inventory committed; give back the
    money of a payment it refused (cancel the hold, or refund a one-stage payment); nothing
    else. `status` is YooKassa's, read just now."""
    if answer == "committed":
        return "capture" if two_stage and status == "waiting_for_capture" else None
    if status == "waiting_for_capture":
        return "cancel"
    if status == "succeeded":
        return "refund"
    return None


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
