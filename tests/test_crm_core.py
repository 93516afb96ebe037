"""The CRM's pure core: order rows that only move forward, a ledger where each sale is once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from libs.contracts import (
    Committed,
    Contact,
    OrderLine,
    OrderPlaced,
    PaymentPending,
    PaymentRefunded,
    PaymentSucceeded,
    Released,
    Reserved,
    ReservedLine,
)
from services.crm_sync import core
from services.crm_sync.csv_sheet import CsvSheet
from services.crm_sync.sheets import Quota

AT = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
LINES = (ReservedLine("TEA", 2, 69000), ReservedLine("CUP", 1, 149000))
TITLES = {"TEA": "Сенча", "CUP": "Гайвань"}
FACTS: list[tuple[str, core.Fact]] = [
    (
        "o-1",
        OrderPlaced(
            order_id="A1",
            customer_id=42,
            lines=tuple(OrderLine(x.sku, x.qty, x.unit_price) for x in LINES),
            total=287000,
            placed_at=AT,
            contact=Contact("Анна", "+79123456789", "Москва, Ленина 5"),
        ),
    ),
    ("i-2", Reserved("A1", LINES, 287000, AT, AT)),
    ("p-3", PaymentPending("A1", "pay-1", 287000, "https://pay", AT, AT)),
    ("i-4", Committed("A1", LINES, "pay-1", AT)),
    ("p-5", PaymentSucceeded("A1", "pay-1", 287000, AT)),
]


def test_a_paid_order_row_and_its_ledger() -> None:
    result = core.plan(FACTS, {}, set(), TITLES)
    row = result.orders["A1"]
    assert row.status == "paid" and row.payment_id == "pay-1"
    assert row.values()[:4] == ["A1", "2026-11-24 12:00:00", "paid", "Анна"]
    assert row.items == "Сенча × 2; Гайвань × 1" and row.values()[9] == "2870.00"
    assert [(s.sku, s.qty, s.amount) for s in result.sales] == [
        ("TEA", 2, 138000),
        ("CUP", 1, 149000),
    ]


@given(st.permutations(FACTS), st.integers(min_value=1, max_value=3))
def test_order_and_redelivery_change_nothing(
    facts: list[tuple[str, core.Fact]], times: int
) -> None:
    once = core.plan(FACTS, {}, set(), TITLES)
    shuffled = core.plan(facts * times, {}, set(), TITLES)
    assert shuffled.orders["A1"].status == once.orders["A1"].status == "paid"
    assert sorted(s.key for s in shuffled.sales) == sorted(s.key for s in once.sales)


def test_rows_already_in_the_ledger_are_not_planned_again() -> None:
    first = core.plan(FACTS, {}, set(), TITLES)
    again = core.plan(FACTS, first.orders, {s.key for s in first.sales}, TITLES)
    assert again.sales == []


def test_a_refund_adds_negative_rows_and_daily_sums() -> None:
    refund = PaymentRefunded("A1", "pay-1", "ref-1", 69000, (OrderLine("TEA", 1, 69000),), "", AT)
    result = core.plan([*FACTS, ("p-6", refund)], {}, set(), TITLES)
    assert result.orders["A1"].status == "refunded"
    assert result.sales[-1].qty == -1 and result.sales[-1].amount == -69000
    assert core.daily(result.sales) == [["2026-11-24", "1", "2", "2180.00"]]


def test_an_expired_order_does_not_undo_a_payment() -> None:
    late = Released("A1", LINES, "expired", AT)
    result = core.plan([*FACTS, ("i-9", late)], {}, set(), TITLES)
    assert result.orders["A1"].status == "paid"
    expired = core.plan([*FACTS[:3], ("i-9", late)], {}, set(), TITLES)
    assert expired.orders["A1"].status == "expired"


def test_csv_tabs_exactly_once_across_a_restart(tmp_path: Path) -> None:
    sheet = CsvSheet(tmp_path)
    sheet.load()
    first = core.plan(FACTS, sheet.orders, sheet.keys, TITLES)
    sheet.write(first)
    # A restart, and the same facts again (a crash between the write and the ack).
    again = CsvSheet(tmp_path)
    again.load()
    assert again.orders["A1"].total == 287000 and again.orders["A1"].status == "paid"
    again.write(core.plan(FACTS, again.orders, again.keys, TITLES))
    sales = (tmp_path / "sales.csv").read_text(encoding="utf-8").splitlines()
    orders = (tmp_path / "orders.csv").read_text(encoding="utf-8").splitlines()
    assert len(sales) == 1 + 2 and len(orders) == 1 + 1
    assert (tmp_path / "daily.csv").read_text(encoding="utf-8").splitlines()[1] == (
        "2026-11-24,1,3,2870.00"
    )


def test_a_renamed_header_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "sales.csv").write_text("Something else\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"sales\.csv: the header row"):
        CsvSheet(tmp_path).load()


async def test_the_quota_never_lets_more_through_in_any_window() -> None:
    quota = Quota(per_minute=5, window=0.3)
    loop = asyncio.get_running_loop()
    times: list[float] = []

    async def one() -> None:
        await quota.acquire()
        times.append(loop.time())

    await asyncio.gather(*(one() for _ in range(16)))
    times.sort()
    assert all(later - times[i] >= 0.3 for i, later in enumerate(times[5:])), times
    assert times[-1] - times[0] < 0.3 * 3 + 0.2, "no slower than the quota needs"
