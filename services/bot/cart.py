"""The cart's rules, pure: what adding, changing and fixing a line does, how many of a product the
card offers, and what the cart is worth (integer kopecks) against the catalog as it is now.

A cart is `{sku: qty}` in the order the lines were added (services.bot.model.Cart keeps it). A
line whose product left the catalog is kept but neither shown, counted nor ordered: the product
may come back. A line whose product is sold out stays as it is, shown and ordered: the inventory
alone decides what can be had, and answers the order with one-tap fixes (services.bot.messages).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from libs.contracts import CatalogProduct, OrderLine

MAX_QTY = 99  # of one product in a cart
Lines = Mapping[str, int]
Change = Literal["inc", "dec", "del"]


def add(lines: Lines, sku: str, qty: int) -> dict[str, int]:
    """`qty` more of `sku` (at least one; a line holds at most MAX_QTY)."""
    changed = dict(lines)
    changed[sku] = min(MAX_QTY, changed.get(sku, 0) + added(qty))
    return changed


def added(qty: int) -> int:
    """How many an Add to cart press adds: what the card showed, within 1..MAX_QTY."""
    return max(1, min(qty, MAX_QTY))


def change(lines: Lines, sku: str, how: Change) -> dict[str, int]:
    """One more, one less, or none of `sku`: a line that drops to zero leaves the cart."""
    step = {"inc": 1, "dec": -1, "del": -MAX_QTY}[how]
    return set_qty(lines, sku, lines.get(sku, 0) + step)


def set_qty(lines: Lines, sku: str, qty: int) -> dict[str, int]:
    """`sku` set to `qty` (a one-tap fix to what is left); zero or less removes the line."""
    changed = dict(lines)
    if qty > 0:
        changed[sku] = min(qty, MAX_QTY)
    else:
        changed.pop(sku, None)
    return changed


# The product card's quantity picker: the one place the stock limits what a customer picks.
def card_qty(requested: int, available: int) -> int:
    """The quantity a product card shows: at least one, at most what is available (and
    MAX_QTY); a sold-out product's card still shows one, with no Add button."""
    return min(max(1, requested), max(1, min(available, MAX_QTY)))


def card_more(qty: int, available: int) -> int:
    """What the card's ➕ goes to: one more, while that many are available."""
    return min(available, qty + 1)


def card_less(qty: int) -> int:
    """What the card's ➖ goes to: one less, never below one."""
    return max(1, qty - 1)


@dataclass(frozen=True, slots=True)
class Line:
    """A cart line priced by the catalog as it is now."""

    product: CatalogProduct
    qty: int

    @property
    def amount(self) -> int:
        """Kopecks."""
        return self.product.price * self.qty

    def ordered(self) -> OrderLine:
        return OrderLine(self.product.sku, self.qty, self.product.price)


@dataclass(frozen=True, slots=True)
class Priced:
    """What a cart is worth: its lines still in the catalog, and the skus that are not."""

    lines: tuple[Line, ...]
    gone: tuple[str, ...] = ()

    @property
    def total(self) -> int:
        """Kopecks."""
        return sum(line.amount for line in self.lines)

    def ordered(self) -> tuple[OrderLine, ...]:
        return tuple(line.ordered() for line in self.lines)


def priced(lines: Lines, catalog: Mapping[str, CatalogProduct]) -> Priced:
    """The cart against the catalog (`catalog` has at least the cart's products that exist)."""
    found = [Line(catalog[sku], qty) for sku, qty in lines.items() if sku in catalog and qty > 0]
    gone = [sku for sku in lines if sku not in catalog]
    return Priced(tuple(found), tuple(gone))


def total(lines: Iterable[OrderLine]) -> int:
    """An order's total, kopecks."""
    return sum(line.qty * line.unit_price for line in lines)
