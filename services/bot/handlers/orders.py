"""My orders: the recent ones with their status, each openable with its history; a paid order
the customer may still cancel (until it is packed) has a Cancel button, asked once more."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime

import msgspec
from aiogram import F, Router
from aiogram.exceptions import TelegramBadRequest
from aiogram.filters import Command
from aiogram.types import CallbackQuery, InlineKeyboardMarkup, Message
from nats.js import JetStreamContext

from libs import fulfilment, lifecycle
from libs.money import format_rub
from libs.settings import Settings
from services.bot import callbacks as cb
from services.bot import desk, messages
from services.bot import keyboards as kb
from services.bot.handlers.shop import show
from services.bot.model import OrderView, Store
from services.bot.texts import Texts

router = Router(name=__name__)


@router.message(Command("orders"))
@router.callback_query(cb.Menu.filter(F.to == "orders"))
async def my_orders(event: Message | CallbackQuery, t: Texts, store: Store) -> None:
    if event.from_user is None:
        return
    views = await store.recent_orders(event.from_user.id)
    if not views:
        await show(
            event, t.t("orders.empty"), InlineKeyboardMarkup(inline_keyboard=[kb.back_home(t)])
        )
        return
    found = [
        (
            v.order_id,
            t.t(
                "orders.button.order",
                number=v.order_id,
                total=format_rub(v.total),
                status=t.status(v.status),
            ),
        )
        for v in views
    ]
    await show(event, t.t("orders.title"), kb.orders(t, found))


async def _card(
    query: CallbackQuery,
    t: Texts,
    store: Store,
    settings: Settings,
    view: OrderView,
    answered: bool = False,
) -> None:
    """Show the order's card on the message the button was on (`answered`: the press was
    answered already, with a toast)."""
    order = view.state
    titles = await store.titles(line.sku for line in view.lines)
    card = messages.order_card(
        order,
        view.status,
        view.placed_at,
        view.total,
        titles,
        may_cancel=fulfilment.customer_may_cancel(order),
        contact=settings.shop_contact,
    )
    markup = kb.inline(t, card.buttons) or InlineKeyboardMarkup(inline_keyboard=[])
    if not answered:
        await show(query, messages.render(t, card.text), markup)
    elif isinstance(query.message, Message):
        with contextlib.suppress(TelegramBadRequest):  # "not modified": shown already
            await query.message.edit_text(messages.render(t, card.text), reply_markup=markup)


async def _own(query: CallbackQuery, store: Store, order_id: str, t: Texts) -> OrderView | None:
    view = await store.orders.get(order_id)
    if view is None or view.user_id != query.from_user.id:
        await query.answer(t.t("input.toast.stale_button"))
        return None
    return view


@router.callback_query(cb.OrderCard.filter())
async def open_order(
    query: CallbackQuery, callback_data: cb.OrderCard, t: Texts, store: Store, settings: Settings
) -> None:
    view = await _own(query, store, callback_data.order_id, t)
    if view is not None:
        await _card(query, t, store, settings, view)


@router.callback_query(cb.CustomerCancel.filter())
async def cancel_my_order(
    query: CallbackQuery,
    callback_data: cb.CustomerCancel,
    t: Texts,
    store: Store,
    settings: Settings,
    js: JetStreamContext,
) -> None:
    """Asked first; then taken as the customer's step (refused once the order is packed)."""
    view = await _own(query, store, callback_data.order_id, t)
    if view is None:
        return
    order = view.state
    if not callback_data.sure:
        if not fulfilment.customer_may_cancel(order):
            await query.answer(messages.render(t, desk.refused("packed")))
            await _card(query, t, store, settings, view, answered=True)
            return
        question = messages.cancel_question(order)
        markup = kb.inline(t, question.buttons) or InlineKeyboardMarkup(inline_keyboard=[])
        await show(query, messages.render(t, question.text), markup)
        return
    answer = await fulfilment.take(
        js,
        order,
        fulfilment.CANCELLED,
        query.from_user.id,
        datetime.now(UTC),
        by_customer=True,
    )
    if isinstance(answer, fulfilment.Refused):
        await query.answer(messages.render(t, desk.refused(answer.reason)))
        return
    await query.answer(t.t("orders.cancel.toast.done"))
    shown = msgspec.structs.replace(view, order=lifecycle.evolve(order, answer))
    await _card(query, t, store, settings, shown, answered=True)
