"""What the bot keeps and reads: carts, customers' saved details, its view of their orders (in
NATS KV), and the inventory's catalog and stock read models (mirrored in memory)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import datetime

import msgspec
from nats.aio.client import Client
from nats.js import JetStreamContext

from libs import delivery, lifecycle, subjects
from libs.catalog_view import CatalogView
from libs.contracts import CatalogCategory, CatalogProduct, Contact, OrderLine, StockLevel
from libs.kv import Documents, Mirror, decoder
from services.bot.back_in_stock import Watcher

AWAITING_TTL = 86_400.0  # entries (and the markers of removed ones) go after a day
RECENT = 20
_STATUSES = frozenset(status.value for status in lifecycle.Status)


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
    # The order's card in the admin chat (services.bot.desk), edited in place as it moves on.
    admin_message_id: int = 0
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


class OpenOrder(msgspec.Struct, kw_only=True):
    """A sold order the desk still has work on (services.bot.desk.OPEN): what /orders lists,
    without reading every order the shop ever had."""

    order_id: str
    status: str
    total: int
    placed_at: datetime
    customer: str = ""


class Person(msgspec.Struct):
    """Who an admin is, for the cards' history (a step's fact keeps only the user id)."""

    name: str


class Awaiting(msgspec.Struct):
    """An order awaiting payment and not yet reminded: the reminder loop reads these few, not
    every order the shop ever had."""

    order_id: str
    expires_at: datetime


class Store:
    """The bot's buckets, opened once; the catalog and stock from memory (a page view asks NATS
    nothing)."""

    def __init__(
        self,
        carts: Documents[Cart],
        customers: Documents[Contact],
        orders: Documents[OrderView],
        user_orders: Documents[RecentOrders],
        awaiting: Documents[Awaiting],
        catalog: CatalogView,
        open_orders: Documents[OpenOrder],
        people: Documents[Person],
        watchers: Documents[Watcher],
        watching: Mirror[Watcher],
    ) -> None:
        self.carts = carts
        self.customers = customers
        self.orders = orders
        self.user_orders = user_orders
        self.awaiting = awaiting
        self.catalog = catalog
        self.open_orders = open_orders
        self.people = people
        # Who waits for a product to be back: written through `watchers`, read from memory.
        self.watchers = watchers
        self.watching = watching

    @classmethod
    async def open(
        cls,
        nc: Client,
        js: JetStreamContext,
        *,
        replicas: int | None = None,
        stop: asyncio.Event | None = None,
    ) -> Store:
        """The buckets (`replicas` copies each, STREAM_REPLICAS), and the catalog and stock
        loaded whole (no page is shown before); with `stop`, each waited for through a bus
        outage (libs.kv.Documents.open)."""
        r, s = replicas, stop
        watchers = await Documents.open(
            js, subjects.BOT_BACK_IN_STOCK_BUCKET, Watcher, replicas=r, stop=s
        )
        watching = await Mirror.open(nc, js, subjects.BOT_BACK_IN_STOCK_BUCKET, decoder(Watcher))
        return cls(
            await Documents.open(js, subjects.BOT_CARTS_BUCKET, Cart, replicas=r, stop=s),
            await Documents.open(js, subjects.BOT_CUSTOMERS_BUCKET, Contact, replicas=r, stop=s),
            await Documents.open(js, subjects.BOT_ORDERS_BUCKET, OrderView, replicas=r, stop=s),
            await Documents.open(
                js, subjects.BOT_USER_ORDERS_BUCKET, RecentOrders, replicas=r, stop=s
            ),
            await Documents.open(
                js, subjects.BOT_AWAITING_BUCKET, Awaiting, ttl=AWAITING_TTL, replicas=r, stop=s
            ),
            await CatalogView.open(nc, js, replicas=r, stop=s),
            await Documents.open(
                js, subjects.BOT_OPEN_ORDERS_BUCKET, OpenOrder, replicas=r, stop=s
            ),
            await Documents.open(js, subjects.BOT_PEOPLE_BUCKET, Person, replicas=r, stop=s),
            watchers,
            watching,
        )

    async def close(self) -> None:
        await self.catalog.close()
        await self.watching.close()

    # catalog --------------------------------------------------------------------------------------
    async def categories(self) -> list[CatalogCategory]:
        return self.catalog.categories()

    async def products(
        self, category_id: str | None = None, *, hidden: bool = False
    ) -> list[CatalogProduct]:
        """What customers see (and, with `hidden`, what the shop hid from them too)."""
        return self.catalog.products(category_id, hidden=hidden)

    async def product(self, sku: str) -> CatalogProduct | None:
        """A product on sale: one the shop hid is gone for customers (a cart keeps its line)."""
        found = self.catalog.product(sku)
        return found if found is not None and found.visible else None

    async def level(self, sku: str) -> StockLevel | None:
        return self.catalog.level(sku)

    async def category(self, category_id: str) -> CatalogCategory | None:
        return self.catalog.category(category_id)

    # orders ---------------------------------------------------------------------------------------
    async def remember_order(self, view: OrderView) -> None:
        await self.orders.put(view.order_id, view)

        def add(recent: RecentOrders | None) -> RecentOrders:
            ids = [i for i in (recent.order_ids if recent else []) if i != view.order_id]
            return RecentOrders([view.order_id, *ids][:RECENT])

        await self.user_orders.update(str(view.user_id), add)

    async def names(self, ids: Iterable[int]) -> dict[int, str]:
        """The admins' names by user id, for the history of a card (unknown ones left out)."""
        found = {}
        for user_id in set(ids):
            person = await self.people.get(str(user_id))
            if person is not None:
                found[user_id] = person.name
        return found

    async def titles(self, skus: Iterable[str]) -> dict[str, str]:
        """The products' titles (a product gone: left out, named by its sku)."""
        found = delivery.titles(self.catalog.delivery().methods)  # and the delivery methods'
        for sku in dict.fromkeys(skus):
            item = self.catalog.product(sku)
            if item is not None:
                found[sku] = item.title
        return found

    async def recent_orders(self, user_id: int) -> list[OrderView]:
        recent = await self.user_orders.get(str(user_id))
        views = []
        for order_id in recent.order_ids if recent else []:
            view = await self.orders.get(order_id)
            if view is not None:
                views.append(view)
        return views
