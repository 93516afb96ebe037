"""What the bot keeps and reads: carts, customers' saved details, its view of their orders, and
the inventory's catalog and stock read models. All in NATS KV, none in memory."""

from __future__ import annotations

from datetime import datetime
from typing import TypeVar

import msgspec
import nats.js.errors
from nats.js import JetStreamContext

from libs import lifecycle, subjects
from libs.contracts import CatalogCategory, CatalogProduct, Contact, OrderLine, StockLevel
from libs.kv import Documents, entries

AWAITING_TTL = 86_400.0  # entries (and the markers of removed ones) go after a day
RECENT = 20
_STATUSES = frozenset(status.value for status in lifecycle.Status)
T = TypeVar("T")


class Cart(msgspec.Struct):
    lines: dict[str, int] = {}  # sku -> qty, in the order added


class OrderView(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The bot's view of one order: what the customer placed, the order's lifecycle state with
    every fact the bot was told folded in (libs.lifecycle), and what the bot itself did."""

    order_id: str
    user_id: int
    chat_id: int
    language: str
    lines: tuple[OrderLine, ...]
    total: int
    placed_at: datetime
    # None in a view stored before the bot kept the lifecycle's state (see `state`).
    order: lifecycle.Order | None = None
    message_id: int = 0  # the order's message (reserving..., then the Pay button)
    reminded: bool = False
    said: tuple[str, ...] = ()  # the notices told of it (services.bot.notices), each once
    contact: Contact = Contact()
    # What such an older view said the status was; shown until a fact comes.
    legacy_status: str = msgspec.field(default="", name="status")

    @property
    def state(self) -> lifecycle.Order:
        """The order's lifecycle state (an older view's: what was placed, facts fold on it)."""
        if self.order is not None:
            return self.order
        return lifecycle.Order(
            order_id=self.order_id,
            customer_id=self.user_id,
            chat_id=self.chat_id,
            contact=self.contact,
            lines=self.lines,
            total=self.total,
            placed_at=self.placed_at,
        )

    @property
    def status(self) -> lifecycle.Status:
        if self.order is None and self.legacy_status in _STATUSES:
            return lifecycle.Status(self.legacy_status)
        return self.state.status

    def with_fact(self, fact: lifecycle.OrderFact) -> OrderView:
        """This view with one more fact folded in (the same view if it said nothing new)."""
        order = lifecycle.evolve(self.state, fact)
        return self if order == self.order else msgspec.structs.replace(self, order=order)


class RecentOrders(msgspec.Struct):
    order_ids: list[str] = []


class Awaiting(msgspec.Struct):
    """An order awaiting payment and not yet reminded: the reminder loop reads these few, not
    every order the shop ever had."""

    order_id: str
    expires_at: datetime


class Store:
    """The bot's buckets, opened once."""

    def __init__(
        self,
        carts: Documents[Cart],
        customers: Documents[Contact],
        orders: Documents[OrderView],
        user_orders: Documents[RecentOrders],
        awaiting: Documents[Awaiting],
        catalog: object,
        stock: object,
        js: JetStreamContext,
    ) -> None:
        self.carts = carts
        self.customers = customers
        self.orders = orders
        self.user_orders = user_orders
        self.awaiting = awaiting
        self._catalog = catalog
        self._stock = stock
        self._js = js

    @classmethod
    async def open(cls, js: JetStreamContext) -> Store:
        catalog, stock, _ = await subjects.declare_buckets(js)
        return cls(
            await Documents.open(js, subjects.BOT_CARTS_BUCKET, Cart),
            await Documents.open(js, subjects.BOT_CUSTOMERS_BUCKET, Contact),
            await Documents.open(js, subjects.BOT_ORDERS_BUCKET, OrderView),
            await Documents.open(js, subjects.BOT_USER_ORDERS_BUCKET, RecentOrders),
            await Documents.open(js, subjects.BOT_AWAITING_BUCKET, Awaiting, ttl=AWAITING_TTL),
            catalog,
            stock,
            js,
        )

    # catalog --------------------------------------------------------------------------------------
    async def categories(self) -> list[CatalogCategory]:
        found = [c for c in await self._all("category.", CatalogCategory)]
        return sorted(found, key=lambda c: (c.position, c.title))

    async def products(self, category_id: str | None = None) -> list[CatalogProduct]:
        found = [
            p
            for p in await self._all("product.", CatalogProduct)
            if category_id is None or p.category_id == category_id
        ]
        return sorted(found, key=lambda p: (p.position, p.title))

    async def product(self, sku: str) -> CatalogProduct | None:
        return await self._get(self._catalog, f"product.{sku}", CatalogProduct)

    async def level(self, sku: str) -> StockLevel | None:
        return await self._get(self._stock, sku, StockLevel)

    async def category(self, category_id: str) -> CatalogCategory | None:
        return await self._get(self._catalog, f"category.{category_id}", CatalogCategory)

    async def _all(self, prefix: str, kind: type[T]) -> list[T]:
        found = (
            _decode(value, kind)
            for _, value in await entries(self._js, subjects.CATALOG_BUCKET, f"{prefix}>")
        )
        return [item for item in found if item is not None]

    @staticmethod
    async def _get(kv: object, key: str, kind: type[T]) -> T | None:
        try:
            entry = await kv.get(key)  # type: ignore[attr-defined]
        except nats.js.errors.KeyNotFoundError:
            return None
        return _decode(entry.value, kind)

    # orders ---------------------------------------------------------------------------------------
    async def remember_order(self, view: OrderView) -> None:
        await self.orders.put(view.order_id, view)

        def add(recent: RecentOrders | None) -> RecentOrders:
            ids = [i for i in (recent.order_ids if recent else []) if i != view.order_id]
            return RecentOrders([view.order_id, *ids][:RECENT])

        await self.user_orders.update(str(view.user_id), add)

    async def recent_orders(self, user_id: int) -> list[OrderView]:
        recent = await self.user_orders.get(str(user_id))
        views = []
        for order_id in recent.order_ids if recent else []:
            view = await self.orders.get(order_id)
            if view is not None:
                views.append(view)
        return views


def _decode(value: bytes | None, kind: type[T]) -> T | None:
    """A read model's value, or None if empty or unreadable (written by a newer version?)."""
    if not value:
        return None
    try:
        return msgspec.json.decode(value, type=kind)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
