"""After paid: which steps an order may take (libs.fulfilment), tracking numbers and carriers."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import nats.js.errors
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nats.js import JetStreamContext

from libs import bus, fulfilment, subjects
from libs.contracts import (
    Committed,
    FulfilmentStep,
    OrderFulfilment,
    OrderLine,
    OrderPlaced,
    PaymentAuthorized,
    PaymentCanceled,
    PaymentRefunded,
    PaymentSucceeded,
    Reserved,
    ReservedLine,
)
from libs.fulfilment import Carrier, Refused, decide
from libs.lifecycle import Order, OrderFact, Status, evolve, fold

T0 = datetime(2026, 12, 1, 10, tzinfo=UTC)
ADMIN, CUSTOMER = 42, 7


def at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


PAID: tuple[OrderFact, ...] = (
    OrderPlaced("o1", CUSTOMER, (OrderLine("A", 2, 1_000),), 2_000, at(0)),
    Reserved("o1", (ReservedLine("A", 2, 1_000),), 2_000, at(900), at(1)),
    PaymentAuthorized("o1", "p1", 2_000, at(10)),
    Committed("o1", (ReservedLine("A", 2, 1_000),), "p1", at(11)),
    PaymentSucceeded("o1", "p1", 2_000, at(12)),
)


def paid() -> Order:
    order = fold(PAID)
    assert order is not None
    return order


def take(order: Order, step: FulfilmentStep, **kw: object) -> Order:
    fact = decide(order, step, ADMIN, at(100 + len(order.fulfilment)), **kw)  # type: ignore[arg-type]
    assert isinstance(fact, OrderFulfilment), fact
    return evolve(order, fact)


def refusal(order: Order, step: FulfilmentStep, **kw: object) -> str:
    answer = decide(order, step, ADMIN, at(999), **kw)  # type: ignore[arg-type]
    assert isinstance(answer, Refused), answer
    return answer.reason


def test_a_paid_order_goes_forward_step_by_step_to_delivered() -> None:
    order = paid()
    assert fulfilment.next_steps(order) == (
        "packed",
        "shipped",
        "ready_for_pickup",
        "delivered",
        "cancelled",
    )
    order = take(order, "packed")
    assert order.status == Status.PACKED
    assert fulfilment.next_steps(order) == ("shipped", "ready_for_pickup", "delivered", "cancelled")
    order = take(order, "shipped", carrier="russian_post", tracking="RA123456789RU")
    assert order.status == Status.SHIPPED
    assert fulfilment.next_steps(order) == ("delivered", "cancelled")
    last = order.last_step
    assert last is not None and (last.carrier, last.tracking, last.by) == (
        "russian_post",
        "RA123456789RU",
        ADMIN,
    )
    order = take(order, "delivered")
    assert order.status == Status.DELIVERED
    assert fulfilment.next_steps(order) == ()
    assert [entry.step for entry in order.fulfilment] == ["packed", "shipped", "delivered"]


def test_never_back_never_twice_and_never_after_the_end() -> None:
    packed = take(paid(), "packed")
    assert refusal(packed, "packed") == "already"
    shipped = take(packed, "shipped")
    assert refusal(shipped, "packed") == "backwards"
    assert refusal(shipped, "ready_for_pickup") == "backwards"  # one or the other
    delivered = take(shipped, "delivered")
    assert refusal(delivered, "cancelled") == "delivered"  # a return, then
    cancelled = take(packed, "cancelled")
    assert refusal(cancelled, "shipped") == "cancelled"
    assert refusal(cancelled, "cancelled") == "cancelled"


def test_only_a_paid_order_that_still_stands_takes_a_step() -> None:
    assert refusal(fold(PAID[:3]) or paid(), "packed") == "not_paid"  # money held, no stock yet
    refunded = evolve(
        paid(), PaymentRefunded("o1", "p1", "r1", 2_000, (OrderLine("A", 2, 1_000),), "x", at(20))
    )
    assert refusal(refunded, "packed") == "not_paid"
    lapsed = evolve(fold(PAID[:4]) or paid(), PaymentCanceled("o1", "p1", "expired", at(30)))
    assert refusal(lapsed, "cancelled") == "not_paid"


def test_the_customer_cancels_only_until_the_order_is_packed() -> None:
    order = paid()
    assert fulfilment.customer_may_cancel(order)
    fact = decide(order, "cancelled", CUSTOMER, at(50), by_customer=True)
    assert isinstance(fact, OrderFulfilment) and fact.history[-1].by_customer
    packed = take(order, "packed")
    assert not fulfilment.customer_may_cancel(packed)
    assert refusal(packed, "cancelled", by_customer=True) == "packed"
    assert take(packed, "cancelled").status == Status.RETURNING_MONEY  # the shop still may


def test_a_cancellation_is_over_once_the_money_is_back() -> None:
    cancelled = take(paid(), "cancelled")
    back = PaymentRefunded("o1", "p1", "r1", 2_000, (OrderLine("A", 2, 1_000),), "c", at(200))
    assert evolve(cancelled, back).status == Status.CANCELLED
    held = fold(PAID[:4])
    assert held is not None
    hold_cancelled = PaymentCanceled("o1", "p1", "canceled_by_merchant", at(200))
    assert evolve(take(held, "cancelled"), hold_cancelled).status == Status.CANCELLED


STEPS = st.lists(st.sampled_from(fulfilment.STEPS), max_size=8)


@settings(max_examples=300, deadline=None)
@given(STEPS, STEPS)
def test_two_desks_on_one_order_never_take_it_back_and_agree_on_its_state(
    first: list[FulfilmentStep], second: list[FulfilmentStep]
) -> None:
    """Two desks press any buttons; each decides on the state it last saw, and the bus keeps a
    fact only if its desk saw the latest one (the expected last subject sequence). Whatever they
    press, the steps only go forward, and folding the kept facts in any order gives one state."""
    order, kept = paid(), list[OrderFulfilment]()
    seen = [order, order]  # what each desk last saw
    for n, (desk, step) in enumerate([(0, s) for s in first] + [(1, s) for s in second]):
        fact = decide(seen[desk], step, ADMIN + desk, at(n))
        if isinstance(fact, OrderFulfilment) and len(fact.history) == len(order.fulfilment) + 1:
            order = evolve(order, fact)  # the bus took it: this desk had seen the latest
            kept.append(fact)
        seen[desk] = order  # a refused or a conflicting press shows the desk the current state
    stages = [fulfilment._STAGE.get(entry.step, 9) for entry in order.fulfilment]
    assert stages == sorted(stages) and len(set(stages)) == len(stages)
    assert fold([*PAID, *reversed(kept), *kept]) == fold([*PAID, *kept]) == order


@pytest.mark.parametrize(
    ("typed", "number", "carrier"),
    [
        ("ra 123456789 ru", "RA123456789RU", Carrier.RUSSIAN_POST),
        ("80085412345678", "80085412345678", Carrier.RUSSIAN_POST),
        ("1234567890", "1234567890", Carrier.CDEK),
        ("BB-4451-XZ", "BB-4451-XZ", None),
    ],
)
def test_tracking_numbers_and_their_carrier(typed: str, number: str, carrier: Carrier) -> None:
    assert fulfilment.tracking_number(typed) == number
    assert fulfilment.carrier_of(number) == carrier


@pytest.mark.parametrize("typed", ["", "12", "трек 123", "RA1234!56789RU", "x" * 41])
def test_what_is_not_a_tracking_number(typed: str) -> None:
    with pytest.raises(fulfilment.BadTracking):
        fulfilment.tracking_number(typed)


def test_tracking_links_to_the_carriers_public_page() -> None:
    assert fulfilment.tracking_url("russian_post", "RA123456789RU") == (
        "https://www.pochta.ru/tracking?barcode=RA123456789RU"
    )
    assert fulfilment.tracking_url("cdek", "1234567890") == (
        "https://www.cdek.ru/ru/tracking/?order_id=1234567890"
    )
    assert fulfilment.tracking_url("other", "X1234") is None
    assert fulfilment.tracking_url("cdek", "") is None
    assert fulfilment.tracking_url("unknown", "X1234") is None


# On the bus: one change however many desks press at once --------------------------------------
async def test_a_step_is_kept_once_and_a_desk_behind_decides_on_the_latest(
    js: JetStreamContext,
) -> None:
    order = paid()
    first = await fulfilment.take(js, order, "packed", ADMIN, at(100))
    assert isinstance(first, OrderFulfilment)
    # A desk whose view has not seen it yet is told so, from the bus, not from its view.
    assert await fulfilment.take(js, order, "packed", ADMIN + 1, at(101)) == Refused("already")
    shipped = await fulfilment.take(js, order, "shipped", ADMIN + 1, at(102), tracking="1234567890")
    assert isinstance(shipped, OrderFulfilment)
    assert [e.step for e in shipped.history] == ["packed", "shipped"]
    seq, last = await fulfilment.latest(js, "o1")
    assert last == shipped and seq > 0


async def test_two_desks_at_once_make_one_change(js: JetStreamContext) -> None:
    order = paid()
    steps: list[FulfilmentStep] = ["shipped", "ready_for_pickup"] * 3
    answers = await asyncio.gather(
        *(fulfilment.take(js, order, step, ADMIN + n, at(100)) for n, step in enumerate(steps))
    )
    kept = [a for a in answers if isinstance(a, OrderFulfilment)]
    refused = [a for a in answers if isinstance(a, Refused)]
    assert {a.reason for a in refused} <= {"already", "backwards"} and refused
    assert len({a.history for a in kept}) == 1  # the same step twice is one fact
    info = await js.stream_info(subjects.ORDERS, subjects_filter=subjects.ORDERS_FULFILMENT_ALL)
    assert info.state.messages == 1


async def test_the_bus_refuses_a_step_decided_on_a_stale_sequence(js: JetStreamContext) -> None:
    """What take() relies on: JetStream's expected last subject sequence, 0 meaning none yet."""
    order = paid()
    fact = decide(order, "packed", ADMIN, at(100))
    assert isinstance(fact, OrderFulfilment)
    subject = subjects.order_fulfilment("o1")
    await bus.publish(js, subject, fact, "a", expect_last=0)
    with pytest.raises(nats.js.errors.APIError) as refused:
        await bus.publish(js, subject, fact, "b", expect_last=0)
    assert refused.value.err_code == bus.WRONG_LAST_SEQUENCE
