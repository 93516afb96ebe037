"""The Catalog tab's pure core: rows into the inventory's commands, and what is written back."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

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
from services.crm_sync import catalog_tab as tab
from services.crm_sync.catalog_tab import (
    AVAILABLE,
    ON_HAND,
    PRICE,
    RESTOCK,
    RESULT,
    TITLE,
    Catalog,
    Cell,
    Sync,
    Synced,
)

NOW = datetime(2025, 12, 5, 14, 3, tzinfo=UTC)
TEA = CatalogCategory("tea", "Чай", 1)
COFFEE = CatalogCategory("coffee", "Кофе", 2)


def product(sku: str = "puer", price: int = 69000, **extra: object) -> CatalogProduct:
    fields: dict[str, object] = {
        "title": "Пуэр",
        "description": "Выдержанный",
        "photo_url": "",
        "category_id": "tea",
        "position": 1,
        "weight": 100,
        "visible": True,
        **extra,
    }
    return CatalogProduct(sku=sku, price=price, **fields)  # type: ignore[arg-type]


def level(sku: str = "puer", on_hand: int = 5, reserved: int = 0) -> StockLevel:
    return StockLevel(sku, on_hand, reserved, on_hand - reserved, 1)


def catalog(*products: CatalogProduct, levels: tuple[StockLevel, ...] = ()) -> Catalog:
    found = products or (product(),)
    return Catalog(found, [TEA, COFFEE], levels or tuple(level(p.sku) for p in found))


def row_of(c: Catalog, sku: str = "puer", **changes: Cell) -> list[Cell]:
    """The row the service writes for `sku`, with the owner's `changes` by column name."""
    cells = Sync([], c, {}).row_of(c.products[sku])
    for name, value in changes.items():
        cells[tab.CATALOG_COLUMNS.index(name.replace("_", " ").capitalize())] = value
    return cells


def agreed(c: Catalog, restocks: int = 0) -> dict[str, Synced]:
    return {sku: Synced(tab.fields_of(p), restocks) for sku, p in c.products.items()}


def sync(rows: list[list[Cell]], c: Catalog, kept: dict[str, Synced] | None = None) -> Sync:
    return Sync(rows, c, agreed(c) if kept is None else kept)


def test_the_rows_the_service_writes_ask_for_nothing() -> None:
    c = catalog(product(), product("sencha", 45050, title="Сенча"))
    s = sync([row_of(c), row_of(c, "sencha")], c)
    assert s.commands() == []
    written = s.settle([], NOW)
    assert written.cells == {} and written.appended == []


def test_a_catalog_is_filled_into_an_empty_tab() -> None:
    c = catalog(product(), product("sencha", 45050, title="Сенча", visible=False))
    written = Sync([], c, {}).settle([], NOW)
    assert written.appended == [
        ["puer", "Чай", "Пуэр", "Выдержанный", 690, "", 100, True, 5, 5, "", ""],
        ["sencha", "Чай", "Сенча", "Выдержанный", 450.5, "", 100, False, 5, 5, "", ""],
    ]
    assert set(written.synced) == {"puer", "sencha"}


def test_a_price_edited_in_the_sheet_is_set() -> None:
    c = catalog()
    s = sync([row_of(c, price="790,50")], c)
    assert s.commands() == [SetPrice(sku="puer", price=79050)]
    written = s.settle([""], NOW)
    assert written.cells[(2, RESULT)] == "цена: 790.50 ₽ · 05.12 14:03"
    assert written.synced["puer"].fields.price == 79050


def test_a_price_changed_in_telegram_is_written_not_undone() -> None:
    before = catalog()
    after = catalog(product(price=79000))
    s = sync([row_of(before)], after, agreed(before))
    assert s.commands() == [], "the sheet's old price is not sent back"
    written = s.settle([], NOW)
    assert written.cells == {(2, PRICE): 790}
    assert written.synced["puer"].fields.price == 79000


def test_the_owner_wins_when_both_moved() -> None:
    before = catalog()
    after = catalog(product(price=79000))
    s = sync([row_of(before, price=800)], after, agreed(before))
    assert s.commands() == [SetPrice(sku="puer", price=80000)]


def test_a_write_lost_before_it_was_kept_is_not_undone() -> None:
    """The catalog's value reached the sheet but L was not kept (killed): S == C, agreed."""
    before = catalog()
    after = catalog(product(price=79000))
    s = sync([row_of(after)], after, agreed(before))
    assert s.commands() == []
    assert s.settle([], NOW).synced["puer"].fields.price == 79000


def test_titles_and_categories_go_as_one_upsert() -> None:
    c = catalog()
    s = sync([row_of(c, title="Шу пуэр", category="кофе")], c)
    (command,) = s.commands()
    assert isinstance(command, UpsertProduct)
    assert (command.title, command.category_id, command.price) == ("Шу пуэр", "coffee", 69000)


def test_clearing_visible_hides() -> None:
    c = catalog()
    assert sync([row_of(c, visible="")], c).commands() == [SetVisible(sku="puer", visible=False)]


def test_a_new_row_creates_the_product_and_its_new_category() -> None:
    c = catalog()
    row: list[Cell] = ["oolong", "+Улун", "Те Гуань Инь", "", 1200, "", "", "", "", "", "+3", ""]
    s = sync([row_of(c), row], c)
    commands = s.commands()
    assert commands[0] == UpsertCategory(category_id="ulun", title="Улун", position=3)
    assert isinstance(commands[1], UpsertProduct) and commands[1].visible
    assert commands[1].category_id == "ulun" and commands[1].price == 120000
    assert commands[2] == AdjustStock(
        adjustment_id="sheet-oolong-1", sku="oolong", delta=3, reason="restock"
    )
    written = s.settle(["", "", ""], NOW)
    assert written.cells[(3, RESTOCK)] == "" and written.cells[(3, 1)] == "Улун"
    assert str(written.cells[(3, RESULT)]).startswith("#1 новая категория «Улун», создан, +3")


def test_a_category_spelled_wrong_is_refused() -> None:
    c = catalog()
    s = sync([row_of(c, category="Чяй")], c)
    assert s.commands() == []
    assert s.rows[0].errors == [
        "категория: «Чяй» не найдена (есть: Кофе, Чай; новая: «+Чяй»), осталось Чай"
    ]


def test_bad_rows_are_refused_one_by_one_and_the_others_apply() -> None:
    c = catalog(product(), product("sencha", title="Сенча"))
    s = sync([row_of(c, price="дорого", restock="+10"), row_of(c, "sencha", price=500)], c)
    assert s.commands() == [SetPrice(sku="sencha", price=50000)]
    written = s.settle([""], NOW)
    assert written.cells[(2, RESULT)] == "⚠ цена: не число, осталось 690 ₽"
    assert (2, RESTOCK) not in written.cells, "nothing of a refused row applies"
    assert written.cells[(3, RESULT)] == "цена: 500 ₽ · 05.12 14:03"


def test_a_warning_goes_once_the_row_is_right() -> None:
    c = catalog()
    s = sync([row_of(c, result="#2 ⚠ цена: не число, осталось 690 ₽")], c)
    assert s.settle([], NOW).cells[(2, RESULT)] == "#2"


def test_a_duplicate_sku_is_refused_on_both_rows() -> None:
    c = catalog()
    s = sync([row_of(c, price=1), row_of(c, price=2, restock=4)], c)
    assert s.commands() == []
    written = s.settle([], NOW)
    assert written.cells[(2, RESULT)] == written.cells[(3, RESULT)]
    assert "повторяется в строках 2, 3" in str(written.cells[(2, RESULT)])


def test_a_write_off_beyond_what_is_available_is_refused() -> None:
    c = catalog(levels=(level(on_hand=5, reserved=3),))
    s = sync([row_of(c, restock="-3")], c)
    assert s.commands() == []
    assert s.rows[0].errors == ["списание: нельзя списать 3, доступно 2"]
    ok = sync([row_of(c, restock="-2")], c)
    assert ok.commands() == [
        AdjustStock(adjustment_id="sheet-puer-1", sku="puer", delta=-2, reason="write_off")
    ]


def test_service_columns_follow_the_stock() -> None:
    c = catalog(levels=(level(on_hand=7, reserved=3),))
    written = sync([row_of(catalog())], c).settle([], NOW)
    assert written.cells == {(2, ON_HAND): 7, (2, AVAILABLE): 4}


def test_a_refused_command_leaves_the_cell_and_says_why() -> None:
    c = catalog()
    s = sync([row_of(c, title="x" * 3, restock=2)], c)
    written = s.settle(["puer: too long", ""], NOW)
    assert written.cells[(2, RESULT)] == "#1 ⚠ puer: too long, +2 применено"
    assert written.cells[(2, RESTOCK)] == ""
    assert written.synced["puer"].fields.title == "Пуэр", "L stays: not agreed"


def test_the_restock_id_follows_the_generation_in_result_and_kept() -> None:
    c = catalog()
    s = sync([row_of(c, restock=10, result="#3 +5 применено · 01.12 10:00")], c)
    assert [x.adjustment_id for x in s.commands() if isinstance(x, AdjustStock)] == ["sheet-puer-4"]
    written = s.settle([""], NOW)
    assert written.cells[(2, RESULT)] == "#4 +10 применено · 05.12 14:03"
    assert written.synced["puer"].restocks == 4
    # The owner emptied Result: the kept generation still makes it a new restock.
    again = sync([row_of(c, restock=1, result="")], c, agreed(c, restocks=4))
    assert [x.adjustment_id for x in again.commands() if isinstance(x, AdjustStock)] == [
        "sheet-puer-5"
    ]


def test_a_long_sku_still_makes_a_token() -> None:
    name = tab.restock_id("s" * 64, 12)
    assert len(name) <= 64 and name.endswith("-12")
    assert name == tab.restock_id("s" * 64, 12) != tab.restock_id("t" * 64, 12)


# Exactly once, whatever the order of edits, syncs and crashes ------------------------------------
class Inventory:
    """The inventory's side of AdjustStock: an id applies once."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.on_hand = 100

    def apply(self, commands: list[AdminCommand]) -> list[str]:
        for command in commands:
            if isinstance(command, AdjustStock) and command.adjustment_id not in self.seen:
                self.seen.add(command.adjustment_id)
                self.on_hand += command.delta
        return [""] * len(commands)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("type"), st.integers(1, 9)),
            st.tuples(st.just("sync"), st.sampled_from(["whole", "killed", "write_lost"])),
            st.tuples(st.just("clear_result"), st.just(0)),
        ),
        max_size=30,
    )
)
def test_a_restock_typed_once_is_applied_once(steps: list[tuple[str, object]]) -> None:
    """Syncs killed after the command (before the write), writes lost, Result emptied by the
    owner: every restock typed is applied exactly once by the end."""
    c = catalog()
    cells = row_of(c)
    kept = agreed(c)
    inventory = Inventory()
    typed = 0
    for step, arg in steps:
        if step == "type" and not tab.text(cells[RESTOCK]):
            assert isinstance(arg, int)
            cells[RESTOCK] = f"+{arg}"
            typed += arg
        elif step == "clear_result":
            cells[RESULT] = ""
        elif step == "sync":
            s = Sync([cells], c, kept)
            outcomes = inventory.apply(s.commands())
            if arg == "killed":
                continue
            written = s.settle(outcomes, NOW)
            if arg == "write_lost":
                continue
            for (_, column), value in written.cells.items():
                cells[column] = value
            kept = {**kept, **written.synced}
    for _ in range(2):  # calm: the last syncs go through
        s = Sync([cells], c, kept)
        written = s.settle(inventory.apply(s.commands()), NOW)
        for (_, column), value in written.cells.items():
            cells[column] = value
        kept = {**kept, **written.synced}
    assert inventory.on_hand == 100 + typed
    assert not tab.text(cells[RESTOCK])
    assert cells[TITLE] == "Пуэр"
