"""After "paid": which step an order may take next, decided from its lifecycle state alone.

Steps only go forward: packed, then shipped or ready for pickup, then delivered; an order may be
cancelled until it is delivered (by the customer only until it is packed). Every desk (the admin
chat, the sheet) asks `decide` and publishes what it returns on `orders.fulfilment.<order id>`
expecting that subject's last sequence to be the one its decision was made on: two desks acting
at once make one change, and the other desk decides again on the new state. A step that does not
fit the state is refused with a reason (a text key's last part), never half-applied.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Final

import msgspec
import nats.js.errors
from nats.js import JetStreamContext

from libs import bus, subjects
from libs.contracts import FulfilmentEntry, FulfilmentStep, OrderFulfilment
from libs.lifecycle import Order

PACKED: Final = "packed"
SHIPPED: Final = "shipped"
READY_FOR_PICKUP: Final = "ready_for_pickup"
DELIVERED: Final = "delivered"
CANCELLED: Final = "cancelled"
# `by` of a step taken in the Google Sheet's Orders tab (crm_sync): no Telegram user has id 0.
BY_SHEET: Final = 0

# How far along each step is; a step is taken only above the order's current one. Shipped and
# ready for pickup are two ways of the same stage, so one excludes the other.
_STAGE: dict[str, int] = {PACKED: 1, SHIPPED: 2, READY_FOR_PICKUP: 2, DELIVERED: 3}
STEPS: tuple[FulfilmentStep, ...] = (PACKED, SHIPPED, READY_FOR_PICKUP, DELIVERED, CANCELLED)


class Refused(msgspec.Struct, frozen=True):
    """Why a step was not taken: `reason` names a text (fulfilment.refused.<reason>)."""

    reason: str


def decide(
    order: Order,
    step: FulfilmentStep,
    by: int,
    at: datetime,
    *,
    by_customer: bool = False,
    carrier: str = "",
    tracking: str = "",
) -> OrderFulfilment | Refused:
    """The fact that takes `order` one step further, or why it may not."""
    if not order.kept:
        return Refused("not_paid")
    last = order.last_step
    if last is not None and last.step == CANCELLED:
        return Refused("cancelled")
    if last is not None and last.step == DELIVERED:
        return Refused("delivered")
    if step == CANCELLED:
        if by_customer and last is not None:
            return Refused("packed")
    elif last is not None and last.step == step:
        return Refused("already")
    elif last is not None and _STAGE[step] <= _STAGE[last.step]:
        return Refused("backwards")
    entry = FulfilmentEntry(
        step=step,
        at=at,
        by=by,
        by_customer=by_customer and step == CANCELLED,
        carrier=carrier if step == SHIPPED else "",
        tracking=tracking if step == SHIPPED else "",
    )
    return OrderFulfilment(order_id=order.order_id, history=(*order.fulfilment, entry), at=at)


def next_steps(order: Order) -> tuple[FulfilmentStep, ...]:
    """The steps the shop may take now, in the order its buttons show them."""
    now = order.updated_at or datetime.min
    return tuple(step for step in STEPS if not isinstance(decide(order, step, 0, now), Refused))


def customer_may_cancel(order: Order) -> bool:
    now = order.updated_at or datetime.min
    return not isinstance(decide(order, CANCELLED, 0, now, by_customer=True), Refused)


# Taking a step on the bus ------------------------------------------------------------------------
ATTEMPTS = 5  # decisions in a row overtaken by another desk before giving up ("busy")
_decode = msgspec.json.Decoder(OrderFulfilment).decode


async def latest(js: JetStreamContext, order_id: str) -> tuple[int, OrderFulfilment | None]:
    """The order's last fulfilment fact and its stream sequence (0, None: no step yet)."""
    try:
        msg = await js.get_last_msg(subjects.ORDERS, subjects.order_fulfilment(order_id))
    except nats.js.errors.NotFoundError:
        return 0, None
    return msg.seq or 0, _decode(msg.data or b"")


async def take(
    js: JetStreamContext,
    order: Order,
    step: FulfilmentStep,
    by: int,
    at: datetime,
    *,
    by_customer: bool = False,
    carrier: str = "",
    tracking: str = "",
) -> OrderFulfilment | Refused:
    """Decide the step on the order's latest fulfilment and keep it on the bus, once.

    `order` may be a desk's view that is behind: its fulfilment is read from the bus, and the
    fact is kept only if no other desk's step came in between (else decided again). Two desks
    taking the same step at once make one fact (the same Nats-Msg-Id); the answer is the fact
    the bus kept, or why the step was refused.
    """
    subject = subjects.order_fulfilment(order.order_id)
    for _ in range(ATTEMPTS):
        seq, last = await latest(js, order.order_id)
        if last is not None and len(last.history) >= len(order.fulfilment):
            order = msgspec.structs.replace(order, fulfilment=last.history)
        answer = decide(
            order, step, by, at, by_customer=by_customer, carrier=carrier, tracking=tracking
        )
        if isinstance(answer, Refused):
            return answer
        entry = answer.history[-1]
        intent = f"{len(answer.history)}:{entry.step}:{entry.carrier}:{entry.tracking}"
        try:
            ack = await bus.publish(
                js, subject, answer, f"fulfil:{order.order_id}:{intent}", expect_last=seq
            )
        except nats.js.errors.APIError as exc:
            if exc.err_code == bus.WRONG_LAST_SEQUENCE:
                continue  # another desk took a step meanwhile: decide again on it
            raise
        if ack.duplicate:  # the same step by another desk a moment ago: that one stands
            _, kept = await latest(js, order.order_id)
            return kept or answer
        return answer
    return Refused("busy")


# Carriers and tracking numbers -------------------------------------------------------------------
class Carrier(StrEnum):
    RUSSIAN_POST = "russian_post"
    CDEK = "cdek"
    BOXBERRY = "boxberry"
    YANDEX = "yandex"
    OTHER = "other"


# How the shop's people name them (the sheet, the admin chat's buttons).
CARRIER_TITLES: dict[Carrier, str] = {
    Carrier.RUSSIAN_POST: "Почта России",
    Carrier.CDEK: "СДЭК",
    Carrier.BOXBERRY: "Boxberry",
    Carrier.YANDEX: "Яндекс Доставка",
    Carrier.OTHER: "другая служба",
}


def carrier_title(carrier: str) -> str:
    try:
        return CARRIER_TITLES[Carrier(carrier)]
    except ValueError:
        return carrier


# The carriers' public tracking pages (None: no page to link to).
_TRACKING_PAGE: dict[Carrier, str | None] = {
    Carrier.RUSSIAN_POST: "https://www.pochta.ru/tracking?barcode={}",
    Carrier.CDEK: "https://www.cdek.ru/ru/tracking/?order_id={}",
    Carrier.BOXBERRY: "https://boxberry.ru/tracking-page?id={}",
    Carrier.YANDEX: None,
    Carrier.OTHER: None,
}

_RUSSIAN_POST = re.compile(r"[A-Z]{2}\d{9}[A-Z]{2}|\d{14}")
_CDEK = re.compile(r"\d{8,12}")
_TRACKING = re.compile(r"[A-Z0-9][A-Z0-9-]{3,39}")


class BadTracking(ValueError):
    """Not a tracking number any carrier writes (the hint says what one looks like)."""


def tracking_number(text: str) -> str:
    """The number as carriers write it (capitals, no spaces), or BadTracking."""
    number = re.sub(r"[\s]", "", text).upper()
    if not _TRACKING.fullmatch(number):
        raise BadTracking(text)
    return number


def carrier_of(number: str) -> Carrier | None:
    """The carrier a number's format names, or None when it could be several (ask the admin)."""
    if _RUSSIAN_POST.fullmatch(number):
        return Carrier.RUSSIAN_POST
    if _CDEK.fullmatch(number):
        return Carrier.CDEK
    return None


def tracking_url(carrier: str, number: str) -> str | None:
    try:
        page = _TRACKING_PAGE[Carrier(carrier)]
    except ValueError:
        return None
    return page.format(number) if page and number else None
