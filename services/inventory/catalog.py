"""A catalog file (YAML) as inventory commands: categories, products and counted stock."""

from __future__ import annotations

from pathlib import Path

import msgspec
import yaml

from libs.contracts import CountStock, Token, UpsertCategory, UpsertProduct
from libs.money import rubles_to_kopecks

DEMO_CATALOG = Path(__file__).with_name("demo_catalog.yaml")


class CatalogError(Exception):
    """The file cannot be imported; the message says where and why."""


class _Product(msgspec.Struct, forbid_unknown_fields=True):
    sku: Token
    title: str
    price: str | int | float  # rubles, at most two decimals
    description: str = ""
    photo: str = ""
    stock: int | None = None  # counted on hand; omitted leaves stock as it is


class _Category(msgspec.Struct, forbid_unknown_fields=True):
    id: Token
    title: str
    products: list[_Product] = []


class _CatalogFile(msgspec.Struct, forbid_unknown_fields=True):
    categories: list[_Category]
    shop: str = ""


Commands = list[UpsertCategory | UpsertProduct | CountStock]


def load(path: Path) -> Commands:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CatalogError(f"{path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise CatalogError(f"{path}: not valid YAML: {exc}") from None
    try:
        catalog = msgspec.convert(raw, _CatalogFile)
    except msgspec.ValidationError as exc:
        raise CatalogError(f"{path}: {exc}") from None
    commands: Commands = []
    seen: set[str] = set()
    for c_pos, category in enumerate(catalog.categories):
        commands.append(UpsertCategory(category.id, category.title, c_pos))
        for p_pos, product in enumerate(category.products):
            where = f"{path}: {category.id}/{product.sku}"
            if product.sku in seen:
                raise CatalogError(f"{where}: SKU listed twice")
            seen.add(product.sku)
            try:
                price = rubles_to_kopecks(product.price)
            except ValueError as exc:
                raise CatalogError(f"{where}: price: {exc}") from None
            if product.stock is not None and product.stock < 0:
                raise CatalogError(f"{where}: stock cannot be negative")
            commands.append(
                UpsertProduct(
                    sku=product.sku,
                    title=product.title,
                    price=price,
                    category_id=category.id,
                    description=product.description,
                    photo_url=product.photo,
                    position=p_pos,
                )
            )
            if product.stock is not None:
                commands.append(CountStock(product.sku, product.stock))
    return commands
