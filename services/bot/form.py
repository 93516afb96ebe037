"""The checkout form as data: one table of questions, in the order they are asked, and the typed
answers. Pure: what an answer means, which question comes next, what the summary says; the
handler (services.bot.handlers.checkout) asks and keeps the answers, for every question alike.

Adding a question is a row in FIELDS (with its answer in CheckoutAnswers and its texts).

The delivery and the payment are questions answered with buttons (`choices`): the delivery one
per method the shop offers with its price for this cart (libs.delivery prices it as the
inventory will), the payment one per method in PAYMENT_METHODS (cash only where the goods are
handed over: pickup or a courier). Such a question with one choice answers itself. Pickup asks
no address; a courier's address must be in its cities. The next question is always the first
one asked and not yet answered (a choice no longer offered is not an answer), so an answer
changed from the summary (a courier instead of pickup) asks just what it now needs.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast, get_args

import msgspec

from libs import delivery
from libs.contracts import (
    CatalogDelivery,
    Contact,
    DeliveryChoice,
    DeliveryMethod,
    PaymentMethod,
)
from libs.money import format_rub
from services.bot import validation as v
from services.bot.cart import Priced
from services.bot.messages import Joined, Text, delivery_price, lines
from services.bot.texts import Texts

# What goes under a question: nothing (and any reply keyboard away), a button that shares the
# customer's own number, a Skip button, or a button for each choice (the delivery methods).
Keyboard = Literal["none", "share_phone", "skip", "choices"]
Parse = Callable[[str], str | v.Problem]
PAYMENT_METHODS: tuple[str, ...] = get_args(PaymentMethod)
GROUP = "Form"  # the FSM states' group: "Form:<field>", as stored in conversations before
CONFIRM = f"{GROUP}:confirm"  # the summary, waiting for Confirm


class CheckoutAnswers(msgspec.Struct, frozen=True, kw_only=True):
    """What the customer answered ("" for a question not answered, skipped or not asked)."""

    name: str = ""
    phone: str = ""  # E.164
    delivery: str = ""  # the delivery method's id ("": the shop has none)
    payment: str = ""  # a PaymentMethod
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

    def paying(self) -> PaymentMethod:
        """How the customer pays (a card when the shop did not ask)."""
        return cast(PaymentMethod, self.payment) if self.payment in PAYMENT_METHODS else "card"

    def contact(self, method: DeliveryMethod | None = None) -> Contact:
        """The order's contact; a pickup order has no address (the customer comes to the shop)."""
        address = self.address if method is None or delivery.needs_address(method) else ""
        return Contact(self.name, self.phone, address, self.email, self.comment)

    @classmethod
    def saved(cls, contact: Contact) -> dict[str, str]:
        """What a customer's saved details answer: all but the delivery and the comment, which
        are per order (an address not saved, from a pickup order, is not answered)."""
        found = {"name": contact.name, "phone": contact.phone, "email": contact.email}
        return found | ({"address": contact.address} if contact.address else {})


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
    where_delivered: bool = False  # asked only when the chosen delivery needs an address

    @property
    def state(self) -> str:
        return f"{GROUP}:{self.name}"


def _address(raw: str) -> str | v.AddressProblem:
    found = v.parse_address(raw)
    return found.text if isinstance(found, v.Address) else found


def _chosen(raw: str) -> str | v.Problem:
    """The delivery is answered with a button, never typed: typed words get the buttons again."""
    return v.ChoiceProblem()


FIELDS: tuple[Field, ...] = (
    Field("name", "checkout.ask_name", v.parse_name),
    Field(
        "phone",
        "checkout.ask_phone",
        v.parse_phone,
        keyboard="share_phone",
        contact=v.parse_shared_phone,
    ),
    Field("delivery", "checkout.ask_delivery", _chosen, keyboard="choices"),
    Field("payment", "checkout.ask_payment", _chosen, keyboard="choices"),
    Field("address", "checkout.ask_address", _address, where_delivered=True),
    Field("email", "checkout.ask_email", v.parse_email, "skip", optional=True, receipts_only=True),
    Field("comment", "checkout.ask_comment", v.parse_comment, "skip", optional=True),
)
BY_NAME = {f.name: f for f in FIELDS}
BY_STATE = {f.state: f for f in FIELDS}
STATES = (*BY_STATE, CONFIRM)  # every state of the form
DELIVERY, PAYMENT = BY_NAME["delivery"], BY_NAME["payment"]
HANDED_OVER = frozenset({"pickup", "courier"})  # delivery kinds where cash can be paid


@dataclass(frozen=True, slots=True)
class Shop:
    """What the form depends on besides the answers: receipts sent, the delivery methods, the
    payment methods offered."""

    receipts: bool
    delivery: CatalogDelivery = dataclasses.field(default_factory=CatalogDelivery)
    pay_by: tuple[PaymentMethod, ...] = ("card",)

    def method(self, method_id: str) -> DeliveryMethod | None:
        return next((m for m in self.delivery.methods if m.id == method_id), None)

    def payments(self, delivery_id: str) -> tuple[PaymentMethod, ...]:
        """The ways to pay for an order delivered by `delivery_id`: cash only where the goods
        are handed over (not by post)."""
        method = self.method(delivery_id)
        handed = method is None or method.kind in HANDED_OVER
        return tuple(m for m in self.pay_by if m != "cash" or handed)


def questions(shop: Shop, chosen: str = "") -> tuple[Field, ...]:
    """The questions asked, in order, with the delivery method `chosen` so far."""
    method = shop.method(chosen)

    def asked(field: Field) -> bool:
        if field.receipts_only and not shop.receipts:
            return False
        if field is DELIVERY:
            return bool(shop.delivery.methods)
        if field.where_delivered and method is not None:
            return delivery.needs_address(method)
        return True

    return tuple(f for f in FIELDS if asked(f))


def _answered(question: Field, value: object, shop: Shop, chosen: str) -> bool:
    if not isinstance(value, str) or (value == "" and not question.optional):
        return False
    if question is DELIVERY:
        return shop.method(value) is not None
    if question is PAYMENT:
        return value in shop.payments(chosen)
    return True


def next_question(data: Mapping[str, Any], shop: Shop) -> Field | None:
    """The first question asked and not answered yet (an optional one skipped is answered with
    "", a choice no longer offered is not an answer); None for the summary."""
    chosen = data.get("delivery")
    chosen = chosen if isinstance(chosen, str) else ""
    for question in questions(shop, chosen):
        if not _answered(question, data.get(question.name), shop, chosen):
            return question
    return None


@dataclass(frozen=True, slots=True)
class Choice:
    """A button of a question answered with buttons: the answer it gives, and its words."""

    value: str
    label: Text


def choices(
    question: Field, shop: Shop, items: Priced, answers: CheckoutAnswers
) -> tuple[Choice, ...]:
    """The buttons of a `choices` question: each delivery method priced for this cart, or each
    way to pay this delivery."""
    if question is DELIVERY:
        return tuple(Choice(o.method.id, o.label()) for o in offers(shop, items))
    if question is PAYMENT:
        return tuple(
            Choice(m, Text(f"checkout.pay_by.{m}")) for m in shop.payments(answers.delivery)
        )
    return ()


@dataclass(frozen=True, slots=True)
class Offer:
    """A delivery method with its price for this cart, as its button shows it."""

    method: DeliveryMethod
    price: int  # kopecks

    def label(self) -> Text:
        price = delivery_price(self.price)
        return Text("checkout.button.delivery", {"title": self.method.title, "price": price})


def offers(shop: Shop, items: Priced) -> tuple[Offer, ...]:
    """Each of the shop's methods priced for the cart (its goods and their weight)."""
    weights = {line.product.sku: line.product.weight for line in items.lines}
    grams = delivery.weight(items.ordered(), weights)
    return tuple(Offer(m, delivery.price(m, items.total, grams)) for m in shop.delivery.methods)


@dataclass(frozen=True, slots=True)
class NotServed:
    """The courier does not go to the address's city: the customer picks another way."""

    method: DeliveryMethod
    city: str

    def say(self) -> Text:
        cities = ", ".join(self.method.cities)
        params = {"title": self.method.title, "city": self.city, "cities": cities}
        return Text("checkout.delivery_not_served", params)


_CITY_PREFIX = re.compile(r"^(?:г\.|город\s)\s*", re.IGNORECASE)


def city(address: str) -> str:
    """The city of an address the form accepted (as the inventory checks a courier's cities)."""
    found = v.parse_address(address)
    return _CITY_PREFIX.sub("", found.city) if isinstance(found, v.Address) else ""


def choice(
    answers: CheckoutAnswers, items: Priced, shop: Shop
) -> DeliveryChoice | NotServed | None:
    """The order's delivery at this cart's price; NotServed when the courier does not go to the
    address; None when the shop has no methods (or the chosen one is gone: `next_question`
    asks it again)."""
    method = shop.method(answers.delivery)
    if method is None:
        return None
    where = city(answers.address) if delivery.needs_address(method) else ""
    if where and not delivery.serves(method, where):
        return NotServed(method, where)
    price = next(o.price for o in offers(shop, items) if o.method.id == method.id)
    return DeliveryChoice(method_id=method.id, price=price, city=where)


def below_minimum(items: Priced, shop: Shop) -> Text | None:
    """What the customer is told when the goods are worth less than the shop's minimum order."""
    minimum = shop.delivery.min_order
    if not minimum or items.total >= minimum:
        return None
    params = {"minimum": format_rub(minimum), "missing": format_rub(minimum - items.total)}
    return Text("checkout.below_minimum", params)


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


def pickup_at(method: DeliveryMethod) -> Text:
    """Where (and when) a pickup order is collected."""
    params = {"address": method.address, "hours": method.hours}
    return Text("checkout.pickup_hours" if method.hours else "checkout.pickup_at", params)


def total(items: Priced, chosen: DeliveryChoice | None) -> int:
    """What the customer pays, kopecks: the goods and the delivery."""
    return items.total + (chosen.price if chosen else 0)


def summary(
    answers: CheckoutAnswers,
    items: Priced,
    shop: Shop | None = None,
    chosen: DeliveryChoice | None = None,
) -> Text:
    """The order to confirm: the cart, the delivery and its price, the total, and every answer
    ("—" for none); a pickup order shows where and when instead of an address."""
    titles = {line.product.sku: line.product.title for line in items.lines}
    method = shop.method(chosen.method_id) if shop and chosen else None
    cart: Text | Joined = lines(items.ordered(), titles)
    address: Text | str = answers.address or "—"
    if method is not None and chosen is not None:
        price = delivery_price(chosen.price)
        cart = Joined(
            (
                cart,
                Text(
                    "checkout.summary_delivery",
                    {"goods": format_rub(items.total), "title": method.title, "price": price},
                ),
            )
        )
        if not delivery.needs_address(method):
            address = pickup_at(method)
    return Text(
        "checkout.summary",
        {
            "lines": cart,
            "total": format_rub(total(items, chosen)),
            "name": answers.name or "—",
            "phone": Texts.phone(answers.phone) if answers.phone else "—",
            "address": address,
            "email": answers.email or "—",
            "comment": answers.comment or "—",
            "payment": Text(f"checkout.paying_by.{answers.payment or 'card'}"),
        },
    )
