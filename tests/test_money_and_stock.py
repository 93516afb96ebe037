"""Money taken <=> stock committed, for every order, whatever the order of facts.

A pure model of the whole purchase: the inventory's real core (`decide`/`evolve`), payments' real
rule (`settlement`) and YooKassa's payment states, joined by two inboxes whose messages hypothesis
delivers in any order and any number of times (redeliveries), while customers pay on time, late
or never, reservations expire, and holds lapse. Once everything is delivered, every order must
have its money kept exactly when its stock is committed, and the lifecycle must say so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from libs import lifecycle
from libs.contracts import (
    CommitFailed,
    Committed,
    CountStock,
    InventoryEvent,
    OrderLine,
    OrderPlaced,
    PaymentAuthorized,
    PaymentCanceled,
    PaymentPending,
    PaymentRefunded,
    PaymentSucceeded,
    Rejected,
    Released,
    Reserved,
    UpsertCategory,
    UpsertProduct,
)
from services.inventory.core import (
    EMPTY,
    Command,
    Commit,
    Expire,
    Release,
    Reserve,
    State,
    decide,
    fold,
)
from services.payments.core import Answer, settlement

T0 = datetime(2026, 12, 1, tzinfo=UTC)
PRICE = 1_000
AUTHORIZED = "waiting_for_capture"


@dataclass
class World:
    two_stage: bool
    units: int
    inventory: State = EMPTY
    yookassa: dict[str, str] = field(default_factory=dict)  # order id -> payment status
    refunded: set[str] = field(default_factory=set)
    told: dict[str, set[str]] = field(default_factory=dict)  # statuses payments published
    to_inventory: list[Command] = field(default_factory=list)
    to_payments: list[InventoryEvent] = field(default_factory=list)
    facts: list[lifecycle.OrderFact] = field(default_factory=list)
    qty: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for command in (
            UpsertCategory("c", "C"),
            UpsertProduct("A", "A", PRICE, "c"),
            CountStock("A", self.units),
        ):
            self.inventory = fold(self.inventory, decide(self.inventory, command, T0))

    # the inventory ------------------------------------------------------------------------------
    def inventory_takes(self, command: Command) -> None:
        # Every reservation lives 0 s, so its expiry may fire at any moment of the run.
        events = decide(self.inventory, command, T0)
        self.inventory = fold(self.inventory, events)
        for event in events:
            if isinstance(event, Reserved | Committed | CommitFailed):
                self.to_payments.append(event)
            if isinstance(event, Reserved | Rejected | Committed | CommitFailed | Released):
                self.facts.append(event)

    # payments -----------------------------------------------------------------------------------
    def payments_takes(self, event: InventoryEvent) -> None:
        assert isinstance(event, Reserved | Committed | CommitFailed)
        order_id = event.order_id
        if isinstance(event, Reserved):
            if order_id not in self.yookassa:
                self.yookassa[order_id] = "pending"
                amount = event.total
                self.facts.append(PaymentPending(order_id, pid(order_id), amount, "u", T0, T0))
            return
        answer: Answer = "committed" if isinstance(event, Committed) else "commit_failed"
        status = self.yookassa[order_id]
        match settlement(answer, status, self.two_stage):
            case "capture":
                self.yookassa[order_id] = "succeeded"
            case "cancel":
                self.yookassa[order_id] = "canceled"
            case "refund":
                if order_id not in self.refunded:
                    self.refunded.add(order_id)
                    amount = self.qty[order_id] * PRICE
                    refund = PaymentRefunded(order_id, pid(order_id), "r", amount, (), "gone", T0)
                    self.facts.append(refund)
        self.observe(order_id)

    def observe(self, order_id: str) -> None:
        """A notification or the reconciler: tell what YooKassa's status makes true, once."""
        status = self.yookassa[order_id]
        told = self.told.setdefault(order_id, set())
        if status in told or status == "pending":
            return
        told.add(status)
        payment_id = pid(order_id)
        amount = self.qty[order_id] * PRICE
        if status == AUTHORIZED:
            self.facts.append(PaymentAuthorized(order_id, payment_id, amount, T0))
            self.to_inventory.append(Commit(order_id, payment_id))
        elif status == "succeeded":
            self.facts.append(PaymentSucceeded(order_id, payment_id, amount, T0))
            self.to_inventory.append(Commit(order_id, payment_id))
        elif status == "canceled":
            self.facts.append(PaymentCanceled(order_id, payment_id, "canceled", T0))
            self.to_inventory.append(Release(order_id, "payment_canceled", payment_id))

    # customers and YooKassa ---------------------------------------------------------------------
    def customer_pays(self, order_id: str) -> None:
        if self.yookassa.get(order_id) == "pending":
            self.yookassa[order_id] = AUTHORIZED if self.two_stage else "succeeded"

    def hold_lapses(self, order_id: str) -> None:
        if self.yookassa.get(order_id) == AUTHORIZED:
            self.yookassa[order_id] = "canceled"

    def settle(self) -> None:
        """Time passes, every message is delivered; customers do nothing more."""
        for _ in range(100):
            before = (self.inventory, dict(self.yookassa), len(self.facts))
            for order_id in list(self.yookassa):
                self.observe(order_id)
            while self.to_inventory:
                self.inventory_takes(self.to_inventory.pop(0))
            while self.to_payments:
                self.payments_takes(self.to_payments.pop(0))
            for order_id, order in self.inventory.orders.items():
                if order.status == "reserved":
                    self.inventory_takes(Expire(order_id))
            if (self.inventory, self.yookassa, len(self.facts)) == before:
                return
        raise AssertionError("the world never settled")


def pid(order_id: str) -> str:
    return f"pay-{order_id}"


ACTIONS = ("inventory", "payments", "expire", "pay", "observe", "lapse", "redeliver")


@settings(max_examples=400, deadline=None)
@given(
    st.booleans(),
    st.integers(1, 3),
    st.lists(st.integers(1, 2), min_size=1, max_size=4),
    st.data(),
)
def test_money_kept_exactly_when_stock_committed(
    two_stage: bool, units: int, quantities: list[int], data: st.DataObject
) -> None:
    world = World(two_stage, units)
    order_ids = [f"o{i}" for i in range(len(quantities))]
    for order_id, qty in zip(order_ids, quantities, strict=True):
        world.qty[order_id] = qty
        line = OrderLine("A", qty, PRICE)
        world.facts.append(OrderPlaced(order_id, 1, (line,), qty * PRICE, T0))
        world.to_inventory.append(Reserve(order_id, (line,), qty * PRICE, ttl_seconds=0))

    for _ in range(data.draw(st.integers(0, 40), label="steps")):
        action = data.draw(st.sampled_from(ACTIONS), label="action")
        order_id = data.draw(st.sampled_from(order_ids), label="order")
        if action == "inventory" and world.to_inventory:
            index = data.draw(st.integers(0, len(world.to_inventory) - 1), label="which")
            world.inventory_takes(world.to_inventory.pop(index))
        elif action == "payments" and world.to_payments:
            index = data.draw(st.integers(0, len(world.to_payments) - 1), label="which")
            world.payments_takes(world.to_payments.pop(index))
        elif action == "redeliver" and world.facts:
            # A message handled before comes again (an ack lost, a consumer restarted).
            fact = data.draw(st.sampled_from(world.facts), label="again")
            if isinstance(fact, Reserved | Committed | CommitFailed):
                world.to_payments.append(fact)
            elif isinstance(fact, PaymentAuthorized | PaymentSucceeded):
                world.to_inventory.append(Commit(fact.order_id, fact.payment_id))
            elif isinstance(fact, PaymentCanceled):
                world.to_inventory.append(
                    Release(fact.order_id, "payment_canceled", fact.payment_id)
                )
        elif action == "expire":
            world.inventory_takes(Expire(order_id))
        elif action == "pay":
            world.customer_pays(order_id)
        elif action == "observe" and order_id in world.yookassa:
            world.observe(order_id)
        elif action == "lapse":
            world.hold_lapses(order_id)
    world.settle()

    product = world.inventory.products["A"]
    sold = 0
    for order_id in order_ids:
        committed = world.inventory.orders[order_id].status == "committed"
        status = world.yookassa.get(order_id)
        assert status != AUTHORIZED, f"{order_id}: a hold left waiting for capture"
        money_kept = status == "succeeded" and order_id not in world.refunded
        assert money_kept == committed, (order_id, status, world.inventory.orders[order_id])
        sold += world.qty[order_id] if committed else 0
        order = lifecycle.fold(f for f in world.facts if f.order_id == order_id)
        assert order is not None
        assert (order.status == lifecycle.Status.PAID) == committed, (order_id, order.status)
        assert order.status not in (lifecycle.Status.CONFIRMING, lifecycle.Status.RETURNING_MONEY)
    assert (product.on_hand, product.reserved) == (units - sold, 0)
    assert sold <= units
