"""My orders: the recent ones with their status, each openable."""

from __future__ import annotations

from aiogram import F, Router
from aiogram.filters import Command
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message

from libs.lifecycle import Status
from libs.money import format_rub
from services.bot import callbacks as cb
from services.bot import keyboards as kb
from services.bot.handlers.shop import show
from services.bot.model import OrderView, Store
from services.bot.texts import Texts

router = Router(name=__name__)


def order_card(t: Texts, view: OrderView, titles: dict[str, str]) -> str:
    lines = t.lines(
        t.t(
            "cart.line",
            title=titles.get(line.sku, line.sku),
            qty=line.qty,
            amount=format_rub(line.qty * line.unit_price),
        )
        for line in view.lines
    )
    return t.t(
        "orders.card",
        number=view.order_id,
        date=view.placed_at.strftime("%d.%m.%Y"),
        status=t.status(view.status),
        lines=lines,
        total=format_rub(view.total),
    )


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


@router.callback_query(cb.OrderCard.filter())
async def open_order(
    query: CallbackQuery, callback_data: cb.OrderCard, t: Texts, store: Store
) -> None:
    view = await store.orders.get(callback_data.order_id)
    if view is None or view.user_id != query.from_user.id:
        await query.answer(t.t("input.toast.stale_button"))
        return
    titles = {}
    for line in view.lines:
        item = await store.product(line.sku)
        titles[line.sku] = item.title if item else line.sku
    rows = []
    order = view.state
    if view.status == Status.AWAITING_PAYMENT and order.pay_url:
        rows.append(kb.pay(t, order.pay_url, order.charge).inline_keyboard[0])
    rows.append(
        [
            InlineKeyboardButton(
                text=t.t("common.button.back"), callback_data=cb.Menu(to="orders").pack()
            )
        ]
    )
    await show(query, order_card(t, view, titles), InlineKeyboardMarkup(inline_keyboard=rows))
