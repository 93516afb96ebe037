"""Property tests of the inventory's pure core (`decide`/`evolve`): random command sequences
against a small fixed catalog, with a clock that moves forward so reservations expire. No I/O.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal, TypeVar

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from libs.contracts import (
    AdjustStock,
    CommitFailed,
    Committed,
    CountStock,
    InventoryEvent,
    LineProblem,
    OrderLine,
    ProductUpserted,
    Rejected,
    Released,
    ReleaseReason,
    Reserved,
    ReservedLine,
    SetPhoto,
    SetPrice,
    SetVisible,
    StockAdjusted,
    UpsertCategory,
    UpsertProduct,
)
from services.inventory.core import (
    EMPTY,
    MAX_LINE_QTY,
    MAX_LINES,
    Command,
    CommandRefused,
    Commit,
    Expire,
    Release,
    Reserve,
    State,
    decide,
    decode_snapshot,
    encode_snapshot,
    fold,
)

T0 = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)
CATEGORY = "tea"
SKUS = ("A", "B", "C")
UNKNOWN_SKU = "NOPE"
PRICES = {"A": 1_000, "B": 2_550, "C": 99_900}
OTHER_PRICES = {"A": 1_200, "B": 2_000, "C": 100_000}  # what SetPrice may switch to
ORDER_IDS = tuple(f"o{i}" for i in range(12))
ADJUSTMENT_IDS = ("adj1", "adj2", "adj3", "adj4")
TTL = 600
LATER = timedelta(days=1)

T = TypeVar("T")
PROPERTY_SETTINGS = settings(max_examples=200, deadline=None)


# Running commands ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Step:
    command: Command
    now: datetime
    before: State
    after: State
    events: tuple[InventoryEvent, ...]
    refused: bool


@dataclass
class Run:
    """Applies commands as the shell does: decide, then fold; a refused one changes nothing."""

    state: State = EMPTY
    now: datetime = T0
    events: list[InventoryEvent] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)

    def do(self, command: Command, wait: timedelta = timedelta(0)) -> list[InventoryEvent]:
        self.now += wait
        before = self.state
        try:
            events = decide(before, command, self.now)
        except CommandRefused:
            events, refused = [], True
        else:
            refused = False
        self.state = fold(before, events)
        self.events.extend(events)
        self.steps.append(Step(command, self.now, before, self.state, tuple(events), refused))
        return events


def setup_commands(counts: tuple[int, int, int]) -> list[Command]:
    commands: list[Command] = [UpsertCategory(category_id=CATEGORY, title="Tea", position=1)]
    for position, sku in enumerate(SKUS):
        commands.append(
            UpsertProduct(
                sku=sku,
                title=f"Tea {sku}",
                price=PRICES[sku],
                category_id=CATEGORY,
                position=position,
            )
        )
    commands.extend(CountStock(sku=sku, on_hand=n) for sku, n in zip(SKUS, counts, strict=True))
    return commands


def catalog(a: int = 5, b: int = 5, c: int = 5) -> Run:
    run = Run()
    for command in setup_commands((a, b, c)):
        run.do(command)
    return run


Scenario = list[tuple[int, Command]]  # (seconds to wait before, command)


def play(counts: tuple[int, int, int], scenario: Scenario) -> Run:
    run = catalog(*counts)
    for seconds, command in scenario:
        run.do(command, timedelta(seconds=seconds))
    return run


def reserve(order_id: str, *lines: tuple[str, int], ttl: int = TTL) -> Reserve:
    """A well-formed Reserve at the initial catalog prices."""
    order_lines = tuple(OrderLine(sku, qty, PRICES[sku]) for sku, qty in lines)
    total = sum(line.qty * line.unit_price for line in order_lines)
    return Reserve(order_id=order_id, lines=order_lines, total=total, ttl_seconds=ttl)


def qty_by_sku(lines: Iterable[OrderLine | ReservedLine]) -> Counter[str]:
    wanted: Counter[str] = Counter()
    for line in lines:
        wanted[line.sku] += line.qty
    return wanted


# Strategies ---------------------------------------------------------------------------------------
# Each value is one sampled_from: cheap to draw, and it shrinks towards the first (usual) value.
def mostly(usual: T, *odd: T, times: int = 9) -> st.SearchStrategy[T]:
    """`usual` `times` times as often as each `odd` value."""
    return st.sampled_from((usual,) * times + odd)


order_ids = st.sampled_from(ORDER_IDS)
any_sku = mostly("A", "B", "C", UNKNOWN_SKU, times=1)
line_skus = mostly("A", "A", "A", "B", "B", "B", "C", "C", "C", UNKNOWN_SKU, times=3)
quantities = st.sampled_from((1, 1, 2, 2, 3, 4) * 3 + (0, -1, MAX_LINE_QTY, MAX_LINE_QTY + 1))
price_errors = mostly(0, 1, -1, times=18)  # 0: the initial catalog price; 1: another; -1: a typo
total_errors = mostly(0, 1, -100, times=18)
empty_orders = mostly(False, True, times=19)


@st.composite
def reserves(draw: st.DrawFn, order_id: str) -> Reserve:
    lines: tuple[OrderLine, ...] = ()
    if not draw(empty_orders):
        for _ in range(draw(st.sampled_from((1, 1, 2, 3)))):
            sku = draw(line_skus)
            known = PRICES.get(sku, 500)
            unit_price = (known, OTHER_PRICES.get(sku, 700), known - 1)[draw(price_errors)]
            lines += (OrderLine(sku=sku, qty=draw(quantities), unit_price=unit_price),)
    total = sum(line.qty * line.unit_price for line in lines) + draw(total_errors)
    ttl = draw(st.sampled_from((30, 120, TTL)))
    return Reserve(order_id=order_id, lines=lines, total=total, ttl_seconds=ttl)


@st.composite
def adjustments(draw: st.DrawFn) -> AdjustStock:
    delta = draw(st.integers(-6, 8))
    right: Literal["restock", "write_off"] = "restock" if delta > 0 else "write_off"
    wrong: Literal["restock", "write_off"] = "write_off" if delta > 0 else "restock"
    reason = draw(mostly(right, wrong))
    adjustment_id = draw(st.sampled_from(ADJUSTMENT_IDS))
    return AdjustStock(adjustment_id=adjustment_id, sku=draw(any_sku), delta=delta, reason=reason)


counts_ = st.builds(CountStock, sku=any_sku, on_hand=st.integers(-1, 12))
set_prices = st.builds(
    SetPrice,
    sku=any_sku,
    price=st.sampled_from((*PRICES.values(), *OTHER_PRICES.values(), 0)),
)
upserts = st.one_of(
    st.builds(
        UpsertProduct,
        sku=st.sampled_from(SKUS),
        title=st.sampled_from(("Tea A", "Tea B", "Tea C", "Renamed", " ")),
        price=st.sampled_from((*PRICES.values(), 1)),
        category_id=st.sampled_from((CATEGORY, "missing")),
    ),
    st.builds(
        UpsertCategory,
        category_id=st.just(CATEGORY),
        title=st.sampled_from(("Tea", "Teas", "")),
        position=st.integers(0, 2),
    ),
)
# (weight, strategy) of the admin commands, and of the order commands, which `scenarios` builds.
ADMIN: tuple[tuple[int, st.SearchStrategy[Command]], ...] = (
    (12, adjustments()),
    (6, counts_),
    (3, set_prices),
    (4, upserts),
)
ORDER_KINDS = (("reserve", 30), ("commit", 15), ("release", 8), ("expire", 20))
command_kinds = st.sampled_from(
    [kind for kind, weight in ORDER_KINDS for _ in range(weight)]
    + [strategy for weight, strategy in ADMIN for _ in range(weight)]
)
release_reasons: st.SearchStrategy[ReleaseReason] = st.sampled_from(
    ("payment_canceled", "payment_failed", "admin")
)
waits = st.sampled_from((5, 0, 1, 29, 30, 31, 60, 119, 120, 300, 599, 600, 700, 900))
fresh_or_not = mostly(True, False, times=4)
seen_or_not = mostly(True, False, times=9)


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    """Commands on orders mostly name an order reserved earlier in the scenario; a Reserve mostly
    takes a fresh order id, sometimes one already used (a duplicate order, a redelivery)."""
    scenario: Scenario = []
    seen: list[str] = []
    for _ in range(draw(st.integers(5, 50))):
        kind = draw(command_kinds)
        command: Command
        if isinstance(kind, st.SearchStrategy):
            command = draw(kind)
        else:
            fresh = [order_id for order_id in ORDER_IDS if order_id not in seen]
            if seen and (not fresh or draw(seen_or_not)):
                order_id = draw(st.sampled_from(seen))
            else:
                order_id = fresh[0] if fresh else draw(order_ids)
            if kind == "reserve":
                take_fresh: bool = draw(fresh_or_not)
                if fresh and take_fresh:
                    order_id = fresh[0]
                command = draw(reserves(order_id))
                seen.append(order_id)
            elif kind == "commit":
                command = Commit(order_id, draw(st.sampled_from(("pay1", "pay2"))))
            elif kind == "release":
                command = Release(
                    order_id, draw(release_reasons), draw(st.sampled_from(("", "pay1", "pay2")))
                )
            else:
                command = Expire(order_id)
        scenario.append((draw(waits), command))
    return scenario


initial_counts = st.tuples(st.integers(1, 10), st.integers(1, 10), st.integers(0, 10))


# 1. Stock is never negative, never over-reserved -------------------------------------------------
@PROPERTY_SETTINGS
@given(initial_counts, scenarios())
def test_stock_never_negative_nor_over_reserved(
    counts: tuple[int, int, int], scenario: Scenario
) -> None:
    run = play(counts, scenario)
    for step in run.steps:
        for sku, product in step.after.products.items():
            assert 0 <= product.reserved <= product.on_hand, (sku, product, step.command)
            assert product.available >= 0, (sku, product, step.command)


# 2. The events are the truth: replay and snapshots rebuild the same state -------------------------
_event_decoder = msgspec.json.Decoder(InventoryEvent)


@PROPERTY_SETTINGS
@given(initial_counts, scenarios(), st.integers(0, 2**40))
def test_replay_and_snapshot_rebuild_the_same_state(
    counts: tuple[int, int, int], scenario: Scenario, base_seq: int
) -> None:
    run = play(counts, scenario)
    assert fold(EMPTY, run.events) == run.state
    # As the store recovers: every event through its JSON wire form (contracts validated).
    wire = [_event_decoder.decode(msgspec.json.encode(event)) for event in run.events]
    assert wire == run.events
    assert fold(EMPTY, wire) == run.state

    # A snapshot taken after any step, plus the events after it, gives the final state.
    seq = base_seq
    for index, step in enumerate(run.steps):
        seq += len(step.events)
        state, got_seq, created = decode_snapshot(encode_snapshot(step.after, seq, "x"))
        assert (state, got_seq, created) == (step.after, seq, "x")
        tail = [event for later in run.steps[index + 1 :] for event in later.events]
        assert fold(state, tail) == run.state


# 3. A duplicate command changes nothing -----------------------------------------------------------
@PROPERTY_SETTINGS
@given(initial_counts, scenarios())
def test_a_command_decided_twice_in_a_row_yields_nothing_the_second_time(
    counts: tuple[int, int, int], scenario: Scenario
) -> None:
    """Every command kind: decide, fold, decide again (at the same instant) gives []; a refused
    command is refused again. At a later instant too, for all but an Expire that came early."""
    run = play(counts, scenario)
    for step in run.steps:
        if step.refused:
            with pytest.raises(CommandRefused):
                decide(step.after, step.command, step.now)
            continue
        if isinstance(step.command, Commit) and step.command.order_id not in step.before.orders:
            # A payment for an order never seen: answered, but deliberately not remembered
            # (evolve keeps the order id free), so a redelivery is answered the same way again.
            assert decide(step.after, step.command, step.now) == list(step.events)
            assert step.after == step.before
            continue
        assert decide(step.after, step.command, step.now) == [], step.command
        early_expire = isinstance(step.command, Expire) and not step.events
        if not early_expire:
            assert decide(step.after, step.command, step.now + LATER) == [], step.command


@PROPERTY_SETTINGS
@given(initial_counts, scenarios())
def test_a_redelivered_command_changes_nothing_after_any_sequence(
    counts: tuple[int, int, int], scenario: Scenario
) -> None:
    """Redelivery long after: a Reserve, a Commit of an order known then (idempotent by order id),
    an AdjustStock whose id was applied, a Release or an Expire that took effect, yields nothing at
    any later instant. Not so (by design): a Commit of an order unknown then (not remembered);
    CountStock, SetPrice and the upserts (idempotent by value only, a later change makes them
    apply again); a Release/Expire that found no live reservation (the order may come later)."""
    run = play(counts, scenario)
    later = run.now + LATER
    for step in run.steps:
        command = step.command
        redelivery_is_noop = (
            isinstance(command, Reserve)
            or (isinstance(command, Commit) and command.order_id in step.before.orders)
            or (isinstance(command, AdjustStock) and command.adjustment_id in run.state.adjustments)
            or (isinstance(command, Release | Expire) and bool(step.events))
        )
        if redelivery_is_noop:
            assert decide(run.state, command, later) == [], command
        if isinstance(command, AdjustStock) and step.events:
            assert command.adjustment_id in run.state.adjustments


# 4. Expiry releases exactly what was reserved -----------------------------------------------------
@PROPERTY_SETTINGS
@given(initial_counts, scenarios())
def test_every_expire_in_a_sequence_releases_exactly_the_reservation(
    counts: tuple[int, int, int], scenario: Scenario
) -> None:
    run = play(counts, scenario)
    for step in run.steps:
        if not isinstance(step.command, Expire):
            continue
        order_id = step.command.order_id
        order = step.before.orders.get(order_id)
        live = order is not None and order.status == "reserved"
        if not live or order is None or order.expires_at is None or order.expires_at > step.now:
            assert step.events == (), (order, step.now)  # early, or nothing to release
            assert step.after == step.before
            continue
        assert step.events == (
            Released(order_id=order_id, lines=order.lines, reason="expired", at=step.now),
        )
        released = qty_by_sku(order.lines)
        for sku, before in step.before.products.items():
            after = step.after.products[sku]
            assert after.reserved == before.reserved - released[sku]
            assert after.on_hand == before.on_hand
        assert step.after.orders[order_id].status == "released"


@PROPERTY_SETTINGS
@given(
    counts=initial_counts,
    scenario=scenarios(),
    lines=st.lists(st.tuples(st.sampled_from(SKUS), st.integers(1, 5)), min_size=1, max_size=4),
    ttl=st.integers(1, 3_600),
    wait=st.integers(0, 7_200),
    meanwhile=st.sampled_from(("wait", "commit", "release")),
)
def test_expire_releases_exactly_what_was_reserved(
    *,
    counts: tuple[int, int, int],
    scenario: Scenario,
    lines: list[tuple[str, int]],
    ttl: int,
    wait: int,
    meanwhile: str,
) -> None:
    run = play(counts, scenario)
    for sku in SKUS:  # enough stock, whatever the scenario did
        run.do(CountStock(sku=sku, on_hand=run.state.products[sku].reserved + 25))
    order_lines = tuple(OrderLine(sku, qty, run.state.products[sku].price) for sku, qty in lines)
    total = sum(line.qty * line.unit_price for line in order_lines)
    (reserved,) = run.do(Reserve("fresh", order_lines, total, ttl))
    assert isinstance(reserved, Reserved)
    assert reserved.expires_at == run.now + timedelta(seconds=ttl)
    before = run.state
    wanted = qty_by_sku(order_lines)
    for sku, qty in wanted.items():
        assert before.products[sku].reserved >= qty

    if meanwhile == "commit":
        assert len(run.do(Commit("fresh", "pay"))) == 1
    elif meanwhile == "release":
        assert len(run.do(Release("fresh", "payment_canceled"))) == 1
    settled = run.state

    at = reserved.at + timedelta(seconds=wait)
    events = decide(settled, Expire("fresh"), at)
    if meanwhile != "wait" or at < reserved.expires_at:
        assert events == []  # after a commit or a release, or before its time: nothing
        return
    assert events == [Released("fresh", reserved.lines, "expired", at)]
    after = fold(settled, events)
    for sku, product in before.products.items():
        assert after.products[sku].reserved == product.reserved - wanted[sku]
        assert after.products[sku].on_hand == product.on_hand


def test_expire_at_exactly_expires_at_releases_and_one_microsecond_before_does_not() -> None:
    run = catalog(a=5)
    (reserved,) = run.do(reserve("o1", ("A", 3)))
    assert isinstance(reserved, Reserved)
    assert decide(run.state, Expire("o1"), reserved.expires_at - timedelta(microseconds=1)) == []
    assert decide(run.state, Expire("o1"), reserved.expires_at) == [
        Released("o1", reserved.lines, "expired", reserved.expires_at)
    ]


def test_payments_cancelled_after_the_reservation_ended_are_all_remembered_once() -> None:
    """Found by the redelivery property: a second cancelled payment must not make the first one
    new again, and a remembered cancellation keeps the order's lines (a later payment of the
    order takes them)."""
    run = catalog(a=5)
    (reserved,) = run.do(reserve("o1", ("A", 2)))
    assert isinstance(reserved, Reserved)
    run.do(Expire("o1"), timedelta(seconds=TTL))
    for payment_id in ("pay1", "pay2"):
        (remembered,) = run.do(Release("o1", "payment_canceled", payment_id))
        assert isinstance(remembered, Released) and remembered.lines == ()
    for payment_id in ("pay1", "pay2"):
        assert run.do(Release("o1", "payment_canceled", payment_id)) == []
        assert run.do(Commit("o1", payment_id)) == []  # a cancelled payment takes nothing
    (late,) = run.do(Commit("o1", "pay3"))
    assert isinstance(late, Committed) and late.lines == reserved.lines


# 5. Conservation ----------------------------------------------------------------------------------
SETUP_STEPS = len(setup_commands((0, 0, 0)))


@PROPERTY_SETTINGS
@given(initial_counts, scenarios())
def test_stock_is_conserved(counts: tuple[int, int, int], scenario: Scenario) -> None:
    """reserved = what live reservations hold; on_hand = initial count + adjustments - sold
    (sold: committed, less what lapsed holds gave back)."""
    run = play(counts, scenario)
    initial = dict(zip(SKUS, counts, strict=True))
    assert {sku: p.on_hand for sku, p in run.steps[SETUP_STEPS - 1].after.products.items()} == (
        initial
    )
    adjusted: Counter[str] = Counter()
    sold: Counter[str] = Counter()
    for step in run.steps[SETUP_STEPS:]:
        for event in step.events:
            if isinstance(event, StockAdjusted):
                adjusted[event.sku] += event.delta
                # the fact states the level it leads to
                assert event.on_hand == initial[event.sku] + adjusted[event.sku] - sold[event.sku]
            elif isinstance(event, Committed):
                sold += qty_by_sku(event.lines)
            elif isinstance(event, Released) and (
                step.before.orders[event.order_id].status == "committed"
            ):
                sold -= qty_by_sku(event.lines)  # a lapsed hold: the goods are back on hand
        held: Counter[str] = Counter()
        for order in step.after.orders.values():
            if order.status == "reserved":
                held += qty_by_sku(order.lines)
        assert set(step.after.products) == set(SKUS)
        for sku, product in step.after.products.items():
            assert product.reserved == held[sku], (sku, step.command)
            assert product.on_hand == initial[sku] + adjusted[sku] - sold[sku], (sku, step.command)


# 6. Examples: the reasons and the numbers ---------------------------------------------------------
def only_rejection(events: list[InventoryEvent]) -> Rejected:
    (event,) = events
    assert isinstance(event, Rejected)
    return event


def test_out_of_stock_reports_sku_requested_and_available() -> None:
    run = catalog(a=5, b=1)
    run.do(reserve("o1", ("A", 4)))
    rejected = only_rejection(run.do(reserve("o2", ("A", 1), ("B", 1), ("A", 1))))
    assert rejected.reason == "out_of_stock"
    assert rejected.problems == (LineProblem("A", 2, 1),)  # lines of one SKU add up
    assert run.state.orders["o2"].status == "rejected"
    assert run.state.products["A"].reserved == 4
    assert run.state.products["B"].reserved == 0


def test_unknown_sku() -> None:
    run = catalog()
    order = Reserve("o1", (OrderLine("A", 1, 1_000), OrderLine(UNKNOWN_SKU, 2, 5)), 1_010, TTL)
    rejected = only_rejection(run.do(order))
    assert rejected.reason == "unknown_sku"
    assert rejected.problems == (LineProblem(UNKNOWN_SKU, 2, 0),)


@pytest.mark.parametrize("qty", [0, -1, MAX_LINE_QTY + 1])
def test_bad_quantity(qty: int) -> None:
    run = catalog(a=5)
    order = Reserve("o1", (OrderLine("A", qty, 1_000),), qty * 1_000, TTL)
    rejected = only_rejection(run.do(order))
    assert rejected.reason == "bad_quantity"
    assert rejected.problems == (LineProblem("A", qty, 5),)


def test_max_line_qty_is_a_good_quantity_but_out_of_stock() -> None:
    run = catalog(a=5)
    rejected = only_rejection(run.do(reserve("o1", ("A", MAX_LINE_QTY))))
    assert rejected.reason == "out_of_stock"
    assert rejected.problems == (LineProblem("A", MAX_LINE_QTY, 5),)


def test_price_mismatch_reports_both_prices() -> None:
    run = catalog(a=5)
    run.do(SetPrice(sku="B", price=3_000))
    order = Reserve("o1", (OrderLine("A", 1, 1_000), OrderLine("B", 2, 2_550)), 6_100, TTL)
    rejected = only_rejection(run.do(order))
    assert rejected.reason == "price_mismatch"
    assert rejected.problems == (LineProblem("B", 2, 5, unit_price=2_550, catalog_price=3_000),)


def test_total_mismatch() -> None:
    run = catalog()
    good = reserve("o1", ("A", 2), ("B", 1))
    rejected = only_rejection(run.do(msgspec.structs.replace(good, total=good.total + 1)))
    assert rejected.reason == "total_mismatch"
    assert rejected.problems == ()


def test_empty_order_and_too_many_lines() -> None:
    run = catalog(a=100)
    assert only_rejection(run.do(Reserve("o1", (), 0, TTL))).reason == "empty_order"
    many = reserve("o2", *[("A", 1)] * (MAX_LINES + 1))
    assert only_rejection(run.do(many)).reason == "too_many_lines"
    assert run.do(reserve("o3", *[("A", 1)] * MAX_LINES))[0].__class__ is Reserved


def test_a_good_order_is_reserved_with_the_catalog_prices_and_expiry() -> None:
    run = catalog(a=5, b=5)
    (event,) = run.do(reserve("o1", ("A", 2), ("B", 1), ttl=90), timedelta(seconds=7))
    assert event == Reserved(
        order_id="o1",
        lines=(ReservedLine("A", 2, 1_000), ReservedLine("B", 1, 2_550)),
        total=2 * 1_000 + 2_550,
        expires_at=T0 + timedelta(seconds=97),
        at=T0 + timedelta(seconds=7),
    )
    assert (run.state.products["A"].reserved, run.state.products["A"].available) == (2, 3)


def test_a_late_commit_after_expiry_takes_the_stock_again_when_it_is_there() -> None:
    run = catalog(a=5)
    (reserved,) = run.do(reserve("o1", ("A", 3)))
    assert isinstance(reserved, Reserved)
    (released,) = run.do(Expire("o1"), timedelta(seconds=TTL))
    assert isinstance(released, Released)
    assert run.state.products["A"].reserved == 0
    (committed,) = run.do(Commit("o1", "pay1"), timedelta(seconds=5))
    assert committed == Committed("o1", reserved.lines, "pay1", run.now)
    product = run.state.products["A"]
    assert (product.on_hand, product.reserved, product.available) == (2, 0, 2)
    assert run.state.orders["o1"].status == "committed"
    assert run.do(Commit("o1", "pay1")) == []


def test_a_late_commit_when_the_stock_was_sold_meanwhile_fails_with_the_numbers() -> None:
    run = catalog(a=5)
    run.do(reserve("o1", ("A", 3)))
    run.do(Expire("o1"), timedelta(seconds=TTL))
    run.do(reserve("o2", ("A", 4)))
    before = run.state
    (failed,) = run.do(Commit("o1", "pay1"), timedelta(seconds=5))
    assert failed == CommitFailed(
        order_id="o1",
        reason="stock_gone",
        payment_id="pay1",
        problems=(LineProblem("A", 3, 1),),
        at=run.now,
    )
    assert run.state.products == before.products
    assert run.state.orders["o1"].status == "commit_failed"
    assert run.do(Commit("o1", "pay1")) == []


def test_a_hold_cancelled_after_the_commit_puts_the_goods_back_once() -> None:
    """A held payment that lapsed before capture: no money, so no goods either."""
    run = catalog(a=5)
    run.do(reserve("o1", ("A", 3)))
    run.do(Commit("o1", "pay1"))
    assert run.do(Release("o1", "payment_canceled", "pay2")) == []  # not the order's payment
    (released,) = run.do(Release("o1", "payment_canceled", "pay1"))
    assert isinstance(released, Released) and released.payment_id == "pay1"
    product = run.state.products["A"]
    assert (product.on_hand, product.reserved, product.available) == (5, 0, 5)
    assert run.do(Release("o1", "payment_canceled", "pay1")) == []
    assert run.do(Commit("o1", "pay1")) == [], "a cancelled payment takes nothing"


def test_a_cancelled_payment_redelivered_after_the_release_takes_nothing() -> None:
    run = catalog(a=5)
    run.do(reserve("o1", ("A", 3)))
    run.do(Release("o1", "payment_canceled", "pay1"))
    assert run.do(Commit("o1", "pay1")) == []
    assert run.state.products["A"].available == 5


def test_commit_of_an_unknown_or_rejected_order_fails() -> None:
    run = catalog(a=1)
    (unknown,) = run.do(Commit("ghost", "pay1"))
    assert isinstance(unknown, CommitFailed)
    assert unknown.reason == "unknown_order"
    run.do(reserve("o1", ("A", 2)))  # out of stock
    (not_reserved,) = run.do(Commit("o1", "pay2"))
    assert isinstance(not_reserved, CommitFailed)
    assert (not_reserved.reason, not_reserved.problems) == ("not_reserved", ())


def test_write_off_beyond_available_is_refused() -> None:
    run = catalog(a=5)
    run.do(reserve("o1", ("A", 3)))
    with pytest.raises(CommandRefused, match="only 2 available"):
        decide(
            run.state, AdjustStock(adjustment_id="w1", sku="A", delta=-3, reason="write_off"), T0
        )
    (adjusted,) = run.do(AdjustStock(adjustment_id="w1", sku="A", delta=-2, reason="write_off"))
    assert adjusted == StockAdjusted(
        sku="A", delta=-2, on_hand=3, reason="write_off", adjustment_id="w1", at=run.now
    )
    assert run.state.products["A"].available == 0


@pytest.mark.parametrize(
    ("delta", "reason"), [(0, "restock"), (-1, "restock"), (1, "write_off"), (0, "write_off")]
)
def test_adjustments_of_the_wrong_sign_are_refused(
    delta: int, reason: Literal["restock", "write_off"]
) -> None:
    run = catalog(a=5)
    command = AdjustStock(adjustment_id="x1", sku="A", delta=delta, reason=reason)
    with pytest.raises(CommandRefused):
        decide(run.state, command, T0)


def test_count_below_reserved_is_refused() -> None:
    run = catalog(a=5)
    run.do(reserve("o1", ("A", 3)))
    with pytest.raises(CommandRefused, match="3 are reserved"):
        decide(run.state, CountStock(sku="A", on_hand=2), T0)
    (counted,) = run.do(CountStock(sku="A", on_hand=3))
    assert isinstance(counted, StockAdjusted)
    assert (counted.delta, counted.on_hand, counted.reason) == (-2, 3, "count")
    product = run.state.products["A"]
    assert (product.on_hand, product.reserved, product.available) == (3, 3, 0)


def test_admin_commands_on_an_unknown_sku_are_refused() -> None:
    run = catalog()
    for command in (
        SetPrice(sku=UNKNOWN_SKU, price=100),
        CountStock(sku=UNKNOWN_SKU, on_hand=1),
        AdjustStock(adjustment_id="r1", sku=UNKNOWN_SKU, delta=1, reason="restock"),
    ):
        with pytest.raises(CommandRefused, match="unknown SKU"):
            decide(run.state, command, T0)


def test_a_hidden_product_is_not_sold_and_keeps_its_stock_and_shows_again() -> None:
    now = datetime(2026, 12, 1, 10, tzinfo=UTC)
    state = fold(EMPTY, decide(EMPTY, UpsertCategory("tea", "Tea"), now))
    for command in (UpsertProduct("A", "Tea A", 1000_00, "tea"), CountStock("A", 5)):
        state = fold(state, decide(state, command, now))
    hidden = fold(state, decide(state, SetVisible("A", False), now))
    assert not hidden.products["A"].visible and hidden.products["A"].on_hand == 5
    assert decide(hidden, SetVisible("A", False), now) == [], "hidden once"
    (refused,) = decide(hidden, Reserve("o1", (OrderLine("A", 1, 1000_00),), 1000_00, 600), now)
    assert isinstance(refused, Rejected) and refused.reason == "unknown_sku"
    shown = fold(hidden, decide(hidden, SetVisible("A", True), now))
    (reserved,) = decide(shown, Reserve("o1", (OrderLine("A", 1, 1000_00),), 1000_00, 600), now)
    assert isinstance(reserved, Reserved)
    # A catalog import that says nothing of it shows it again (the file is the shop's word).
    (again,) = decide(hidden, UpsertProduct("A", "Tea A", 1000_00, "tea"), now)
    assert isinstance(again, ProductUpserted) and again.visible


def test_a_photo_set_alone_keeps_a_price_and_title_changed_meanwhile() -> None:
    """The desk changes a photo while the sheet changed the price and the title: SetPhoto takes
    every other field from the state, so neither change is undone."""
    now = datetime(2026, 12, 1, 10, tzinfo=UTC)
    state = fold(EMPTY, decide(EMPTY, UpsertCategory("tea", "Tea"), now))
    commands = (
        UpsertProduct("A", "Tea A", 1000_00, "tea", weight=130, visible=False),
        CountStock("A", 5),
        SetPrice("A", 1200_00),  # the sheet, after the desk's card was shown
        UpsertProduct("A", "Tea A, new", 1200_00, "tea", weight=130, visible=False),
    )
    for command in commands:
        state = fold(state, decide(state, command, now))
    (event,) = decide(state, SetPhoto("A", "AgAC-file-id"), now)
    assert isinstance(event, ProductUpserted)
    after = fold(state, [event]).products["A"]
    assert after.photo_url == "AgAC-file-id"
    assert (after.title, after.price, after.weight, after.visible, after.on_hand) == (
        "Tea A, new",
        1200_00,
        130,
        False,
        5,
    )
    assert decide(fold(state, [event]), SetPhoto("A", "AgAC-file-id"), now) == [], "set once"
    with pytest.raises(CommandRefused, match="unknown SKU"):
        decide(state, SetPhoto(UNKNOWN_SKU, "x"), now)
