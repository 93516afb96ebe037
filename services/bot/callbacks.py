"""Every inline button's data, in one place: one typed class per action, short prefixes.

Telegram allows 64 bytes of callback data; SKUs and order ids are tokens of at most 64
characters, so the longest fields are checked when packed (aiogram raises if too long).
"""

from __future__ import annotations

from typing import Literal

from aiogram.filters.callback_data import CallbackData


class Menu(CallbackData, prefix="m"):
    to: Literal["catalog", "cart", "orders", "help", "home"]


class CategoryPage(CallbackData, prefix="c"):
    category_id: str
    page: int = 0


class ProductCard(CallbackData, prefix="p"):
    sku: str
    qty: int = 1
    page: int = 0  # the category page to go back to


class AddToCart(CallbackData, prefix="a"):
    sku: str
    qty: int


class CartLine(CallbackData, prefix="l"):
    action: Literal["inc", "dec", "del"]
    sku: str


class CartAction(CallbackData, prefix="k"):
    action: Literal["clear", "checkout"]


class Checkout(CallbackData, prefix="o"):
    action: Literal["confirm", "edit", "reuse", "fresh", "cancel", "skip"]
    field: str = ""


class OrderCard(CallbackData, prefix="v"):
    order_id: str


class FixOrder(CallbackData, prefix="f"):
    """A one-tap fix after an out-of-stock answer: set a line to what is left (0 removes it)."""

    sku: str
    qty: int
