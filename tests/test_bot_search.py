"""The shop window's search, without Telegram: which products a customer's words find, and the
results' keyboard."""

from __future__ import annotations

from aiogram.types import InlineKeyboardMarkup

from libs.contracts import CatalogProduct
from services.bot import callbacks as cb
from services.bot import keyboards as kb
from services.bot.search import MAX_WORDS, search, words
from services.bot.texts import for_language

T = for_language("ru")


def _item(sku: str, title: str, description: str = "", *, visible: bool = True) -> CatalogProduct:
    return CatalogProduct(sku, title, description, 10000, "", "tea", 0, visible=visible)


CATALOG = [
    _item("GREEN", "Зелёный чай", "Китай, листовой"),
    _item("BLACK", "Чёрный чай", "Ассам, крупный лист"),
    _item("KETTLE", "Чайник", "Стекло, 1 л"),
    _item("HONEY", "Мёд гречишный", "Алтай"),
    _item("OLD", "Старый чай", "снят с продажи", visible=False),
]


def _skus(text: str) -> list[str]:
    return [item.sku for item in search(CATALOG, text)]


def test_words_are_folded_case_and_yo_and_punctuation_dropped() -> None:
    assert words("  ЗЕЛЁНЫЙ,  чай!! ") == ("зеленый", "чай")
    assert words("чай чай") == ("чай",)
    assert words("?!") == ()
    assert len(words(" ".join(f"w{i}" for i in range(50)))) == MAX_WORDS


def test_title_and_description_case_insensitive_and_yo_alike() -> None:
    assert _skus("зеленый") == ["GREEN"], "е finds ё"
    assert _skus("ЧЁРНЫЙ") == ["BLACK"]
    assert _skus("мед") == ["HONEY"]
    assert _skus("ассам") == ["BLACK"], "the description counts"
    assert _skus("стекло") == ["KETTLE"]


def test_every_word_must_match_in_the_catalogs_order() -> None:
    assert _skus("чай") == ["GREEN", "BLACK", "KETTLE"], "a part of a word counts"
    assert _skus("чай лист") == ["GREEN", "BLACK"]
    assert _skus("китай лист") == ["GREEN"]
    assert _skus("чай алтай") == []


def test_hidden_products_and_empty_queries_find_nothing() -> None:
    assert _skus("старый") == []
    assert _skus("") == []
    assert _skus("…") == []


def _data(markup: InlineKeyboardMarkup) -> list[str]:
    return [b.callback_data or "" for row in markup.inline_keyboard for b in row]


def test_results_are_paged_like_a_category_with_cards_that_come_back_to_them() -> None:
    many = [_item(f"T{i:02d}", f"Чай {i}") for i in range(kb.PAGE + 2)]
    first = _data(kb.found(T, many, 0))
    assert sum(d.startswith("pf:") for d in first) == kb.PAGE
    assert cb.SearchPage(page=1).pack() in first and cb.Menu(to="catalog").pack() in first
    assert sum(d.startswith("pf:") for d in _data(kb.found(T, many, 1))) == 2
    card = _data(kb.product(T, many[0], 1, 5, 1, from_search=True))
    assert cb.SearchPage(page=1).pack() in card, "Back to the results' page"
    assert all(not d.startswith("p:") for d in card), "the card's buttons stay in the search"
    assert cb.Menu(to="catalog").pack() in _data(kb.nothing_found(T))
