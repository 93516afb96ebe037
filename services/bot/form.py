"""The checkout form as data: one table of questions, in the order they are asked, and the typed
answers. Pure: what an answer means, which question comes next, what the summary says; the
handler (services.bot.handlers.checkout) asks and keeps the answers, for every question alike.

Adding a question is a row in FIELDS (with its answer in CheckoutAnswers and its texts).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from libs.contracts import Contact
from libs.money import format_rub
from services.bot import validation as v
from services.bot.cart import Priced
from services.bot.messages import Text, lines
from services.bot.texts import Texts

# What goes under a question: nothing (and any reply keyboard away), a button that shares the
# customer's own number, or a Skip button.
Keyboard = Literal["none", "share_phone", "skip"]
Parse = Callable[[str], str | v.Problem]
GROUP = "Form"  # the FSM states' group: "Form:<field>", as stored in conversations before
CONFIRM = f"{GROUP}:confirm"  # the summary, waiting for Confirm


class CheckoutAnswers(msgspec.Struct, frozen=True, kw_only=True):
    """What the customer answered ("" for a question not answered, skipped or not asked)."""

    name: str = ""
    phone: str = ""  # E.164
    address: str = ""
    email: str = ""
    comment: str = ""

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> CheckoutAnswers:
        """The answers in a conversation's data (kept there next to the form's own keys)."""
        found = {
            name: data[name] for name in cls.__struct_fields__ if isinstance(data.get(name), str)
        }
        return msgspec.convert(found, cls)

    def contact(self) -> Contact:
        return Contact(self.name, self.phone, self.address, self.email, self.comment)

    @classmethod
    def saved(cls, contact: Contact) -> CheckoutAnswers:
        """What a customer's saved details answer: all but a comment, which is per order."""
        return cls(
            name=contact.name, phone=contact.phone, address=contact.address, email=contact.email
        )


@dataclass(frozen=True, slots=True)
class Field:
    """One question of the form."""

    name: str  # the CheckoutAnswers field it answers
    ask: str  # the question's text key
    parse: Parse  # a typed answer: the clean value, or what is wrong with it
    keyboard: Keyboard = "none"
    optional: bool = False  # Skip answers it with ""
    contact: Parse | None = None  # a shared contact answers it with its number, read by this
    receipts_only: bool = False  # asked only when receipts (54-FZ) are sent

    @property
    def state(self) -> str:
        return f"{GROUP}:{self.name}"


def _address(raw: str) -> str | v.AddressProblem:
    found = v.parse_address(raw)
    return found.text if isinstance(found, v.Address) else found


FIELDS: tuple[Field, ...] = (
    Field("name", "checkout.ask_name", v.parse_name),
    Field(
        "phone",
        "checkout.ask_phone",
        v.parse_phone,
        keyboard="share_phone",
        contact=v.parse_shared_phone,
    ),
    Field("address", "checkout.ask_address", _address),
    Field("email", "checkout.ask_email", v.parse_email, "skip", optional=True, receipts_only=True),
    Field("comment", "checkout.ask_comment", v.parse_comment, "skip", optional=True),
)
BY_NAME = {f.name: f for f in FIELDS}
BY_STATE = {f.state: f for f in FIELDS}
STATES = (*BY_STATE, CONFIRM)  # every state of the form


def questions(receipts: bool) -> tuple[Field, ...]:
    """The questions asked, in order."""
    return tuple(f for f in FIELDS if receipts or not f.receipts_only)


def after(answered: Field, receipts: bool, editing: bool) -> Field | None:
    """The question after `answered`; None for the summary (the last one answered, or one
    changed from the summary)."""
    asked = questions(receipts)
    following = asked[asked.index(answered) + 1 :] if answered in asked else ()
    return None if editing or not following else following[0]


@dataclass(frozen=True, slots=True)
class NotTheirs:
    """A shared contact that is someone else's."""


def read_contact(
    field: Field, number: str, contact_user_id: int | None, from_user_id: int
) -> str | v.Problem | NotTheirs:
    """A shared contact as the answer to `field` (one with a `contact` reader)."""
    assert field.contact is not None, "only a field that takes a contact is answered by one"
    if not v.check_contact(contact_user_id, from_user_id):
        return NotTheirs()
    return field.contact(number)


def summary(answers: CheckoutAnswers, items: Priced) -> Text:
    """The order to confirm: the cart, its total, and every answer ("—" for none)."""
    titles = {line.product.sku: line.product.title for line in items.lines}
    return Text(
        "checkout.summary",
        {
            "lines": lines(items.ordered(), titles),
            "total": format_rub(items.total),
            "name": answers.name or "—",
            "phone": Texts.phone(answers.phone) if answers.phone else "—",
            "address": answers.address or "—",
            "email": answers.email or "—",
            "comment": answers.comment or "—",
        },
    )
