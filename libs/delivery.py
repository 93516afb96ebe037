"""What delivering a cart costs, and where a method delivers; pure, in kopecks and grams.

The shop's methods come from its catalog (the `delivery` section, `DeliverySet` on the bus):
pickup (free, or a price), a courier within its cities, the post priced by weight. The bot
shows each method's price for the cart; the inventory prices the order again the same way, so a
forged or stale delivery price is refused like a forged product price.
"""

from __future__ import annotations

from collections.abc import Iterable

from libs.contracts import DeliveryMethod, OrderLine

KILOGRAM = 1000  # grams
SKU_PREFIX = "delivery:"


def as_sku(method_id: str) -> str:
    """The delivery where a receipt or the Sales ledger names a product: `delivery:<method id>`,
    which no product's SKU can be (a SKU has no colon), so one titles map serves both."""
    return SKU_PREFIX + method_id


def titles(methods: Iterable[DeliveryMethod]) -> dict[str, str]:
    """`as_sku(method id)` -> the method's title, for the shop's methods."""
    return {as_sku(method.id): method.title for method in methods}


def weight(lines: Iterable[OrderLine], weights: dict[str, int]) -> int:
    """The cart's weight in grams (a product without a weight weighs nothing here)."""
    return sum(line.qty * weights.get(line.sku, 0) for line in lines)


def price(method: DeliveryMethod, goods: int, grams: int = 0) -> int:
    """The method's price for goods worth `goods` kopecks weighing `grams`."""
    if method.free_from and goods >= method.free_from:
        return 0
    over = max(0, grams - method.base_weight)
    started_kilograms = -(-over // KILOGRAM)  # every started kilogram counts
    return method.price + started_kilograms * method.per_kg


def _city(name: str) -> str:
    return " ".join(name.casefold().replace("ё", "е").replace("г.", " ").split())


def serves(method: DeliveryMethod, city: str) -> bool:
    """Whether the method delivers to `city` (a courier with no cities listed goes anywhere)."""
    if method.kind != "courier" or not method.cities:
        return True
    return _city(city) in {_city(c) for c in method.cities}


def needs_address(method: DeliveryMethod) -> bool:
    return method.kind != "pickup"
