"""The admin chat as an order desk: the cards' buttons (the steps, cancel with refund, return
some lines), the tracking number's dialog, /orders and /order N. Only ADMIN_USER_IDS may press a
desk's button; anyone else gets a toast and nothing changes. What may be done is decided by
libs.fulfilment, what is shown by services.bot.desk; this is the shell."""

from __future__ import annotations

import contextlib
import uuid
from datetime import UTC, datetime
from typing import Any

from aiogram import F, Router
from aiogram.exceptions import TelegramBadRequest
from aiogram.filters import Command, CommandObject, or_f
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import CallbackQuery, Message, User
from nats.aio.client import Client
from nats.js import JetStreamContext

from libs import bus, fulfilment, lifecycle, log, subjects
from libs.contracts import AdminRequest, CashReceived, RefundRequested, ReleaseOrder
from libs.fulfilment import BadTracking, Refused
from services.bot import callbacks as cb
from services.bot import desk, messages
from services.bot import keyboards as kb
from services.bot.handlers import replies
from services.bot.model import OrderView, Person, Store
from services.bot.texts import Texts

_log = log.get(__name__)
STEPS = frozenset({fulfilment.PACKED, fulfilment.READY_FOR_PICKUP, fulfilment.DELIVERED})
DESK_BUTTONS = or_f(
    cb.Desk.filter(), cb.DeskCarrier.filter(), cb.DeskReturn.filter(), cb.DeskList.filter()
)


class Shipping(StatesGroup):
    """ "Отправлен": the tracking number (or none), then the carrier if its format named none.
    In the admin's FSM (NATS KV): a bot restart mid-dialog loses nothing."""

    tracking = State()
    carrier = State()


def router_for(admins: frozenset[int]) -> Router:
    router, desk_router = replies.desk_routers(__name__, admins, DESK_BUTTONS)
    desk_router.message.register(open_orders, Command("orders"))
    desk_router.message.register(one_order, Command("order"))
    desk_router.message.register(tracking_typed, Shipping.tracking, F.text, ~F.text.startswith("/"))
    desk_router.callback_query.register(page, cb.DeskList.filter())
    desk_router.callback_query.register(carrier_chosen, cb.DeskCarrier.filter())
    desk_router.callback_query.register(returning, cb.DeskReturn.filter())
    desk_router.callback_query.register(pressed, cb.Desk.filter())
    return router


# /orders and /order N ----------------------------------------------------------------------------
async def open_orders(message: Message, t: Texts, store: Store) -> None:
    await replies.send(message, t, desk.listing(await store.open_orders.values(), 0))


async def page(query: CallbackQuery, callback_data: cb.DeskList, t: Texts, store: Store) -> None:
    shown = desk.listing(await store.open_orders.values(), callback_data.page)
    await replies.edit(query, t, shown)
    await query.answer()


async def one_order(message: Message, command: CommandObject, t: Texts, store: Store) -> None:
    number = (command.args or "").strip().lstrip("№")
    if not number:
        await message.answer(t.t("desk.order_usage"))
        return
    view = await store.orders.get(number) or await store.orders.get(number.upper())
    if view is None:
        await message.answer(t.t("desk.order_not_found", number=number))
        return
    await replies.send(message, t, await _card(store, view.state))


# The card's buttons ------------------------------------------------------------------------------
async def pressed(
    query: CallbackQuery,
    callback_data: cb.Desk,
    t: Texts,
    store: Store,
    js: JetStreamContext,
    nc: Client,
    state: FSMContext,
) -> None:
    view = await store.orders.get(callback_data.order_id)
    if view is None:
        await query.answer(t.t("desk.toast.gone"))
        return
    order, action = view.state, callback_data.action
    match action:
        case "open":
            await query.answer()
            if isinstance(query.message, Message):
                await replies.send(query.message, t, await _card(store, order))
        case "card":
            await state.set_state(None)
            await replies.edit(query, t, await _card(store, order))
            await query.answer()
        case "drop":
            await state.set_state(None)
            await replies.edit(query, t, messages.Message(messages.Text("desk.dropped")))
            await query.answer()
        case "cancel":
            await replies.edit(query, t, desk.cancel_confirm(order))
            await query.answer()
        case "shipped":
            await _ask_shipment(query, t, store, state, order)
        case "no_tracking":
            data = await state.get_data()
            if data.get("ship") != order.order_id:
                await query.answer(t.t("input.toast.stale_button"))
                return
            await state.set_state(Shipping.carrier)
            await state.update_data(tracking="")
            await replies.edit(query, t, desk.ask_carrier(order.order_id, ""))
            await query.answer()
        case "return":
            request = f"ret-{uuid.uuid4().hex[:16]}"
            await state.update_data(returning=order.order_id, picks={}, request=request)
            await replies.edit(query, t, desk.picker(order, {}, await _titles(store, order)))
            await query.answer()
        case "cancel_yes":
            await _step(query, t, store, js, view, fulfilment.CANCELLED)
        case "cash_paid" | "release":
            await _on_receipt(query, t, store, js, nc, order, action)
        case step if step in STEPS:
            await _step(query, t, store, js, view, step)
        case _:
            await query.answer(t.t("input.toast.stale_button"))


async def _ask_shipment(
    query: CallbackQuery, t: Texts, store: Store, state: FSMContext, order: lifecycle.Order
) -> None:
    """ "Отправлен": the tracking dialog starts (the step is taken once it is answered)."""
    early = fulfilment.decide(order, fulfilment.SHIPPED, 0, datetime.now(UTC))
    if isinstance(early, Refused):  # asked again when taken: the view may be behind
        await query.answer(messages.render(t, desk.refused(early.reason)), show_alert=True)
        return
    await _remember(store, query.from_user)
    card = query.message.message_id if query.message else 0
    await state.set_state(Shipping.tracking)
    await state.update_data(ship=order.order_id, card=card, tracking="")
    await query.answer()
    if isinstance(query.message, Message):
        await replies.send(query.message, t, desk.ask_tracking(order))


async def _on_receipt(
    query: CallbackQuery,
    t: Texts,
    store: Store,
    js: JetStreamContext,
    nc: Client,
    order: lifecycle.Order,
    action: str,
) -> None:
    """An order paid on receipt: the money is in the till (payments tells it once, a double tap
    being one message on the stream, and the inventory commits the stock on that), or the
    customer did not come and the goods go back on sale (the inventory's release)."""
    if order.status is not lifecycle.Status.PAY_ON_RECEIPT:
        await query.answer(t.t("desk.toast.not_on_receipt"), show_alert=True)
        return
    await _remember(store, query.from_user)
    if action == "cash_paid":
        received = CashReceived(order.order_id, query.from_user.id, datetime.now(UTC))
        subject = subjects.payment_fact(subjects.PaymentKind.CASH_RECEIVED, order.order_id)
        await bus.publish(js, subject, received, msg_id=f"cash:{order.order_id}")
        _log.info("desk.cash_paid", order_id=order.order_id, by=query.from_user.id)
        await query.answer(t.t("desk.toast.cash_paid"))
    else:
        release = AdminRequest((ReleaseOrder(order.order_id),))
        await nc.request(subjects.INVENTORY_ADMIN, bus.encode(release), timeout=10)
        _log.info("desk.released", order_id=order.order_id, by=query.from_user.id)
        await query.answer(t.t("desk.toast.released"))


async def _step(
    query: CallbackQuery,
    t: Texts,
    store: Store,
    js: JetStreamContext,
    view: OrderView,
    step: Any,
    carrier: str = "",
    tracking: str = "",
) -> lifecycle.Order | None:
    """Take the step on the bus; a toast says what happened, the card shows it."""
    await _remember(store, query.from_user)
    answer = await fulfilment.take(
        js,
        view.state,
        step,
        query.from_user.id,
        datetime.now(UTC),
        carrier=carrier,
        tracking=tracking,
    )
    if isinstance(answer, Refused):
        _log.info("desk.refused", order_id=view.order_id, step=step, reason=answer.reason)
        await query.answer(messages.render(t, desk.refused(answer.reason)), show_alert=True)
        await replies.edit(query, t, await _card(store, view.state))
        return None
    _log.info("desk.step", order_id=view.order_id, step=step, by=query.from_user.id)
    await query.answer(messages.render(t, desk.done(step)))
    order = lifecycle.evolve(view.state, answer)
    message_id = query.message.message_id if query.message else 0
    if message_id != view.admin_message_id:  # the admin card itself is the Notifier's to edit
        await replies.edit(query, t, await _card(store, order))
    return order


# "Отправлен": the tracking number ----------------------------------------------------------------
async def tracking_typed(
    message: Message, t: Texts, store: Store, js: JetStreamContext, state: FSMContext
) -> None:
    data = await state.get_data()
    view = await store.orders.get(str(data.get("ship", "")))
    if view is None:
        await state.set_state(None)
        return
    try:
        number = fulfilment.tracking_number(message.text or "")
    except BadTracking:
        await replies.send(message, t, desk.tracking_hint())  # nothing saved: the same question
        return
    carrier = fulfilment.carrier_of(number)
    if carrier is None:
        await state.set_state(Shipping.carrier)
        await state.update_data(tracking=number)
        await replies.send(message, t, desk.ask_carrier(view.order_id, number))
        return
    if message.from_user is not None:
        await _remember(store, message.from_user)
    by = message.from_user.id if message.from_user else 0
    await _ship(message, by, t, store, js, state, view, carrier.value, number)


async def carrier_chosen(
    query: CallbackQuery,
    callback_data: cb.DeskCarrier,
    t: Texts,
    store: Store,
    js: JetStreamContext,
    state: FSMContext,
) -> None:
    found = await _dialog(query, t, store, state, "ship", callback_data.order_id)
    if found is None:
        return
    view, data = found
    await query.answer()
    if isinstance(query.message, Message):
        with contextlib.suppress(TelegramBadRequest):
            await query.message.edit_reply_markup(reply_markup=None)
        tracking = str(data.get("tracking", ""))
        carrier, by = callback_data.carrier, query.from_user.id
        await _ship(query.message, by, t, store, js, state, view, carrier, tracking)


async def _dialog(
    query: CallbackQuery, t: Texts, store: Store, state: FSMContext, key: str, order_id: str
) -> tuple[OrderView, dict[str, Any]] | None:
    """The order and the dialog's data, when the button is of the dialog open for that order
    (the tracking's "ship", the return's "returning"); else a stale button, said so."""
    data = await state.get_data()
    view = await store.orders.get(order_id)
    if view is None or data.get(key) != order_id:
        await query.answer(t.t("input.toast.stale_button"))
        return None
    return view, data


async def _ship(
    where: Message,
    by: int,
    t: Texts,
    store: Store,
    js: JetStreamContext,
    state: FSMContext,
    view: OrderView,
    carrier: str,
    tracking: str,
) -> None:
    data = await state.get_data()
    await state.set_state(None)
    answer = await fulfilment.take(
        js,
        view.state,
        fulfilment.SHIPPED,
        by,
        datetime.now(UTC),
        carrier=carrier,
        tracking=tracking,
    )
    if isinstance(answer, Refused):
        await where.answer(messages.render(t, desk.refused(answer.reason)))
        return
    _log.info("desk.step", order_id=view.order_id, step="shipped", carrier=carrier)
    await replies.send(where, t, desk.shipped(view.order_id, answer.history[-1]))
    card = int(data.get("card", 0))
    if card and card != view.admin_message_id and where.bot is not None:
        shown = await _card(store, lifecycle.evolve(view.state, answer))
        with contextlib.suppress(TelegramBadRequest):
            await where.bot.edit_message_text(
                text=messages.render(t, shown.text),
                chat_id=where.chat.id,
                message_id=card,
                reply_markup=kb.inline(t, shown.buttons),
            )


# A partial return ---------------------------------------------------------------------------------
async def returning(
    query: CallbackQuery,
    callback_data: cb.DeskReturn,
    t: Texts,
    store: Store,
    js: JetStreamContext,
    state: FSMContext,
) -> None:
    found = await _dialog(query, t, store, state, "returning", callback_data.order_id)
    if found is None:
        return
    view, data = found
    order = view.state
    picks = {int(line): int(qty) for line, qty in dict(data.get("picks", {})).items()}
    titles = await _titles(store, order)
    match callback_data.action:
        case "more" | "less":
            delta = 1 if callback_data.action == "more" else -1
            picks = desk.pick(order, picks, callback_data.line, delta)
            await state.update_data(picks={str(k): v for k, v in picks.items()})
            await replies.edit(query, t, desk.picker(order, picks, titles))
            await query.answer()
        case "next":
            await replies.edit(query, t, desk.return_confirm(order, picks, titles))
            await query.answer()
        case "stock" | "write_off":
            restock = callback_data.action == "stock"
            lines, amount = desk.return_lines(order, picks), desk.return_amount(order, picks)
            if not lines or not amount:
                await query.answer(t.t("input.toast.stale_button"))
                return
            request = str(data.get("request"))
            reason = "returned" if restock else "written_off"
            refund = RefundRequested(request, order.order_id, reason, lines, restock)
            subject = subjects.payment_fact(subjects.PaymentKind.REFUND_REQUESTED, order.order_id)
            await bus.publish(js, subject, refund, msg_id=request)  # a double press: one refund
            _log.info("desk.return", order_id=order.order_id, amount=amount, restock=restock)
            await state.update_data(returning="", picks={}, request="")
            await query.answer()
            await replies.edit(query, t, desk.return_requested(order, amount, restock))


# Helpers -----------------------------------------------------------------------------------------
async def _titles(store: Store, order: lifecycle.Order) -> dict[str, str]:
    return await store.titles(line.sku for line in order.lines)


async def _card(store: Store, order: lifecycle.Order) -> messages.Message:
    names = await store.names(entry.by for entry in order.fulfilment)
    return desk.card(order, await _titles(store, order), names)


async def _remember(store: Store, user: User) -> None:
    """The admin's name, for the cards' history (a step's fact keeps only the id)."""
    person = Person(user.full_name)
    if await store.people.get(str(user.id)) != person:
        await store.people.put(str(user.id), person)


__all__ = ["Shipping", "router_for"]
