"""The admin chat as a catalog desk: /catalog, a product's card and its buttons, the typed
questions (restock, write off, price, photo) and the new product's form. Only ADMIN_USER_IDS.
Every change is an inventory command on `admin.inventory` with its id chosen when its button or
question was shown, so a double tap changes nothing twice; what is shown is
services.bot.catalog_desk, this is the shell."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import msgspec
import nats.errors
from aiogram import F, Router
from aiogram.filters import Command, or_f
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import CallbackQuery, Message
from nats.aio.client import Client

from libs import bus, log, subjects
from libs.contracts import (
    AdjustStock,
    AdminCommand,
    AdminReply,
    AdminRequest,
    SetPhoto,
    SetPrice,
    SetVisible,
)
from libs.kv import Mirror
from services.bot import callbacks as cb
from services.bot import catalog_desk as desk
from services.bot import messages
from services.bot.handlers import replies
from services.bot.model import Store
from services.bot.texts import Texts

_log = log.get(__name__)
SETTLE_S = 3.0  # how long a card waits for the read model to show a change the inventory made
_reply = msgspec.json.Decoder(AdminReply).decode
BUTTONS = or_f(
    cb.CatalogList.filter(),
    cb.CatalogCard.filter(),
    cb.CatalogRestock.filter(),
    cb.CatalogAsk.filter(),
    cb.CatalogShown.filter(),
    cb.CatalogNew.filter(),
    cb.CatalogNewCategory.filter(),
)


class Catalog(StatesGroup):
    """A card's question waiting for its answer (data: sku, field, op), or the new product's
    form (data: new = its answers, sku suffix, op, position). In the admin's FSM (NATS KV)."""

    asked = State()
    adding = State()


def router_for(admins: frozenset[int]) -> Router:
    router, desk_router = replies.desk_routers(__name__, admins, BUTTONS)
    desk_router.message.register(catalog, Command("catalog"))
    desk_router.message.register(
        answered, Catalog.asked, or_f(F.photo, F.text), ~F.text.startswith("/")
    )
    desk_router.message.register(
        form_answered, Catalog.adding, or_f(F.photo, F.text), ~F.text.startswith("/")
    )
    desk_router.callback_query.register(page, cb.CatalogList.filter())
    desk_router.callback_query.register(open_card, cb.CatalogCard.filter())
    desk_router.callback_query.register(restock, cb.CatalogRestock.filter())
    desk_router.callback_query.register(asked, cb.CatalogAsk.filter())
    desk_router.callback_query.register(shown, cb.CatalogShown.filter())
    desk_router.callback_query.register(form_button, cb.CatalogNew.filter())
    desk_router.callback_query.register(category_chosen, cb.CatalogNewCategory.filter())
    return router


# /catalog and the cards --------------------------------------------------------------------------
async def catalog(message: Message, t: Texts, store: Store, state: FSMContext) -> None:
    await state.set_state(None)
    await replies.send(message, t, await _listing(store, 0))


async def page(query: CallbackQuery, callback_data: cb.CatalogList, t: Texts, store: Store) -> None:
    await replies.edit(query, t, await _listing(store, callback_data.page))
    await query.answer()


async def open_card(
    query: CallbackQuery,
    callback_data: cb.CatalogCard,
    t: Texts,
    store: Store,
    state: FSMContext,
) -> None:
    await state.set_state(None)  # "Cancel" under a question comes here too
    shown = await _card(store, callback_data.sku)
    if shown is None:
        await query.answer(t.t("catalog_desk.toast.gone"))
        return
    await replies.edit(query, t, shown)
    await query.answer()


async def restock(
    query: CallbackQuery,
    callback_data: cb.CatalogRestock,
    t: Texts,
    store: Store,
    nc: Client,
) -> None:
    sku, qty = callback_data.sku, callback_data.qty
    if qty not in desk.RESTOCKS or not callback_data.op.isalnum():
        await query.answer(t.t("input.toast.stale_button"))
        return
    command = AdjustStock(desk.adjustment_id(callback_data.op), sku, qty, "restock")
    await _tapped(query, t, store, nc, sku, command, desk.done("restock", qty=qty))


async def shown(
    query: CallbackQuery, callback_data: cb.CatalogShown, t: Texts, store: Store, nc: Client
) -> None:
    sku, visible = callback_data.sku, callback_data.visible
    said = desk.done("shown" if visible else "hidden")
    await _tapped(query, t, store, nc, sku, SetVisible(sku, visible), said)


async def _tapped(
    query: CallbackQuery,
    t: Texts,
    store: Store,
    nc: Client,
    sku: str,
    command: AdminCommand,
    said: messages.Text,
) -> None:
    """A card's one-tap change: sent, its answer toasted, the card shown as it is now."""
    if store.catalog.product(sku) is None:
        await query.answer(t.t("catalog_desk.toast.gone"))
        return
    before = _seen(store, sku)
    reply = await _apply(nc, command)
    _log.info("catalog_desk.change", sku=sku, command=type(command).__name__, by=query.from_user.id)
    if reply is None:
        await query.answer(t.t("catalog_desk.toast.unavailable"), show_alert=True)
        return
    if reply.errors:
        toast = messages.render(t, desk.refused(reply.errors[0], toast=True))
        await query.answer(toast, show_alert=True)
        return
    if not reply.changed:
        await query.answer(t.t("catalog_desk.toast.already"))
        return
    await query.answer(messages.render(t, said))
    await _settled(store, sku, before)
    card = await _card(store, sku)
    if card is not None:
        await replies.edit(query, t, card)


# A card's questions ------------------------------------------------------------------------------
async def asked(
    query: CallbackQuery,
    callback_data: cb.CatalogAsk,
    t: Texts,
    store: Store,
    state: FSMContext,
) -> None:
    product = store.catalog.product(callback_data.sku)
    if product is None:
        await query.answer(t.t("catalog_desk.toast.gone"))
        return
    # The question's id: the one change its answer makes, however often the answer arrives.
    await state.set_state(Catalog.asked)
    await state.update_data(sku=product.sku, field=callback_data.field, op=_op())
    await query.answer()
    if isinstance(query.message, Message):
        available = store.catalog.available(product.sku)
        await replies.send(query.message, t, desk.ask(product, callback_data.field, available))


async def answered(message: Message, t: Texts, store: Store, nc: Client, state: FSMContext) -> None:
    data = await state.get_data()
    product = store.catalog.product(str(data.get("sku", "")))
    field = str(data.get("field", ""))
    if product is None:
        await state.set_state(None)
        await replies.send(message, t, messages.Message(messages.Text("catalog_desk.gone")))
        return
    command: AdminCommand
    if field == "photo":
        if not message.photo:
            await replies.send(
                message, t, messages.Message(messages.Text("catalog_desk.hint.photo"))
            )
            return
        command = SetPhoto(product.sku, message.photo[-1].file_id)
        said = desk.done("photo")
    elif field == "price":
        price = desk.parse_price(message.text or "")
        if isinstance(price, messages.Text):
            await replies.send(message, t, messages.Message(price))
            return
        command, said = SetPrice(product.sku, price), desk.done("price", price=price)
    elif field in ("restock", "write_off"):
        qty = desk.parse_count(message.text or "")
        if isinstance(qty, messages.Text):
            await replies.send(message, t, messages.Message(qty))
            return
        if field == "write_off":
            too_many = desk.write_off_refused(qty, store.catalog.available(product.sku))
            if too_many is not None:
                await replies.send(message, t, messages.Message(too_many))
                return
        op = desk.adjustment_id(str(data.get("op", "")))
        if field == "restock":
            command = AdjustStock(op, product.sku, qty, "restock")
            said = desk.done("restock", qty=qty)
        else:
            command = AdjustStock(op, product.sku, -qty, "write_off")
            said = desk.done("write_off", qty=qty)
    else:
        await state.set_state(None)
        return
    await _typed_change(message, t, store, nc, state, product.sku, command, said)


async def _typed_change(
    message: Message,
    t: Texts,
    store: Store,
    nc: Client,
    state: FSMContext,
    sku: str,
    command: AdminCommand,
    said: messages.Text,
) -> None:
    """A question's answer sent; the question ends once the inventory took it (a refusal or no
    answer leaves it open: the same id again changes nothing twice)."""
    before = _seen(store, sku)
    reply = await _apply(nc, command)
    if reply is None:
        await replies.send(message, t, messages.Message(messages.Text("catalog_desk.unavailable")))
        return
    if reply.errors:
        _log.info("catalog_desk.refused", sku=sku, error=reply.errors[0])
        await replies.send(message, t, messages.Message(desk.refused(reply.errors[0], toast=False)))
        return
    _log.info("catalog_desk.change", sku=sku, command=type(command).__name__, changed=reply.changed)
    await state.set_state(None)
    if reply.changed:
        await _settled(store, sku, before)
    card = await _card(store, sku)
    await message.answer(messages.render(t, said))
    if card is not None:
        await replies.send(message, t, card)


# Add a product -----------------------------------------------------------------------------------
async def form_button(
    query: CallbackQuery,
    callback_data: cb.CatalogNew,
    t: Texts,
    store: Store,
    nc: Client,
    state: FSMContext,
) -> None:
    await query.answer()
    if not isinstance(query.message, Message):
        return
    match callback_data.action:
        case "start":
            categories = await store.categories()
            if not categories:
                await replies.send(
                    query.message,
                    t,
                    messages.Message(messages.Text("catalog_desk.new.no_categories")),
                )
                return
            # The SKU's suffix and the restock's id, chosen now: a double tap on the last
            # answer makes the same product and the same restock.
            await state.set_state(Catalog.adding)
            await state.update_data(new={}, suffix=secrets.token_hex(2), op=_op(), position=0)
            await _ask_next(query.message, t, store, state, {})
        case "skip":
            if await state.get_state() != Catalog.adding.state:
                return
            answers = await _answers(state)
            field = desk.next_field(answers)
            if field is None or not field.optional:
                return
            await _answer(query.message, t, store, nc, state, {**answers, field.name: ""})
        case "drop":
            await state.set_state(None)
            await replies.edit(
                query, t, messages.Message(messages.Text("catalog_desk.new.dropped"))
            )


async def category_chosen(
    query: CallbackQuery,
    callback_data: cb.CatalogNewCategory,
    t: Texts,
    store: Store,
    nc: Client,
    state: FSMContext,
) -> None:
    answers = await _answers(state)
    if await state.get_state() != Catalog.adding.state or "category" in answers:
        await query.answer(t.t("input.toast.stale_button"))
        return
    category = await store.category(callback_data.category_id)
    if category is None:
        await query.answer(t.t("input.toast.stale_button"))
        return
    await query.answer()
    # The new product goes last in its category (chosen once: a repeated upsert is the same).
    ranks = [p.position for p in await store.products(category.category_id, hidden=True)]
    await state.update_data(position=max(ranks, default=0) + 1)
    if isinstance(query.message, Message):
        answers = {**answers, "category": category.category_id}
        await _answer(query.message, t, store, nc, state, answers)


async def form_answered(
    message: Message, t: Texts, store: Store, nc: Client, state: FSMContext
) -> None:
    answers = await _answers(state)
    field = desk.next_field(answers)
    if field is None:
        await state.set_state(None)
        return
    if field.name == "photo":
        if not message.photo:
            await replies.send(
                message, t, messages.Message(messages.Text("catalog_desk.hint.photo"))
            )
            return
        value: desk.Answer | messages.Text = message.photo[-1].file_id
    elif field.parse is None or not message.text:
        await replies.send(message, t, desk.question(field, await store.categories()))
        return
    else:
        value = field.parse(message.text)
    if isinstance(value, messages.Text):
        await replies.send(message, t, messages.Message(value))
        return
    await _answer(message, t, store, nc, state, {**answers, field.name: value})


async def _answer(
    where: Message,
    t: Texts,
    store: Store,
    nc: Client,
    state: FSMContext,
    answers: dict[str, desk.Answer],
) -> None:
    """One more answer kept; the next question asked, or the product made once all are in."""
    await state.update_data(new=answers)
    if desk.next_field(answers) is not None:
        await _ask_next(where, t, store, state, answers)
        return
    data = await state.get_data()
    sku, suffix = desk.free_sku(
        answers, str(data.get("suffix", "")), store.catalog.product, lambda: secrets.token_hex(2)
    )
    if suffix != data.get("suffix"):
        await state.update_data(suffix=suffix)  # a tap again makes this product, not another
    commands = desk.new_product(answers, sku, str(data.get("op", "")), int(data.get("position", 0)))
    reply = await _apply(nc, *commands)
    if reply is None:
        await replies.send(where, t, messages.Message(messages.Text("catalog_desk.unavailable")))
        return
    if reply.errors:
        await replies.send(where, t, messages.Message(desk.refused(reply.errors[0], toast=False)))
        return
    _log.info("catalog_desk.added", sku=sku, changed=reply.changed)
    await state.set_state(None)
    await replies.send(where, t, desk.added(answers, sku))


async def _ask_next(
    where: Message, t: Texts, store: Store, state: FSMContext, answers: dict[str, desk.Answer]
) -> None:
    field = desk.next_field(answers)
    if field is not None:
        await replies.send(where, t, desk.question(field, await store.categories()))


async def _answers(state: FSMContext) -> dict[str, desk.Answer]:
    found = (await state.get_data()).get("new")
    return dict(found) if isinstance(found, dict) else {}


# Helpers -----------------------------------------------------------------------------------------
def _op() -> str:
    return secrets.token_hex(6)


async def _apply(nc: Client, *commands: AdminCommand) -> AdminReply | None:
    """The inventory's answer to the commands (None: it did not answer; the same ids again are
    safe)."""
    try:
        response = await nc.request(
            subjects.INVENTORY_ADMIN, bus.encode(AdminRequest(commands)), timeout=10
        )
    except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
        _log.warning("catalog_desk.inventory_silent", commands=len(commands))
        return None
    return _reply(response.data)


def _seen(store: Store, sku: str) -> tuple[Any, ...]:
    return store.catalog.product(sku), store.catalog.level(sku)


async def _settled(store: Store, sku: str, before: tuple[Any, ...]) -> None:
    """Wait (a little, bounded) for the read model to show what the inventory just did: the
    inventory answers once its events are stored, and writes the read model right after."""
    mirrors: tuple[Mirror[Any], ...] = (store.catalog.catalog, store.catalog.stock)
    try:
        async with asyncio.timeout(SETTLE_S):
            while True:
                versions = [mirror.version for mirror in mirrors]
                if _seen(store, sku) != before:
                    return
                waits = [
                    asyncio.ensure_future(mirror.changed(version))
                    for mirror, version in zip(mirrors, versions, strict=True)
                ]
                try:
                    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for wait in waits:
                        wait.cancel()
    except TimeoutError:  # the card shows what the read model has; the change was made
        _log.warning("catalog_desk.read_model_behind", sku=sku, waited=SETTLE_S)


async def _listing(store: Store, page: int) -> messages.Message:
    products = await store.products(hidden=True)
    levels = {p.sku: level for p in products if (level := store.catalog.level(p.sku))}
    return desk.listing(products, levels, page)


async def _card(store: Store, sku: str) -> messages.Message | None:
    product = store.catalog.product(sku)
    if product is None:
        return None
    page = desk.page_of(await store.products(hidden=True), sku)
    category = await store.category(product.category_id)
    return desk.card(product, store.catalog.level(sku), category, _op(), page)


__all__ = ["Catalog", "router_for"]
