"""The catalog and stock in memory (libs.catalog_view): the queries the services ask, changes seen
within moments, and a page view that asks NATS nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from libs import subjects
from libs.catalog_view import CatalogView
from libs.contracts import CatalogCategory, CatalogProduct, StockLevel
from services.bot.model import Store
from tests.harness import ServiceProcess, inventory_ready, order, place, wait_until

Start = Callable[..., ServiceProcess]


def product(sku: str, category: str, position: int, title: str = "", price: int = 100) -> Any:
    return CatalogProduct(sku, title or sku, "", price, "", category, position)


async def _write(js: JetStreamContext, *values: Any) -> None:
    """As the inventory writes its read models: one KV key per category, product and level."""
    catalog, stock, _ = await subjects.declare_buckets(js)
    for value in values:
        match value:
            case CatalogCategory(category_id=key):
                await catalog.put(f"category.{key}", msgspec.json.encode(value))
            case CatalogProduct(sku=key):
                await catalog.put(f"product.{key}", msgspec.json.encode(value))
            case StockLevel(sku=key):
                await stock.put(key, msgspec.json.encode(value))


@pytest.fixture
async def view(nc: Client, js: JetStreamContext) -> AsyncIterator[CatalogView]:
    await _write(
        js,
        CatalogCategory("tea", "Tea", 2),
        CatalogCategory("cups", "Cups", 1),
        CatalogCategory("aaa", "Also first", 1),
        product("GREEN", "tea", 2, "Green tea"),
        product("BLACK", "tea", 1, "Black tea"),
        product("OOLONG", "tea", 1, "Alpine oolong"),
        product("MUG", "cups", 1, "A mug", price=990),
        StockLevel("GREEN", 10, 3, 7, 1),
        StockLevel("BLACK", 2, 2, 0, 2),
        StockLevel("MUG", 1, 0, -1, 3),
    )
    opened = await CatalogView.open(nc, js, heartbeat=0.5)
    yield opened
    await opened.close()


async def test_queries(view: CatalogView) -> None:
    # Loaded whole before open returned.
    assert [c.category_id for c in view.categories()] == ["aaa", "cups", "tea"]
    assert view.category("tea") == CatalogCategory("tea", "Tea", 2)
    assert view.category("nothing") is None
    assert view.category("..") is None
    assert [p.sku for p in view.products("tea")] == ["OOLONG", "BLACK", "GREEN"]  # position, title
    assert [p.sku for p in view.products("cups")] == ["MUG"]
    assert view.products("aaa") == []
    assert [p.sku for p in view.products()] == ["MUG", "OOLONG", "BLACK", "GREEN"]
    assert view.product("MUG") == product("MUG", "cups", 1, "A mug", price=990)
    assert view.product("NOPE") is None
    assert view.level("GREEN") == StockLevel("GREEN", 10, 3, 7, 1)
    assert view.level("OOLONG") is None
    assert [view.available(s) for s in ("GREEN", "BLACK", "MUG", "OOLONG")] == [7, 0, 0, 0]
    assert view.titles(["GREEN", "MUG", "NOPE"]) == {"GREEN": "Green tea", "MUG": "A mug"}
    assert [level.sku for level, _ in view.levels()] == ["BLACK", "GREEN", "MUG"]
    # A caller changing what it was given changes nothing here.
    view.products("tea").clear()
    assert len(view.products("tea")) == 3


async def test_changes_are_seen_within_moments(js: JetStreamContext, view: CatalogView) -> None:
    await _write(
        js,
        product("GREEN", "tea", 2, "Green tea", price=150),  # a new price
        product("WHITE", "tea", 0, "White tea"),  # a new product, first in its category
        CatalogCategory("cups", "Cups and mugs", 1),
        StockLevel("BLACK", 12, 2, 10, 4),  # restocked
    )
    await wait_until(
        lambda: (
            [p.sku for p in view.products("tea")] == ["WHITE", "OOLONG", "BLACK", "GREEN"]
            and view.available("BLACK") == 10
            and view.category("cups") == CatalogCategory("cups", "Cups and mugs", 1)
        ),
        what="the new product, the restock and the renamed category",
    )
    green = view.product("GREEN")
    assert green is not None and green.price == 150
    catalog = await js.key_value(subjects.CATALOG_BUCKET)
    await catalog.delete("product.OOLONG")
    await wait_until(lambda: view.product("OOLONG") is None, what="the product removed")
    assert [p.sku for p in view.products("tea")] == ["WHITE", "BLACK", "GREEN"]


async def test_page_views_create_no_consumer_and_ask_nats_nothing(
    nc: Client, js: JetStreamContext, view: CatalogView
) -> None:
    store = await Store.open(nc, js)
    created: list[str] = []
    requests: list[str] = []

    async def on_created(msg: Msg) -> None:
        created.append(msg.subject)

    async def on_request(msg: Msg) -> None:
        requests.append(msg.subject)

    await nc.subscribe("$JS.EVENT.ADVISORY.CONSUMER.CREATED.>", cb=on_created)
    await nc.subscribe("$JS.API.>", cb=on_request)
    await nc.flush()
    try:
        for _ in range(500):  # catalog, a category, a product card: as customers tap
            categories = await store.categories()
            assert [c.category_id for c in categories] == ["aaa", "cups", "tea"]
            found = await store.category("tea")
            assert found is not None
            assert len(await store.products(found.category_id)) == 3
            item = await store.product("GREEN")
            assert item is not None and item.title == "Green tea"
            level = await store.level("GREEN")
            assert level is not None and level.available == 7
        await nc.flush()
        await js.stream_info(subjects.ORDERS)  # one request made here: the counting works
        await nc.flush()
        await wait_until(lambda: requests != [], what="the request seen")
        assert created == [], "no JetStream consumer per page view"
        assert requests == ["$JS.API.STREAM.INFO.ORDERS"], "no JetStream request per page view"
    finally:
        await store.close()


async def test_the_inventory_read_models_as_the_bot_sees_them(
    nc: Client, js: JetStreamContext, nats_url: str, services: Start, catalog_file: Path
) -> None:
    services("inventory", nats_url, catalog_file=catalog_file)
    await wait_until(lambda: inventory_ready(js), what="inventory ready")
    view = await CatalogView.open(nc, js)
    try:
        assert [p.sku for p in view.products("goods")] == ["LAST", "MANY", "FEW"]
        assert view.available("LAST") == 10
        await place(js, order("o1", ("LAST", 3, 100_00)))
        await wait_until(lambda: view.available("LAST") == 7, what="the reservation seen")
    finally:
        await view.close()
