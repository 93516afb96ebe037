"""The Catalog tab the owner edits: its rows read, compared with the catalog and with what the
tab and the catalog last agreed on, turned into the inventory's commands, and the cells the
service writes back once the inventory has answered. Pure: no I/O.

Who moved: for every catalog cell of a product three values are known: the sheet's (S), the
catalog's (C) and the last agreed (L, kept per product by the shell). S == C: nothing to do.
S != L: the owner edited the cell, so the catalog is set to it (the owner wins when the catalog
moved too). S == L != C: the catalog moved (a price changed in Telegram), so that one cell is
written. L becomes the new agreed value only once the sheet has taken the write.

Exactly once for restocks: the Result cell carries the generation of the row's last restock
("#4 +10 применено"), also kept with L. A Restock cell is sent as AdjustStock with id
`sheet-<sku>-<generation + 1>`, and Restock cleared and Result "#<generation + 1> …" written
in one write afterwards. A sync killed between the command and the write sends the same id
again, which the inventory applies once; a restock typed after the cell cleared gets the next.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import msgspec

from libs import money
from libs.contracts import (
    AdjustStock,
    AdminCommand,
    CatalogCategory,
    CatalogProduct,
    SetPrice,
    SetVisible,
    StockLevel,
    UpsertCategory,
    UpsertProduct,
)

Cell = str | int | float | bool

CATALOG_COLUMNS = (
    "SKU",
    "Category",
    "Title",
    "Description",
    "Price",
    "Photo",
    "Weight",
    "Visible",
    "On hand",
    "Available",
    "Restock",
    "Result",
)
(
    SKU,
    CATEGORY,
    TITLE,
    DESCRIPTION,
    PRICE,
    PHOTO,
    WEIGHT,
    VISIBLE,
    ON_HAND,
    AVAILABLE,
    RESTOCK,
    RESULT,
) = range(len(CATALOG_COLUMNS))
# The owner's catalog cells, with the names the Result cell uses for them.
FIELDS = {
    CATEGORY: "категория",
    TITLE: "название",
    DESCRIPTION: "описание",
    PRICE: "цена",
    PHOTO: "фото",
    WEIGHT: "вес",
    VISIBLE: "показывать",
}
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_GENERATION = re.compile(r"^\s*#(\d+)")
_WARNING = "⚠"
_YES = {"true", "да", "yes", "1", "✓", "✔", "x", "+"}
_NO = {"false", "нет", "no", "0", "-", ""}


class Fields(msgspec.Struct, frozen=True):
    """A product's catalog cells, as values (a price in kopecks, a category by id)."""

    category_id: str
    title: str
    description: str
    price: int
    photo: str
    weight: int
    visible: bool

    def get(self, column: int) -> str | int | bool:
        return getattr(self, _NAMES[column])  # type: ignore[no-any-return]

    def with_(self, changes: Mapping[int, str | int | bool]) -> Fields:
        return msgspec.structs.replace(self, **{_NAMES[c]: v for c, v in changes.items()})


_NAMES = {
    CATEGORY: "category_id",
    TITLE: "title",
    DESCRIPTION: "description",
    PRICE: "price",
    PHOTO: "photo",
    WEIGHT: "weight",
    VISIBLE: "visible",
}


class Synced(msgspec.Struct, frozen=True):
    """What the tab and the catalog last agreed on for a product (kept by the shell, per SKU),
    and the generation of its last restock from the tab."""

    fields: Fields
    restocks: int = 0


def fields_of(product: CatalogProduct) -> Fields:
    return Fields(
        product.category_id,
        product.title,
        product.description,
        product.price,
        product.photo_url,
        product.weight,
        product.visible,
    )


def restock_id(sku: str, generation: int) -> str:
    """The AdjustStock id of a product's `generation`th restock from the tab (a Token: at most
    64 characters, so a long SKU is hashed)."""
    tail = f"-{generation}"
    name = f"sheet-{sku}{tail}"
    if len(name) <= 64:
        return name
    return f"sheet-{hashlib.sha1(sku.encode()).hexdigest()[:20]}{tail}"


def text(value: Cell | None) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


class Catalog:
    """The catalog as the sync sees it: products by SKU, categories, stock levels."""

    def __init__(
        self,
        products: Iterable[CatalogProduct],
        categories: Iterable[CatalogCategory],
        levels: Iterable[StockLevel],
    ) -> None:
        self.products = {p.sku: p for p in products}
        self.categories = {c.category_id: c for c in categories}
        self.levels = {lv.sku: lv for lv in levels}
        self._by_title = {c.title.strip().casefold(): c for c in self.categories.values()}
        self.new_categories: dict[str, UpsertCategory] = {}  # by title, casefolded

    def category_title(self, category_id: str) -> str:
        found = self.categories.get(category_id)
        return found.title if found else category_id

    def category(self, typed: str) -> tuple[str, UpsertCategory | None]:
        """A Category cell as a category id, and the command that makes it if it is new
        ("+Чай"); ValueError for a name that is not there."""
        name = typed.strip()
        new = name.startswith("+")
        name = name.removeprefix("+").strip()
        if not name:
            raise ValueError("пусто")
        found = self._by_title.get(name.casefold()) or self.categories.get(name)
        if found is not None:
            return found.category_id, None
        if not new:
            known = ", ".join(sorted(c.title for c in self.categories.values())) or "нет"
            raise ValueError(f"«{name}» не найдена (есть: {known}; новая: «+{name}»)")
        command = self.new_categories.get(name.casefold())
        if command is None:
            taken = set(self.categories) | {c.category_id for c in self.new_categories.values()}
            category_id = _slug(name, taken)
            position = max((c.position for c in self.categories.values()), default=0)
            position += 1 + len(self.new_categories)
            command = UpsertCategory(category_id=category_id, title=name, position=position)
            self.new_categories[name.casefold()] = command
        return command.category_id, command


def _slug(name: str, taken: set[str]) -> str:
    latin = "".join(_TRANSLIT.get(ch, ch) for ch in name.lower())
    base = re.sub(r"[^a-z0-9]+", "-", latin).strip("-")[:40] or "category"
    slug, n = base, 1
    while slug in taken:
        n += 1
        slug = f"{base}-{n}"
    return slug


_TRANSLIT = {
    "а": "a",
    "б": "b",
    "в": "v",
    "г": "g",
    "д": "d",
    "е": "e",
    "ё": "e",
    "ж": "zh",
    "з": "z",
    "и": "i",
    "й": "y",
    "к": "k",
    "л": "l",
    "м": "m",
    "н": "n",
    "о": "o",
    "п": "p",
    "р": "r",
    "с": "s",
    "т": "t",
    "у": "u",
    "ф": "f",
    "х": "kh",
    "ц": "ts",
    "ч": "ch",
    "ш": "sh",
    "щ": "shch",
    "ъ": "",
    "ы": "y",
    "ь": "",
    "э": "e",
    "ю": "yu",
    "я": "ya",
}


# reading the cells --------------------------------------------------------------------------------
def _price(value: Cell | None) -> int:
    if isinstance(value, bool):
        raise ValueError("не число")
    typed = text(value)
    if not typed:
        raise ValueError("пусто")
    try:
        kopecks = money.rubles_to_kopecks(typed.removesuffix("₽").strip())
    except ValueError:
        raise ValueError("не число") from None
    if kopecks <= 0:
        raise ValueError("должна быть больше нуля")
    return kopecks


def _weight(value: Cell | None) -> int:
    typed = text(value).removesuffix("г").strip()
    if not typed:
        return 0
    try:
        grams = float(typed.replace(",", "."))
    except ValueError:
        raise ValueError("не число граммов") from None
    if grams < 0 or not grams.is_integer():
        raise ValueError("целое число граммов, не меньше нуля")
    return int(grams)


def _visible(value: Cell | None, default: bool) -> bool:
    if isinstance(value, bool):
        return value
    typed = text(value).casefold()
    if not typed:
        return default
    if typed in _YES:
        return True
    if typed in _NO:
        return False
    raise ValueError("да или нет")


def restock(value: Cell | None) -> int | None:
    """A Restock cell: None if blank, else a non-zero whole number ("+10", "-2", 5)."""
    if isinstance(value, bool):
        raise ValueError("не целое число")
    typed = text(value).replace(" ", "")
    if not typed:
        return None
    try:
        number = float(typed)
    except ValueError:
        raise ValueError("не целое число (+10 или -2)") from None
    if not number.is_integer() or number == 0:
        raise ValueError("не целое число (+10 или -2), не ноль")
    return int(number)


def generation(result: Cell | None) -> int:
    found = _GENERATION.match(text(result))
    return int(found.group(1)) if found else 0


def shown(column: int, value: str | int | bool, catalog: Catalog) -> Cell:
    """A catalog value as its cell."""
    if column == CATEGORY:
        return catalog.category_title(str(value))
    if column == PRICE:
        assert isinstance(value, int)
        return money.cell_number(value)
    return value


def _said(column: int, value: str | int | bool, catalog: Catalog) -> str:
    if column == PRICE:
        assert isinstance(value, int)
        return money.format_rub(value)
    if column == VISIBLE:
        return "да" if value else "нет"
    return str(shown(column, value, catalog)) or "пусто"


# the sync -----------------------------------------------------------------------------------------
@dataclass
class RowSync:
    """One row's part of a sync: the commands it sends and how to answer once they are done."""

    number: int  # the sheet's row number (1: the header)
    sku: str
    cells: list[Cell]
    commands: list[AdminCommand] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # refused before anything was sent
    said: list[str] = field(default_factory=list)  # what the commands do, for Result
    writes: dict[int, Cell] = field(default_factory=dict)  # column -> the catalog's value
    agreed: Fields | None = None  # the new L once the sheet has taken the writes
    wanted: Fields | None = None  # what L becomes if the commands are applied
    generation: int = 0
    delta: int | None = None


@dataclass
class Written:
    """What a sync writes back: cells by (row, column), rows appended, and the agreed values
    to keep once the sheet has them."""

    cells: dict[tuple[int, int], Cell]
    appended: list[list[Cell]]
    synced: dict[str, Synced]
    applied: int
    refused: int


class Sync:
    """A sync of the tab: `commands()` for the inventory, then `settle(outcomes)`."""

    def __init__(
        self,
        rows: Sequence[Sequence[Cell]],
        catalog: Catalog,
        synced: Mapping[str, Synced],
        first_row: int = 2,
    ) -> None:
        self.catalog = catalog
        self.synced = synced
        self.rows: list[RowSync] = []
        numbers: dict[str, list[int]] = {}
        padded = [list(cells) + [""] * (len(CATALOG_COLUMNS) - len(cells)) for cells in rows]
        for number, cells in enumerate(padded, start=first_row):
            if not any(text(c) for c in cells[: len(CATALOG_COLUMNS)]):
                continue
            sku = text(cells[SKU])
            numbers.setdefault(sku, []).append(number)
            self.rows.append(RowSync(number, sku, cells[: len(CATALOG_COLUMNS)]))
        for row in self.rows:
            twice = numbers[row.sku] if row.sku else []
            if len(twice) > 1:
                row.errors.append(
                    f"SKU {row.sku} повторяется в строках {', '.join(map(str, twice))}"
                )
                row.agreed = self._agreed(row)
                continue
            self._plan(row)
        in_tab = set(numbers)
        self.missing = [sku for sku in catalog.products if sku not in in_tab]

    def commands(self) -> list[AdminCommand]:
        return [command for row in self.rows for command in row.commands]

    # planning -----------------------------------------------------------------------------------
    def _agreed(self, row: RowSync) -> Fields | None:
        product = self.catalog.products.get(row.sku)
        if product is None:
            return None
        kept = self.synced.get(row.sku)
        return kept.fields if kept else fields_of(product)

    def _plan(self, row: RowSync) -> None:
        if not row.sku:
            row.errors.append("нет SKU")
            return
        product = self.catalog.products.get(row.sku)
        kept = self.synced.get(row.sku)
        row.generation = max(generation(row.cells[RESULT]), kept.restocks if kept else 0)
        current = fields_of(product) if product else None
        sheet: dict[int, str | int | bool] = {}
        for column, name in FIELDS.items():
            try:
                sheet[column] = self._value(row, column, current is None)
            except ValueError as exc:
                was = ""
                if current is not None:
                    was = f", осталось {_said(column, current.get(column), self.catalog)}"
                row.errors.append(f"{name}: {exc}{was}")
        try:
            row.delta = restock(row.cells[RESTOCK])
        except ValueError as exc:
            row.errors.append(f"пополнение: {exc}")
        if current is None:
            self._plan_new(row, sheet)
        else:
            self._plan_existing(row, sheet, current, kept.fields if kept else current)
        if row.delta is not None and not row.errors:
            self._plan_restock(row)
        if row.errors:
            row.commands = []
            row.said = []
            row.wanted = None

    def _value(self, row: RowSync, column: int, new: bool) -> str | int | bool:
        cell = row.cells[column]
        if column == PRICE:
            return _price(cell)
        if column == WEIGHT:
            return _weight(cell)
        if column == VISIBLE:
            return _visible(cell, default=new)
        if column == CATEGORY:
            category_id, _ = self.catalog.category(text(cell))
            return category_id
        if column == TITLE and not text(cell):
            raise ValueError("пусто")
        return text(cell)
        return text(cell)

    def _new_category(self, row: RowSync, category_id: str) -> None:
        for command in self.catalog.new_categories.values():
            if command.category_id == category_id:
                row.commands.append(command)
                row.said.append(f"новая категория «{command.title}»")
                row.writes[CATEGORY] = command.title

    def _plan_new(self, row: RowSync, sheet: dict[int, str | int | bool]) -> None:
        if not _TOKEN.match(row.sku):
            row.errors.append("SKU: латинские буквы, цифры, - и _, до 64 знаков")
        if row.errors:
            return
        fields = Fields(*(sheet[c] for c in FIELDS))  # type: ignore[arg-type]
        self._new_category(row, fields.category_id)
        position = max((p.position for p in self.catalog.products.values()), default=0)
        row.commands.append(_upsert(row.sku, fields, position + row.number))
        row.said.append("создан")
        row.wanted = fields

    def _plan_existing(
        self,
        row: RowSync,
        sheet: dict[int, str | int | bool],
        current: Fields,
        last: Fields,
    ) -> None:
        owner: dict[int, str | int | bool] = {}
        agreed: dict[int, str | int | bool] = {}
        for column in FIELDS:
            if column not in sheet:
                continue  # unreadable: left as it is, said in Result
            value, now, before = sheet[column], current.get(column), last.get(column)
            if value == now:
                agreed[column] = now
            elif value != before:
                owner[column] = value
            else:  # the catalog moved (Telegram, an import): the cell follows
                row.writes[column] = shown(column, now, self.catalog)
                agreed[column] = now
        row.agreed = last.with_(agreed)
        if not owner or row.errors:
            return
        wanted = current.with_(owner)
        row.wanted = last.with_({**agreed, **owner})
        if CATEGORY in owner:
            self._new_category(row, wanted.category_id)
        for column, value in owner.items():
            row.said.append(f"{FIELDS[column]}: {_said(column, value, self.catalog)}")
        if set(owner) - {PRICE, VISIBLE}:
            position = self.catalog.products[row.sku].position
            row.commands.append(_upsert(row.sku, wanted, position))
            return
        if PRICE in owner:
            row.commands.append(SetPrice(sku=row.sku, price=wanted.price))
        if VISIBLE in owner:
            row.commands.append(SetVisible(sku=row.sku, visible=wanted.visible))

    def _plan_restock(self, row: RowSync) -> None:
        assert row.delta is not None
        level = self.catalog.levels.get(row.sku)
        available = level.available if level else 0
        if row.delta < 0 and -row.delta > available:
            row.errors.append(f"списание: нельзя списать {-row.delta}, доступно {available}")
            return
        row.commands.append(
            AdjustStock(
                adjustment_id=restock_id(row.sku, row.generation + 1),
                sku=row.sku,
                delta=row.delta,
                reason="restock" if row.delta > 0 else "write_off",
            )
        )

    # settling -----------------------------------------------------------------------------------
    def settle(self, outcomes: Sequence[str], now: datetime) -> Written:
        """The inventory's answer to `commands()` (one per command: "" applied or already
        applied, else why it was refused) as the cells to write and the values to keep."""
        at = now.strftime("%d.%m %H:%M")
        answers = iter(outcomes)
        cells: dict[tuple[int, int], Cell] = {}
        synced: dict[str, Synced] = {}
        applied = refused = 0
        twice = {sku for sku, n in Counter(row.sku for row in self.rows).items() if n > 1}
        for row in self.rows:
            answered = [next(answers, "нет ответа") for _ in row.commands]
            refusals = [a for a in answered if a]
            # The restock is the row's last command; applied, it is never sent again.
            restocked = row.delta is not None and bool(answered) and not answered[-1]
            gen = row.generation + 1 if restocked else row.generation
            writes = dict(row.writes)
            result: str | None = None
            agreed = row.agreed
            if restocked:
                writes[RESTOCK] = ""
            if row.errors or refusals:
                refused += 1
                done = [f"{row.delta:+d} применено"] if restocked else []
                result = ", ".join([f"{_WARNING} " + "; ".join(row.errors + refusals), *done])
                if not row.errors:
                    writes.pop(CATEGORY, None)
            elif row.commands:
                applied += 1
                said = [*row.said, *([f"{row.delta:+d} применено"] if restocked else [])]
                result = ", ".join(said) + f" · {at}"
                agreed = row.wanted or agreed
            elif _WARNING in text(row.cells[RESULT]):
                result = ""  # the row was put right by the owner: the warning goes
            if result is not None:
                result = f"#{gen} {result}".strip() if gen else result
                if result != text(row.cells[RESULT]):
                    writes[RESULT] = result
            level = self.catalog.levels.get(row.sku)
            if level is not None:
                # As the read model says: a restock just applied shows at the next sync.
                for column, count in ((ON_HAND, level.on_hand), (AVAILABLE, level.available)):
                    if text(row.cells[column]) != str(count):
                        writes[column] = count
            for column, value in writes.items():
                cells[(row.number, column)] = value
            if agreed is not None and row.sku not in twice:
                synced[row.sku] = Synced(agreed, gen)
        appended = []
        for sku in self.missing:
            product = self.catalog.products[sku]
            appended.append(self.row_of(product))
            kept = self.synced.get(sku)
            synced[sku] = Synced(fields_of(product), kept.restocks if kept else 0)
        return Written(cells, appended, synced, applied, refused)

    def row_of(self, product: CatalogProduct) -> list[Cell]:
        level = self.catalog.levels.get(product.sku)
        fields = fields_of(product)
        cells: list[Cell] = [product.sku]
        cells += [shown(column, fields.get(column), self.catalog) for column in FIELDS]
        cells += [level.on_hand if level else 0, level.available if level else 0, "", ""]
        return cells


def _upsert(sku: str, fields: Fields, position: int) -> UpsertProduct:
    return UpsertProduct(
        sku=sku,
        title=fields.title,
        price=fields.price,
        category_id=fields.category_id,
        description=fields.description,
        photo_url=fields.photo,
        position=position,
        weight=fields.weight,
        visible=fields.visible,
    )
