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


class SearchPage(CallbackData, prefix="s"):
    """A page of the customer's last search's results (the words are in their conversation's
    data: too long for a button)."""

    page: int = 0


class FoundCard(CallbackData, prefix="pf"):
    """A product's card opened from search results: Back goes to the results' page."""

    sku: str
    qty: int = 1
    page: int = 0


class BackInStock(CallbackData, prefix="b"):
    """A sold-out product's "tell me when it is back" (the card's page and whether it was opened
    from search, to show the card again as it was)."""

    sku: str
    page: int = 0
    found: bool = False


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


class Choose(CallbackData, prefix="g"):
    """A checkout question answered with a button: the delivery method's id, the way to pay
    (stale once the shop no longer offers it)."""

    field: str
    value: str


class OrderCard(CallbackData, prefix="v"):
    order_id: str


class FixOrder(CallbackData, prefix="f"):
    """A one-tap fix after an out-of-stock answer: set a line to what is left (0 removes it)."""

    sku: str
    qty: int


# The admin chat's order desk (services.bot.desk) --------------------------------------------------
class Desk(CallbackData, prefix="d"):
    """A button of an order's admin card: a step (libs.fulfilment), or one of the dialogs
    (cancel with refund, return some lines) opened, confirmed or dropped."""

    order_id: str
    action: Literal[
        "packed",
        "shipped",
        "ready_for_pickup",
        "delivered",
        "cancel",
        "cancel_yes",
        "return",
        "card",
        "open",
        "no_tracking",
        "drop",
        "cash_paid",
        "release",
    ]


class DeskCarrier(CallbackData, prefix="dk"):
    """The carrier of a shipment whose number's format did not name one."""

    order_id: str
    carrier: str


class DeskReturn(CallbackData, prefix="dr"):
    """The partial return's picker: one line more or less (by its place in the order), then on
    to the amount, then back to stock or written off."""

    order_id: str
    action: Literal["more", "less", "next", "stock", "write_off"]
    line: int = 0


class DeskList(CallbackData, prefix="dl"):
    """A page of /orders."""

    page: int = 0


class CustomerCancel(CallbackData, prefix="x"):
    """A customer cancels their own paid order (asked, then confirmed)."""

    order_id: str
    sure: bool = False


# The admin chat's catalog desk (services.bot.catalog_desk) ----------------------------------------
class CatalogList(CallbackData, prefix="cl"):
    """A page of the admins' /catalog."""

    page: int = 0


class CatalogCard(CallbackData, prefix="cc"):
    """A product's admin card (from the list, or back to it from a question: the question is
    dropped)."""

    sku: str


class CatalogRestock(CallbackData, prefix="cr"):
    """+1 or +5 on a product's card: `op` was chosen when the card was shown and makes the
    inventory's adjustment id, so a double tap restocks once."""

    sku: str
    qty: int
    op: str


class CatalogAsk(CallbackData, prefix="cq"):
    """A card's question answered by typing (a number, a price) or by sending a photo."""

    sku: str
    field: Literal["restock", "write_off", "price", "photo"]


class CatalogShown(CallbackData, prefix="cv"):
    """Hide a product from customers or show it again (idempotent by value)."""

    sku: str
    visible: bool


class CatalogNew(CallbackData, prefix="cn"):
    """The new product's form: started, a question skipped, or dropped."""

    action: Literal["start", "skip", "drop"]


class CatalogNewCategory(CallbackData, prefix="cg"):
    """The new product's category, chosen with a button."""

    category_id: str
