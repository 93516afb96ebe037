"""The cart's rules (services.bot.cart), without Telegram or NATS."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from libs.contracts import CatalogProduct, OrderLine
from services.bot import cart
from services.bot.cart import MAX_QTY


def product(sku: str, price: int) -> CatalogProduct:
    return CatalogProduct(sku, f"Product {sku}", "", price, "", "goods", 0)


FEW = product("FEW", 99_000)
MANY = product("MANY", 2_550)
CATALOG = {"FEW": FEW, "MANY": MANY}


def test_adding_puts_a_line_in_or_adds_to_it_in_the_order_added() -> None:
    lines = cart.add({}, "FEW", 2)
    assert lines == {"FEW": 2}
    lines = cart.add(lines, "MANY", 1)
    lines = cart.add(lines, "FEW", 3)
    assert lines == {"FEW": 5, "MANY": 1}
    assert list(lines) == ["FEW", "MANY"]


def test_adding_never_goes_past_the_most_a_line_holds() -> None:
    assert cart.add({"FEW": 98}, "FEW", 5) == {"FEW": MAX_QTY}
    assert cart.add({}, "FEW", 1000) == {"FEW": MAX_QTY}


def test_an_add_press_adds_at_least_one_and_at_most_a_full_line() -> None:
    # A forged or stale button with 0, a negative or a huge quantity.
    assert [cart.added(q) for q in (-5, 0, 1, 7, 99, 100, 10**6)] == [1, 1, 1, 7, 99, 99, 99]
    assert cart.add({}, "FEW", 0) == {"FEW": 1}


def test_the_input_cart_is_never_changed() -> None:
    lines = {"FEW": 1}
    cart.add(lines, "FEW", 1)
    cart.change(lines, "FEW", "del")
    cart.set_qty(lines, "FEW", 5)
    assert lines == {"FEW": 1}


def test_plus_minus_and_remove_on_a_cart_line() -> None:
    lines = {"FEW": 2, "MANY": 1}
    assert cart.change(lines, "FEW", "inc") == {"FEW": 3, "MANY": 1}
    assert cart.change(lines, "FEW", "dec") == {"FEW": 1, "MANY": 1}
    assert cart.change(lines, "MANY", "dec") == {"FEW": 2}, "down to zero: the line goes"
    assert cart.change(lines, "FEW", "del") == {"MANY": 1}
    assert cart.change({"FEW": MAX_QTY}, "FEW", "inc") == {"FEW": MAX_QTY}
    # A press on a line already gone (another device, an old cart message).
    assert cart.change({}, "FEW", "dec") == {}
    assert cart.change({}, "FEW", "del") == {}
    assert cart.change({}, "FEW", "inc") == {"FEW": 1}


def test_a_one_tap_fix_sets_the_line_to_what_is_left_or_removes_it() -> None:
    lines = {"FEW": 7, "MANY": 1}
    assert cart.set_qty(lines, "FEW", 3) == {"FEW": 3, "MANY": 1}
    assert cart.set_qty(lines, "FEW", 0) == {"MANY": 1}
    assert cart.set_qty(lines, "FEW", 500) == {"FEW": MAX_QTY, "MANY": 1}


def test_the_card_offers_no_more_than_is_available() -> None:
    assert cart.card_qty(1, 50) == 1
    assert cart.card_qty(7, 5) == 5, "a stale card asking for more than is left"
    assert cart.card_qty(0, 5) == 1
    assert cart.card_qty(150, 500) == MAX_QTY
    assert cart.card_qty(3, 0) == 1, "a sold-out card still shows one (and no Add button)"
    assert cart.card_more(4, 5) == 5 and cart.card_more(5, 5) == 5
    assert cart.card_less(2) == 1 and cart.card_less(1) == 1


@given(st.integers(-10, 200), st.integers(-10, 200))
def test_the_card_quantity_is_always_one_to_what_can_be_had(requested: int, available: int) -> None:
    qty = cart.card_qty(requested, available)
    assert 1 <= qty <= MAX_QTY
    assert qty <= max(1, available)
    assert cart.card_more(qty, available) <= available


def test_the_total_is_in_kopecks_from_the_catalogs_prices() -> None:
    items = cart.priced({"FEW": 2, "MANY": 3}, CATALOG)
    assert [(line.product.sku, line.qty, line.amount) for line in items.lines] == [
        ("FEW", 2, 198_000),
        ("MANY", 3, 7_650),
    ]
    assert items.total == 205_650
    assert items.ordered() == (OrderLine("FEW", 2, 99_000), OrderLine("MANY", 3, 2_550))
    assert cart.total(items.ordered()) == items.total
    assert isinstance(items.total, int)


def test_a_line_whose_product_left_the_catalog_is_neither_shown_counted_nor_ordered() -> None:
    items = cart.priced({"GONE": 4, "FEW": 1}, CATALOG)
    assert [line.product.sku for line in items.lines] == ["FEW"]
    assert items.total == 99_000
    assert items.gone == ("GONE",)
    assert cart.priced({"GONE": 1}, CATALOG).lines == ()


def test_a_sold_out_line_stays_shown_and_ordered_the_inventory_answers_it() -> None:
    # Stock is not the cart's to judge: the order goes, and the inventory's answer offers fixes.
    items = cart.priced({"FEW": 3}, CATALOG)
    assert items.ordered() == (OrderLine("FEW", 3, 99_000),)


def test_an_empty_line_is_not_ordered() -> None:
    assert cart.priced({"FEW": 0}, CATALOG).lines == ()
