"""The order lifecycle: each fact means something given the others, in any order, any number of
times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from libs.contracts import (
    CommitFailed,
    Committed,
    Contact,
    DeliveryChoice,
    FulfilmentEntry,
    OrderFulfilment,
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
from libs.lifecycle import OrderFact, Status, evolve, fold

T0 = datetime(2026, 12, 1, 10, tzinfo=UTC)
ID = "o1"
PAY = "pay-1"
LINES = (OrderLine("A", 2, 1_000),)
RESERVED_LINES = (ReservedLine("A", 2, 1_000),)


def at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


placed = OrderPlaced(ID, 7, LINES, 2_000, at(0), Contact(name="Анна"), chat_id=7)
reserved = Reserved(ID, RESERVED_LINES, 2_000, at(900), at(1))
rejected = Rejected(ID, "out_of_stock", (), at(1))
pending = PaymentPending(ID, PAY, 2_000, "https://pay", at(900), at(2))
expired = Released(ID, RESERVED_LINES, "expired", at(900))
authorized = PaymentAuthorized(ID, PAY, 2_000, at(10))
late_authorized = PaymentAuthorized(ID, PAY, 2_000, at(905))
committed = Committed(ID, RESERVED_LINES, PAY, at(11))
late_committed = Committed(ID, RESERVED_LINES, PAY, at(906))
stock_gone = CommitFailed(ID, "stock_gone", PAY, (), at(906))
succeeded = PaymentSucceeded(ID, PAY, 2_000, at(12))
hold_cancelled = PaymentCanceled(ID, PAY, "canceled_by_merchant", at(907), party="merchant")
declined = PaymentCanceled(ID, PAY, "insufficient_funds", at(20), party="payment_network")
released_declined = Released(ID, RESERVED_LINES, "payment_canceled", at(21), payment_id=PAY)
failed = PaymentFailed(ID, "", "invalid_request", at(3))
half_back = PaymentRefunded(ID, PAY, "re-1", 1_000, (OrderLine("A", 1, 1_000),), "return", at(50))
rest_back = PaymentRefunded(ID, PAY, "re-2", 1_000, (OrderLine("A", 1, 1_000),), "return", at(60))
money_back = PaymentRefunded(ID, PAY, "re-3", 2_000, (), "stock_gone", at(908))
# After paid: each fulfilment fact holds the history so far (libs.fulfilment decides them).
ADMIN = 42
_packed = FulfilmentEntry(step="packed", at=at(100), by=ADMIN)
_shipped = FulfilmentEntry(
    step="shipped", at=at(200), by=ADMIN, carrier="cdek", tracking="1234567890"
)
_delivered = FulfilmentEntry(step="delivered", at=at(300), by=ADMIN)
_cancelled = FulfilmentEntry(step="cancelled", at=at(150), by=ADMIN)
packed = OrderFulfilment(ID, (_packed,), at(100))
shipped = OrderFulfilment(ID, (_packed, _shipped), at(200))
delivered = OrderFulfilment(ID, (_packed, _shipped, _delivered), at(300))
cancelled_after_packing = OrderFulfilment(ID, (_packed, _cancelled), at(150))
all_back = PaymentRefunded(ID, PAY, "re-4", 2_000, LINES, "cancelled", at(160))
# With a courier: the customer typed the city, the inventory's reservation says it its own way
# (never so in practice, it passes the choice on; the fold still has one rule: it wins).
COURIER = 30_000
as_typed = DeliveryChoice(method_id="courier", price=COURIER, city="москва")
as_reserved = DeliveryChoice(method_id="courier", price=COURIER, city="Москва")
placed_courier = OrderPlaced(ID, 7, LINES, 2_000 + COURIER, at(0), delivery=as_typed)
reserved_courier = Reserved(ID, RESERVED_LINES, 2_000 + COURIER, at(900), at(1), as_reserved)
all_back_courier = PaymentRefunded(ID, PAY, "re-5", 2_000 + COURIER, LINES, "cancelled", at(160))


def status(*facts: OrderFact) -> Status:
    order = fold(facts)
    assert order is not None
    return order.status


def test_the_ordinary_way_to_paid() -> None:
    assert status(placed) == Status.PLACED
    assert status(placed, reserved) == Status.RESERVED
    assert status(placed, reserved, pending) == Status.AWAITING_PAYMENT
    assert status(placed, reserved, pending, authorized) == Status.CONFIRMING
    assert status(placed, reserved, pending, authorized, committed) == Status.PAID
    order = fold([placed, reserved, pending, authorized, committed, succeeded])
    assert order is not None and order.status == Status.PAID and not order.late
    assert order.paid_at == succeeded.at and order.payment_id == PAY and order.charge == 2_000


def test_paid_after_expiry_and_committed_is_paid_late() -> None:
    """The CRM defect: expired, then a late payment the inventory committed."""
    order = fold([placed, reserved, pending, expired, late_authorized, late_committed, succeeded])
    assert order is not None
    assert order.status == Status.PAID and order.late
    assert status(placed, reserved, pending, expired) == Status.EXPIRED
    assert status(placed, reserved, pending, expired, late_authorized) == Status.CONFIRMING


def test_paid_after_expiry_with_the_stock_gone_is_money_going_back_then_cancelled() -> None:
    facts: list[OrderFact] = [placed, reserved, pending, expired, late_authorized, stock_gone]
    order = fold(facts)
    assert order is not None and order.status == Status.RETURNING_MONEY and order.late
    assert not order.money_back
    after = fold([*facts, hold_cancelled])
    assert after is not None and after.status == Status.CANCELLED and after.money_back
    one_stage = fold([placed, reserved, pending, expired, succeeded, stock_gone, money_back])
    assert one_stage is not None and one_stage.status == Status.CANCELLED and one_stage.money_back


def test_endings_without_a_sale() -> None:
    assert status(placed, rejected) == Status.REJECTED
    assert status(placed, reserved, pending, declined, released_declined) == Status.CANCELLED
    assert status(placed, reserved, failed) == Status.CANCELLED
    admin = Released(ID, RESERVED_LINES, "admin", at(30))
    assert status(placed, reserved, pending, admin) == Status.CANCELLED


def test_a_hold_that_lapsed_after_the_commit_is_cancelled() -> None:
    lapsed = PaymentCanceled(ID, PAY, "expired_on_capture", at(99))
    back = Released(ID, RESERVED_LINES, "payment_canceled", at(100), payment_id=PAY)
    assert status(placed, reserved, pending, authorized, committed, lapsed, back) == (
        Status.CANCELLED
    )


def test_refunds_in_part_then_in_whole() -> None:
    paid: list[OrderFact] = [placed, reserved, pending, authorized, committed, succeeded]
    assert status(*paid, half_back) == Status.PARTLY_REFUNDED
    assert status(*paid, half_back, rest_back) == Status.REFUNDED
    order = fold([*paid, half_back, half_back, rest_back])
    assert order is not None and order.refunded == 2_000  # a refund told twice counts once


def test_after_paid_the_fulfilment_steps_then_a_cancellation_once_the_money_is_back() -> None:
    paid = (placed, reserved, pending, authorized, committed, succeeded)
    assert status(*paid, packed) == Status.PACKED
    assert status(*paid, packed, shipped) == Status.SHIPPED
    assert status(*paid, delivered, packed) == Status.DELIVERED  # the longest history is the latest
    assert (
        status(*paid, packed, shipped, half_back) == Status.SHIPPED
    )  # a partial refund is shown apart
    assert status(*paid, cancelled_after_packing) == Status.RETURNING_MONEY
    assert status(*paid, cancelled_after_packing, all_back) == Status.CANCELLED
    held = (placed, reserved, pending, authorized, committed)
    assert status(*held, cancelled_after_packing, hold_cancelled) == Status.CANCELLED
    order = fold((*paid, packed, shipped))
    assert order is not None and order.fulfilment[-1].tracking == "1234567890" and order.kept
    gone = fold((*paid, cancelled_after_packing, all_back))
    assert gone is not None and not gone.kept


def test_the_delivery_as_placed_then_as_the_inventory_reserved_it() -> None:
    order = fold([placed_courier])
    assert order is not None and order.delivery == as_typed
    assert (order.charge, order.delivery_price, order.goods) == (32_000, COURIER, 2_000)
    both: list[list[OrderFact]] = [
        [placed_courier, reserved_courier],
        [reserved_courier, placed_courier],
    ]
    for facts in both:
        order = fold(facts)
        assert order is not None and order.delivery == as_reserved and order.goods == 2_000
    order = fold([placed, reserved])
    assert order is not None and order.delivery is None and order.goods == order.charge == 2_000


def test_a_reservation_without_a_delivery_wins_too() -> None:
    """What the inventory reserved is what the customer pays for: no delivery in it is none."""
    both: list[list[OrderFact]] = [[placed_courier, reserved], [reserved, placed_courier]]
    for facts in both:
        order = fold(facts)
        assert order is not None and order.delivery is None and order.charge == 2_000


def test_two_different_reservations_keep_the_earlier_either_way() -> None:
    """Never told by the inventory (one answer per order id), and still one state either way."""
    later = Reserved(ID, RESERVED_LINES, 2_000, at(900), at(5))
    first = evolve(evolve(None, reserved_courier), later)
    assert first == evolve(evolve(None, later), reserved_courier)
    assert (first.reserved_at, first.amount, first.delivery) == (at(1), 32_000, as_reserved)


# Any order, any duplication -------------------------------------------------------------------
FLOWS: tuple[tuple[OrderFact, ...], ...] = (
    (placed, reserved, pending, authorized, committed, succeeded),
    (placed, reserved, pending, authorized, committed, succeeded, half_back, rest_back),
    (placed, reserved, pending, expired),
    (placed, reserved, pending, expired, late_authorized, late_committed, succeeded),
    (placed, reserved, pending, expired, late_authorized, stock_gone, hold_cancelled),
    (placed, reserved, pending, expired, succeeded, stock_gone, money_back),
    (placed, reserved, pending, declined, released_declined),
    (placed, rejected),
    (placed, reserved, failed),
    (placed, reserved, pending, authorized, committed, succeeded, packed, shipped, delivered),
    (placed, reserved, pending, authorized, committed, succeeded, packed, shipped, half_back),
    (
        placed,
        reserved,
        pending,
        authorized,
        committed,
        packed,
        cancelled_after_packing,
        hold_cancelled,
    ),
    (
        placed,
        reserved,
        pending,
        authorized,
        committed,
        succeeded,
        cancelled_after_packing,
        all_back,
    ),
)


# The same with a courier, and a second reservation no real order has (the fold still joins).
DELIVERY_FLOWS: tuple[tuple[OrderFact, ...], ...] = (
    (placed_courier, reserved_courier, pending, authorized, committed, succeeded, delivered),
    (
        placed_courier,
        reserved_courier,
        pending,
        authorized,
        committed,
        succeeded,
        cancelled_after_packing,
        all_back_courier,
    ),
    (placed_courier, reserved_courier, pending, expired),
    (placed_courier, rejected),
)
POOLS = (
    [f for flow in FLOWS for f in flow],
    [
        *(f for flow in DELIVERY_FLOWS for f in flow),
        Reserved(
            ID, RESERVED_LINES, 2_000, at(900), at(1), DeliveryChoice(method_id="pickup", price=0)
        ),
    ],
)


@st.composite
def shuffled_with_copies(draw: st.DrawFn) -> tuple[list[OrderFact], list[OrderFact]]:
    """A flow in its own order, and the same facts in any order with some told again."""
    flow = list(draw(st.sampled_from(FLOWS + DELIVERY_FLOWS)))
    copies = draw(st.lists(st.sampled_from(flow), max_size=6))
    return flow, draw(st.permutations(flow + copies))


@settings(max_examples=500, deadline=None)
@given(shuffled_with_copies())
def test_any_order_and_any_duplication_give_the_same_state(
    case: tuple[list[OrderFact], list[OrderFact]],
) -> None:
    flow, shuffled = case
    assert fold(shuffled) == fold(flow)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(POOLS).flatmap(
        lambda pool: st.lists(st.sampled_from(pool), min_size=1, max_size=12)
    )
)
def test_any_mix_of_facts_folds_the_same_whatever_their_order(facts: list[OrderFact]) -> None:
    """Even facts no real order has together: the fold is a join, so the order never matters."""
    assert fold(facts) == fold(reversed(facts)) == fold(sorted(facts, key=repr))
    order = fold(facts)
    assert order is not None and isinstance(order.status, Status)
