"""The admin chat as an order desk, pure: an order's card (what was bought, where the order is,
who did what and when, buttons for the next steps), the confirmations, the partial return's
picker and its amount, the tracking dialog's questions, and the open orders by status. Amounts
in kopecks. No I/O: the desk's handlers and the Notifier send what these return."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from libs import fulfilment, lifecycle
from libs.contracts import FulfilmentEntry, OrderLine
from libs.fulfilment import Carrier
from libs.lifecycle import Order, Status
from libs.money import format_rub
from services.bot import callbacks as cb
from services.bot.messages import (
    Button,
    Joined,
    Message,
    Param,
    Text,
    carrier_name,
    delivered,
    lines,
    shipment,
)
from services.bot.model import OpenOrder

# The statuses /orders lists, in the order a day's work goes through them.
OPEN: tuple[Status, ...] = (
    Status.PAY_ON_RECEIPT,
    Status.PAID,
    Status.PARTLY_REFUNDED,
    Status.PACKED,
    Status.READY_FOR_PICKUP,
    Status.SHIPPED,
    Status.RETURNING_MONEY,
)
PAGE = 8  # orders per page of /orders


def is_open(order: Order) -> bool:
    """Sold and not yet done with: the desk still has a step to take (or money to see back)."""
    return order.status in OPEN


# The card -----------------------------------------------------------------------------------------
def card(
    order: Order, titles: Mapping[str, str], names: Mapping[int, str], late: bool = False
) -> Message:
    """The order's card in the admin chat: the paid order's notice, its status and history, and
    a button for each step the shop may take now."""
    c = order.contact
    comment = (Text("admin.order_comment", {"comment": c.comment}),) if c.comment else ()
    paid_late = (Text("admin.paid_late"),) if late or order.late else ()
    on_receipt = order.payment == "cash" and order.paid_at is None
    head = Text(
        "admin.new_order_on_receipt" if on_receipt else "admin.new_order",
        {
            "number": order.order_id,
            "customer": c.name,
            "phone": c.phone,
            "address": c.address or "—",
            "lines": Joined(
                (lines(order.lines, titles), *delivered(order, titles), *comment, *paid_late)
            ),
            "total": format_rub(order.charge),
            "payment_id": order.payment_id,
        },
    )
    status = Text("desk.status", {"status": Text(f"status.{order.status.value}")})
    story: tuple[Text, ...] = tuple(history_line(entry, names) for entry in order.fulfilment)
    story += tuple(
        Text("desk.history.refund", {"at": _at(r.at), "amount": format_rub(r.amount)})
        for r in order.refunds
    )
    parts: tuple[Text | Joined | str, ...] = (head, "", status)
    if story:
        parts += (Text("desk.history.title"), *story)
    return Message(Joined(parts), buttons(order))


def buttons(order: Order) -> tuple[tuple[Button, ...], ...]:
    if order.status is Status.PAY_ON_RECEIPT:
        # Paid when handed over: the desk says so (the inventory commits the stock then), or
        # lets the goods go back on sale.
        return ((_button(order, "cash_paid"),), (_button(order, "release"),))
    steps = [s for s in fulfilment.next_steps(order) if s != fulfilment.CANCELLED]
    forward = [_button(order, s) for s in steps]
    rows = [tuple(forward[i : i + 2]) for i in range(0, len(forward), 2)]
    if fulfilment.CANCELLED in fulfilment.next_steps(order):
        rows.append((_button(order, "cancel"),))
    cancelled = order.last_step is not None and order.last_step.step == fulfilment.CANCELLED
    if order.kept and not cancelled and any(qty for _, qty in returnable(order)):
        rows.append((_button(order, "return"),))
    return tuple(rows)


def _button(order: Order, action: str) -> Button:
    data = cb.Desk(order_id=order.order_id, action=action).pack()  # type: ignore[arg-type]
    return Button(Text(f"desk.button.{action}"), data=data)


def history_line(entry: FulfilmentEntry, names: Mapping[int, str]) -> Text:
    """One step: what, when (UTC), who."""
    who: Param = Text("desk.who.customer") if entry.by_customer else names.get(entry.by, "")
    if entry.by == fulfilment.BY_SHEET and not entry.by_customer:
        who = Text("desk.who.sheet")
    elif who == "":
        who = Text("desk.who.unknown", {"id": entry.by})
    params: dict[str, Param] = {"at": _at(entry.at), "who": who}
    if entry.step == fulfilment.SHIPPED:
        params["shipment"] = shipment(entry)
    return Text(f"desk.history.{entry.step}", params)


def _at(at: datetime) -> str:
    return at.strftime("%d.%m %H:%M")


def refused(reason: str) -> Text:
    """Why a step was not taken (libs.fulfilment.Refused), for a toast."""
    return Text(f"desk.toast.refused.{reason}", fallback="desk.toast.refused.busy")


def done(step: str) -> Text:
    """The toast after a step was taken."""
    return Text("desk.toast.done", {"status": Text(f"status.{step}")})


# Cancel with refund -------------------------------------------------------------------------------
def money_left(order: Order) -> int:
    """What the customer paid and has not been given back (kopecks)."""
    return max(0, order.charge - order.refunded)


def cancel_confirm(order: Order) -> Message:
    text = Text(
        "desk.cancel_confirm", {"number": order.order_id, "amount": format_rub(money_left(order))}
    )
    yes = Button(
        Text("desk.button.cancel_yes"),
        data=cb.Desk(order_id=order.order_id, action="cancel_yes").pack(),
    )
    no = Button(
        Text("desk.button.drop"), data=cb.Desk(order_id=order.order_id, action="card").pack()
    )
    return Message(text, ((yes,), (no,)))


# Shipping: the tracking number --------------------------------------------------------------------
def ask_tracking(order: Order) -> Message:
    no_tracking = Button(
        Text("desk.button.no_tracking"),
        data=cb.Desk(order_id=order.order_id, action="no_tracking").pack(),
    )
    drop = Button(
        Text("desk.button.drop"), data=cb.Desk(order_id=order.order_id, action="drop").pack()
    )
    return Message(Text("desk.ask_tracking", {"number": order.order_id}), ((no_tracking,), (drop,)))


def ask_carrier(order_id: str, tracking: str) -> Message:
    """The number's format named no carrier (or there is no number): which one?"""
    carriers = [
        Button(carrier_name(c), data=cb.DeskCarrier(order_id=order_id, carrier=c.value).pack())
        for c in Carrier
    ]
    rows = [tuple(carriers[i : i + 2]) for i in range(0, len(carriers), 2)]
    drop = Button(Text("desk.button.drop"), data=cb.Desk(order_id=order_id, action="drop").pack())
    key = "desk.ask_carrier" if tracking else "desk.ask_carrier_no_tracking"
    return Message(Text(key, {"number": order_id, "tracking": tracking}), (*rows, (drop,)))


def tracking_hint() -> Message:
    return Message(Text("desk.tracking_hint"))


def shipped(order_id: str, entry: FulfilmentEntry) -> Message:
    """The tracking dialog's end: what the customer was sent."""
    return Message(Text("desk.shipped", {"number": order_id, "shipment": shipment(entry)}))


# A partial return ---------------------------------------------------------------------------------
Picks = Mapping[int, int]  # the order's line (its place) -> how many of it come back


def returnable(order: Order) -> tuple[tuple[OrderLine, int], ...]:
    """Each line of the order with how many of it may still be returned (not refunded yet)."""
    refunded = (line for refund in order.refunds for line in refund.lines)
    return lifecycle.not_returned(order.lines, refunded)


def pick(order: Order, picks: Picks, line: int, delta: int) -> dict[int, int]:
    """The picks with one line's count moved by `delta`, kept within what may be returned."""
    left = returnable(order)
    chosen = {i: q for i, q in picks.items() if 0 <= i < len(left)}
    if 0 <= line < len(left):
        chosen[line] = min(max(chosen.get(line, 0) + delta, 0), left[line][1])
    return {i: q for i, q in chosen.items() if q > 0}


def return_lines(order: Order, picks: Picks) -> tuple[OrderLine, ...]:
    left = returnable(order)
    return tuple(
        OrderLine(left[i][0].sku, min(q, left[i][1]), left[i][0].unit_price)
        for i, q in sorted(picks.items())
        if 0 <= i < len(left) and min(q, left[i][1]) > 0
    )


def return_amount(order: Order, picks: Picks) -> int:
    """What the picked lines give back (kopecks), never more than is left of the payment."""
    total = sum(line.qty * line.unit_price for line in return_lines(order, picks))
    return min(total, money_left(order))


def picker(order: Order, picks: Picks, titles: Mapping[str, str]) -> Message:
    """Which lines come back, one button pair per line; the amount shown before going on."""
    rows: list[tuple[Button, ...]] = []
    for i, (line, left) in enumerate(returnable(order)):
        if not left:
            continue
        data = cb.DeskReturn(order_id=order.order_id, action="less", line=i).pack()
        more = cb.DeskReturn(order_id=order.order_id, action="more", line=i).pack()
        label = Text(
            "desk.button.return_line",
            {"title": titles.get(line.sku, line.sku), "qty": picks.get(i, 0), "left": left},
        )
        rows.append((Button(Text("desk.button.less"), data=data), Button(label, data=more)))
        rows[-1] += (Button(Text("desk.button.more"), data=more),)
    amount = return_amount(order, picks)
    if amount:
        data = cb.DeskReturn(order_id=order.order_id, action="next").pack()
        rows.append(
            (Button(Text("desk.button.return_next", {"amount": format_rub(amount)}), data=data),)
        )
    drop = cb.Desk(order_id=order.order_id, action="card").pack()
    rows.append((Button(Text("desk.button.drop"), data=drop),))
    text = Text("desk.return_pick", {"number": order.order_id, "amount": format_rub(amount)})
    return Message(text, tuple(rows))


def return_confirm(order: Order, picks: Picks, titles: Mapping[str, str]) -> Message:
    """The amount and the lines, then: back to stock, or written off."""
    picked = return_lines(order, picks)
    text = Text(
        "desk.return_confirm",
        {
            "number": order.order_id,
            "lines": lines(picked, titles),
            "amount": format_rub(return_amount(order, picks)),
        },
    )
    oid = order.order_id
    stock = cb.DeskReturn(order_id=oid, action="stock").pack()
    write_off = cb.DeskReturn(order_id=oid, action="write_off").pack()
    drop = cb.Desk(order_id=oid, action="card").pack()
    return Message(
        text,
        (
            (Button(Text("desk.button.return_stock"), data=stock),),
            (Button(Text("desk.button.return_write_off"), data=write_off),),
            (Button(Text("desk.button.drop"), data=drop),),
        ),
    )


def return_requested(order: Order, amount: int, restock: bool) -> Message:
    key = "desk.return_requested_stock" if restock else "desk.return_requested_write_off"
    return Message(Text(key, {"number": order.order_id, "amount": format_rub(amount)}))


# /orders and /order N -----------------------------------------------------------------------------
def listing(entries: list[OpenOrder], page: int) -> Message:
    """The open orders: how many in each status, then a page of them, each a button to its card."""
    ranked = sorted(
        (e for e in entries if e.status in {s.value for s in OPEN}),
        key=lambda e: (OPEN.index(Status(e.status)), e.placed_at, e.order_id),
    )
    if not ranked:
        return Message(Text("desk.orders_empty"))
    counts = tuple(
        Text("desk.orders_count", {"status": Text(f"status.{s.value}"), "count": n})
        for s in OPEN
        if (n := sum(e.status == s.value for e in ranked))
    )
    pages = -(-len(ranked) // PAGE)
    page = min(max(page, 0), pages - 1)
    rows: list[tuple[Button, ...]] = [
        (
            Button(
                Text(
                    "desk.button.order",
                    {
                        "number": e.order_id,
                        "status": Text(f"status.{e.status}"),
                        "total": format_rub(e.total),
                        "customer": e.customer,
                    },
                ),
                data=cb.Desk(order_id=e.order_id, action="open").pack(),
            ),
        )
        for e in ranked[page * PAGE : (page + 1) * PAGE]
    ]
    if pages > 1:
        nav: tuple[Button, ...] = ()
        if page > 0:
            nav += (Button(Text("catalog.button.prev"), data=cb.DeskList(page=page - 1).pack()),)
        label = Text("catalog.button.page", {"page": page + 1, "pages": pages})
        nav += (Button(label, data=cb.DeskList(page=page).pack()),)
        if page < pages - 1:
            nav += (Button(Text("catalog.button.next"), data=cb.DeskList(page=page + 1).pack()),)
        rows.append(nav)
    title = Text("desk.orders_title", {"count": len(ranked)})
    return Message(Joined((title, *counts)), tuple(rows))


def open_entry(order: Order) -> OpenOrder:
    return OpenOrder(
        order_id=order.order_id,
        status=order.status.value,
        total=order.charge,
        placed_at=order.placed_at or order.updated_at or datetime.min,
        customer=order.contact.name,
    )
