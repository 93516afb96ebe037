"""A catalog file (YAML) as inventory commands: categories, products, counted stock or restocks
(deltas, each applied once), and the shop's delivery methods (the `delivery` section; see the
README for its fields)."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec
import yaml

from libs.contracts import (
    AdjustStock,
    CatalogCategory,
    CatalogDelivery,
    CatalogProduct,
    CountStock,
    DeliveryKind,
    DeliveryMethod,
    SetDelivery,
    StockLevel,
    Token,
    UpsertCategory,
    UpsertProduct,
)
from libs.money import cell_number, rubles_to_kopecks
from services.inventory.core import file_restock_id

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
    # +10 received, -2 written off: applied once as file_restock_id(sku, restock_no + 1)
    restock: int | None = None
    restock_no: int = 0  # the file restocks applied when the file was exported
    on_hand_at_export: int | None = None  # what the export saw; for the owner, not imported
    weight: int = 0  # grams, for delivery priced by weight
    visible: bool = True  # false: hidden from customers, its stock and history kept


class _Category(msgspec.Struct, forbid_unknown_fields=True):
    id: Token
    title: str
    products: list[_Product] = []


Rubles = str | int | float  # at most two decimals


class _Method(msgspec.Struct, forbid_unknown_fields=True):
    id: Token
    title: str
    kind: DeliveryKind
    price: Rubles = 0
    free_from: Rubles | None = None
    cities: list[str] = []
    base_weight: int = 0  # grams the price covers
    per_kg: Rubles = 0  # per started kilogram over base_weight
    address: str = ""
    hours: str = ""


class _Delivery(msgspec.Struct, forbid_unknown_fields=True):
    methods: list[_Method]
    min_order: Rubles = 0


class _CatalogFile(msgspec.Struct, forbid_unknown_fields=True):
    categories: list[_Category]
    shop: str = ""
    delivery: _Delivery | None = None  # omitted leaves the shop's delivery as it is


Commands = list[UpsertCategory | UpsertProduct | CountStock | AdjustStock | SetDelivery]


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
        raise CatalogError(f"{path}{_line(path, str(exc))}: {exc}") from None
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
            if product.weight < 0:
                raise CatalogError(f"{where}: weight cannot be negative")
            if product.stock is not None and product.restock:
                raise CatalogError(
                    f"{where}: stock (a count) and restock (a change) together; keep one"
                )
            if product.restock_no < 0:
                raise CatalogError(f"{where}: restock_no cannot be negative")
            commands.append(
                UpsertProduct(
                    sku=product.sku,
                    title=product.title,
                    price=price,
                    category_id=category.id,
                    description=product.description,
                    photo_url=product.photo,
                    position=p_pos,
                    weight=product.weight,
                    visible=product.visible,
                )
            )
            if product.stock is not None:
                commands.append(CountStock(product.sku, product.stock))
            if product.restock:
                commands.append(
                    AdjustStock(
                        adjustment_id=file_restock_id(product.sku, product.restock_no + 1),
                        sku=product.sku,
                        delta=product.restock,
                        reason="restock" if product.restock > 0 else "write_off",
                    )
                )
    if catalog.delivery is not None:
        commands.append(_delivery(path, catalog.delivery))
    return commands


def _delivery(path: Path, delivery: _Delivery) -> SetDelivery:
    methods: list[DeliveryMethod] = []
    seen: set[str] = set()
    for n, method in enumerate(delivery.methods):
        where = f"{path}{_line(path, f'$.delivery.methods[{n}]')}: delivery {method.id}"
        if method.id in seen:
            raise CatalogError(f"{where}: listed twice")
        seen.add(method.id)
        if not method.title.strip():
            raise CatalogError(f"{where}: a title is needed (the customer chooses by it)")
        if method.kind == "courier" and (method.address or method.hours):
            raise CatalogError(f"{where}: address and hours are for pickup")
        if method.base_weight < 0:
            raise CatalogError(f"{where}: base_weight cannot be negative")
        money: dict[str, int] = {}
        for name in ("price", "free_from", "per_kg"):
            value = getattr(method, name)
            if value is None:
                continue
            try:
                money[name] = rubles_to_kopecks(value)
            except ValueError as exc:
                at = _line(path, f"$.delivery.methods[{n}].{name}")
                raise CatalogError(f"{path}{at}: delivery {method.id}: {name}: {exc}") from None
        methods.append(
            DeliveryMethod(
                id=method.id,
                title=method.title.strip(),
                kind=method.kind,
                price=money["price"],
                free_from=money.get("free_from", 0),
                cities=tuple(c.strip() for c in method.cities if c.strip()),
                base_weight=method.base_weight,
                per_kg=money["per_kg"],
                address=method.address.strip(),
                hours=method.hours.strip(),
            )
        )
    try:
        min_order = rubles_to_kopecks(delivery.min_order)
    except ValueError as exc:
        raise CatalogError(f"{path}: delivery: min_order: {exc}") from None
    return SetDelivery(tuple(methods), min_order)


def _line(path: Path, where: str) -> str:
    """':<line>' of the node a msgspec path ('$.delivery.methods[1].price') names, if found."""
    found = re.search(r"\$((?:\.[A-Za-z_]\w*|\[\d+\])+)", where)
    if found is None:
        return ""
    try:
        node = yaml.compose(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return ""
    for step in re.findall(r"\.(\w+)|\[(\d+)\]", found.group(1)):
        key, index = step
        if isinstance(node, yaml.MappingNode) and key:
            node = next((v for k, v in node.value if k.value == key), None)
        elif isinstance(node, yaml.SequenceNode) and index and int(index) < len(node.value):
            node = node.value[int(index)]
        else:
            break
        if node is None:
            return ""
    return f":{node.start_mark.line + 1}" if node is not None else ""


def dump(
    categories: list[CatalogCategory],
    products: list[CatalogProduct],
    levels: dict[str, StockLevel],
    delivery: CatalogDelivery,
) -> str:
    """The catalog as a file `load` takes back: categories in the shop's order with their
    products, and the delivery section if there is one. Each product's on hand is written as
    `on_hand_at_export`, which import ignores (a count imported back would undo the sales made
    since), with `restock_no` for a `restock:` the owner adds. Defaults are left out, so the
    file reads as one written by hand."""
    by_category: dict[str, list[CatalogProduct]] = {}
    for product in products:
        by_category.setdefault(product.category_id, []).append(product)
    listed = [*categories]
    listed += [  # products of a category the read model lacks: kept, under their id
        CatalogCategory(cid, cid, 0)
        for cid in by_category
        if cid not in {c.category_id for c in categories}
    ]
    out: dict[str, object] = {
        "categories": [
            {
                "id": category.category_id,
                "title": category.title,
                "products": [
                    _product(p, levels.get(p.sku))
                    for p in by_category.get(category.category_id, [])
                ],
            }
            for category in listed
        ]
    }
    if delivery.methods:
        section: dict[str, object] = {"methods": [_method(m) for m in delivery.methods]}
        if delivery.min_order:
            section["min_order"] = cell_number(delivery.min_order)
        out["delivery"] = section
    return yaml.safe_dump(out, allow_unicode=True, sort_keys=False, width=100)


def _product(product: CatalogProduct, level: StockLevel | None) -> dict[str, object]:
    found: dict[str, object] = {
        "sku": product.sku,
        "title": product.title,
        "price": cell_number(product.price),
    }
    optional = {
        "description": product.description,
        "photo": product.photo_url,
        "weight": product.weight,
    }
    found.update({key: value for key, value in optional.items() if value})
    if not product.visible:
        found["visible"] = False
    found["on_hand_at_export"] = level.on_hand if level else 0
    if level is not None and level.file_restocks:
        found["restock_no"] = level.file_restocks
    return found


def _method(method: DeliveryMethod) -> dict[str, object]:
    found: dict[str, object] = {
        "id": method.id,
        "title": method.title,
        "kind": method.kind,
        "price": cell_number(method.price),
    }
    optional: dict[str, object] = {
        "free_from": cell_number(method.free_from) if method.free_from else 0,
        "cities": list(method.cities),
        "base_weight": method.base_weight,
        "per_kg": cell_number(method.per_kg) if method.per_kg else 0,
        "address": method.address,
        "hours": method.hours,
    }
    found.update({key: value for key, value in optional.items() if value})
    return found
