"""Checkout, a guided form: name, phone, address, (email), comment, then a summary to confirm.

Each answer is checked (services.bot.validation) and a wrong one gets a precise hint while the
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
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import CallbackQuery, Message, ReplyKeyboardRemove
from nats.js import JetStreamContext

from libs import bus, lifecycle, subjects
from libs.contracts import Contact, OrderLine, OrderPlaced
from libs.money import format_rub
from libs.settings import Settings
from services.bot import callbacks as cb
from services.bot import keyboards as kb
from services.bot import validation as v
from services.bot.handlers.shop import cart_view, show
from services.bot.model import Cart, OrderView, Store
from services.bot.texts import Texts

router = Router(name=__name__)


class Form(StatesGroup):
    name = State()
    phone = State()
    address = State()
    email = State()
    comment = State()
    confirm = State()


FIELDS = ("name", "phone", "address", "email", "comment")


def new_order_id() -> str:
    """Short, unique and readable on the phone: 241124-K7Q3M."""
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    return datetime.now(UTC).strftime("%y%m%d-") + "".join(
        secrets.choice(alphabet) for _ in range(5)
    )


def _fields(settings: Settings) -> list[str]:
    return [f for f in FIELDS if f != "email" or settings.receipts]


async def _ask(target: Message, state: FSMContext, field: str, t: Texts) -> None:
    await state.set_state(getattr(Form, field))
    if field == "phone":
        await target.answer(t.t("checkout.ask_phone"), reply_markup=kb.share_phone(t))
    elif field in ("email", "comment"):
        await target.answer(t.t(f"checkout.ask_{field}"), reply_markup=kb.skip(t))
    else:
        await target.answer(t.t(f"checkout.ask_{field}"), reply_markup=ReplyKeyboardRemove())


async def _next(
    message: Message, state: FSMContext, field: str, t: Texts, store: Store, settings: Settings
) -> None:
    """After a valid answer: the next question, or the summary when editing or done."""
    data = await state.get_data()
    fields = _fields(settings)
    following = fields[fields.index(field) + 1 :] if field in fields else []
    if data.get("editing") or not following:
        await state.update_data(editing=False)
        await _summary(message, state, t, store, settings)
    else:
        await _ask(message, state, following[0], t)


async def _summary(
    message: Message, state: FSMContext, t: Texts, store: Store, settings: Settings
) -> None:
    data = await state.get_data()
    user_id = int(data["user_id"])
    current = await store.carts.get(str(user_id)) or Cart()
    lines = []
    total = 0
    for sku, qty in current.lines.items():
        item = await store.product(sku)
        if item is not None:
            amount = format_rub(item.price * qty)
            lines.append(t.t("cart.line", title=item.title, qty=qty, amount=amount))
            total += item.price * qty
    if not lines:
        await state.clear()
        await message.answer(t.t("cart.empty"), reply_markup=ReplyKeyboardRemove())
        return
    text = t.t(
        "checkout.summary",
        lines=t.lines(lines),
        total=format_rub(total),
        name=data.get("name") or "—",
        phone=t.phone(data["phone"]) if data.get("phone") else "—",
        address=data.get("address") or "—",
        email=data.get("email") or "—",
        comment=data.get("comment") or "—",
    )
    await state.set_state(Form.confirm)
    await message.answer(text, reply_markup=kb.summary(t, _fields(settings)))


@router.callback_query(cb.CartAction.filter(F.action == "checkout"))
async def start_checkout(query: CallbackQuery, state: FSMContext, t: Texts, store: Store) -> None:
    current = await store.carts.get(str(query.from_user.id))
    if not current or not current.lines or not isinstance(query.message, Message):
        await query.answer(t.t("checkout.empty_cart"))
        return
    await state.clear()
    await state.update_data(user_id=query.from_user.id, order_id=new_order_id())
    await query.answer()
    saved = await store.customers.get(str(query.from_user.id))
    if saved and saved.name and saved.phone and saved.address:
        text = t.t("checkout.reuse", name=saved.name, phone=saved.phone, address=saved.address)
        await query.message.answer(text, reply_markup=kb.reuse(t))
        return
    await _ask(query.message, state, "name", t)


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
    if callback_data.action == "fresh":
        await _ask(query.message, state, "name", t)
        return
    saved = await store.customers.get(str(query.from_user.id)) or Contact()
    await state.update_data(
        name=saved.name, phone=saved.phone, address=saved.address, email=saved.email
    )
    await _ask(query.message, state, "comment", t)


@router.message(StateFilter(Form), Command("cancel"))
@router.callback_query(StateFilter(Form), cb.Checkout.filter(F.action == "cancel"))
async def cancel(event: Message | CallbackQuery, state: FSMContext, t: Texts, store: Store) -> None:
    await state.clear()
    target = event.message if isinstance(event, CallbackQuery) else event
    if isinstance(event, CallbackQuery):
        await event.answer()
    if isinstance(target, Message):
        await target.answer(t.t("checkout.cancelled"), reply_markup=ReplyKeyboardRemove())
        text, markup = await cart_view(t, store, event.from_user.id if event.from_user else 0)
        await target.answer(text, reply_markup=markup)


@router.message(StateFilter(Form), F.text.startswith("/"))
async def command_in_form(message: Message, t: Texts) -> None:
    await message.answer(t.t("input.command_in_checkout"))


@router.message(Form.name, F.text)
async def process_name(
    message: Message, state: FSMContext, t: Texts, store: Store, settings: Settings
) -> None:
    name = v.parse_name(message.text or "")
    if not isinstance(name, str):
        await message.answer(t.hint(name))
        return
    await state.update_data(name=name)
    await _next(message, state, "name", t, store, settings)


@router.message(Form.phone, F.contact)
async def process_contact(
    message: Message, state: FSMContext, t: Texts, store: Store, settings: Settings
) -> None:
    assert message.contact is not None and message.from_user is not None
    if not v.check_contact(message.contact.user_id, message.from_user.id):
        await message.answer(t.t("checkout.contact_not_yours"))
        return
    await _take_phone(message, state, message.contact.phone_number, t, store, settings, shared=True)


@router.message(Form.phone, F.text)
async def process_phone(
    message: Message, state: FSMContext, t: Texts, store: Store, settings: Settings
) -> None:
    await _take_phone(message, state, message.text or "", t, store, settings)


async def _take_phone(
    message: Message,
    state: FSMContext,
    raw: str,
    t: Texts,
    store: Store,
    settings: Settings,
    shared: bool = False,
) -> None:
    phone = v.parse_shared_phone(raw) if shared else v.parse_phone(raw)
    if not isinstance(phone, str):
        await message.answer(t.hint(phone), reply_markup=kb.share_phone(t))
        return
    await state.update_data(phone=phone)
    await _next(message, state, "phone", t, store, settings)


@router.message(Form.address, F.text)
async def process_address(
    message: Message, state: FSMContext, t: Texts, store: Store, settings: Settings
) -> None:
    address = v.parse_address(message.text or "")
    if isinstance(address, v.AddressProblem):
        await message.answer(t.hint(address))
        return
    await state.update_data(address=address.text)
    await _next(message, state, "address", t, store, settings)


@router.message(Form.email, F.text)
async def process_email(
    message: Message, state: FSMContext, t: Texts, store: Store, settings: Settings
) -> None:
    email = v.parse_email(message.text or "")
    if not isinstance(email, str):
        await message.answer(t.hint(email))
        return
    await state.update_data(email=email)
    await _next(message, state, "email", t, store, settings)


@router.message(Form.comment, F.text)
async def process_comment(
    message: Message, state: FSMContext, t: Texts, store: Store, settings: Settings
) -> None:
    comment = v.parse_comment(message.text or "")
    if not isinstance(comment, str):
        await message.answer(t.hint(comment))
        return
    await state.update_data(comment=comment)
    await _next(message, state, "comment", t, store, settings)


@router.callback_query(
    StateFilter(Form.email, Form.comment), cb.Checkout.filter(F.action == "skip")
)
async def skip_field(
    query: CallbackQuery, state: FSMContext, t: Texts, store: Store, settings: Settings
) -> None:
    current = await state.get_state()
    field = "email" if current == Form.email.state else "comment"
    await state.update_data({field: ""})
    await query.answer()
    if isinstance(query.message, Message):
        await _next(query.message, state, field, t, store, settings)


@router.callback_query(Form.confirm, cb.Checkout.filter(F.action == "edit"))
async def edit_field(
    query: CallbackQuery, callback_data: cb.Checkout, state: FSMContext, t: Texts
) -> None:
    if callback_data.field not in FIELDS or not isinstance(query.message, Message):
        await query.answer(t.t("input.toast.stale_button"))
        return
    await query.answer()
    await state.update_data(editing=True)
    await _ask(query.message, state, callback_data.field, t)


@router.callback_query(cb.Checkout.filter(F.action == "confirm"))
async def confirm(
    query: CallbackQuery,
    state: FSMContext,
    t: Texts,
    store: Store,
    js: JetStreamContext,
) -> None:
    data: dict[str, Any] = await state.get_data()
    if await state.get_state() != Form.confirm.state or "order_id" not in data:
        # A second tap on Confirm (the first already placed the order), or an old summary.
        await query.answer(t.t("checkout.toast.already_placed"))
        return
    order_id = str(data["order_id"])
    user = query.from_user
    current = await store.carts.get(str(user.id)) or Cart()
    lines = []
    for sku, qty in current.lines.items():
        item = await store.product(sku)
        if item is not None and qty > 0:
            lines.append(OrderLine(sku, qty, item.price))
    if not lines or not isinstance(query.message, Message):
        await query.answer(t.t("checkout.empty_cart"))
        return
    contact = Contact(
        name=str(data.get("name", "")),
        phone=str(data.get("phone", "")),
        address=str(data.get("address", "")),
        email=str(data.get("email", "")),
        comment=str(data.get("comment", "")),
    )
    total = sum(line.qty * line.unit_price for line in lines)
    placed = OrderPlaced(
        order_id=order_id,
        customer_id=user.id,
        lines=tuple(lines),
        total=total,
        placed_at=datetime.now(UTC),
        contact=contact,
        chat_id=query.message.chat.id,
    )
    await state.clear()
    await query.answer()
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
            lines=tuple(lines),
            total=total,
            placed_at=placed.placed_at,
            order=lifecycle.evolve(None, placed),
            message_id=message_id,
            contact=contact,
        )
    )
    await store.customers.put(str(user.id), msgspec_replace_comment(contact))
    await bus.publish(js, subjects.order_placed(order_id), placed, msg_id=order_id)


def msgspec_replace_comment(contact: Contact) -> Contact:
    """What is remembered for next time: everything but this order's comment."""
    return Contact(contact.name, contact.phone, contact.address, contact.email)


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
        lines = dict(current.lines) if current else {}
        if callback_data.qty > 0:
            lines[callback_data.sku] = callback_data.qty
        else:
            lines.pop(callback_data.sku, None)
        return Cart(lines)

    await store.carts.update(str(query.from_user.id), change)
    saved = await store.customers.get(str(query.from_user.id)) or Contact()
    await state.clear()
    await state.update_data(
        user_id=query.from_user.id,
        order_id=new_order_id(),
        name=saved.name,
        phone=saved.phone,
        address=saved.address,
        email=saved.email,
    )
    await query.answer()
    if isinstance(query.message, Message):
        await _summary(query.message, state, t, store, settings)


__all__ = ["router", "show"]
