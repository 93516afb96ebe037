"""The admin chat as a catalog desk, pure: /catalog's pages of products with their stock, a
product's admin card and its buttons, the card's typed questions (a restock, a write-off, a price,
a photo) with what an answer means, and the new product's form as one table of fields. No I/O:
services.bot.handlers.catalog_desk sends what these return and turns the answers into the
inventory's commands, each with an id chosen when its button or question was shown."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from libs.contracts import (
    AdjustStock,
    AdminCommand,
    CatalogCategory,
    CatalogProduct,
    StockLevel,
    UpsertProduct,
)
from libs.money import format_rub, rubles_to_kopecks
from services.bot import callbacks as cb
from services.bot.messages import Button, Joined, Message, Param, Text

PAGE = 8  # products per page of /catalog
RESTOCKS = (1, 5)  # the card's one-tap restocks
MAX_COUNT = 100_000  # the most one typed restock or write-off moves
MAX_PRICE = 100_000_000_00  # kopecks, as the inventory allows (services.inventory.core)
MAX_TITLE = 100
MAX_DESCRIPTION = 1000
Asked = Literal["restock", "write_off", "price", "photo"]


def adjustment_id(op: str) -> str:
    """The inventory's adjustment id for a desk operation (a Token: `op` is hex)."""
    return f"desk-{op}"


# /catalog -----------------------------------------------------------------------------------------
def page_of(products: Sequence[CatalogProduct], sku: str) -> int:
    """The page of /catalog a product is on (0 if it is not listed)."""
    skus = [p.sku for p in products]
    return skus.index(sku) // PAGE if sku in skus else 0


def listing(
    products: Sequence[CatalogProduct], levels: Mapping[str, StockLevel], page: int
) -> Message:
    """Every product, hidden ones marked, with on hand / available; a button to each card, the
    pages, and "add a product"."""
    add = (Button(Text("catalog_desk.button.add"), data=cb.CatalogNew(action="start").pack()),)
    if not products:
        return Message(Text("catalog_desk.empty"), (add,))
    pages = -(-len(products) // PAGE)
    page = min(max(page, 0), pages - 1)
    rows: list[tuple[Button, ...]] = []
    for p in products[page * PAGE : (page + 1) * PAGE]:
        level = levels.get(p.sku)
        label = Text(
            "catalog_desk.button.product" if p.visible else "catalog_desk.button.product_hidden",
            {
                "title": p.title,
                "price": format_rub(p.price),
                "on_hand": level.on_hand if level else 0,
                "available": level.available if level else 0,
            },
        )
        rows.append((Button(label, data=cb.CatalogCard(sku=p.sku).pack()),))
    if pages > 1:
        nav: tuple[Button, ...] = ()
        if page > 0:
            nav += (Button(Text("catalog.button.prev"), data=cb.CatalogList(page=page - 1).pack()),)
        label = Text("catalog.button.page", {"page": page + 1, "pages": pages})
        nav += (Button(label, data=cb.CatalogList(page=page).pack()),)
        if page < pages - 1:
            nav += (Button(Text("catalog.button.next"), data=cb.CatalogList(page=page + 1).pack()),)
        rows.append(nav)
    rows.append(add)
    hidden = sum(not p.visible for p in products)
    title = Text("catalog_desk.title", {"count": len(products), "hidden": hidden})
    return Message(Joined((title, Text("catalog_desk.legend"))), tuple(rows))


# A product's card ---------------------------------------------------------------------------------
def card(
    product: CatalogProduct,
    level: StockLevel | None,
    category: CatalogCategory | None,
    op: str,
    page: int = 0,
) -> Message:
    """Title, price, stock, whether customers see it; a button for each change. `op` (fresh
    for every card shown) makes the one-tap restocks' adjustment ids."""
    on_hand, reserved, available = (
        (level.on_hand, level.reserved, level.available) if level else (0, 0, 0)
    )
    text = Joined(
        (
            Text(
                "catalog_desk.card",
                {
                    "title": product.title,
                    "sku": product.sku,
                    "category": category.title if category else product.category_id,
                    "price": format_rub(product.price),
                    "on_hand": on_hand,
                    "reserved": reserved,
                    "available": available,
                },
            ),
            Text("catalog_desk.visible" if product.visible else "catalog_desk.hidden"),
            Text("catalog_desk.photo" if product.photo_url else "catalog_desk.no_photo"),
        )
    )
    sku = product.sku
    restocks = tuple(
        Button(
            Text("catalog_desk.button.restock_by", {"qty": qty}),
            data=cb.CatalogRestock(sku=sku, qty=qty, op=f"{op}{qty}").pack(),
        )
        for qty in RESTOCKS
    )
    restock = _ask_button(sku, "restock")
    visible = not product.visible
    shown = Button(
        Text("catalog_desk.button.show" if visible else "catalog_desk.button.hide"),
        data=cb.CatalogShown(sku=sku, visible=visible).pack(),
    )
    back = Button(Text("catalog_desk.button.list"), data=cb.CatalogList(page=page).pack())
    return Message(
        text,
        (
            (*restocks, restock),
            (_ask_button(sku, "write_off"), _ask_button(sku, "price")),
            (shown, _ask_button(sku, "photo")),
            (back,),
        ),
    )


def _ask_button(sku: str, field: Asked) -> Button:
    return Button(
        Text(f"catalog_desk.button.{field}"), data=cb.CatalogAsk(sku=sku, field=field).pack()
    )


def ask(product: CatalogProduct, field: Asked, available: int) -> Message:
    """A card's question: how many to restock or write off, the new price, the photo."""
    params: dict[str, Param] = {
        "title": product.title,
        "price": format_rub(product.price),
        "available": available,
    }
    drop = Button(Text("catalog_desk.button.drop"), data=cb.CatalogCard(sku=product.sku).pack())
    return Message(Text(f"catalog_desk.ask.{field}", params), ((drop,),))


# What a typed answer means: the value, or the hint to send (the question stays open) ------------
def parse_count(typed: str, *, zero: bool = False) -> int | Text:
    """A number of pieces: a whole number from 1 (0 too with `zero`) to MAX_COUNT."""
    raw = typed.strip().lstrip("+").replace(" ", "")
    if not raw.isdigit() or not (0 if zero else 1) <= int(raw) <= MAX_COUNT:
        return Text(
            "catalog_desk.hint.stock" if zero else "catalog_desk.hint.count", {"max": MAX_COUNT}
        )
    return int(raw)


def parse_price(typed: str) -> int | Text:
    """Rubles as a person types them ('890', '1 290,90'), in kopecks: at most two decimals,
    more than zero, at most what the inventory takes."""
    try:
        price = rubles_to_kopecks(typed.strip().removesuffix("₽").removesuffix("руб").strip())
    except ValueError:
        return Text("catalog_desk.hint.price")
    if not 0 < price <= MAX_PRICE:
        return Text("catalog_desk.hint.price")
    return price


def parse_title(typed: str) -> str | Text:
    title = " ".join(typed.split())
    if not title or len(title) > MAX_TITLE:
        return Text("catalog_desk.hint.title", {"max": MAX_TITLE})
    return title


def parse_description(typed: str) -> str | Text:
    description = typed.strip()
    if len(description) > MAX_DESCRIPTION:
        return Text("catalog_desk.hint.description", {"max": MAX_DESCRIPTION})
    return description


def write_off_refused(qty: int, available: int) -> Text | None:
    """More than can be written off (the reserved pieces belong to orders)."""
    if qty <= available:
        return None
    return Text("catalog_desk.hint.write_off", {"qty": qty, "available": max(0, available)})


def done(field: Asked | Literal["hidden", "shown"], qty: int = 0, price: int = 0) -> Text:
    """What was changed, said once the inventory took it (a toast, or a line of its own)."""
    return Text(f"catalog_desk.toast.{field}", {"qty": qty, "price": format_rub(price)})


def refused(error: str, *, toast: bool) -> Text:
    """The inventory's own refusal ("FEW: cannot write off 5, only 3 available")."""
    key = "catalog_desk.toast.refused" if toast else "catalog_desk.refused"
    return Text(key, {"error": error[:100]})


# Add a product: one table of questions ------------------------------------------------------------
FieldName = Literal["category", "title", "price", "stock", "description", "photo"]
Answer = str | int


@dataclass(frozen=True, slots=True)
class Field:
    """One question of the new product's form."""

    name: FieldName
    parse: Callable[[str], Answer | Text] | None  # None: answered by a button or a photo
    optional: bool = False  # Skip answers it with ""

    @property
    def ask(self) -> str:
        return f"catalog_desk.new.ask_{self.name}"


FIELDS: tuple[Field, ...] = (
    Field("category", None),
    Field("title", parse_title),
    Field("price", parse_price),
    Field("stock", lambda typed: parse_count(typed, zero=True)),
    Field("description", parse_description, optional=True),
    Field("photo", None, optional=True),
)
FIELD = {f.name: f for f in FIELDS}


def next_field(answers: Mapping[str, Answer]) -> Field | None:
    """The first question not answered yet (None: the form is complete)."""
    return next((f for f in FIELDS if f.name not in answers), None)


def question(field: Field, categories: Sequence[CatalogCategory]) -> Message:
    """The form's question, with its buttons: the categories, Skip, Cancel."""
    rows: list[tuple[Button, ...]] = []
    if field.name == "category":
        rows += [
            (Button(Text("catalog_desk.button.category", {"title": c.title}), data=_pick(c)),)
            for c in categories
        ]
    if field.optional:
        rows.append(
            (Button(Text("catalog_desk.button.skip"), data=cb.CatalogNew(action="skip").pack()),)
        )
    rows.append(
        (Button(Text("catalog_desk.button.drop"), data=cb.CatalogNew(action="drop").pack()),)
    )
    return Message(Text(field.ask), tuple(rows))


def _pick(category: CatalogCategory) -> str:
    return cb.CatalogNewCategory(category_id=category.category_id).pack()


_CYRILLIC = "абвгдеёжзийклмнопрстуфхцчшщъыьэюя"
_LATIN_OF = "a b v g d e e zh z i y k l m n o p r s t u f kh ts ch sh shch _ y _ e yu ya"
_LATIN = {
    c: ("" if latin == "_" else latin)
    for c, latin in zip(_CYRILLIC, _LATIN_OF.split(), strict=True)
}


def sku_for(title: str, suffix: str) -> str:
    """A readable SKU: the title in Latin letters (Cyrillic transliterated), upper case, words
    joined by '-', cut to 24 characters, then `suffix` (chosen when the form started, so a
    double tap makes the same product): 'Чай зелёный' -> 'CHAY-ZELENYY-7K2Q'. Always a Token."""
    latin = "".join(_LATIN.get(ch, ch) for ch in title.lower())
    stem = "-".join(re.findall(r"[a-z0-9]+", latin)).upper()[:24].strip("-")
    return f"{stem or 'P'}-{suffix.upper()}"


def free_sku(
    answers: Mapping[str, Answer],
    suffix: str,
    existing: Callable[[str], CatalogProduct | None],
    fresh_suffix: Callable[[], str],
) -> tuple[str, str]:
    """The new product's SKU and its suffix: sku_for(title, suffix), unless a different product
    already has it (two products titled alike, and 4 hex digits alike), then with a new suffix
    until free. The same SKU when the product there is this form's own (a double tap, once the
    first has reached the catalog), so the form still makes one product."""
    while True:
        sku = sku_for(str(answers["title"]), suffix)
        found = existing(sku)
        if found is None or _is_this_form(found, answers):
            return sku, suffix
        suffix = fresh_suffix()


def _is_this_form(product: CatalogProduct, answers: Mapping[str, Answer]) -> bool:
    return (product.title, product.category_id, product.price) == (
        str(answers["title"]),
        str(answers["category"]),
        int(answers["price"]),
    )


def new_product(
    answers: Mapping[str, Answer], sku: str, op: str, position: int
) -> tuple[AdminCommand, ...]:
    """The inventory's commands for a complete form: the product, then its starting stock as a
    restock (idempotent by the adjustment id, unlike a count)."""
    product = UpsertProduct(
        sku=sku,
        title=str(answers["title"]),
        price=int(answers["price"]),
        category_id=str(answers["category"]),
        description=str(answers.get("description", "")),
        photo_url=str(answers.get("photo", "")),
        position=position,
    )
    stock = int(answers.get("stock", 0))
    if not stock:
        return (product,)
    return (product, AdjustStock(adjustment_id(op), sku, stock, "restock"))


def added(answers: Mapping[str, Answer], sku: str) -> Message:
    """The form's end: what was created, and its card."""
    params: dict[str, Param] = {
        "title": str(answers["title"]),
        "sku": sku,
        "price": format_rub(int(answers["price"])),
        "stock": int(answers.get("stock", 0)),
    }
    open_card = Button(Text("catalog_desk.button.open"), data=cb.CatalogCard(sku=sku).pack())
    return Message(Text("catalog_desk.new.added", params), ((open_card,),))
