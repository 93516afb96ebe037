"""What the bot tells whom as an order's facts come in: decided from the order's lifecycle state
before and after each fact (services.bot.notices), without Telegram or NATS. Facts are fed the
way the Notifier feeds them: folded one by one, `said` kept between them."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from libs import lifecycle
from libs.contracts import (
    CommitFailed,
    Committed,
    LineProblem,
    OrderLine,
    OrderPlaced,
    PaymentAuthorized,
    PaymentCanceled,
    PaymentFailed,
    PaymentPending,
    PaymentRefunded,
    PaymentSucceeded,
    Rejected,
    Released,
    Reserved,
    ReservedLine,
)
from libs.lifecycle import Status
from services.bot.model import OrderView
from services.bot.notices import Kind, Notice, notices

T0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
ID = "o-1"
LINES = (ReservedLine("FEW", 2, 99_000),)
PLACED = OrderPlaced(ID, 7, (OrderLine("FEW", 2, 99_000),), 198_000, T0, chat_id=7)
RESERVED = Reserved(ID, LINES, 198_000, T0 + timedelta(minutes=15), T0)
REJECTED = Rejected(ID, "out_of_stock", (LineProblem("FEW", 2, 1),), T0)
PENDING = PaymentPending(ID, "pay-1", 198_000, "https://pay/1", T0 + timedelta(minutes=15), T0)
EXPIRED = Released(ID, LINES, "expired", T0 + timedelta(minutes=15))
AUTHORIZED = PaymentAuthorized(ID, "pay-1", 198_000, T0 + timedelta(minutes=20))
SUCCEEDED = PaymentSucceeded(ID, "pay-1", 198_000, T0 + timedelta(minutes=21))
COMMITTED = Committed(ID, LINES, "pay-1", T0 + timedelta(minutes=20, seconds=1))
STOCK_GONE = CommitFailed(ID, "stock_gone", "pay-1", (), T0 + timedelta(minutes=20, seconds=1))
HOLD_RELEASED = PaymentCanceled(ID, "pay-1", "canceled_by_merchant", T0 + timedelta(minutes=21))
CANCELED = PaymentCanceled(ID, "pay-1", "expired_on_confirmation", T0 + timedelta(minutes=16))
LAPSED = PaymentCanceled(ID, "pay-1", "expired_on_capture", T0 + timedelta(days=7))
FAILED = PaymentFailed(ID, "", "invalid_request", T0)


def refunded(refund_id: str, amount: int, minutes: int = 30) -> PaymentRefunded:
    return PaymentRefunded(ID, "pay-1", refund_id, amount, (), "returned", T0 + timedelta(minutes))


def told(facts: Iterable[lifecycle.OrderFact], placed: OrderPlaced = PLACED) -> list[Notice]:
    """Every notice for these facts, one after another, as the Notifier decides them."""
    order = lifecycle.evolve(None, placed)
    said: set[str] = set()
    out: list[Notice] = []
    for fact in facts:
        after = lifecycle.evolve(order, fact)
        new = notices(order, after, said)
        said |= {n.key for n in new if n.key}
        out += new
        order = after
    return out


def kinds(found: list[Notice]) -> list[tuple[str, Kind]]:
    return [(n.to, n.kind) for n in found]


PAY = ("customer", Kind.PAY)
PAID = [("customer", Kind.PAID), ("admin", Kind.PAID)]


# On time -----------------------------------------------------------------------------------------
def test_an_on_time_payment_is_paid_once_the_stock_is_committed() -> None:
    found = told([RESERVED, PENDING, AUTHORIZED, COMMITTED, SUCCEEDED])
    assert kinds(found) == [PAY, *PAID]
    assert not any(n.late for n in found)


def test_money_alone_is_not_paid_yet() -> None:
    """payments.succeeded says the money came; "paid" waits for the inventory's commit."""
    assert kinds(told([RESERVED, PENDING, SUCCEEDED])) == [PAY]
    assert kinds(told([RESERVED, PENDING, AUTHORIZED])) == [PAY]
    assert kinds(told([RESERVED, PENDING, SUCCEEDED, COMMITTED])) == [PAY, *PAID]


def test_a_redelivered_fact_tells_nothing() -> None:
    journey: list[lifecycle.OrderFact] = [
        RESERVED,
        PENDING,
        AUTHORIZED,
        COMMITTED,
        SUCCEEDED,
        refunded("r1", 99_000),
    ]
    once = told(journey)
    assert told(fact for fact in journey for _ in range(3)) == once
    order = lifecycle.fold([PLACED, *journey])
    assert order is not None
    for fact in journey:
        assert notices(order, lifecycle.evolve(order, fact)) == []


@pytest.mark.parametrize(
    "facts", list(itertools.permutations([RESERVED, PENDING, AUTHORIZED, COMMITTED, SUCCEEDED]))
)
def test_in_any_order_a_paid_order_is_announced_once(facts: tuple[lifecycle.OrderFact]) -> None:
    found = told([*facts, *facts[::2]])  # and some of them again
    counts = Counter(kinds(found))
    assert counts[("customer", Kind.PAID)] == counts[("admin", Kind.PAID)] == 1, found
    assert set(counts) <= {PAY, *PAID}, found


# Late payments -----------------------------------------------------------------------------------
def test_a_late_payment_with_the_stock_still_there_is_paid_and_says_so() -> None:
    found = told([RESERVED, PENDING, EXPIRED, AUTHORIZED, COMMITTED, SUCCEEDED])
    assert kinds(found) == [PAY, ("customer", Kind.EXPIRED), *PAID]
    assert [n.late for n in found if n.kind == Kind.PAID] == [True, True]


def test_a_late_payment_whose_stock_is_gone_gets_its_money_back_two_stage() -> None:
    found = told([RESERVED, PENDING, EXPIRED, AUTHORIZED, STOCK_GONE, HOLD_RELEASED])
    assert kinds(found) == [
        PAY,
        ("customer", Kind.EXPIRED),
        ("customer", Kind.STOCK_GONE),
        ("admin", Kind.STOCK_GONE),
        ("customer", Kind.MONEY_BACK),
    ]


def test_a_late_one_stage_payment_whose_stock_is_gone_is_refunded_not_sold() -> None:
    """The automatic refund is the money back, not a refund of a sale."""
    found = told([RESERVED, PENDING, EXPIRED, SUCCEEDED, STOCK_GONE, refunded("stock-gone", 1)])
    assert kinds(found) == [
        PAY,
        ("customer", Kind.EXPIRED),
        ("customer", Kind.STOCK_GONE),
        ("admin", Kind.STOCK_GONE),
        ("customer", Kind.MONEY_BACK),
    ]


@pytest.mark.parametrize(
    "facts", list(itertools.permutations([EXPIRED, AUTHORIZED, STOCK_GONE, HOLD_RELEASED]))
)
def test_in_any_order_a_refused_late_payment_is_told_once(
    facts: tuple[lifecycle.OrderFact],
) -> None:
    found = told([RESERVED, PENDING, *facts, *facts])
    counts = Counter(kinds(found))
    assert counts[("admin", Kind.STOCK_GONE)] == counts[("customer", Kind.MONEY_BACK)] == 1, found
    assert counts[("customer", Kind.STOCK_GONE)] <= 1 and counts[("customer", Kind.EXPIRED)] <= 1
    assert not {*PAID} & set(counts), found
    assert ("customer", Kind.CANCELLED) not in counts, "not 'no money was taken' while it was"
    assert kinds(found)[-1] == ("customer", Kind.MONEY_BACK), "the money back comes last"


def test_expired_is_said_once_though_the_status_comes_back() -> None:
    """Expired, a late payment being confirmed, its hold cancelled: expired again, unsaid."""
    order = lifecycle.fold([PLACED, RESERVED, PENDING, EXPIRED, AUTHORIZED, HOLD_RELEASED])
    assert order is not None and order.status == Status.EXPIRED
    assert kinds(told([RESERVED, PENDING, EXPIRED, AUTHORIZED, HOLD_RELEASED])) == [
        PAY,
        ("customer", Kind.EXPIRED),
    ]


# Unpaid endings ----------------------------------------------------------------------------------
def test_rejected() -> None:
    assert kinds(told([REJECTED, REJECTED])) == [("customer", Kind.REJECTED)]


def test_expired_unpaid() -> None:
    assert kinds(told([RESERVED, PENDING, EXPIRED, CANCELED])) == [PAY, ("customer", Kind.EXPIRED)]


@pytest.mark.parametrize(
    "facts",
    [
        [CANCELED, Released(ID, LINES, "payment_canceled", T0 + timedelta(minutes=17))],
        [Released(ID, LINES, "payment_canceled", T0 + timedelta(minutes=17)), CANCELED],
    ],
)
def test_a_cancelled_payment_is_told_once_whichever_stream_comes_first(
    facts: list[lifecycle.OrderFact],
) -> None:
    assert kinds(told([RESERVED, PENDING, *facts])) == [PAY, ("customer", Kind.PAYMENT_CANCELED)]


def test_a_payment_that_could_not_be_made() -> None:
    released = Released(ID, LINES, "payment_failed", T0 + timedelta(seconds=1))
    assert kinds(told([RESERVED, FAILED, released])) == [
        ("customer", Kind.PAYMENT_FAILED),
        ("admin", Kind.PAYMENT_FAILED),
    ]


def test_released_by_the_shop() -> None:
    released = Released(ID, LINES, "admin", T0 + timedelta(minutes=1))
    assert kinds(told([RESERVED, PENDING, released])) == [PAY, ("customer", Kind.CANCELLED)]


def test_a_paid_order_whose_hold_lapsed_is_cancelled_for_both() -> None:
    found = told([RESERVED, PENDING, AUTHORIZED, COMMITTED, LAPSED])
    assert kinds(found) == [
        PAY,
        *PAID,
        ("customer", Kind.PAYMENT_CANCELED),
        ("admin", Kind.PAID_CANCELLED),
    ]


# Refunds -----------------------------------------------------------------------------------------
def test_each_refund_of_a_sale_is_told_once() -> None:
    first, second = refunded("r1", 99_000), refunded("r2", 99_000, 40)
    found = told([RESERVED, PENDING, SUCCEEDED, COMMITTED, first, first, second, first])
    refunds = [(n.to, n.refund.refund_id) for n in found if n.refund is not None]
    assert refunds == [("customer", "r1"), ("admin", "r1"), ("customer", "r2"), ("admin", "r2")]
    assert [n.kind for n in found if n.refund is not None] == [Kind.REFUNDED] * 4


def test_a_refund_seen_before_the_commit_is_told_after_the_sale() -> None:
    found = told([RESERVED, PENDING, SUCCEEDED, refunded("r1", 99_000), COMMITTED])
    assert kinds(found) == [PAY, *PAID, ("customer", Kind.REFUNDED), ("admin", Kind.REFUNDED)]


# The view ----------------------------------------------------------------------------------------
def _view(**changes: object) -> OrderView:
    view = OrderView(
        order_id=ID,
        user_id=7,
        chat_id=7,
        language="ru",
        lines=PLACED.lines,
        total=PLACED.total,
        placed_at=T0,
        order=lifecycle.evolve(None, PLACED),
    )
    return msgspec.structs.replace(view, **changes)


def test_the_view_folds_facts_and_a_known_one_changes_nothing() -> None:
    view = _view()
    assert view.status == Status.PLACED
    for fact in (RESERVED, PENDING, AUTHORIZED, COMMITTED):
        view = view.with_fact(fact)
        assert view.with_fact(fact) is view
    assert view.status == Status.PAID and view.state.pay_url == "https://pay/1"
    encoded = msgspec.json.encode(view)
    assert msgspec.json.decode(encoded, type=OrderView) == view
    assert b'"status"' not in encoded, "the status is derived, never stored"


def test_a_view_stored_before_the_lifecycle_still_reads() -> None:
    old = {
        "order_id": ID,
        "user_id": 7,
        "chat_id": 7,
        "language": "ru",
        "lines": [{"sku": "FEW", "qty": 2, "unit_price": 99_000}],
        "total": 198_000,
        "placed_at": T0.isoformat(),
        "status": "paid",
        "pay_url": "https://pay/1",
        "announced": True,
    }
    view = msgspec.json.decode(msgspec.json.encode(old), type=OrderView)
    assert view.order is None and view.status == Status.PAID  # My orders still says paid
    later = view.with_fact(refunded("r1", 99_000))
    assert later.order is not None and later.order.refunds and later.order.total == 198_000


# Paid on receipt ----------------------------------------------------------------------------------
CASH_PLACED = msgspec.structs.replace(PLACED, payment="cash")
CASH = PaymentSucceeded(ID, f"cash-{ID}", 198_000, T0 + timedelta(hours=5))
CASH_COMMITTED = Committed(ID, LINES, f"cash-{ID}", T0 + timedelta(hours=5, seconds=1))


def test_an_order_paid_on_receipt_is_held_told_and_carded_then_paid_on_the_same_card() -> None:
    held = lifecycle.evolve(lifecycle.evolve(None, CASH_PLACED), RESERVED)
    assert held.status is Status.PAY_ON_RECEIPT
    assert kinds(told([RESERVED], CASH_PLACED)) == [
        ("customer", Kind.ON_RECEIPT),
        ("admin", Kind.ON_RECEIPT),  # the card with "paid on receipt"
    ]
    # Paid at the counter: the customer hears it, the admin card is edited, not sent again.
    assert kinds(told([RESERVED, CASH, CASH_COMMITTED], CASH_PLACED))[2:] == [
        ("customer", Kind.PAID)
    ]
    # Not collected: the hold ends, as any reservation's.
    assert kinds(told([RESERVED, EXPIRED], CASH_PLACED))[2:] == [("customer", Kind.EXPIRED)]
