"""The shop window: /start, the main menu, the catalog and the cart. Navigation edits in place."""

from __future__ import annotations

import contextlib

from aiogram import F, Router
from aiogram.exceptions import TelegramBadRequest
from aiogram.filters import Command, CommandStart
from aiogram.types import (
    CallbackQuery,
    InlineKeyboardMarkup,
    InputMediaPhoto,
    LinkPreviewOptions,
    Message,
)

from libs import log
from libs.contracts import CatalogProduct
from libs.money import format_rub
from libs.settings import Settings
from services.bot import back_in_stock
from services.bot import callbacks as cb
from services.bot import keyboards as kb
from services.bot.cart import Priced, added, card_qty, priced
from services.bot.cart import add as add_line
from services.bot.cart import change as change_cart_line
from services.bot.model import Cart, Store
from services.bot.texts import Texts

router = Router(name=__name__)
_log = log.get(__name__)


async def show(
    where: Message | CallbackQuery,
    text: str,
    markup: InlineKeyboardMarkup,
    preview: LinkPreviewOptions | None = None,
    toast: str | None = None,
    photo: str = "",
    *,
    same_photo: bool = False,
) -> None:
    """Edit the message a button was on (its query answered with `toast`), or answer a typed
    message with a new one. With `photo` (a URL or a Telegram file_id) a photo message with the
    text as its caption (`same_photo`: the message shows that photo already, only the caption and
    buttons change)."""
    options = preview or LinkPreviewOptions(is_disabled=True)
    if isinstance(where, CallbackQuery) and isinstance(where.message, Message):
        await _replace(where.message, text, markup, options, photo, same_photo)
        await where.answer(toast)
        return
    target = where.message if isinstance(where, CallbackQuery) else where
    if isinstance(target, Message):
        await _send(target, text, markup, options, photo)


async def _send(
    to: Message, text: str, markup: InlineKeyboardMarkup, options: LinkPreviewOptions, photo: str
) -> None:
    if photo:
        try:
            await to.answer_photo(photo, caption=text, reply_markup=markup)
            return
        except TelegramBadRequest as exc:  # a URL Telegram cannot fetch, a caption too long
            _log.info("card.photo_refused", reason=exc.message)
    await to.answer(text, reply_markup=markup, link_preview_options=options)


async def _replace(
    message: Message,
    text: str,
    markup: InlineKeyboardMarkup,
    options: LinkPreviewOptions,
    photo: str,
    same_photo: bool,
) -> None:
    """In place where Telegram can: the caption of the same photo, a photo for a photo or for a
    text (editMessageMedia), a text for a text. A photo message never becomes text again
    (editMessageText: "there is no text in the message to edit"): it is deleted and the text
    sent anew."""
    if photo:
        try:
            if same_photo and message.photo:
                await message.edit_caption(caption=text, reply_markup=markup)
            else:
                media = InputMediaPhoto(media=photo, caption=text)
                await message.edit_media(media, reply_markup=markup)
            return
        except TelegramBadRequest as exc:
            if "not modified" in exc.message:
                return  # already shown
            _log.info("card.photo_refused", reason=exc.message)  # shown as text instead
    if not message.photo:
        with contextlib.suppress(TelegramBadRequest):  # "not modified": already shown
            await message.edit_text(text, reply_markup=markup, link_preview_options=options)
        return
    with contextlib.suppress(TelegramBadRequest):  # too old to delete (48 h): it stays
        await message.delete()
    await message.answer(text, reply_markup=markup, link_preview_options=options)


@router.message(CommandStart())
async def start(message: Message, t: Texts, settings: Settings) -> None:
    await message.answer(
        t.t("start.greeting", shop=settings.shop_name), reply_markup=kb.main_menu(t)
    )


@router.message(Command("help"))
async def help_command(message: Message, t: Texts) -> None:
    await message.answer(t.t("help.text"), reply_markup=kb.main_menu(t))


@router.callback_query(cb.Menu.filter(F.to == "home"))
async def home(query: CallbackQuery, t: Texts, settings: Settings) -> None:
    await show(query, t.t("start.greeting", shop=settings.shop_name), kb.main_menu(t))


@router.callback_query(cb.Menu.filter(F.to == "help"))
async def help_button(query: CallbackQuery, t: Texts) -> None:
    await show(query, t.t("help.text"), kb.main_menu(t))


@router.message(Command("catalog"))
@router.callback_query(cb.Menu.filter(F.to == "catalog"))
async def catalog(event: Message | CallbackQuery, t: Texts, store: Store) -> None:
    found = await store.categories()
    await show(event, t.t("catalog.title" if found else "catalog.empty"), kb.categories(t, found))


@router.callback_query(cb.CategoryPage.filter())
async def category(
    query: CallbackQuery, callback_data: cb.CategoryPage, t: Texts, store: Store
) -> None:
    found = await store.category(callback_data.category_id)
    if found is None:
        await query.answer(t.t("input.toast.stale_button"), show_alert=False)
        return
    items = await store.products(found.category_id)
    text = t.t("catalog.category", category=found.title) if items else t.t("catalog.category_empty")
    await show(query, text, kb.products(t, found.category_id, items, callback_data.page))


async def _available(store: Store, sku: str) -> int:
    level = await store.level(sku)
    return max(0, level.available) if level else 0


FEW = 5  # at or below this many, the card says how many are left


def card(t: Texts, item: CatalogProduct, available: int) -> str:
    if available <= 0:
        stock = t.t("catalog.out_of_stock")
    elif available <= FEW:
        stock = t.t("catalog.few_left", count=available)
    else:
        stock = t.t("catalog.in_stock")
    price = format_rub(item.price)
    if item.description:
        return t.t(
            "catalog.product",
            title=item.title,
            description=item.description,
            price=price,
            availability=stock,
        )
    return t.t("catalog.product_short", title=item.title, price=price, availability=stock)


@router.callback_query(cb.ProductCard.filter())
@router.callback_query(cb.FoundCard.filter())
async def product(
    query: CallbackQuery, callback_data: cb.ProductCard | cb.FoundCard, t: Texts, store: Store
) -> None:
    item = await store.product(callback_data.sku)
    if item is None:
        await query.answer(t.t("input.toast.stale_button"))
        return
    found = isinstance(callback_data, cb.FoundCard)
    await show_card(query, t, store, item, callback_data.qty, callback_data.page, found)


async def show_card(
    query: CallbackQuery,
    t: Texts,
    store: Store,
    item: CatalogProduct,
    qty: int,
    page: int,
    from_search: bool,
    toast: str | None = None,
    *,
    watching: bool | None = None,
) -> None:
    """The product's card in place of the message tapped on (`watching`: whether the customer
    waits for it, if known better than the mirror, which is a moment behind a write)."""
    available = await _available(store, item.sku)
    if watching is None:
        watch = back_in_stock.key(item.sku, query.from_user.id)
        watching = store.watching.get(watch) is not None
    # Shown as text (a photo Telegram refused): a URL's preview above it, as before photo cards.
    preview = (
        LinkPreviewOptions(url=item.photo_url, prefer_large_media=True, show_above_text=True)
        if item.photo_url.startswith(("http://", "https://"))
        else None
    )
    markup = kb.product(
        t,
        item,
        card_qty(qty, available),
        available,
        page,
        from_search=from_search,
        watching=watching,
    )
    same = isinstance(query.message, Message) and _card_of(query.message, item.sku)
    text = card(t, item, available)
    await show(query, text, markup, preview, toast, item.photo_url, same_photo=same)


_CARD_BUTTONS = frozenset(
    {cb.ProductCard.__prefix__, cb.FoundCard.__prefix__, cb.BackInStock.__prefix__}
)


def _card_of(message: Message, sku: str) -> bool:
    """Whether the message is this product's card already (its buttons name the product): its
    photo stays, only the caption changes (a URL would otherwise be fetched again)."""
    rows = message.reply_markup.inline_keyboard if message.reply_markup else []
    for row in rows:
        for button in row:
            prefix, _, rest = (button.callback_data or "").partition(":")
            if prefix in _CARD_BUTTONS and rest.split(":", 1)[0] == sku:
                return True
    return False


@router.callback_query(cb.BackInStock.filter())
async def tell_when_back(
    query: CallbackQuery, callback_data: cb.BackInStock, t: Texts, store: Store
) -> None:
    """A sold-out product's "tell me when it is back": the customer waits for it (asking twice
    is asking once); back meanwhile, the card shows it can be bought."""
    item = await store.product(callback_data.sku)
    if item is None or not isinstance(query.message, Message):
        await query.answer(t.t("input.toast.stale_button"))
        return
    watch = back_in_stock.key(item.sku, query.from_user.id)
    if await _available(store, item.sku) > 0:
        toast = t.t("catalog.toast.back_already")
    else:
        language = query.from_user.language_code or ""
        await store.watchers.put(watch, back_in_stock.Watcher(query.message.chat.id, language))
        toast = t.t("catalog.toast.will_notify", title=item.title)
    await show_card(
        query, t, store, item, 1, callback_data.page, callback_data.found, toast, watching=True
    )


@router.callback_query(cb.AddToCart.filter())
async def add_to_cart(
    query: CallbackQuery, callback_data: cb.AddToCart, t: Texts, store: Store
) -> None:
    item = await store.product(callback_data.sku)
    if item is None or query.from_user is None:
        await query.answer(t.t("input.toast.stale_button"))
        return
    qty = added(callback_data.qty)

    def add(current: Cart | None) -> Cart:
        return Cart(add_line(current.lines if current else {}, item.sku, qty))

    await store.carts.update(str(query.from_user.id), add)
    await query.answer(t.t("catalog.toast.added", title=item.title, qty=qty))


async def priced_cart(store: Store, user_id: int) -> Priced:
    """The customer's cart priced by the catalog as it is now."""
    current = await store.carts.get(str(user_id)) or Cart()
    catalog = {}
    for sku in current.lines:
        item = await store.product(sku)
        if item is not None:
            catalog[sku] = item
    return priced(current.lines, catalog)


def cart_lines(t: Texts, items: Priced) -> list[str]:
    return [
        t.t("cart.line", title=line.product.title, qty=line.qty, amount=format_rub(line.amount))
        for line in items.lines
    ]


async def cart_view(t: Texts, store: Store, user_id: int) -> tuple[str, InlineKeyboardMarkup]:
    items = await priced_cart(store, user_id)
    if not items.lines:
        return t.t("cart.empty"), kb.cart(t, [])
    total = t.t("cart.total", total=format_rub(items.total))
    text = t.lines([t.t("cart.title"), "", *cart_lines(t, items), "", total])
    return text, kb.cart(t, [(line.product, line.qty) for line in items.lines])


@router.message(Command("cart"))
@router.callback_query(cb.Menu.filter(F.to == "cart"))
async def cart(event: Message | CallbackQuery, t: Texts, store: Store) -> None:
    if event.from_user is None:
        return
    text, markup = await cart_view(t, store, event.from_user.id)
    await show(event, text, markup)


@router.callback_query(cb.CartLine.filter())
async def change_line(
    query: CallbackQuery, callback_data: cb.CartLine, t: Texts, store: Store
) -> None:
    sku, action = callback_data.sku, callback_data.action

    def change(current: Cart | None) -> Cart:
        return Cart(change_cart_line(current.lines if current else {}, sku, action))

    await store.carts.update(str(query.from_user.id), change)
    text, markup = await cart_view(t, store, query.from_user.id)
    await show(query, text, markup)


@router.callback_query(cb.CartAction.filter(F.action == "clear"))
async def clear_cart(query: CallbackQuery, t: Texts, store: Store) -> None:
    await store.carts.put(str(query.from_user.id), Cart())
    text, markup = await cart_view(t, store, query.from_user.id)
    await show(query, text, markup)
