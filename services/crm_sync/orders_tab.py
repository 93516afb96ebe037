"""The owner's edits of the Orders tab, as the admin chat's steps; no I/O.

The Fulfilment cell (a dropdown of `CHOICES`) changed by a person, with the Tracking and Carrier
cells for "shipped", is a step `libs.fulfilment.decide` takes or refuses. What the service wrote
is always the text of some point of the order's fulfilment history, and the sheet keeps what it
last wrote per row (`written`): a cell that says either is the service's own (maybe lagging
behind the state), never the owner's edit, so a row not yet rewritten is not taken back.
A refused step puts the cells back to what the order is, and the reason goes in the cell's note.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from libs import fulfilment, lifecycle
from libs.contracts import FulfilmentStep
from services.crm_sync import core

FULFILMENT = core.OrderRow.__struct_fields__.index("fulfilment")
CARRIER = core.OrderRow.__struct_fields__.index("carrier")
TRACKING = core.OrderRow.__struct_fields__.index("tracking")

# The dropdown's words: the Fulfilment column's (core.fulfilment_text) for each step.
CHOICES: dict[str, FulfilmentStep] = {step.replace("_", " "): step for step in fulfilment.STEPS}

# Why a step from the sheet was not taken, in the owner's language (the Catalog tab's Result
# speaks it too); a libs.fulfilment refusal's reason or the sheet's own.
REASONS = {
    "not_paid": "заказ ещё не оплачен",
    "cancelled": "заказ отменён",
    "delivered": "заказ уже вручён",
    "backwards": "шаг назад нельзя",
    "packed": "заказ уже собран",
    "unknown": "нет такого шага; выберите из списка: " + ", ".join(CHOICES),
    "tracking": "трек-номер не похож на номер (буквы и цифры, 4–40 знаков)",
    "carrier": "служба доставки не видна по номеру: укажите Carrier ("
    + ", ".join(fulfilment.CARRIER_TITLES.values())
    + ")",
}


@dataclass(frozen=True, slots=True)
class Seen:
    """An Orders row as read: its number in the sheet and the three cells the owner edits."""

    number: int
    order_id: str
    fulfilment: str
    carrier: str
    tracking: str


@dataclass(frozen=True, slots=True)
class Step:
    """The owner asked for this step (decided on the state the sync saw)."""

    step: FulfilmentStep
    carrier: str = ""
    tracking: str = ""


@dataclass(frozen=True, slots=True)
class Refusal:
    reason: str  # a REASONS key


def seen(number: int, cells: list[core.Cell]) -> Seen:
    padded = [core.text(c).strip() for c in (cells + [""] * len(core.ORDER_COLUMNS))]
    return Seen(number, padded[0], padded[FULFILMENT], padded[CARRIER], padded[TRACKING])


def words(cell: str) -> str:
    return " ".join(cell.lower().split())


def step_of(cell: str) -> FulfilmentStep | None:
    """The step a Fulfilment cell names ("cancelled by the shop" is "cancelled")."""
    said = words(cell)
    for choice, step in CHOICES.items():
        if said == choice or said.startswith(choice + " by "):
            return step
    return None


def carrier_named(cell: str) -> fulfilment.Carrier | None:
    said = words(cell)
    for carrier, title in fulfilment.CARRIER_TITLES.items():
        if said in (words(title), carrier.value, carrier.value.replace("_", " ")):
            return carrier
    return None


def service_wrote(order: lifecycle.Order) -> set[str]:
    """Every Fulfilment text the service may have written for the order: its history's."""
    texts = {""}
    for end in range(len(order.fulfilment) + 1):
        past = lifecycle.Order(order_id=order.order_id, fulfilment=order.fulfilment[:end])
        texts.add(words(core.fulfilment_text(past)))
    return texts


def edit(
    row: Seen, written: str | None, order: lifecycle.Order, at: datetime
) -> Step | Refusal | None:
    """What the owner's Fulfilment cell asks of the order: a step, a refusal, or nothing (the
    cell says what the service wrote, now or a moment ago)."""
    said = words(row.fulfilment)
    last = order.last_step
    step = step_of(said)
    if not said or (last is not None and step == last.step):
        return None
    # Written by the service before the state moved on: the row is rewritten soon. A past step
    # the service did not last write there is the owner's (refused: backwards).
    if said in service_wrote(order) and (written is None or said == words(written)):
        return None
    if step is None:
        return Refusal("unknown")
    carrier, tracking = "", ""
    if step == fulfilment.SHIPPED:
        if row.tracking:
            try:
                tracking = fulfilment.tracking_number(row.tracking)
            except fulfilment.BadTracking:
                return Refusal("tracking")
        named = carrier_named(row.carrier) if row.carrier else None
        if row.carrier and named is None:
            return Refusal("carrier")
        found = named or (fulfilment.carrier_of(tracking) if tracking else None)
        if tracking and found is None:
            return Refusal("carrier")
        carrier = found.value if found else ""
    answer = fulfilment.decide(
        order, step, fulfilment.BY_SHEET, at, carrier=carrier, tracking=tracking
    )
    if isinstance(answer, fulfilment.Refused):
        return Refusal(answer.reason)
    return Step(step, carrier, tracking)


def put_back(order: lifecycle.Order) -> dict[int, str]:
    """The three cells as the order is (0-based columns)."""
    now = core.row(order, {})
    return {FULFILMENT: now.fulfilment, CARRIER: now.carrier, TRACKING: now.tracking}


def note(reason: str, asked: str, at: datetime) -> str:
    why = REASONS.get(reason, reason)
    return f"⚠ {core.stamp(at)} UTC: «{asked}» не принято: {why}"
