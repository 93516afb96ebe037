"""The Orders tab's edits as steps, without Sheets or NATS: the owner's Fulfilment cell against
what the service last wrote there and the order's state -> a step, a refusal, or nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from libs import fulfilment, lifecycle
from libs.contracts import (
    Committed,
    Contact,
    OrderFulfilment,
    OrderLine,
    OrderPlaced,
    PaymentAuthorized,
    PaymentSucceeded,
    ReservedLine,
)
from libs.lifecycle import Order
from services.crm_sync import core, orders_tab
from services.crm_sync.orders_tab import Refusal, Seen, Step

T0 = datetime(2026, 12, 5, 10, 0, tzinfo=UTC)
ID = "261205-ABCDE"


def paid() -> Order:
    order = lifecycle.fold(
        [
            OrderPlaced(ID, 7, (OrderLine("TEA", 1, 50_000),), 50_000, T0, Contact("А", "+7", "М")),
            PaymentAuthorized(ID, "pay-1", 50_000, T0),
            Committed(ID, (ReservedLine("TEA", 1, 50_000),), "pay-1", T0),
            PaymentSucceeded(ID, "pay-1", 50_000, T0),
        ]
    )
    assert order is not None
    return order


def step(order: Order, name: str, **kw: str) -> Order:
    taken = fulfilment.decide(order, name, 11, T0, **kw)  # type: ignore[arg-type]
    assert isinstance(taken, OrderFulfilment)
    return lifecycle.evolve(order, taken)


def cell(fulfilment_: str, carrier: str = "", tracking: str = "") -> Seen:
    return Seen(2, ID, fulfilment_, carrier, tracking)


AT = T0 + timedelta(hours=1)


def test_a_step_the_owner_picked_is_taken() -> None:
    assert orders_tab.edit(cell("packed"), "", paid(), AT) == Step("packed")
    assert orders_tab.edit(cell(" Ready  for Pickup"), "", paid(), AT) == Step("ready_for_pickup")
    packed = step(paid(), "packed")
    assert orders_tab.edit(cell("delivered"), "packed", packed, AT) == Step("delivered")
    assert orders_tab.edit(cell("cancelled"), "packed", packed, AT) == Step("cancelled")


def test_shipped_reads_the_tracking_and_the_carrier() -> None:
    order = step(paid(), "packed")
    post = cell("shipped", "", "ra 123456789 ru")
    assert orders_tab.edit(post, "packed", order, AT) == Step(
        "shipped", "russian_post", "RA123456789RU"
    )
    assert orders_tab.edit(cell("shipped", "СДЭК", "X1234"), "", order, AT) == Step(
        "shipped", "cdek", "X1234"
    )
    assert orders_tab.edit(cell("shipped", "boxberry"), "", order, AT) == Step(
        "shipped", "boxberry"
    )
    assert orders_tab.edit(cell("shipped"), "", order, AT) == Step("shipped"), (
        "no number: as the desk"
    )
    assert orders_tab.edit(cell("shipped", "", "№?"), "", order, AT) == Refusal("tracking")
    assert orders_tab.edit(cell("shipped", "", "X1234"), "", order, AT) == Refusal("carrier")
    assert orders_tab.edit(cell("shipped", "Голубиная почта"), "", order, AT) == Refusal("carrier")


def test_what_the_service_wrote_is_no_edit() -> None:
    order = step(step(paid(), "packed"), "shipped")
    assert orders_tab.edit(cell("shipped"), "shipped", order, AT) is None
    assert orders_tab.edit(cell(""), "", order, AT) is None, "an emptied cell asks nothing"
    # The row still says what the service wrote before the state moved on: rewritten soon.
    assert orders_tab.edit(cell("packed"), "packed", order, AT) is None
    assert orders_tab.edit(cell("packed"), None, order, AT) is None
    cancelled = step(paid(), "cancelled")
    assert orders_tab.edit(cell("Cancelled"), "cancelled by the shop", cancelled, AT) is None


def test_a_step_that_does_not_fit_is_refused_with_its_reason() -> None:
    shipped = step(step(paid(), "packed"), "shipped")
    assert orders_tab.edit(cell("packed"), "shipped", shipped, AT) == Refusal("backwards")
    cancelled = step(paid(), "cancelled")
    assert orders_tab.edit(cell("delivered"), "cancelled by the shop", cancelled, AT) == Refusal(
        "cancelled"
    )
    delivered = step(paid(), "delivered")
    assert orders_tab.edit(cell("cancelled"), "delivered", delivered, AT) == Refusal("delivered")
    assert orders_tab.edit(cell("lost"), "", paid(), AT) == Refusal("unknown")
    placed = lifecycle.fold([OrderPlaced(ID, 7, (), 0, T0, Contact("А", "+7", "М"))])
    assert placed is not None
    assert orders_tab.edit(cell("packed"), "", placed, AT) == Refusal("not_paid")
    note = orders_tab.note("cancelled", "delivered", AT)
    assert "«delivered» не принято: заказ отменён" in note


def test_put_back_is_the_order_as_it_is() -> None:
    shipped = step(step(paid(), "packed"), "shipped", carrier="cdek", tracking="1234567890")
    back = orders_tab.put_back(shipped)
    assert back == {
        orders_tab.FULFILMENT: "shipped",
        orders_tab.CARRIER: "СДЭК",
        orders_tab.TRACKING: "1234567890",
    }
    assert core.ORDER_COLUMNS[orders_tab.FULFILMENT] == "Fulfilment"
    assert list(orders_tab.CHOICES) == [
        "packed",
        "shipped",
        "ready for pickup",
        "delivered",
        "cancelled",
    ]
