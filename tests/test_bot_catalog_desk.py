"""The admin chat as a catalog desk, without Telegram or NATS: /catalog's pages with stock and
hidden products marked, a product's card and its buttons (ids fixed when shown), what typed
answers mean, the new product's form as a table, its SKU and its commands."""

from __future__ import annotations

import re

import pytest

from libs.contracts import (
    AdjustStock,
    CatalogCategory,
    CatalogProduct,
    StockLevel,
    UpsertProduct,
)
from services.bot import callbacks as cb
from services.bot import catalog_desk as desk
from services.bot.messages import Message, Text, render
from services.bot.texts import for_language

RU, EN = for_language("ru"), for_language("en")
GOODS = CatalogCategory("goods", "Goods", 1)


def product(sku: str = "FEW", *, visible: bool = True, photo: str = "") -> CatalogProduct:
    return CatalogProduct(sku, f"Title {sku}", "", 99_000, photo, "goods", 1, visible=visible)


def level(sku: str = "FEW", on_hand: int = 7, reserved: int = 2) -> StockLevel:
    return StockLevel(sku, on_hand, reserved, on_hand - reserved, 1)


def labels(message: Message) -> list[str]:
    return [render(RU, b.text) for row in message.buttons for b in row]


def datas(message: Message) -> list[str]:
    return [b.data for row in message.buttons for b in row]


def test_the_list_shows_stock_marks_hidden_products_and_offers_to_add_one() -> None:
    shown = desk.listing(
        [product("FEW"), product("OFF", visible=False)], {"FEW": level(), "OFF": level("OFF")}, 0
    )
    text = render(RU, shown.text)
    assert "Товары: 2" in text and "скрыто от покупателей: 1" in text
    assert labels(shown) == [
        "Title FEW · 990 ₽ · 7/5",
        "🙈 Title OFF · 990 ₽ · 7/5",
        "➕ Добавить товар",
    ]
    assert datas(shown)[0] == cb.CatalogCard(sku="FEW").pack()


def test_the_list_is_paged_and_a_page_beyond_is_the_last() -> None:
    many = [product(f"P{i:02d}") for i in range(desk.PAGE * 2 + 1)]
    last = desk.listing(many, {}, 99)
    assert labels(last)[0] == "Title P16 · 990 ₽ · 0/0"
    assert "3/3" in labels(last) and cb.CatalogList(page=1).pack() in datas(last)
    assert desk.page_of(many, "P09") == 1 and desk.page_of(many, "NONE") == 0


def test_an_empty_shop_can_still_add_a_product() -> None:
    shown = desk.listing([], {}, 0)
    assert shown.text_key == "catalog_desk.empty"
    assert datas(shown) == [cb.CatalogNew(action="start").pack()]


def test_the_card_says_price_stock_and_visibility_with_a_button_for_each_change() -> None:
    shown = desk.card(product(), level(), GOODS, "abc", page=2)
    text = render(RU, shown.text)
    assert "990 ₽" in text and "На складе: 7, в резерве: 2, доступно: <b>5</b>" in text
    assert "Виден покупателям" in text and "Фото нет" in text and "Раздел: Goods" in text
    assert labels(shown) == [
        "+1",
        "+5",
        "📦 Пополнить…",
        "🗑 Списать…",
        "💰 Цена…",
        "🙈 Скрыть",
        "🖼 Фото…",
        "◀︎ К списку",
    ]
    data = datas(shown)
    # The restocks' ids are fixed when the card is shown: the same tap twice is one restock.
    assert data[0] == cb.CatalogRestock(sku="FEW", qty=1, op="abc1").pack()
    assert data[1] == cb.CatalogRestock(sku="FEW", qty=5, op="abc5").pack()
    assert data[5] == cb.CatalogShown(sku="FEW", visible=False).pack()
    assert data[-1] == cb.CatalogList(page=2).pack()
    assert all(len(d.encode()) <= 64 for d in data)


def test_a_hidden_product_with_a_photo_offers_to_show_it() -> None:
    shown = desk.card(product(visible=False, photo="AgAC123"), level(), None, "abc")
    text = render(EN, shown.text)
    assert "Hidden from customers" in text and "Has a photo" in text and "Category: goods" in text
    assert cb.CatalogShown(sku="FEW", visible=True).pack() in datas(shown)


@pytest.mark.parametrize(
    ("typed", "kopecks"),
    [("890", 89_000), ("1 290,90", 129_090), ("1290.5 ₽", 129_050), ("0.01", 1)],
)
def test_prices_are_rubles_with_at_most_two_decimals(typed: str, kopecks: int) -> None:
    assert desk.parse_price(typed) == kopecks


@pytest.mark.parametrize("typed", ["", "abc", "0", "-5", "12.345", "1e3x", "nan", "9" * 12])
def test_a_price_that_is_not_one_gets_a_hint(typed: str) -> None:
    assert desk.parse_price(typed) == Text("catalog_desk.hint.price")


def test_counts_are_whole_pieces() -> None:
    assert desk.parse_count("5") == 5 and desk.parse_count(" +12 ") == 12
    for typed in ("0", "-1", "2.5", "пять", str(desk.MAX_COUNT + 1)):
        assert isinstance(desk.parse_count(typed), Text), typed
    assert desk.parse_count("0", zero=True) == 0


def test_a_write_off_beyond_what_is_available_is_refused_with_the_numbers() -> None:
    assert desk.write_off_refused(3, 3) is None
    refused = desk.write_off_refused(5, 3)
    assert refused is not None
    assert "Списать 5 шт. нельзя: доступно только 3" in render(RU, refused)


def test_the_inventorys_refusal_is_said_as_it_is() -> None:
    error = "FEW: cannot write off 5, only 3 available"
    assert error in render(EN, desk.refused(error, toast=True))
    assert error in render(RU, desk.refused(error, toast=False))


def test_the_form_asks_each_question_in_turn_until_complete() -> None:
    answers: dict[str, desk.Answer] = {}
    asked = []
    values: dict[str, desk.Answer] = {
        "category": "goods",
        "title": "Чай",
        "price": 50_000,
        "stock": 3,
        "description": "",
        "photo": "",
    }
    while (field := desk.next_field(answers)) is not None:
        asked.append(field.name)
        answers[field.name] = values[field.name]
    assert asked == ["category", "title", "price", "stock", "description", "photo"]


def test_the_category_question_has_a_button_per_category_and_optional_ones_skip() -> None:
    other = CatalogCategory("tea", "Чай", 2)
    first = desk.question(desk.FIELD["category"], [GOODS, other])
    assert labels(first) == ["Goods", "Чай", "Отмена"]
    assert datas(first)[1] == cb.CatalogNewCategory(category_id="tea").pack()
    assert labels(desk.question(desk.FIELD["photo"], [])) == ["Пропустить", "Отмена"]
    assert labels(desk.question(desk.FIELD["title"], [])) == ["Отмена"]


def test_skus_are_readable_latin_tokens() -> None:
    assert desk.sku_for("Чай зелёный", "7k2q") == "CHAY-ZELENYY-7K2Q"
    assert desk.sku_for("Подъезд №5", "ab") == "PODEZD-5-AB"
    assert desk.sku_for("★★★", "ab") == "P-AB"
    long = desk.sku_for("Очень длинное название товара, которое не влезает", "ab12")
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,64}", long) and len(long) <= 29


def test_a_new_sku_taken_by_a_different_product_gets_another_suffix() -> None:
    answers: dict[str, desk.Answer] = {"category": "goods", "title": "Чай", "price": 50_000}
    other = CatalogProduct("CHAY-AB12", "Чай", "", 70_000, "", "goods", 1)  # another «Чай»
    catalog = {other.sku: other}
    suffixes = iter(["ab12", "cd34"])  # the first fresh one collides too

    sku, suffix = desk.free_sku(answers, "ab12", catalog.get, lambda: next(suffixes))
    assert (sku, suffix) == ("CHAY-CD34", "cd34")

    # Once the form's own product is in the catalog, a tap again keeps its SKU.
    mine = CatalogProduct("CHAY-CD34", "Чай", "", 50_000, "", "goods", 2)
    catalog[mine.sku] = mine

    def never() -> str:
        raise AssertionError("no new suffix needed")

    assert desk.free_sku(answers, "cd34", catalog.get, never) == (sku, suffix)
    assert desk.free_sku(answers, "ef56", catalog.get, never) == (
        "CHAY-EF56",
        "ef56",
    )


def test_a_new_product_is_an_upsert_and_its_stock_a_restock_with_the_forms_id() -> None:
    answers: dict[str, desk.Answer] = {
        "category": "goods",
        "title": "Чай",
        "price": 50_000,
        "stock": 3,
        "description": "",
        "photo": "AgAC1",
    }
    commands = desk.new_product(answers, "CHAY-AB", "op1", 4)
    assert commands == (
        UpsertProduct("CHAY-AB", "Чай", 50_000, "goods", "", "AgAC1", 4),
        AdjustStock("desk-op1", "CHAY-AB", 3, "restock"),
    )
    assert desk.new_product({**answers, "stock": 0}, "CHAY-AB", "op1", 4) == commands[:1]
    said = render(RU, desk.added(answers, "CHAY-AB").text)
    assert "«Чай»" in said and "CHAY-AB" in said and "500 ₽" in said
