"""The bot's keyboards, built from texts and callback data; no I/O."""

from __future__ import annotations

from collections.abc import Callable

from aiogram.types import (
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    KeyboardButton,
    ReplyKeyboardMarkup,
)

from libs.contracts import CatalogCategory, CatalogProduct
from libs.money import format_rub
from services.bot import callbacks as cb
from services.bot.cart import card_less, card_more
from services.bot.form import Choice
from services.bot.messages import Buttons, pay_button, render
from services.bot.texts import Texts

PAGE = 6  # products per page


def _button(text: str, data: str) -> InlineKeyboardButton:
    return InlineKeyboardButton(text=text, callback_data=data)


def _markup(rows: list[list[InlineKeyboardButton]]) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(inline_keyboard=rows)


def main_menu(t: Texts) -> InlineKeyboardMarkup:
    return _markup(
        [
            [_button(t.t("menu.button.catalog"), cb.Menu(to="catalog").pack())],
            [
                _button(t.t("menu.button.cart"), cb.Menu(to="cart").pack()),
                _button(t.t("menu.button.orders"), cb.Menu(to="orders").pack()),
            ],
            [_button(t.t("menu.button.help"), cb.Menu(to="help").pack())],
        ]
    )


def back_home(t: Texts) -> list[InlineKeyboardButton]:
    return [_button(t.t("common.button.menu"), cb.Menu(to="home").pack())]


def categories(t: Texts, found: list[CatalogCategory]) -> InlineKeyboardMarkup:
    rows = [[_button(c.title, cb.CategoryPage(category_id=c.category_id).pack())] for c in found]
    return _markup([*rows, back_home(t)])


def products(
    t: Texts, category_id: str, found: list[CatalogProduct], page: int
) -> InlineKeyboardMarkup:
    """A category's page of products, with Back to the categories."""
    return _listing(
        t,
        found,
        page,
        lambda sku, at: cb.ProductCard(sku=sku, page=at).pack(),
        lambda at: cb.CategoryPage(category_id=category_id, page=at).pack(),
    )


def found(t: Texts, items: list[CatalogProduct], page: int) -> InlineKeyboardMarkup:
    """A page of search results, like a category's, with Back to the catalog."""
    return _listing(
        t,
        items,
        page,
        lambda sku, at: cb.FoundCard(sku=sku, page=at).pack(),
        lambda at: cb.SearchPage(page=at).pack(),
    )


def nothing_found(t: Texts) -> InlineKeyboardMarkup:
    return _markup([[_button(t.t("menu.button.catalog"), cb.Menu(to="catalog").pack())]])


def _listing(
    t: Texts,
    items: list[CatalogProduct],
    page: int,
    card: Callable[[str, int], str],
    page_data: Callable[[int], str],
) -> InlineKeyboardMarkup:
    pages = max(1, -(-len(items) // PAGE))
    page = min(max(page, 0), pages - 1)
    rows = [
        [
            _button(
                t.t("catalog.button.product", title=p.title, price=format_rub(p.price)),
                card(p.sku, page),
            )
        ]
        for p in items[page * PAGE : (page + 1) * PAGE]
    ]
    if pages > 1:
        nav = []
        if page > 0:
            nav.append(_button("◀︎", page_data(page - 1)))
        nav.append(_button(t.t("catalog.button.page", page=page + 1, pages=pages), page_data(page)))
        if page < pages - 1:
            nav.append(_button("▶︎", page_data(page + 1)))
        rows.append(nav)
    rows.append([_button(t.t("common.button.back"), cb.Menu(to="catalog").pack())])
    return _markup(rows)


def product(
    t: Texts,
    item: CatalogProduct,
    qty: int,
    available: int,
    page: int,
    *,
    from_search: bool = False,
    watching: bool = False,
) -> InlineKeyboardMarkup:
    """A product's card: the quantity and Add while it is in stock, "tell me when it is back"
    while not (`watching`: asked already); Back to the category's page (or the search results'
    it was opened from)."""

    def card(n: int) -> str:
        if from_search:
            return cb.FoundCard(sku=item.sku, qty=n, page=page).pack()
        return cb.ProductCard(sku=item.sku, qty=n, page=page).pack()

    rows: list[list[InlineKeyboardButton]] = []
    more = card_more(qty, available)
    if available > 0:
        rows.append(
            [
                _button("➖", card(card_less(qty))),
                _button(str(qty), card(qty)),
                _button("➕", card(more)),
            ]
        )
        rows.append(
            [_button(t.t("catalog.button.add"), cb.AddToCart(sku=item.sku, qty=qty).pack())]
        )
    else:
        notify = cb.BackInStock(sku=item.sku, page=page, found=from_search).pack()
        label = t.t("catalog.button.notifying" if watching else "catalog.button.notify")
        rows.append([_button(label, notify)])
    back = (
        cb.SearchPage(page=page)
        if from_search
        else cb.CategoryPage(category_id=item.category_id, page=page)
    )
    rows.append(
        [
            _button(t.t("common.button.back"), back.pack()),
            _button(t.t("menu.button.cart"), cb.Menu(to="cart").pack()),
        ]
    )
    return _markup(rows)


def back_in_stock(t: Texts, item: CatalogProduct) -> InlineKeyboardMarkup:
    """The notice's button: the product's card."""
    return _markup([[_button(t.t("catalog.button.open"), cb.ProductCard(sku=item.sku).pack())]])


def cart(t: Texts, lines: list[tuple[CatalogProduct, int]]) -> InlineKeyboardMarkup:
    rows = []
    for item, qty in lines:
        rows.append(
            [
                _button("➖", cb.CartLine(action="dec", sku=item.sku).pack()),
                _button(
                    t.t("cart.button.line", title=item.title, qty=qty),
                    cb.ProductCard(sku=item.sku, qty=qty).pack(),
                ),
                _button("➕", cb.CartLine(action="inc", sku=item.sku).pack()),
                _button("✖", cb.CartLine(action="del", sku=item.sku).pack()),
            ]
        )
    if lines:
        rows.append([_button(t.t("cart.button.checkout"), cb.CartAction(action="checkout").pack())])
        rows.append([_button(t.t("cart.button.clear"), cb.CartAction(action="clear").pack())])
    rows.append([_button(t.t("menu.button.catalog"), cb.Menu(to="catalog").pack()), *back_home(t)])
    return _markup(rows)


def share_phone(t: Texts) -> ReplyKeyboardMarkup:
    return ReplyKeyboardMarkup(
        keyboard=[[KeyboardButton(text=t.t("checkout.button.share_phone"), request_contact=True)]],
        resize_keyboard=True,
        one_time_keyboard=True,
    )


def reuse(t: Texts) -> InlineKeyboardMarkup:
    return _markup(
        [
            [_button(t.t("checkout.button.use_saved"), cb.Checkout(action="reuse").pack())],
            [_button(t.t("checkout.button.enter_new"), cb.Checkout(action="fresh").pack())],
        ]
    )


def choices(t: Texts, field: str, offered: tuple[Choice, ...]) -> InlineKeyboardMarkup:
    """A question's choices, one button each (a delivery method with its price), and Cancel."""
    rows = [
        [_button(render(t, c.label), cb.Choose(field=field, value=c.value).pack())] for c in offered
    ]
    rows.append([_button(t.t("checkout.button.cancel"), cb.Checkout(action="cancel").pack())])
    return _markup(rows)


def skip(t: Texts) -> InlineKeyboardMarkup:
    return _markup([[_button(t.t("checkout.button.skip"), cb.Checkout(action="skip").pack())]])


def summary(t: Texts, fields: list[str]) -> InlineKeyboardMarkup:
    edits = [
        _button(
            t.t(f"checkout.button.edit_{field}"), cb.Checkout(action="edit", field=field).pack()
        )
        for field in fields
    ]
    return _markup(
        [
            [_button(t.t("checkout.button.confirm"), cb.Checkout(action="confirm").pack())],
            *[edits[i : i + 2] for i in range(0, len(edits), 2)],
            [_button(t.t("checkout.button.cancel"), cb.Checkout(action="cancel").pack())],
        ]
    )


def inline(t: Texts, buttons: Buttons) -> InlineKeyboardMarkup | None:
    """A message's buttons (services.bot.messages) in `t`'s language; None for none."""
    if not buttons:
        return None
    return _markup(
        [
            [
                InlineKeyboardButton(
                    text=render(t, b.text), url=b.url or None, callback_data=b.data or None
                )
                for b in row
            ]
            for row in buttons
        ]
    )


def pay(t: Texts, url: str, amount: int) -> InlineKeyboardMarkup:
    return _markup([[InlineKeyboardButton(text=render(t, pay_button(url, amount).text), url=url)]])


def orders(t: Texts, found: list[tuple[str, str]]) -> InlineKeyboardMarkup:
    rows = [[_button(label, cb.OrderCard(order_id=oid).pack())] for oid, label in found]
    return _markup([*rows, back_home(t)])
