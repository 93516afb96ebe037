"""The CRM's pure core: order rows derived from the order's lifecycle (whatever the order and
repetition of its facts, in one batch or many), a ledger where each sale is once."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from libs.contracts import (
    CommitFailed,
    Committed,
    Contact,
    DeliveryChoice,
    OrderLine,
    OrderPlaced,
    PaymentAuthorized,
    PaymentCanceled,
    PaymentPending,
    PaymentRefunded,
    PaymentSucceeded,
    Released,
    Reserved,
    ReservedLine,
)
from libs.lifecycle import Order, Status
from services.crm_sync import core
from services.crm_sync.csv_sheet import CsvSheet
from services.crm_sync.sheets import Quota

AT = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
EXPIRY = AT + timedelta(minutes=15)
LINES = (ReservedLine("TEA", 2, 69000), ReservedLine("CUP", 1, 149000))
TITLES = {
    "TEA": "Сенча",
    "CUP": "Гайвань",
    "delivery:courier-msk": "Курьер по Москве",
    "delivery:pickup": "Самовывоз",
}
Batch = Sequence[tuple[str, core.Fact]]
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
# The reservation ends unpaid; the customer pays a few seconds later.
EXPIRED: list[tuple[str, core.Fact]] = [
    FACTS[0],
    ("i-2", Reserved("A1", LINES, 287000, EXPIRY, AT + timedelta(seconds=1))),
    (
        "p-3",
        PaymentPending("A1", "pay-1", 287000, "https://pay", EXPIRY, AT + timedelta(seconds=2)),
    ),
    ("i-4", Released("A1", LINES, "expired", EXPIRY)),
]
PAID_LATE = [
    *EXPIRED,
    ("p-5", PaymentAuthorized("A1", "pay-1", 287000, EXPIRY + timedelta(seconds=5))),
    ("i-6", Committed("A1", LINES, "pay-1", EXPIRY + timedelta(seconds=6))),
    ("p-7", PaymentSucceeded("A1", "pay-1", 287000, EXPIRY + timedelta(seconds=8))),
]
REFUSED_LATE: list[tuple[str, core.Fact]] = [
    *EXPIRED,
    ("p-5", PaymentAuthorized("A1", "pay-1", 287000, EXPIRY + timedelta(seconds=5))),
    ("i-6", CommitFailed("A1", "stock_gone", "pay-1", (), EXPIRY + timedelta(seconds=6))),
    ("p-7", PaymentCanceled("A1", "pay-1", "canceled_by_merchant", EXPIRY + timedelta(seconds=9))),
]
REFUND = (
    "p-6",
    PaymentRefunded("A1", "pay-1", "ref-1", 69000, (OrderLine("TEA", 1, 69000),), "", AT),
)


def in_batches(batches: Sequence[Batch]) -> tuple[dict[str, core.OrderRow], list[core.SaleRow]]:
    """What the sheet shows after these batches, the states kept between them as crm_sync keeps
    them in KV (a restart between two batches loses nothing else)."""
    kept: dict[str, Order] = {}
    rows: dict[str, core.OrderRow] = {}
    ledger: dict[str, core.SaleRow] = {}
    for batch in batches:
        plan = core.plan(batch, kept, TITLES)
        kept.update(plan.states)
        rows.update(plan.orders)
        ledger.update((sale.key, sale) for sale in plan.sales)
    return rows, sorted(ledger.values(), key=lambda sale: sale.key)


def test_a_paid_order_row_and_its_ledger() -> None:
    result = core.plan(FACTS, {}, TITLES)
    row = result.orders["A1"]
    assert row.status == "paid" and row.payment_id == "pay-1"
    assert row.values()[:4] == ["A1", "2026-11-24 12:00:00", "paid", "Анна"]
    assert row.items == "Сенча × 2; Гайвань × 1" and row.values()[9] == "2870.00"
    assert [(s.sku, s.qty, s.amount) for s in result.sales] == [
        ("TEA", 2, 138000),
        ("CUP", 1, 149000),
    ]


def test_paid_after_the_reservation_expired_and_the_stock_taken_again_is_paid() -> None:
    """The defect: the Orders tab said "expired" with a payment id and "Paid at" filled in."""
    (rows, _), (late, ledger) = in_batches([EXPIRED]), in_batches([PAID_LATE])
    assert rows["A1"].status == "expired"
    row = late["A1"]
    assert (row.status, row.payment_id, row.paid_at) == ("paid", "pay-1", "2026-11-24 12:15:08")
    assert (row.customer, row.phone, row.total) == ("Анна", "+79123456789", 287000)
    assert [(s.key, s.qty) for s in ledger] == [("i-6:CUP", 1), ("i-6:TEA", 2)]
    # The same facts as they come to crm_sync: the payment long after the expiry was written.
    again, _ = in_batches([EXPIRED, PAID_LATE[4:5], PAID_LATE[5:]])
    assert again["A1"] == row


def test_paid_late_but_the_stock_was_gone_returns_the_money_then_is_cancelled() -> None:
    refused, ledger = in_batches([REFUSED_LATE[:-1]])
    assert refused["A1"].status == "returning money" and refused["A1"].paid_at == ""
    assert ledger == [], "nothing was sold"
    back, _ = in_batches([REFUSED_LATE[:-1], REFUSED_LATE[-1:]])
    assert back["A1"].status == "cancelled" and back["A1"].payment_id == "pay-1"


def test_the_status_column_is_the_lifecycles_word() -> None:
    assert [core.status_text(s) for s in (Status.AWAITING_PAYMENT, Status.PARTLY_REFUNDED)] == [
        "awaiting payment",
        "partly refunded",
    ]


@given(
    st.sampled_from([FACTS, [*FACTS, REFUND], EXPIRED, PAID_LATE, REFUSED_LATE]),
    st.data(),
)
def test_any_order_and_repetition_of_an_orders_facts_in_any_batches_gives_the_same_row(
    facts: list[tuple[str, core.Fact]], data: st.DataObject
) -> None:
    again = data.draw(st.lists(st.sampled_from(facts), max_size=len(facts)), label="again")
    delivered = data.draw(st.permutations([*facts, *again]), label="delivered")
    cuts = sorted(data.draw(st.lists(st.integers(0, len(delivered)), max_size=3), label="cuts"))
    edges = [0, *cuts, len(delivered)]
    batches = [delivered[a:b] for a, b in itertools.pairwise(edges)]
    assert in_batches(batches) == in_batches([facts])


def test_a_redelivered_batch_changes_no_state_and_no_row() -> None:
    first = core.plan(PAID_LATE, {}, TITLES)
    again = core.plan(PAID_LATE, first.states, TITLES)
    assert again.states == {} and again.orders == first.orders


def test_a_refund_adds_negative_rows_and_daily_sums() -> None:
    result = core.plan([*FACTS, REFUND], {}, TITLES)
    assert result.orders["A1"].status == "partly refunded"
    assert result.sales[-1].qty == -1 and result.sales[-1].amount == -69000
    assert core.daily(result.sales) == [["2026-11-24", "1", "2", "2180.00"]]


def test_a_hold_that_lapsed_after_the_commit_takes_the_sale_back_once() -> None:
    """The inventory put the goods back (its payment was cancelled before capture)."""
    authorized = ("p-4", PaymentAuthorized("A1", "pay-1", 287000, AT))
    lapsed = ("p-6", PaymentCanceled("A1", "pay-1", "expired_on_capture", AT))
    back = ("i-7", Released("A1", LINES, "payment_canceled", AT, payment_id="pay-1"))
    facts = [*FACTS[:3], authorized, FACTS[3], lapsed, back]
    rows, ledger = in_batches([facts[:5], facts[5:], facts[5:]])
    assert rows["A1"].status == "cancelled"
    assert [(s.key, s.qty) for s in ledger] == [
        ("i-4:CUP", 1),
        ("i-4:TEA", 2),
        ("i-7:CUP", -1),
        ("i-7:TEA", -2),
    ]
    assert core.daily(ledger) == [["2026-11-24", "1", "0", "0.00"]]
    # A reservation released because its payment was declined sold nothing: no rows.
    declined = core.plan([*FACTS[:3], lapsed, back], {}, TITLES)
    assert declined.sales == [] and declined.orders["A1"].status == "cancelled"


def test_an_expired_order_does_not_undo_a_payment() -> None:
    late = Released("A1", LINES, "expired", AT)
    result = core.plan([*FACTS, ("i-9", late)], {}, TITLES)
    assert result.orders["A1"].status == "paid"
    expired = core.plan([*FACTS[:3], ("i-9", late)], {}, TITLES)
    assert expired.orders["A1"].status == "expired"


def test_csv_tabs_exactly_once_across_a_restart(tmp_path: Path) -> None:
    sheet = CsvSheet(tmp_path)
    sheet.load()
    first = core.plan(FACTS, {}, TITLES)
    sheet.write(first)
    # A restart, and the same facts again (a crash between the write and the ack).
    again = CsvSheet(tmp_path)
    again.load()
    assert again.orders["A1"].total == 287000 and again.orders["A1"].status == "paid"
    again.write(core.plan(FACTS, first.states, TITLES))
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


# the delivery: a column of Orders, a line of Sales --------------------------------------------
COURIER = DeliveryChoice(method_id="courier-msk", price=30000, city="Москва")


def delivered_by(choice: DeliveryChoice) -> list[tuple[str, core.Fact]]:
    """FACTS with the delivery chosen and reserved, the order's total with its price."""
    placed, reserved = FACTS[0][1], FACTS[1][1]
    assert isinstance(placed, OrderPlaced) and isinstance(reserved, Reserved)
    total = 287000 + choice.price
    return [
        ("o-1", msgspec.structs.replace(placed, delivery=choice, total=total)),
        ("i-2", msgspec.structs.replace(reserved, delivery=choice, total=total)),
        ("p-3", PaymentPending("A1", "pay-1", total, "https://pay", AT, AT)),
        ("i-4", Committed("A1", LINES, "pay-1", AT)),
        ("p-5", PaymentSucceeded("A1", "pay-1", total, AT)),
    ]


COURIERED = delivered_by(COURIER)
EVERYTHING_BACK = (
    "p-6",
    PaymentRefunded(
        "A1",
        "pay-1",
        "ref-2",
        317000,
        tuple(OrderLine(x.sku, x.qty, x.unit_price) for x in LINES),
        "cancelled",
        AT,
        delivery=COURIER,
    ),
)


def test_a_couriered_order_shows_its_delivery_and_sells_it_as_a_line() -> None:
    result = core.plan(COURIERED, {}, TITLES)
    row = result.orders["A1"]
    assert (row.delivery, row.total) == ("Курьер по Москве, 300 ₽", 317000)
    at = core.ORDER_COLUMNS.index("Delivery")
    assert row.values()[at] == row.delivery
    assert [(s.key, s.sku, s.title, s.qty, s.unit_price, s.amount) for s in result.sales] == [
        ("i-4:TEA", "TEA", "Сенча", 2, 69000, 138000),
        ("i-4:CUP", "CUP", "Гайвань", 1, 149000, 149000),
        ("i-4:delivery:courier-msk", "delivery:courier-msk", "Курьер по Москве", 1, 30000, 30000),
    ]
    # Daily: the delivery is revenue, not a unit sold.
    assert core.daily(result.sales) == [["2026-11-24", "1", "3", "3170.00"]]
    sheet_row = result.sales[-1].cells()
    assert core.sale_row(sheet_row) == result.sales[-1], "read back from the sheet, the same"


def test_the_payment_column_says_how_the_customer_pays() -> None:
    placed = FACTS[0][1]
    assert isinstance(placed, OrderPlaced)
    words = {}
    for method in ("card", "sbp", "cash"):
        batch = [("o-1", msgspec.structs.replace(placed, payment=method)), *FACTS[1:]]
        words[method] = core.plan(batch, {}, TITLES).orders["A1"].payment
    assert words == {"card": "card", "sbp": "SBP", "cash": "on receipt"}
    assert core.ORDER_COLUMNS[-1] == "Payment"
    row = core.plan(FACTS, {}, TITLES).orders["A1"]
    assert row.values()[-1] == "card", "the last column"
    assert core.order_row(row.cells()) == row, "read back from the sheet, the same row"
    # An order kept before the shop asked (its state has no way to pay): the cell is empty,
    # and stays so as its later facts come.
    kept_before = msgspec.json.decode(
        b'{"order_id": "A1", "placed_at": "2026-11-24T12:00:00Z"}', type=Order
    )
    later = core.plan(FACTS[1:], {"A1": kept_before}, TITLES).orders["A1"]
    assert later.payment == "" and later.status == "paid"
    assert core.plan(FACTS[1:], {}, TITLES).orders["A1"].payment == "", "not seen as placed"


def test_a_free_delivery_is_written_in_orders_and_is_no_line_of_sales() -> None:
    pickup = core.plan(delivered_by(DeliveryChoice(method_id="pickup", price=0)), {}, TITLES)
    assert pickup.orders["A1"].delivery == "Самовывоз, бесплатно"
    assert [s.sku for s in pickup.sales] == ["TEA", "CUP"]
    assert core.plan(FACTS, {}, TITLES).orders["A1"].delivery == "", "none chosen"


def test_a_method_gone_from_the_catalog_is_named_by_its_id() -> None:
    result = core.plan(COURIERED, {}, {"TEA": "Сенча"})
    assert result.orders["A1"].delivery == "courier-msk, 300 ₽"
    assert result.sales[-1].title == "courier-msk"


def test_a_full_refund_takes_the_delivery_back_a_partial_one_does_not() -> None:
    _, partly = in_batches([[*COURIERED, REFUND]])
    assert [s.sku for s in partly if s.qty < 0] == ["TEA"]
    rows, ledger = in_batches([COURIERED, [EVERYTHING_BACK]])
    assert rows["A1"].status == "refunded"
    back = [(s.key, s.qty, s.amount) for s in ledger if s.qty < 0]
    assert back == [
        ("p-6:CUP", -1, -149000),
        ("p-6:TEA", -2, -138000),
        ("p-6:delivery:courier-msk", -1, -30000),
    ]
    assert core.daily(ledger) == [["2026-11-24", "1", "0", "0.00"]]


def test_a_hold_that_lapsed_after_the_commit_takes_the_delivery_back_too() -> None:
    lapsed = ("p-6", PaymentCanceled("A1", "pay-1", "expired_on_capture", AT))
    back = ("i-7", Released("A1", LINES, "payment_canceled", AT, payment_id="pay-1"))
    _, ledger = in_batches([COURIERED[:4], [lapsed, back]])
    assert ("i-7:delivery:courier-msk", -1) in [(s.key, s.qty) for s in ledger]
    assert core.daily(ledger) == [["2026-11-24", "1", "0", "0.00"]]


def in_stream_order(delivered: list[tuple[str, core.Fact]]) -> list[tuple[str, core.Fact]]:
    """The same facts, each stream's (o-, i-, p-) in its own order: the three consumers
    interleave, but a stream's facts never overtake each other (a copy comes after the first)."""
    by_stream: dict[str, list[tuple[str, core.Fact]]] = {}
    for fact_id, fact in delivered:
        by_stream.setdefault(fact_id[0], []).append((fact_id, fact))
    ordered = {
        stream: iter(sorted(facts, key=lambda f: int(f[0].split("-")[1])))
        for stream, facts in by_stream.items()
    }
    return [next(ordered[fact_id[0]]) for fact_id, _ in delivered]


@given(
    st.sampled_from([COURIERED, [*COURIERED, REFUND], [*COURIERED, EVERYTHING_BACK]]),
    st.data(),
)
def test_the_delivery_line_is_once_whatever_the_streams_interleaving_and_batches(
    facts: list[tuple[str, core.Fact]], data: st.DataObject
) -> None:
    again = data.draw(st.lists(st.sampled_from(facts), max_size=len(facts)), label="again")
    delivered = in_stream_order(data.draw(st.permutations([*facts, *again]), label="delivered"))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(delivered)), max_size=3), label="cuts"))
    edges = [0, *cuts, len(delivered)]
    batches = [delivered[a:b] for a, b in itertools.pairwise(edges)]
    assert in_batches(batches) == in_batches([facts])
