"""Checkout, a guided form: name, phone, delivery, address (not for pickup), (email), comment,
then a summary of the goods, the delivery and the total to confirm.

The questions are one table (services.bot.form.FIELDS) and one handler takes an answer to any of
them: each is checked (services.bot.validation) and a wrong one gets a precise hint while the
customer stays on the same question. Contact details are remembered for the next order. The
order id is chosen when the form starts, so a double tap on Confirm places one order (the
bus drops the second publish by its Nats-Msg-Id).
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from aiogram import F, Router
from aiogram.filters import Command, StateFilter
from aiogram.fsm.context import FSMContext
from aiogram.types import (
    CallbackQuery,
    InlineKeyboardMarkup,
    Message,
    ReplyKeyboardMarkup,
    ReplyKeyboardRemove,
)
from nats.js import JetStreamContext

from libs import bus, lifecycle, metrics, subjects
from libs.contracts import Contact, OrderPlaced
from libs.settings import Settings
from services.bot import callbacks as cb
from services.bot import form
from services.bot import keyboards as kb
from services.bot import validation as v
from services.bot.cart import set_qty
from services.bot.form import CheckoutAnswers, Field
from services.bot.handlers.shop import cart_view, priced_cart, show
from services.bot.messages import render
from services.bot.model import Cart, OrderView, Store
from services.bot.texts import Texts

router = Router(name=__name__)
PLACED = metrics.Counter(
    "shop_orders_placed",
    "Orders placed by customers (stored on the bus)",
    registry=metrics.REGISTRY,
)


def new_order_id() -> str:
    """Short, unique and readable on the phone: 241124-K7Q3M."""
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    return datetime.now(UTC).strftime("%y%m%d-") + "".join(
        secrets.choice(alphabet) for _ in range(5)
    )


def _shop(settings: Settings, store: Store) -> form.Shop:
    """What the form depends on now: receipts, the shop's delivery methods (from memory), the
    ways to pay."""
    return form.Shop(settings.receipts, store.catalog.delivery(), settings.pay_by)


async def _ask(
    target: Message,
    state: FSMContext,
    field: Field,
    t: Texts,
    offered: tuple[form.Choice, ...] = (),
) -> None:
    await state.set_state(field.state)
    markup: ReplyKeyboardMarkup | InlineKeyboardMarkup | ReplyKeyboardRemove
    match field.keyboard:
        case "share_phone":
            markup = kb.share_phone(t)
        case "skip":
            markup = kb.skip(t)
        case "choices":
            markup = kb.choices(t, field.name, offered)
        case _:
            markup = ReplyKeyboardRemove()
    await target.answer(t.t(field.ask), reply_markup=markup)


async def _next(
    message: Message, state: FSMContext, t: Texts, store: Store, settings: Settings
) -> None:
    """After an answer: the first question not answered yet, or the summary. A courier that does
    not go to the address's city is said at once, and the delivery asked again; a question with
    one choice answers itself."""
    data = await state.get_data()
    shop = _shop(settings, store)
    items = await priced_cart(store, int(data["user_id"]))
    answers = CheckoutAnswers.of(data)
    chosen = form.choice(answers, items, shop)
    if isinstance(chosen, form.NotServed):
        await state.update_data(delivery="")
        await message.answer(render(t, chosen.say()))
        await _ask(
            message, state, form.DELIVERY, t, form.choices(form.DELIVERY, shop, items, answers)
        )
        return
    following = form.next_question(data, shop)
    if following is None:
        await _summary(message, state, t, store, settings)
        return
    offered = form.choices(following, shop, items, answers)
    if following.keyboard == "choices" and len(offered) == 1:
        await state.update_data({following.name: offered[0].value})  # nothing to choose
        await _next(message, state, t, store, settings)
    else:
        await _ask(message, state, following, t, offered)


async def _ask_again(
    message: Message,
    state: FSMContext,
    t: Texts,
    store: Store,
    settings: Settings,
    field: Field = form.DELIVERY,
) -> None:
    """The choice made (a delivery, a way to pay) is no longer offered: say so, and offer
    those there are now."""
    await state.update_data({field.name: ""})
    if field.keyboard == "choices":
        await message.answer(t.t(f"checkout.{field.name}_gone"))
    await _next(message, state, t, store, settings)


async def _summary(
    message: Message, state: FSMContext, t: Texts, store: Store, settings: Settings
) -> None:
    data = await state.get_data()
    items = await priced_cart(store, int(data["user_id"]))
    if not items.lines:
        await state.clear()
        await message.answer(t.t("cart.empty"), reply_markup=ReplyKeyboardRemove())
        return
    shop = _shop(settings, store)
    answers = CheckoutAnswers.of(data)
    missing = form.next_question(data, shop)
    if missing is not None:  # a choice the shop no longer offers
        await _ask_again(message, state, t, store, settings, missing)
        return
    chosen = form.choice(answers, items, shop)
    if isinstance(chosen, form.NotServed):
        await _next(message, state, t, store, settings)
        return
    text = render(t, form.summary(answers, items, shop, chosen))
    await state.set_state(form.CONFIRM)
    await state.update_data(shown_total=form.total(items, chosen))
    asked = form.questions(shop, answers.delivery)
    fields = [
        f.name
        for f in asked
        if f.keyboard != "choices" or len(form.choices(f, shop, items, answers)) > 1
    ]
    await message.answer(text, reply_markup=kb.summary(t, fields))


@router.callback_query(cb.CartAction.filter(F.action == "checkout"))
async def start_checkout(
    query: CallbackQuery, state: FSMContext, t: Texts, store: Store, settings: Settings
) -> None:
    current = await store.carts.get(str(query.from_user.id))
    if not current or not current.lines or not isinstance(query.message, Message):
        await query.answer(t.t("checkout.empty_cart"))
        return
    short = form.below_minimum(await priced_cart(store, query.from_user.id), _shop(settings, store))
    if short is not None:
        await query.answer()
        await query.message.answer(render(t, short))
        return
    await state.clear()
    await state.update_data(user_id=query.from_user.id, order_id=new_order_id())
    await query.answer()
    saved = await store.customers.get(str(query.from_user.id))
    if saved and saved.name and saved.phone:
        address = saved.address or "—"
        text = t.t("checkout.reuse", name=saved.name, phone=saved.phone, address=address)
        await query.message.answer(text, reply_markup=kb.reuse(t))
        return
    await _next(query.message, state, t, store, settings)


@router.callback_query(cb.Checkout.filter(F.action.in_({"reuse", "fresh"})))
async def reuse_details(
    query: CallbackQuery,
    callback_data: cb.Checkout,
    state: FSMContext,
    t: Texts,
    store: Store,
    settings: Settings,
) -> None:
    data = await state.get_data()
    if "order_id" not in data or not isinstance(query.message, Message):
        await query.answer(t.t("input.toast.stale_button"))
        return
    await query.answer()
    if callback_data.action == "reuse":
        saved = await store.customers.get(str(query.from_user.id)) or Contact()
        await state.update_data(CheckoutAnswers.saved(saved))
    await _next(query.message, state, t, store, settings)


@router.message(StateFilter(*form.STATES), Command("cancel"))
@router.callback_query(StateFilter(*form.STATES), cb.Checkout.filter(F.action == "cancel"))
async def cancel(event: Message | CallbackQuery, state: FSMContext, t: Texts, store: Store) -> None:
    await state.clear()
    target = event.message if isinstance(event, CallbackQuery) else event
    if isinstance(event, CallbackQuery):
        await event.answer()
    if isinstance(target, Message):
        await target.answer(t.t("checkout.cancelled"), reply_markup=ReplyKeyboardRemove())
        text, markup = await cart_view(t, store, event.from_user.id if event.from_user else 0)
        await target.answer(text, reply_markup=markup)


@router.message(StateFilter(*form.STATES), F.text.startswith("/"))
async def command_in_form(message: Message, t: Texts) -> None:
    await message.answer(t.t("input.command_in_checkout"))


@router.message(StateFilter(*form.BY_STATE), F.text)
@router.message(StateFilter(*(f.state for f in form.FIELDS if f.contact)), F.contact)
async def answer_field(
    message: Message,
    state: FSMContext,
    raw_state: str,
    t: Texts,
    store: Store,
    settings: Settings,
) -> None:
    """An answer to the question asked, whichever it is: the next question if it is right."""
    field = form.BY_STATE[raw_state]
    if field.keyboard == "choices":  # typed words where a button was asked for: the buttons again
        items = await priced_cart(store, message.from_user.id if message.from_user else 0)
        offered = form.choices(
            field, _shop(settings, store), items, CheckoutAnswers.of(await state.get_data())
        )
        await message.answer(t.hint(v.ChoiceProblem()))
        await _ask(message, state, field, t, offered)
        return
    if message.contact is not None:
        sender = message.from_user.id if message.from_user else 0
        contact = message.contact
        answer = form.read_contact(field, contact.phone_number, contact.user_id, sender)
    else:
        answer = field.parse(message.text or "")
    if isinstance(answer, form.NotTheirs):
        await message.answer(t.t("checkout.contact_not_yours"))
        return
    if not isinstance(answer, str):
        # A reply keyboard is gone once the customer typed: the hint brings it back.
        again = kb.share_phone(t) if field.keyboard == "share_phone" else None
        await message.answer(t.hint(answer), reply_markup=again)
        return
    await state.update_data({field.name: answer})
    await _next(message, state, t, store, settings)


@router.callback_query(
    StateFilter(*(f.state for f in form.FIELDS if f.optional)),
    cb.Checkout.filter(F.action == "skip"),
)
async def skip_field(
    query: CallbackQuery,
    state: FSMContext,
    raw_state: str,
    t: Texts,
    store: Store,
    settings: Settings,
) -> None:
    field = form.BY_STATE[raw_state]
    await state.update_data({field.name: ""})
    await query.answer()
    if isinstance(query.message, Message):
        await _next(query.message, state, t, store, settings)


@router.callback_query(cb.Choose.filter())
async def choose(
    query: CallbackQuery,
    callback_data: cb.Choose,
    state: FSMContext,
    raw_state: str | None,
    t: Texts,
    store: Store,
    settings: Settings,
) -> None:
    """A choice's button (a delivery method, a way to pay): taken, unless it is no longer
    offered (the shop changed meanwhile) or its question is not the one asked (an old message)."""
    field = form.BY_NAME.get(callback_data.field)
    if field is None or raw_state != field.state or not isinstance(query.message, Message):
        await query.answer(t.t("input.toast.stale_button"))
        return
    await query.answer()
    data = await state.get_data()
    items = await priced_cart(store, query.from_user.id)
    offered = form.choices(field, _shop(settings, store), items, CheckoutAnswers.of(data))
    if callback_data.value not in {c.value for c in offered}:
        await _ask_again(query.message, state, t, store, settings, field)
        return
    await state.update_data({field.name: callback_data.value})
    await _next(query.message, state, t, store, settings)


@router.callback_query(StateFilter(form.CONFIRM), cb.Checkout.filter(F.action == "edit"))
async def edit_field(
    query: CallbackQuery,
    callback_data: cb.Checkout,
    state: FSMContext,
    t: Texts,
    store: Store,
    settings: Settings,
) -> None:
    """An answer to change from the summary: asked again (and then what it now needs: a courier
    instead of pickup asks for the address), then the summary."""
    field = form.BY_NAME.get(callback_data.field)
    if field is None or not isinstance(query.message, Message):
        await query.answer(t.t("input.toast.stale_button"))
        return
    await query.answer()
    data = await state.get_data()
    data.pop(field.name, None)
    await state.set_data(data)
    await _next(query.message, state, t, store, settings)


@router.callback_query(cb.Checkout.filter(F.action == "confirm"))
async def confirm(
    query: CallbackQuery,
    state: FSMContext,
    t: Texts,
    store: Store,
    settings: Settings,
    js: JetStreamContext,
) -> None:
    data: dict[str, Any] = await state.get_data()
    if await state.get_state() != form.CONFIRM or "order_id" not in data:
        # A second tap on Confirm (the first already placed the order), or an old summary.
        await query.answer(t.t("checkout.toast.already_placed"))
        return
    order_id = str(data["order_id"])
    user = query.from_user
    items = await priced_cart(store, user.id)
    lines = items.ordered()
    if not lines or not isinstance(query.message, Message):
        await query.answer(t.t("checkout.empty_cart"))
        return
    await query.answer()
    shop = _shop(settings, store)
    answers = CheckoutAnswers.of(data)
    missing = form.next_question(data, shop)
    if missing is not None:  # a choice switched off since the summary
        await _ask_again(query.message, state, t, store, settings, missing)
        return
    chosen = form.choice(answers, items, shop)
    short = form.below_minimum(items, shop)
    if short is not None:
        await state.clear()
        await query.message.answer(render(t, short))
        return
    total = form.total(items, chosen if not isinstance(chosen, form.NotServed) else None)
    if isinstance(chosen, form.NotServed) or data.get("shown_total") != total:
        # The catalog changed under the summary: the customer confirms what they will pay.
        await query.message.answer(t.t("checkout.total_changed"))
        await _summary(query.message, state, t, store, settings)
        return
    method = shop.method(answers.delivery)
    contact = answers.contact(method)
    placed = OrderPlaced(
        order_id=order_id,
        customer_id=user.id,
        lines=lines,
        total=total,
        placed_at=datetime.now(UTC),
        contact=contact,
        chat_id=query.message.chat.id,
        delivery=chosen,
        payment=answers.paying(),
    )
    await state.clear()
    reserving = await query.message.edit_text(
        t.lines([t.t("order.number", number=order_id), t.t("order.reserving")])
    )
    message_id = reserving.message_id if isinstance(reserving, Message) else 0
    await store.remember_order(
        OrderView(
            order_id=order_id,
            user_id=user.id,
            chat_id=query.message.chat.id,
            language=user.language_code or "",
            lines=lines,
            total=total,
            placed_at=placed.placed_at,
            order=lifecycle.evolve(None, placed),
            message_id=message_id,
            contact=contact,
        )
    )
    # What is remembered for next time: the details, not this order's delivery or comment (a
    # pickup order keeps the address saved before).
    saved = await store.customers.get(str(user.id)) or Contact()
    address = answers.address or saved.address
    await store.customers.put(
        str(user.id), Contact(answers.name, answers.phone, address, answers.email)
    )
    await bus.publish(js, subjects.order_placed(order_id), placed, msg_id=order_id)
    PLACED.inc()


@router.callback_query(cb.FixOrder.filter())
async def fix_order(
    query: CallbackQuery,
    callback_data: cb.FixOrder,
    state: FSMContext,
    t: Texts,
    store: Store,
    settings: Settings,
) -> None:
    """After an out-of-stock answer: set the line to what is left, and confirm again."""

    def change(current: Cart | None) -> Cart:
        return Cart(set_qty(current.lines if current else {}, callback_data.sku, callback_data.qty))

    await store.carts.update(str(query.from_user.id), change)
    saved = await store.customers.get(str(query.from_user.id)) or Contact()
    await state.clear()
    await state.update_data(
        CheckoutAnswers.saved(saved),
        comment="",  # straight back to the summary (or to what the shop now asks)
        user_id=query.from_user.id,
        order_id=new_order_id(),
    )
    await query.answer()
    if isinstance(query.message, Message):
        await _next(query.message, state, t, store, settings)


__all__ = ["router", "show"]
