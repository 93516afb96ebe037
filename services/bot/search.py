"""The shop window's search: the products on sale whose title and description hold every word a
customer typed (case and е/ё aside). Pure: no I/O, over the catalog's products."""

from __future__ import annotations

import re
from collections.abc import Iterable

from libs.contracts import CatalogProduct

_WORD = re.compile(r"\w+")
MAX_WORDS = 8  # a pasted paragraph is not a query: its first words are


def words(text: str) -> tuple[str, ...]:
    """The words of `text`, folded: lower case (casefold), ё as е, punctuation dropped."""
    folded = _fold(text)
    return tuple(dict.fromkeys(_WORD.findall(folded)))[:MAX_WORDS]


def _fold(text: str) -> str:
    return text.casefold().replace("ё", "е")


def matches(item: CatalogProduct, query: tuple[str, ...]) -> bool:
    """Every word of the query is in the title or the description (a part of a word counts:
    "чай" finds "Чайник", so a word typed short or with another ending still finds)."""
    haystack = _fold(f"{item.title}\n{item.description}")
    return bool(query) and all(word in haystack for word in query)


def search(products: Iterable[CatalogProduct], text: str) -> list[CatalogProduct]:
    """The products matching `text`, in the catalog's order; those hidden from customers never
    (the caller passes what is on sale, but a hidden one is left out here too)."""
    query = words(text)
    return [item for item in products if item.visible and matches(item, query)]
