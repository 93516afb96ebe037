"""What the bot says to whom, as data: for each notice (services.bot.notices), alert and reminder,
the message's text keys, placeholders and buttons. Pure: no I/O and no language; `render` words a
text in one language (services.bot.texts), and the Notifier only sends what it is given.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Union

from libs import delivery
from libs.contracts import (
    AlertEvent,
    CrmBehind,
    CrmCaughtUp,
    DeadLettered,
    FulfilmentEntry,
    OrderLine,
    Rejected,
)
from libs.fulfilment import Carrier, tracking_url
from libs.lifecycle import Order, Status
from libs.money import format_rub
from services.bot import callbacks as cb
from services.bot.notices import Kind, Notice
from services.bot.texts import Html, Texts

# A placeholder's value: put in as it is (escaped), or a text of its own worded first.
Param = Union[str, int, "Text", "Joined"]


@dataclass(frozen=True, slots=True)
class Text:
    """One text of the locales, with its placeholders."""

    key: str
    params: Mapping[str, Param] = field(default_factory=dict)
    fallback: str = ""  # the key said instead when there is no text `key` (an unknown reason)


@dataclass(frozen=True, slots=True)
class Joined:
    """Pieces of a message, one per line (or `separator`); a bare string is a piece as it is."""

    parts: tuple[Text | Joined | str, ...]
    separator: str = "\n"


@dataclass(frozen=True, slots=True)
class Button:
    """An inline button: a link (`url`) or a press the bot answers (`data`, packed)."""

    text: Text
    url: str = ""
    data: str = ""


Buttons = tuple[tuple[Button, ...], ...]


@dataclass(frozen=True, slots=True)
class Message:
    text: Text | Joined
    buttons: Buttons = ()
    # The order's own message ("reserving...") becomes this one, where it can.
    edit: bool = False

    @property
    def text_key(self) -> str:
        """The key of its first text (what the message is, for a reader or a test)."""
        first: Text | Joined | str = self.text
        while isinstance(first, Joined):
            first = first.parts[0] if first.parts else ""
        return first.key if isinstance(first, Text) else ""


def render(t: Texts, text: Text | Joined | str | int) -> str:
    """The text in `t`'s language (HTML for a message, plain for a button)."""
    match text:
        case Text(key=key, params=params, fallback=fallback):
            chosen = key if t.has(key) or not fallback else fallback
            return t.t(chosen, **{name: _value(t, value) for name, value in params.items()})
        case Joined(parts=parts, separator=separator):
            return t.lines((render(t, part) for part in parts), separator)
        case _:
            return str(text)


def _value(t: Texts, value: Param) -> object:
    if isinstance(value, Text | Joined):
        return Html(render(t, value))  # worded already: not escaped again
    return value


# Buttons ------------------------------------------------------------------------------------------
def pay_button(url: str, amount: int) -> Button:
    return Button(Text("order.button.pay", {"amount": format_rub(amount)}), url=url)


CART_BUTTON = Button(Text("menu.button.cart"), data=cb.Menu(to="cart").pack())


# The customer and the admin chat about an order ---------------------------------------------------
# The notices that name the order's products: the Notifier looks their titles up for these only.
NAMING = frozenset({Kind.PAID, Kind.REJECTED, Kind.ON_RECEIPT})
_STEP_TEXTS = {Kind.READY_FOR_PICKUP, Kind.DELIVERED}


def for_notice(
    notice: Notice,
    order: Order,
    titles: Mapping[str, str],
    now: datetime,
    rejected: Rejected | None = None,
) -> Message | None:
    """What `notice` says about `order`; `titles` names its products (sku -> title, for the
    kinds in NAMING), `rejected` is the inventory's answer when that was the fact."""
    if notice.to == "admin":
        return _for_admin(notice, order, titles)
    return _for_customer(notice, order, titles, now, rejected)


def _for_customer(
    notice: Notice,
    order: Order,
    titles: Mapping[str, str],
    now: datetime,
    rejected: Rejected | None,
) -> Message | None:
    number = order.order_id
    match notice.kind:
        case Kind.PAY:
            left = (order.expires_at or now) - now
            text = Text(
                "order.awaiting_payment_minutes",
                {
                    "number": number,
                    "total": format_rub(order.charge),
                    "minutes": max(1, int(left.total_seconds() // 60)),
                },
            )
            return Message(text, ((pay_button(order.pay_url, order.charge),),), edit=True)
        case Kind.REJECTED:
            return _rejected(rejected, titles)
        case Kind.ON_RECEIPT:
            until = (order.expires_at or now).strftime("%d.%m")
            held = {"number": number, "total": format_rub(order.charge), "until": until}
            return Message(Text("order.on_receipt", held), edit=True)
        case Kind.PAYMENT_CANCELED:
            reason = cancel_reason(order.payment_canceled)
            return Message(Text("order.payment_canceled", {"number": number, "reason": reason}))
        case Kind.PAID:
            paid = Text(
                "order.paid",
                {
                    "number": number,
                    "lines": lines(order.lines, titles),
                    "total": format_rub(order.charge),
                },
            )
            late = (Text("order.paid_late"),) if notice.late else ()
            return Message(Joined((paid, *late), "\n\n"))
        case Kind.REFUNDED:
            amount = format_rub(notice.refund.amount if notice.refund else 0)
            return Message(Text("order.refunded", {"number": number, "amount": amount}))
        case (
            Kind.EXPIRED | Kind.PAYMENT_FAILED | Kind.CANCELLED | Kind.STOCK_GONE | Kind.MONEY_BACK
        ):
            return Message(Text(f"order.{notice.kind.value}", {"number": number}))
        case Kind.SHIPPED if order.fulfilment:
            return shipped(order)
        case kind if kind in _STEP_TEXTS:
            return Message(Text(f"order.{kind.value}", {"number": number}))
        case Kind.ORDER_CANCELLED:
            by = "customer" if order.last_step and order.last_step.by_customer else "shop"
            when = "captured" if order.paid_at is not None else "held"
            params: dict[str, Param] = {
                "number": number,
                "amount": format_rub(cancel_amount(order)),
                "when": Text(f"order.money_when.{when}"),
            }
            return Message(Text(f"order.cancelled_by_{by}", params))
        case Kind.CANCEL_MONEY_BACK:
            amount = format_rub(cancel_amount(order))
            return Message(Text("order.cancel_money_back", {"number": number, "amount": amount}))
    return None  # nothing else is the customer's news


def shipped(order: Order) -> Message:
    """Handed to a carrier: which one and the number, with a link to its tracking page."""
    entry = order.fulfilment[-1]
    url = tracking_url(entry.carrier, entry.tracking)
    params: dict[str, Param] = {"number": order.order_id, "shipment": shipment(entry)}
    buttons = ((Button(Text("order.button.track"), url=url),),) if url else ()
    return Message(Text("order.shipped", params), buttons)


def cancel_amount(order: Order) -> int:
    """What a paid order's cancellation gives back: all it cost but what was refunded before
    it (an order not cancelled yet: what is left of its payment)."""
    last = order.last_step
    if last is None or last.step != "cancelled":
        return max(0, order.charge - order.refunded)
    earlier = sum(r.amount for r in order.refunds if r.at < last.at)
    return max(0, order.charge - earlier)


def shipment(entry: FulfilmentEntry) -> Text | Joined:
    """ "Почта России, RA123456789RU", or what of it there is ("без трека")."""
    parts: tuple[Text | str, ...] = ()
    if entry.carrier:
        parts += (carrier_name(entry.carrier),)
    if entry.tracking:
        parts += (entry.tracking,)
    return Joined(parts, ", ") if parts else Text("order.no_tracking")


def carrier_name(carrier: str) -> Text:
    """A carrier in the reader's language (one the desk does not know: as it was written)."""
    known = carrier in {c.value for c in Carrier}
    return Text(f"carrier.{carrier}") if known else Text("carrier.named", {"name": carrier})


def _for_admin(notice: Notice, order: Order, titles: Mapping[str, str]) -> Message | None:
    # The desk builds its cards from this module's pieces: imported here, not at the top.
    from services.bot import desk

    number = order.order_id
    match notice.kind:
        case Kind.PAID | Kind.ON_RECEIPT:
            # The order's card, with the buttons for its next steps; edited in place later.
            return desk.card(order, titles, {}, late=notice.late)
        case Kind.CUSTOMER_CANCELLED:
            params = {
                "number": number,
                "customer": order.contact.name,
                "amount": format_rub(cancel_amount(order)),
            }
            return Message(Text("admin.customer_cancelled", params))
        case Kind.PAYMENT_FAILED:
            reason = order.payment_failed or order.released
            return Message(Text("admin.payment_failed", {"number": number, "reason": reason}))
        case Kind.STOCK_GONE:
            params = {"number": number, "payment_id": order.payment_id}
            return Message(Text("admin.stock_gone", params))
        case Kind.PAID_CANCELLED:
            why = cancel_reason(order.payment_canceled)
            return Message(Text("admin.paid_cancelled", {"number": number, "reason": why}))
        case Kind.REFUNDED:
            params = {
                "number": number,
                "amount": format_rub(notice.refund.amount if notice.refund else 0),
                "payment_id": order.payment_id,
            }
            return Message(Text("admin.refund", params))
    return None  # nothing else is the admin chat's news


def _rejected(fact: Rejected | None, titles: Mapping[str, str]) -> Message:
    """What stopped the order, line by line, with a one-tap fix for each."""
    fixes: list[Button] = []
    problems: list[Text] = []
    reason = fact.reason if fact is not None else ""
    for problem in fact.problems if fact is not None else ():
        title = titles.get(problem.sku, problem.sku)
        if reason == "out_of_stock" and problem.available > 0:
            problems.append(
                Text(
                    "order.out_of_stock_line",
                    {
                        "title": title,
                        "available": problem.available,
                        "requested": problem.requested,
                    },
                )
            )
            reduce = Text("order.button.reduce", {"title": title, "left": problem.available})
            fixes.append(
                Button(reduce, data=cb.FixOrder(sku=problem.sku, qty=problem.available).pack())
            )
        elif reason == "out_of_stock":
            problems.append(Text("order.sold_out_line", {"title": title}))
        elif reason == "price_mismatch":
            problems.append(
                Text(
                    "order.price_changed_line",
                    {
                        "title": title,
                        "was": format_rub(problem.unit_price or 0),
                        "now": format_rub(problem.catalog_price or 0),
                    },
                )
            )
        else:
            problems.append(Text("order.product_gone_line", {"title": title}))
        remove = Text("order.button.remove", {"title": title})
        fixes.append(Button(remove, data=cb.FixOrder(sku=problem.sku, qty=0).pack()))
    buttons = (*((fix,) for fix in fixes), (CART_BUTTON,))
    if not problems:  # the order as a whole: its minimum, its delivery
        said = (
            Text(f"order.rejected_reason.{reason}", fallback="order.failed")
            if reason
            else Text("order.failed")
        )
        return Message(said, buttons, edit=True)
    hint = "order.price_changed_hint" if reason == "price_mismatch" else "order.fix_hint"
    return Message(Joined((Text("order.rejected"), *problems, "", Text(hint))), buttons, edit=True)


def delivery_price(kopecks: int) -> Param:
    """A delivery's price as the customer reads it: the amount, or "free"."""
    return format_rub(kopecks) if kopecks else Text("checkout.delivery_free")


def delivered(order: Order, titles: Mapping[str, str]) -> tuple[Text, ...]:
    """The order's delivery and its price, and how it is paid, under its lines (nothing for an
    order without a delivery paid by card, as before the shop had either). `titles` has the
    methods' titles under `libs.delivery.as_sku`."""
    said: tuple[Text, ...] = ()
    if order.delivery is not None:
        chosen = order.delivery
        title = titles.get(delivery.as_sku(chosen.method_id), chosen.method_id)
        price = delivery_price(chosen.price)
        said += (Text("order.delivery_line", {"title": title, "price": price}),)
    if order.payment is not None and (order.delivery is not None or order.payment != "card"):
        said += (
            Text("order.payment_line", {"payment": Text(f"checkout.paying_by.{order.payment}")}),
        )
    return said


def lines(order_lines: tuple[OrderLine, ...], titles: Mapping[str, str]) -> Joined:
    """An order's lines, one per row: title × qty = amount (a product gone: its sku)."""
    return Joined(
        tuple(
            Text(
                "cart.line",
                {
                    "title": titles.get(line.sku, line.sku),
                    "qty": line.qty,
                    "amount": format_rub(line.qty * line.unit_price),
                },
            )
            for line in order_lines
        )
    )


def cancel_reason(reason: str) -> Text:
    """YooKassa's `cancellation_details.reason`, in words; unknown ones get a general one."""
    return Text(f"payment.cancel_reason.{reason}", fallback="payment.cancel_reason.default")


def reminder(order: Order, expires_at: datetime, now: datetime) -> Message:
    """Shortly before the hold ends: how long is left, and the Pay button again."""
    minutes = max(1, int((expires_at - now).total_seconds() // 60))
    text = Text("order.reminder", {"number": order.order_id, "minutes": minutes})
    return Message(text, ((pay_button(order.pay_url, order.charge),),))


# The admin chat about the shop --------------------------------------------------------------------
def low_stock(title: str, available: int, threshold: int) -> Message | None:
    """A product sold down to the threshold or below (None: enough left)."""
    if available > threshold:
        return None
    return Message(Text("admin.low_stock", {"title": title, "available": available}))


def alert(alert: AlertEvent) -> Message:
    """The shop's own alerts: the sheet behind or caught up, a message set aside."""
    match alert:
        case CrmBehind():
            minutes = max(1, int((alert.at - alert.oldest_at).total_seconds() // 60))
            params: dict[str, Param] = {
                "backlog": alert.backlog,
                "minutes": minutes,
                "error": alert.error,
            }
            return Message(Text("admin.crm_behind", params))
        case CrmCaughtUp():
            since = alert.behind_since.strftime("%H:%M")
            return Message(Text("admin.crm_caught_up", {"since": since}))
        case DeadLettered():
            params = {
                "service": alert.service,
                "subject": alert.subject,
                "stream": alert.stream,
                "sequence": alert.sequence,
                "reason": alert.reason,
            }
            return Message(Text("admin.dead_lettered", params))


# My orders ----------------------------------------------------------------------------------------
# Where the customer can no longer cancel here, and is told whom to write to instead.
_PAST_CANCELLING = frozenset({Status.PACKED, Status.SHIPPED, Status.READY_FOR_PICKUP})


def order_card(
    order: Order,
    status: Status,
    placed: datetime,
    total: int,
    titles: Mapping[str, str],
    *,
    may_cancel: bool,
    contact: str = "",
) -> Message:
    """An order in My orders: what was bought, where it is and how it got there; the Pay button
    while it waits for payment, Cancel while the customer may still cancel it."""
    head = Text(
        "orders.card",
        {
            "number": order.order_id,
            "date": placed.strftime("%d.%m.%Y"),
            "status": Text(f"status.{status.value}"),
            "lines": Joined((lines(order.lines, titles), *delivered(order, titles))),
            "total": format_rub(total),
        },
    )
    story: tuple[Text, ...] = tuple(
        Text(
            f"orders.history.{entry.step}",
            {"at": entry.at.strftime("%d.%m %H:%M"), "shipment": shipment(entry)},
        )
        for entry in order.fulfilment
    )
    story += tuple(
        Text(
            "orders.history.refund",
            {"at": r.at.strftime("%d.%m %H:%M"), "amount": format_rub(r.amount)},
        )
        for r in order.refunds
    )
    parts: tuple[Text | Joined | str, ...] = (head,)
    if story:
        parts += ("", Text("orders.history.title"), *story)
    rows: list[tuple[Button, ...]] = []
    if status == Status.AWAITING_PAYMENT and order.pay_url:
        rows.append((pay_button(order.pay_url, order.charge),))
    if may_cancel:
        data = cb.CustomerCancel(order_id=order.order_id).pack()
        rows.append((Button(Text("orders.cancel.button.cancel"), data=data),))
    elif status in _PAST_CANCELLING:
        if contact:
            parts += ("", Text("orders.cancel.too_late", {"contact": contact}))
        else:
            parts += ("", Text("orders.cancel.too_late_ask_shop"))
    rows.append((Button(Text("common.button.back"), data=cb.Menu(to="orders").pack()),))
    return Message(Joined(parts), tuple(rows))


def cancel_question(order: Order) -> Message:
    """The customer's cancellation, asked once more (with what comes back)."""
    oid = order.order_id
    text = Text(
        "orders.cancel.confirm", {"number": oid, "amount": format_rub(cancel_amount(order))}
    )
    yes = Button(
        Text("orders.cancel.button.yes"), data=cb.CustomerCancel(order_id=oid, sure=True).pack()
    )
    no = Button(Text("orders.cancel.button.no"), data=cb.OrderCard(order_id=oid).pack())
    return Message(text, ((yes,), (no,)))
