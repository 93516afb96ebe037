"""The inventory actor as a real process on a real nats-server: no oversell, through crashes too."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import msgspec
from nats.js import JetStreamContext

from libs import bus, subjects
from libs.contracts import (
    Committed,
    PaymentAuthorized,
    PaymentCanceled,
    Rejected,
    Released,
    Reserved,
)
from shop.embedded_nats import EmbeddedNats
from tests.harness import (
    Facts,
    ServiceProcess,
    inventory_ready,
    order,
    place,
    stock_level,
    wait_until,
)

Start = Callable[..., ServiceProcess]


async def test_thousand_orders_for_ten_units(
    nats_url: str, js: JetStreamContext, facts: Facts, services: Start, catalog_file: Path
) -> None:
    services("inventory", nats_url, catalog_file=catalog_file)
    await wait_until(lambda: inventory_ready(js), what="inventory ready")
    orders = [order(f"o{i}", ("LAST", 1, 10000), customer_id=i) for i in range(1000)]
    await place(js, *orders)
    ids = [o.order_id for o in orders]
    await wait_until(lambda: facts.outcomes(ids) == 1000, what="1000 outcomes")

    outcomes = [facts.by_order[oid] for oid in ids]
    assert all(len(o) == 1 for o in outcomes), "every order has exactly one outcome"
    reserved = [o[0] for o in outcomes if isinstance(o[0], Reserved)]
    rejected = [o[0] for o in outcomes if isinstance(o[0], Rejected)]
    assert len(reserved) == 10
    assert len(rejected) == 990
    for fact in rejected:
        assert fact.reason == "out_of_stock"
        (problem,) = fact.problems
        assert (problem.sku, problem.requested, problem.available) == ("LAST", 1, 0)
    await wait_until(
        lambda: _level_is(js, "LAST", on_hand=10, reserved=10), what="stock read model"
    )


async def _level_is(js: JetStreamContext, sku: str, **expected: int) -> bool:
    level = await stock_level(js, sku)
    return level is not None and all(getattr(level, k) == v for k, v in expected.items())


async def test_bad_input_is_rejected_with_reasons_and_malformed_is_dead_lettered(
    nats_url: str, js: JetStreamContext, facts: Facts, services: Start, catalog_file: Path
) -> None:
    services("inventory", nats_url, catalog_file=catalog_file)
    await wait_until(lambda: inventory_ready(js), what="inventory ready")
    # Garbage and a wrong shape first: the actor must go on to the good orders after them.
    await js.publish(subjects.order_placed("junk1"), b"{not json")
    await js.publish(subjects.order_placed("junk2"), b'{"type": "order_placed", "order_id": 5}')
    await place(
        js,
        order("unknown", ("NOPE", 1, 100)),
        order("zero", ("FEW", 0, 99000)),
        order("huge", ("FEW", 1_000_000, 99000)),
        order("cheap", ("FEW", 1, 100)),
        order("empty"),
        order("short", ("FEW", 51, 99000)),
        order("good", ("FEW", 2, 99000), ("MANY", 3, 2550)),
    )
    wrong_total = msgspec.structs.replace(order("total", ("FEW", 1, 99000)), total=1)
    await place(js, wrong_total)
    ids = ["unknown", "zero", "huge", "cheap", "empty", "short", "good", "total"]
    await wait_until(lambda: facts.outcomes(ids) == len(ids), what="outcomes")

    def only(order_id: str) -> Rejected:
        (fact,) = facts.by_order[order_id]
        assert isinstance(fact, Rejected), fact
        return fact

    assert only("unknown").reason == "unknown_sku"
    assert only("zero").reason == "bad_quantity"
    assert only("huge").reason == "bad_quantity"
    cheap = only("cheap")
    assert cheap.reason == "price_mismatch"
    assert (cheap.problems[0].unit_price, cheap.problems[0].catalog_price) == (100, 99000)
    assert only("empty").reason == "empty_order"
    assert only("total").reason == "total_mismatch"
    short = only("short")
    assert short.reason == "out_of_stock"
    assert (short.problems[0].requested, short.problems[0].available) == (51, 50)
    (good,) = facts.by_order["good"]
    assert isinstance(good, Reserved) and good.total == 2 * 99000 + 3 * 2550

    dead = await js.stream_info(subjects.DEADLETTER)
    assert dead.state.messages == 2
    msg = await js.get_last_msg(subjects.DEADLETTER, "deadletter.inventory.orders.placed.junk2")
    assert msg.headers is not None and "order_id" in msg.headers["Shop-Dead-Reason"]


async def test_expiry_and_payment_facts(
    nats_url: str, js: JetStreamContext, facts: Facts, services: Start, catalog_file: Path
) -> None:
    services("inventory", nats_url, catalog_file=catalog_file, reservation_ttl=1)
    await wait_until(lambda: inventory_ready(js), what="inventory ready")
    await place(
        js,
        order("expires", ("LAST", 4, 10000)),
        order("paid", ("LAST", 3, 10000)),
        order("canceled", ("LAST", 2, 10000)),
    )
    # Payments act on reservations they have seen, so the facts come after them.
    await wait_until(lambda: facts.outcomes(["expires", "paid", "canceled"]) == 3)
    now = datetime.now(UTC)
    await bus.publish(
        js,
        subjects.payment_fact(subjects.PaymentKind.AUTHORIZED, "paid"),
        PaymentAuthorized("paid", "pay-1", 30000, now),
        msg_id="pay-1:authorized",
    )
    await bus.publish(
        js,
        subjects.payment_fact(subjects.PaymentKind.CANCELED, "canceled"),
        PaymentCanceled("canceled", "pay-2", "expired_on_confirmation", now),
        msg_id="pay-2:canceled",
    )
    await wait_until(
        lambda: [type(f).__name__ for f in facts.by_order["paid"]] == ["Reserved", "Committed"],
        what="paid order committed",
    )
    await wait_until(lambda: len(facts.by_order["canceled"]) == 2, what="canceled released")
    released = facts.by_order["canceled"][1]
    assert isinstance(released, Released) and released.reason == "payment_canceled"
    await wait_until(lambda: len(facts.by_order["expires"]) == 2, timeout=10, what="expiry")
    expired = facts.by_order["expires"][1]
    assert isinstance(expired, Released) and expired.reason == "expired"
    assert [(line.sku, line.qty) for line in expired.lines] == [("LAST", 4)]
    committed = facts.by_order["paid"][1]
    assert isinstance(committed, Committed) and committed.payment_id == "pay-1"
    # 10 on hand, 3 sold; nothing reserved after the expiry and the cancellation.
    await wait_until(lambda: _level_is(js, "LAST", on_hand=7, reserved=0, available=7))


async def test_a_payment_on_the_bus_is_not_overtaken_by_its_expiry_after_a_restart(
    nats_url: str, js: JetStreamContext, facts: Facts, services: Start, catalog_file: Path
) -> None:
    """The customer paid in time, but the inventory was down; it comes back after the
    reservation's end. The payment waiting on the bus is committed, not the expiry first."""
    inventory = services("inventory", nats_url, catalog_file=catalog_file, reservation_ttl=2)
    await wait_until(lambda: inventory_ready(js), what="inventory ready")
    await place(js, order("on-time", ("LAST", 2, 10000)))
    await wait_until(lambda: facts.kinds("on-time") == ["reserved"], what="reserved")
    (reserved,) = facts.by_order["on-time"]
    inventory.kill()
    paid = PaymentAuthorized("on-time", "pay-1", 20000, datetime.now(UTC))
    await bus.publish(
        js,
        subjects.payment_fact(subjects.PaymentKind.AUTHORIZED, "on-time"),
        paid,
        msg_id="pay-1:authorized",
    )
    await wait_until(lambda: datetime.now(UTC) > reserved.expires_at, what="the reservation's end")

    services("inventory", nats_url, catalog_file=catalog_file, reservation_ttl=2)
    await wait_until(lambda: len(facts.by_order["on-time"]) > 1, what="the inventory's answer")
    assert facts.kinds("on-time") == ["reserved", "committed"]
    await wait_until(lambda: _level_is(js, "LAST", on_hand=8, reserved=0, available=8))


def _verify_one_outcome_each(facts: Facts, ids: list[str], stock: dict[str, int]) -> None:
    """Exactly one outcome per order, and reservations that fit in the stock."""
    per_order = {oid: facts.by_order[oid] for oid in ids}
    assert all(len(events) == 1 for events in per_order.values()), [
        (oid, events) for oid, events in per_order.items() if len(events) != 1
    ]
    taken: Counter[str] = Counter()
    for events in per_order.values():
        if isinstance(events[0], Reserved):
            for line in events[0].lines:
                taken[line.sku] += line.qty
    for sku, qty in taken.items():
        assert qty <= stock[sku], f"{sku} oversold: {qty} reserved of {stock[sku]}"
    # Where demand exceeded stock, every unit went: a rejection never left stock unsold.
    assert taken["LAST"] == stock["LAST"]


async def test_kill_9_during_burst_then_restart(
    nats_url: str, js: JetStreamContext, facts: Facts, services: Start, catalog_file: Path
) -> None:
    first = services("inventory", nats_url, catalog_file=catalog_file)
    await wait_until(lambda: inventory_ready(js), what="inventory ready")
    orders = [order(f"k{i}", ("LAST", 1, 10000), ("MANY", 2, 2550)) for i in range(3000)]
    ids = [o.order_id for o in orders]
    await place(js, *orders)
    await wait_until(lambda: facts.outcomes(ids) >= 200, what="the burst under way")
    first.kill()
    assert facts.outcomes(ids) < len(ids), "the kill came too late to test anything"
    services("inventory", nats_url, catalog_file=catalog_file)
    await wait_until(lambda: facts.outcomes(ids) == len(ids), timeout=60, what="all outcomes")
    _verify_one_outcome_each(facts, ids, {"LAST": 10, "MANY": 100000})
    reserved_many = sum(
        line.qty
        for oid in ids
        for line in getattr(facts.by_order[oid][0], "lines", ())
        if line.sku == "MANY"
    )
    await wait_until(lambda: _level_is(js, "LAST", on_hand=10, reserved=10), what="LAST adds up")
    await wait_until(
        lambda: _level_is(js, "MANY", on_hand=100000, reserved=reserved_many), what="MANY adds up"
    )


async def test_two_instances_at_once_never_oversell(
    nats_url: str, js: JetStreamContext, facts: Facts, services: Start, catalog_file: Path
) -> None:
    one = services("inventory", nats_url, catalog_file=catalog_file, log_level="debug")
    two = services("inventory", nats_url, catalog_file=catalog_file, log_level="debug")
    await wait_until(lambda: inventory_ready(js), what="inventory ready")
    await wait_until(
        lambda: all("inventory.started" in i.log() for i in (one, two)), what="both running"
    )
    orders = [order(f"t{i}", ("LAST", 1, 10000)) for i in range(1000)]
    ids = [o.order_id for o in orders]
    # In waves, so both instances hold deliveries at the same time and race to append.
    for wave in range(0, len(orders), 100):
        await place(js, *orders[wave : wave + 100])
    await wait_until(lambda: facts.outcomes(ids) == len(ids), timeout=60, what="all outcomes")
    _verify_one_outcome_each(facts, ids, {"LAST": 10})
    # The catalog was imported once, not once per instance.
    assert len(facts.by_kind["product_upserted"]) == 3
    # Both took part: each committed orders of its own.
    for instance in (one, two):
        assert any(
            '"batch.committed"' in line and '"commands": 0' not in line
            for line in instance.log().splitlines()[3:]
        ), instance.log()[-2000:]


async def test_nats_restart_mid_run(tmp_path: Path, services: Start, catalog_file: Path) -> None:
    server = EmbeddedNats(tmp_path / "own-nats")
    server.start()
    try:
        nc = await bus.connect(server.url, name="test")
        js = nc.jetstream(timeout=10)
        await subjects.declare_streams(js)
        facts = Facts()
        await facts.start(js)
        services("inventory", server.url, catalog_file=catalog_file)
        await wait_until(lambda: inventory_ready(js), what="inventory ready")
        before = [order(f"before{i}", ("FEW", 1, 99000)) for i in range(20)]
        await place(js, *before)
        await wait_until(lambda: _level_is(js, "FEW", reserved=20), what="first orders")

        server.stop()
        server.start()
        await wait_until(lambda: nc.is_connected, what="test client reconnected")
        after = [order(f"after{i}", ("FEW", 1, 99000)) for i in range(40)]
        await place(js, *after)
        ids = [o.order_id for o in before + after]
        await wait_until(lambda: facts.outcomes(ids) == len(ids), what="every order decided")
        await wait_until(
            lambda: _level_is(js, "FEW", reserved=50, available=0), what="stock after restart"
        )
        assert all(len(facts.by_order[oid]) == 1 for oid in ids), "one fact per order"
        assert len(facts.by_kind["rejected"]) == 10
        info = await js.stream_info(subjects.INVENTORY)
        claims = len(facts.by_kind["writer_claimed"])
        assert info.state.messages == claims + 7 + 60, "nothing appended twice"
        await nc.close()
    finally:
        server.stop()


async def test_restart_loads_snapshot_and_replays_the_rest(
    nats_url: str, js: JetStreamContext, facts: Facts, services: Start, catalog_file: Path
) -> None:
    first = services("inventory", nats_url, catalog_file=catalog_file, snapshot_every=10)
    await wait_until(lambda: inventory_ready(js), what="inventory ready")
    await place(js, *(order(f"s{i}", ("FEW", 1, 99000)) for i in range(25)))
    await wait_until(lambda: facts.outcomes([f"s{i}" for i in range(25)]) == 25)
    await wait_until(lambda: "snapshot.written" in first.log(), what="a snapshot")
    assert first.terminate() == 0
    second = services("inventory", nats_url, catalog_file=catalog_file, snapshot_every=10)
    await wait_until(lambda: "inventory.started" in second.log(), what="restart")
    loaded = next(
        msgspec.json.decode(line)
        for line in second.log().splitlines()
        if '"inventory.loaded"' in line
    )
    assert loaded["snapshot_seq"] > 0 and loaded["seq"] == 1 + 7 + 25  # its claim, catalog, orders
    # State is right after the restart: only 25 of 50 left, so 26 are refused.
    await place(js, order("s-after", ("FEW", 26, 99000)))
    await wait_until(lambda: facts.outcomes(["s-after"]) == 1)
    (after,) = facts.by_order["s-after"]
    assert isinstance(after, Rejected) and after.problems[0].available == 25
