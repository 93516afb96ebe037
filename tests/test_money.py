"""libs.money: every spelling of an amount goes back to the same kopecks."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from libs import money

amounts = st.integers(min_value=-(10**12), max_value=10**12)


def test_rubles_as_machines_write_them() -> None:
    assert money.rubles(123450) == "1234.50"
    assert money.rubles(99000) == "990.00"
    assert money.rubles(5) == "0.05"
    assert money.rubles(0) == "0.00"
    assert money.rubles(-99000) == "-990.00"
    assert money.rubles(-5) == "-0.05"


def test_kopecks_from_yookassa_amounts() -> None:
    assert money.kopecks("1234.50") == 123450
    assert money.kopecks("990") == 99000
    assert money.kopecks("0.05") == 5
    assert money.kopecks("-990.00") == -99000
    assert money.kopecks(Decimal("12.3")) == 1230
    assert money.kopecks(7) == 700


@pytest.mark.parametrize("value", ["12.345", "abc", "", "NaN", "Infinity", None, "1,50"])
def test_kopecks_refuses_what_is_not_exact_money(value: object) -> None:
    with pytest.raises(ValueError):
        money.kopecks(value)


def test_rubles_to_kopecks_reads_what_people_type() -> None:
    assert money.rubles_to_kopecks("890") == 89000
    assert money.rubles_to_kopecks(890.5) == 89050
    assert money.rubles_to_kopecks("1 290,90") == 129090
    assert money.rubles_to_kopecks("1\u00a0290") == 129000
    assert money.rubles_to_kopecks(12) == 1200


@pytest.mark.parametrize("value", ["-1", "1.005", "abc", "", "inf", float("nan")])
def test_rubles_to_kopecks_refuses_negatives_and_fractions_of_a_kopeck(value: object) -> None:
    with pytest.raises(ValueError):
        money.rubles_to_kopecks(value)  # type: ignore[arg-type]


def test_format_rub_for_people() -> None:
    assert money.format_rub(12990) == "129.90 ₽"
    assert money.format_rub(89000) == "890 ₽"
    assert money.format_rub(129000) == "1\u00a0290 ₽"
    assert money.format_rub(-5) == "-0.05 ₽"


def test_cells_read_back() -> None:
    assert money.cell_number(287050) == 2870.5
    assert money.cell_number(287000) == 2870
    assert isinstance(money.cell_number(287000), int)
    assert money.cell_kopecks(2870.5) == 287050
    assert money.cell_kopecks(2870) == 287000
    assert money.cell_kopecks("2870.50") == 287050
    assert money.cell_kopecks("-990,00") == -99000
    assert money.cell_kopecks("1 290") == 129000
    assert money.cell_kopecks(0.1 + 0.2) == 30, "a computed cell, to the nearest kopeck"
    assert money.cell_kopecks("") == 0
    with pytest.raises(ValueError):
        money.cell_kopecks("twelve")


@given(amounts)
def test_every_spelling_reads_back_to_the_same_kopecks(amount: int) -> None:
    assert money.kopecks(money.rubles(amount)) == amount
    assert money.cell_kopecks(money.rubles(amount)) == amount
    assert money.cell_kopecks(money.cell_number(amount)) == amount
    number = money.cell_number(amount)
    assert isinstance(number, int) or repr(number) == money.rubles(amount).rstrip("0")
    if amount >= 0:
        assert money.rubles_to_kopecks(money.rubles(amount)) == amount
        shown = money.format_rub(amount).removesuffix(" ₽")
        assert money.rubles_to_kopecks(shown) == amount
