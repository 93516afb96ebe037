"""The bot's keyboards: pagination of a long category, Back everywhere, callback data that fits."""

from __future__ import annotations

from aiogram.types import InlineKeyboardMarkup

from libs.contracts import CatalogProduct
from services.bot import callbacks as cb
from services.bot import keyboards as kb
from services.bot.texts import for_language

T = for_language("ru")


def _products(count: int) -> list[CatalogProduct]:
    return [
        CatalogProduct(f"SKU-{i:02d}", f"Товар {i}", "", 10000 + i, "", "tea", i)
        for i in range(count)
    ]


def _data(markup: InlineKeyboardMarkup) -> list[str]:
    return [b.callback_data or "" for row in markup.inline_keyboard for b in row]


def test_a_long_category_is_paged_with_back() -> None:
    items = _products(kb.PAGE * 2 + 1)
    first = kb.products(T, "tea", items, 0)
    data = _data(first)
    assert sum(d.startswith("p:") for d in data) == kb.PAGE
    assert cb.CategoryPage(category_id="tea", page=1).pack() in data, "a next page"
    assert cb.Menu(to="catalog").pack() in data, "Back to the categories"
    last = kb.products(T, "tea", items, 2)
    assert sum(d.startswith("p:") for d in _data(last)) == 1
    assert cb.CategoryPage(category_id="tea", page=1).pack() in _data(last), "a previous page"
    # A page past the end (a stale button) shows the last page, not nothing.
    assert _data(kb.products(T, "tea", items, 99)) == _data(last)


def test_every_screen_has_a_way_back() -> None:
    item = _products(1)[0]
    screens = [
        kb.categories(T, []),
        kb.product(T, item, 1, 5, 0),
        kb.product(T, item, 1, 0, 0),
        kb.cart(T, []),
        kb.orders(T, []),
    ]
    for markup in screens:
        data = _data(markup)
        assert any(d.startswith(("m:", "c:")) for d in data), data


def test_callback_data_fits_telegrams_64_bytes_for_the_longest_ids() -> None:
    longest = "X" * 40
    for data in (
        cb.ProductCard(sku=longest, qty=99, page=99).pack(),
        cb.FixOrder(sku=longest, qty=999).pack(),
        cb.OrderCard(order_id="261124-ABCDE").pack(),
        cb.Checkout(action="edit", field="address").pack(),
    ):
        assert len(data.encode()) <= 64, data
