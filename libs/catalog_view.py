"""The inventory's catalog and stock read models, mirrored in memory: what the bot shows and the
titles payments and crm_sync write, read with no request to NATS."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from datetime import datetime
from typing import Any

import msgspec
from nats.aio.client import Client
from nats.js import JetStreamContext

from libs import bus, subjects
from libs.contracts import CatalogCategory, CatalogDelivery, CatalogProduct, StockLevel
from libs.kv import HEARTBEAT_S, Mirror, decoder

CatalogEntry = CatalogCategory | CatalogProduct | CatalogDelivery
_category = msgspec.json.Decoder(CatalogCategory).decode
_product = msgspec.json.Decoder(CatalogProduct).decode
_delivery = msgspec.json.Decoder(CatalogDelivery).decode


def _catalog_entry(key: str, raw: bytes) -> CatalogEntry | None:
    """The catalog bucket's keys: category.<id>, product.<sku>, delivery."""
    if not raw:
        return None
    if key.startswith("category."):
        return _category(raw)
    if key.startswith("product."):
        return _product(raw)
    if key == subjects.CATALOG_DELIVERY_KEY:
        return _delivery(raw)
    return None


class CatalogView:
    """Categories, products and stock levels as the inventory last wrote them, within moments."""

    def __init__(self, catalog: Mirror[CatalogEntry], stock: Mirror[StockLevel]) -> None:
        self.catalog = catalog
        self.stock = stock
        self._indexed = -1  # the catalog's version the lists below are of
        self._categories: list[CatalogCategory] = []
        self._products: list[CatalogProduct] = []
        self._by_category: dict[str, list[CatalogProduct]] = {}

    @classmethod
    async def open(
        cls,
        nc: Client,
        js: JetStreamContext,
        *,
        heartbeat: float = HEARTBEAT_S,
        replicas: int | None = None,
        stop: asyncio.Event | None = None,
    ) -> CatalogView:
        """Both buckets (declared if new) loaded whole, then kept current until `close`.

        With `stop` (a service starting), the buckets are waited for through bus outages until
        stopped (bus.outlasting; the mirrors wait on their own); without, the first error is
        raised.
        """

        def declare() -> Awaitable[Any]:
            return subjects.declare_buckets(js, replicas=replicas)

        await (declare() if stop is None else bus.outlasting(declare, "catalog buckets", stop))
        catalog: Mirror[CatalogEntry] = await Mirror.open(
            nc, js, subjects.CATALOG_BUCKET, _catalog_entry, heartbeat=heartbeat
        )
        try:
            stock = await Mirror.open(
                nc, js, subjects.STOCK_BUCKET, decoder(StockLevel), heartbeat=heartbeat
            )
        except BaseException:
            await catalog.close()
            raise
        return cls(catalog, stock)

    async def close(self) -> None:
        await self.catalog.close()
        await self.stock.close()

    # the catalog ----------------------------------------------------------------------------------
    def delivery(self) -> CatalogDelivery:
        """The shop's delivery methods and minimum order (none before a catalog sets them)."""
        found = self.catalog.get(subjects.CATALOG_DELIVERY_KEY)
        return found if isinstance(found, CatalogDelivery) else CatalogDelivery()

    def categories(self) -> list[CatalogCategory]:
        """Every category, in the shop's order."""
        self._index()
        return list(self._categories)

    def category(self, category_id: str) -> CatalogCategory | None:
        found = self.catalog.get(f"category.{category_id}")
        return found if isinstance(found, CatalogCategory) else None

    def products(
        self, category_id: str | None = None, *, hidden: bool = False
    ) -> list[CatalogProduct]:
        """The category's products (every product if None), in the shop's order; those hidden
        from customers only with `hidden` (the admins' lists)."""
        self._index()
        found = self._products if category_id is None else self._by_category.get(category_id, ())
        return [p for p in found if hidden or p.visible]

    def product(self, sku: str) -> CatalogProduct | None:
        found = self.catalog.get(f"product.{sku}")
        return found if isinstance(found, CatalogProduct) else None

    def titles(self, skus: Iterable[str]) -> dict[str, str]:
        """sku -> title, for those of `skus` in the catalog."""
        found = {sku: self.product(sku) for sku in skus}
        return {sku: product.title for sku, product in found.items() if product is not None}

    # stock ----------------------------------------------------------------------------------------
    def level(self, sku: str) -> StockLevel | None:
        return self.stock.get(sku)

    def available(self, sku: str) -> int:
        """How many can be bought now (0 for a product with no level)."""
        level = self.stock.get(sku)
        return max(0, level.available) if level is not None else 0

    def levels(self) -> list[tuple[StockLevel, datetime]]:
        """Every product's level with when it was written, by SKU."""
        return sorted(
            ((held.value, held.at) for _, held in self.stock.items()), key=lambda x: x[0].sku
        )

    def _index(self) -> None:
        """The sorted lists, made again only when the catalog changed since."""
        version = self.catalog.version
        if version == self._indexed:
            return
        categories: list[CatalogCategory] = []
        products: list[CatalogProduct] = []
        for _, held in self.catalog.items():
            if isinstance(held.value, CatalogCategory):
                categories.append(held.value)
            elif isinstance(held.value, CatalogProduct):
                products.append(held.value)
        categories.sort(key=lambda c: (c.position, c.title))
        products.sort(key=lambda p: (p.position, p.title))
        by_category: dict[str, list[CatalogProduct]] = {}
        for product in products:
            by_category.setdefault(product.category_id, []).append(product)
        self._categories, self._products, self._by_category = categories, products, by_category
        self._indexed = version
