"""A chaos test of the whole purchase: every process killed with SIGKILL, again and again.

nats-server, inventory, payments and crm_sync run as real processes (crm_sync writing CSV files,
payments talking to the fake YooKassa of `tests/fakes/yookassa.py` with two-stage capture). A
steady stream of orders asks for far more than the few units in stock, and the owner restocks a
little now and then. Each customer who gets a Pay button pays at once, near the end of the
reservation, after it, or never (then YooKassa expires the payment). Some pay by SBP (charged at
once, so a late one is refunded, not cancelled), some on receipt (no YooKassa payment: the goods
are held for CASH_HOLD, and the desk says when the money came, with the same timings, or never,
and the hold ends). Every few seconds one of
inventory, payments, crm_sync and nats-server is killed with SIGKILL and started again shortly
after. Then the orders and the kills stop, the shop is left to settle (waited for, with a
deadline), and the invariants are checked against what YooKassa holds, the event streams and the
CRM's CSV files:

* no oversell: folding the INVENTORY stream, no product ever has more reserved than on hand;
* for every order, money held or taken <=> stock committed, to the kopeck: what the shop keeps
  of the money is what the goods it keeps are worth (an order paid on receipt: what the desk
  took less what payments told it to give back); no hold left waiting for capture, nothing
  captured twice, at most one payment per order, none at YooKassa for one paid on receipt, and
  its money told once;
* on hand = initial + restocked - units sold and not returned to stock (and the stock read
  model says the same);
* the CRM has every order once, with the status the lifecycle (libs/lifecycle.py) gives, and
  every sold line once;
* nothing dead-lettered, every order answered.

Reproducible by seed: the seed fixes everything the test decides (each order, its time and its
customer's behaviour, what the shop does after paid, the restocks, which process is killed when
and for how long). After paid, the shop (as its admin chat would) cancels some orders, delivers
some, and takes one unit of some back, to stock or written off. What the
processes make of it is timing, so a replayed seed runs the same schedule and usually, not
always, hits the same failure.

On a cluster (`--cluster`, `make cluster`): three nats-servers from deploy/nats-cluster.conf on
loopback, every stream, bucket and object store with three copies (STREAM_REPLICAS=3), two
inventories at once (one writes, the other is fenced off and takes over when it can). The NATS
kills take the node that leads the INVENTORY stream, the ORDERS stream or the cluster's metadata
when the kill is due (each in turn, services killed in between), and wait for the restarted node
to be current again. Also checked, in both modes: every fact JetStream acknowledged or delivered
is still in its stream at the end; on a cluster, three copies of everything the services made.

    .venv/bin/python -m tests.chaos [--seed N] [--seconds S]     # `make chaos`: 10 minutes
    .venv/bin/python -m tests.chaos --cluster [--seed N]          # `make cluster`: 10 minutes

The short run is `tests/test_chaos.py`, in `make test`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import dataclasses
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import typing
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import aiohttp
import msgspec
import nats.errors
import nats.js.errors
import structlog
from nats.aio.client import Client
from nats.js import JetStreamContext

from libs import bus, fulfilment, lifecycle, subjects
from libs.contracts import (
    AdjustStock,
    AdminReply,
    AdminRequest,
    CashReceived,
    Committed,
    Contact,
    InventoryEvent,
    OrderFulfilment,
    OrderLine,
    OrderPlaced,
    PaymentEvent,
    PaymentMethod,
    PaymentPending,
    PaymentRefunded,
    PaymentSucceeded,
    RefundRequested,
    Rejected,
    Reserved,
    StockAdjusted,
    StockLevel,
)
from libs.lifecycle import Status
from libs.money import rubles
from libs.runner import Consumer, Delivery, Runner
from libs.settings import Settings
from services.crm_sync import csv_sheet
from services.inventory import core as inventory
from shop.embedded_nats import EmbeddedNats, NatsCluster, NatsServerError, free_port
from tests.fakes.yookassa import FakeYooKassa
from tests.harness import ServiceProcess

_log = structlog.get_logger(__name__)

# The shop: a few products with a few units each (sku, title, price in kopecks, units).
PRODUCTS = (
    ("GREEN", "Green tea", 45_000, 12),
    ("MUG", "A mug", 99_050, 8),
    ("PUER", "Pu-erh", 150_000, 5),
)
PRICES = {sku: price for sku, _, price, _ in PRODUCTS}
INITIAL = {sku: units for sku, _, _, units in PRODUCTS}

SERVICES = ("inventory", "payments", "crm_sync")
NATS = "nats-server"
TARGETS = (*SERVICES, NATS)
# Cluster mode (--cluster): three nats-servers from deploy/nats-cluster.conf, every stream and
# bucket with three copies, two inventories (one writes, the other is fenced off). A NATS kill
# takes the node that holds a role when the kill is due: a stream's leader or the meta leader.
LEADERS = ("leader of INVENTORY", "leader of ORDERS", "meta leader")
LEADER_OF = {LEADERS[0]: subjects.INVENTORY, LEADERS[1]: subjects.ORDERS}
CLUSTER_TARGETS = (*SERVICES, *LEADERS)
SECOND_INVENTORY = "inventory-2"
# The buckets and object stores inventory, payments and crm_sync make (each at STREAM_REPLICAS).
SERVICE_BUCKETS = (
    f"KV_{subjects.CATALOG_BUCKET}",
    f"KV_{subjects.STOCK_BUCKET}",
    f"OBJ_{subjects.SNAPSHOT_BUCKET}",
    f"KV_{subjects.PAYMENTS_RECORDS_BUCKET}",
    f"KV_{subjects.CRM_BUCKET}",
    f"KV_{subjects.CRM_WRITER_BUCKET}",
    f"KV_{subjects.CRM_ORDERS_BUCKET}",
)

Behaviour = Literal["at_once", "near_end", "late", "never"]
BEHAVIOURS: tuple[Behaviour, ...] = ("at_once", "near_end", "late", "never")
BEHAVIOUR_WEIGHTS = (30, 25, 20, 25)

# How each customer pays: a card (held, captured on commit), SBP (charged at once), or on receipt
# (the desk says when; the behaviour's timing is then the desk's, "never": the hold ends).
PAYMENTS: tuple[PaymentMethod, ...] = ("card", "sbp", "cash")
PAYMENT_WEIGHTS = (60, 25, 15)
CASH_HOLD = 8  # seconds an order paid on receipt is held (the inventory's CASH_HOLD)

# What the shop does once an order is paid (its admin chat's buttons): nothing more, cancel it
# (the money and the goods go back), deliver it, or take one unit back (to stock, or written off).
After = Literal["keep", "cancel", "deliver", "return", "write_off"]
AFTERS: tuple[After, ...] = ("keep", "cancel", "deliver", "return", "write_off")
AFTER_WEIGHTS = (55, 15, 12, 12, 6)

# Statuses after which the flow is over.
FINAL = lifecycle.ENDED | {Status.PAID, Status.PARTLY_REFUNDED, Status.DELIVERED}
ORDER_FACTS = typing.get_args(lifecycle.OrderFact)
SHOWN = 8  # examples shown per broken invariant
# Settling normally takes a reservation's TTL and a few seconds, or a consumer's ack_wait (10-15 s)
# when a killed instance held a fact (it is redelivered only then). Beyond this it is stuck.
SETTLE_DEADLINE = 60.0
SLOW_SETTLE = 15.0  # normally TTL + 4 s and a little; what still moved then is noted


def status_matches(cell: str, status: Status) -> bool:
    """Whether the CRM's Status cell says the lifecycle's status.

    The one place that knows the CSV's wording: the status's value with spaces for underscores
    ("awaiting payment", "returning money"), as crm_sync's `status_text` writes it.
    """
    return cell == status.value.replace("_", " ")


# The schedule: everything the seed decides -----------------------------------------------------
@dataclass(frozen=True)
class PlannedOrder:
    order_id: str
    at: float  # seconds from the start of the chaos
    lines: tuple[OrderLine, ...]
    behaviour: Behaviour
    # When the customer acts: at_once, this long after the Pay button came; near_end, this long
    # before the reservation ends; late, this long after it ended; never, YooKassa expires the
    # payment this long after the reservation ended.
    wait: float
    after: After = "keep"  # what the shop does once it is paid
    payment: PaymentMethod = "card"


@dataclass(frozen=True)
class PlannedKill:
    at: float
    target: str
    down_for: float


@dataclass(frozen=True)
class PlannedRestock:
    at: float
    sku: str
    qty: int
    adjustment_id: str


@dataclass(frozen=True)
class Schedule:
    orders: tuple[PlannedOrder, ...]
    kills: tuple[PlannedKill, ...]
    restocks: tuple[PlannedRestock, ...]


def schedule(seed: int, seconds: float, rate: float, cluster: bool = False) -> Schedule:
    """The run's plan. Each concern draws from its own generator, so changing one (say, the run
    length) leaves the others' draws as they were.

    On a cluster, NATS kills and service kills alternate, the NATS ones taking the leader of
    INVENTORY, of ORDERS and the meta leader in turn (every role is hit within six kills), with
    shorter pauses: the cluster stays up through a node's death, so the shop does not wait."""
    draw = random.Random(f"{seed}:orders")
    orders: list[PlannedOrder] = []
    at = draw.expovariate(rate)
    while at < seconds:
        n = len(orders)
        skus = draw.sample(sorted(PRICES), k=draw.choice((1, 1, 2)))  # no SKU twice in one order
        lines = tuple(OrderLine(sku, draw.randint(1, 3), PRICES[sku]) for sku in skus)
        behaviour = draw.choices(BEHAVIOURS, BEHAVIOUR_WEIGHTS)[0]
        wait = {
            "at_once": draw.uniform(0.0, 0.3),
            "near_end": draw.uniform(0.05, 1.0),
            "late": draw.uniform(0.3, 2.5),
            "never": draw.uniform(2.5, 4.0),
        }[behaviour]
        orders.append(PlannedOrder(f"o{n:05d}", at, lines, behaviour, wait))
        at += draw.expovariate(rate)
    desk = random.Random(f"{seed}:desk")
    orders = [dataclasses.replace(o, after=desk.choices(AFTERS, AFTER_WEIGHTS)[0]) for o in orders]
    pay = random.Random(f"{seed}:payment")
    orders = [
        dataclasses.replace(o, payment=pay.choices(PAYMENTS, PAYMENT_WEIGHTS)[0]) for o in orders
    ]

    draw = random.Random(f"{seed}:kills")
    kills: list[PlannedKill] = []
    at = draw.uniform(1.0, 4.0)
    while at < seconds and not cluster:
        down_for = draw.uniform(0.5, 3.0)
        kills.append(PlannedKill(at, draw.choice(TARGETS), down_for))
        at += down_for + draw.uniform(1.5, 5.0)
    while at < seconds and cluster:
        n = len(kills)
        target = LEADERS[n // 2 % len(LEADERS)] if n % 2 == 0 else draw.choice(SERVICES)
        down_for = draw.uniform(0.5, 2.0)
        kills.append(PlannedKill(at, target, down_for))
        at += down_for + draw.uniform(1.0, 3.0)

    draw = random.Random(f"{seed}:restocks")
    restocks: list[PlannedRestock] = []
    at = draw.uniform(2.0, 6.0)
    while at < seconds:
        n = len(restocks)
        restocks.append(
            PlannedRestock(at, draw.choice(sorted(PRICES)), draw.randint(2, 6), f"r{n}")
        )
        at += draw.uniform(2.0, 6.0)
    return Schedule(tuple(orders), tuple(kills), tuple(restocks))


# The processes ----------------------------------------------------------------------------------
class Target:
    """A process the chaos kills: started, killed with SIGKILL, started again in place."""

    name: str

    def __init__(self) -> None:
        self.lock = asyncio.Lock()  # the chaos and the watchdog never restart it at once
        self.down = False  # killed on purpose, not restarted yet

    def alive(self) -> bool:
        raise NotImplementedError

    def exit_code(self) -> int | None:
        raise NotImplementedError

    def kill(self) -> None:
        raise NotImplementedError

    async def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError


class NatsTarget(Target):
    """A nats-server (or one cluster node): the same ports and store directory after every
    restart."""

    def __init__(self, server: EmbeddedNats) -> None:
        super().__init__()
        self.server = server
        self.name = server.name or NATS

    def alive(self) -> bool:
        process = self.server.process
        return process is not None and process.poll() is None

    def exit_code(self) -> int | None:
        process = self.server.process
        return None if process is None else process.poll()

    def kill(self) -> None:
        self.server.kill()

    async def start(self) -> None:
        await asyncio.to_thread(self.server.start)  # it polls its log until "Server is ready"

    def stop(self) -> None:
        self.server.stop()


class ServiceTarget(Target):
    """`shop run NAME`, its output appended to one log across restarts."""

    def __init__(self, name: str, env: dict[str, str], log: Path, service: str = "") -> None:
        super().__init__()
        self.name = name
        self.process = ServiceProcess(service or name, env, log)

    def alive(self) -> bool:
        return self.process.alive()

    def exit_code(self) -> int | None:
        popen = self.process.process
        return None if popen is None else popen.poll()

    def kill(self) -> None:
        if self.process.alive():
            self.process.kill()

    async def start(self) -> None:
        self.process.start()

    def stop(self) -> None:
        if self.process.alive():
            try:
                self.process.terminate(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()


async def restart(target: Target) -> None:
    """Start it, trying again while it cannot (a port not yet free after a kill, say)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            await target.start()
            return
        except (NatsServerError, OSError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


# What the test sees of the shop -----------------------------------------------------------------
# stream -> (its subjects, its facts' decoder)
STREAMS: dict[str, tuple[str, Any]] = {
    subjects.ORDERS: ("orders.>", OrderPlaced | OrderFulfilment),
    subjects.INVENTORY: (subjects.INVENTORY_ALL, InventoryEvent),
    subjects.PAYMENTS: ("payments.>", PaymentEvent | RefundRequested | CashReceived),
}


class Observer:
    """Every fact of ORDERS, INVENTORY and PAYMENTS by stream sequence, read as the services read
    them: durable pull consumers, which outlive nats-server's restarts. A fact delivered again
    after a restart is the same sequence, kept once."""

    def __init__(self, on_pending: Callable[[PaymentPending], None]) -> None:
        self.on_reserved: Callable[[Reserved], None] = lambda _: None
        self.facts: dict[str, dict[int, Any]] = {stream: {} for stream in STREAMS}
        self.subjects: dict[str, dict[int, str]] = {stream: {} for stream in STREAMS}
        self.by_order: dict[str, list[Any]] = defaultdict(list)
        self._on_pending = on_pending
        self._statuses: dict[str, Status] = {}
        self._dirty: set[str] = set()

    async def run(self, nc: Client, js: JetStreamContext, stop: asyncio.Event) -> None:
        consumers = [
            Consumer[Any](
                stream=stream,
                durable=f"chaos-{stream.lower()}",
                subjects=[everything],
                kind=kind,
                handle_batch=self._take,
                batch=1000,
            )
            for stream, (everything, kind) in STREAMS.items()
        ]
        await Runner(nc, js, "chaos", max_deliveries=1000, stop=stop).run(consumers)

    async def _take(self, deliveries: list[Delivery[Any]]) -> None:
        for delivery in deliveries:
            meta = delivery.msg.metadata
            seen = self.facts[meta.stream]
            if meta.sequence.stream not in seen:
                fact = delivery.value
                seen[meta.sequence.stream] = fact
                self.subjects[meta.stream][meta.sequence.stream] = delivery.msg.subject
                order_id = getattr(fact, "order_id", None)
                if order_id is not None and isinstance(fact, ORDER_FACTS):
                    self.by_order[order_id].append(fact)
                    self._dirty.add(order_id)
                if isinstance(fact, PaymentPending):
                    self._on_pending(fact)
                if isinstance(fact, Reserved):
                    self.on_reserved(fact)
            with contextlib.suppress(*bus.TRANSIENT):
                await delivery.msg.ack()

    def orders(self) -> list[str]:
        """The orders placed (on the ORDERS stream), in the order they were placed."""
        placed = sorted(self.facts[subjects.ORDERS].items())
        return [f.order_id for _, f in placed if isinstance(f, OrderPlaced)]

    def status(self, order_id: str) -> Status:
        """The lifecycle's status of the order, folded again only when a fact came since."""
        if order_id in self._dirty or order_id not in self._statuses:
            order = lifecycle.fold(self.by_order.get(order_id, []))
            self._statuses[order_id] = order.status if order else Status.PLACED
            self._dirty.discard(order_id)
        return self._statuses[order_id]

    def of(self, order_id: str, kind: type) -> list[Any]:
        return [f for f in self.by_order.get(order_id, []) if isinstance(f, kind)]

    def inventory_events(self) -> list[tuple[int, Any]]:
        return sorted(self.facts[subjects.INVENTORY].items())

    def first_after(self, stream: str, seq: int, filters: list[str]) -> str:
        """The first fact after `seq` (a consumer's ack floor) that a consumer with these filters
        takes, in words: the oldest it has not acked."""
        for at in sorted(n for n in self.subjects[stream] if n > seq):
            if any(_matches(pattern, self.subjects[stream][at]) for pattern in filters):
                fact = self.facts[stream][at]
                return f"{stream} #{at} {_describe(fact)} {getattr(fact, 'order_id', '')}"
        return "?"


# The customers ----------------------------------------------------------------------------------
class Customers:
    """One per Pay button (a payments.pending fact): acts as its planned behaviour says."""

    def __init__(self, fake: FakeYooKassa, plans: dict[str, PlannedOrder]) -> None:
        self._fake = fake
        self._plans = plans
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.paid: dict[str, float] = {}  # order id -> when (wall clock) the money was held
        self.late: set[str] = set()  # paid after the reservation had ended
        self.expired: dict[str, float] = {}  # order id -> when YooKassa expired the payment
        self.errors: list[str] = []

    def on_pending(self, fact: PaymentPending) -> None:
        if fact.order_id in self._plans and fact.order_id not in self.tasks:
            plan = self._plans[fact.order_id]
            self.tasks[fact.order_id] = asyncio.create_task(self._act(plan, fact))

    def busy(self) -> int:
        return sum(1 for task in self.tasks.values() if not task.done())

    async def _act(self, plan: PlannedOrder, fact: PaymentPending) -> None:
        ends = fact.expires_at.timestamp()
        when = {
            "at_once": time.time() + plan.wait,
            "near_end": ends - plan.wait,
            "late": ends + plan.wait,
            "never": ends + plan.wait,
        }[plan.behaviour]
        await asyncio.sleep(max(0.0, when - time.time()))
        pressed = time.time()
        try:
            before = self._fake.payments[fact.payment_id]["status"]
            if plan.behaviour == "never":
                await self._fake.expire(fact.payment_id)
                if before == "pending":
                    self.expired[plan.order_id] = pressed
                return
            # The money is held at once; the webhook is notified after (and may be dead).
            payment = await self._fake.pay(fact.payment_id)
        except Exception as exc:  # the fake's own trouble: told as a broken run, not hidden
            self.errors.append(f"order {plan.order_id}: the customer could not act: {exc!r}")
            return
        if before == "pending" and payment["status"] in ("waiting_for_capture", "succeeded"):
            self.paid[plan.order_id] = pressed
            if pressed >= ends:
                self.late.add(plan.order_id)


class Desk:
    """The shop after paid, as its admin chat would act: once an order is paid, cancel it or
    deliver it (libs.fulfilment.take), or, once its money is taken, take one unit back to stock
    or written off (a RefundRequested); each retried through outages until the bus has it.
    And the money of an order paid on receipt, when its customer pays (CashReceived, pressed
    twice), at its behaviour's time counted from the hold; "never": the hold ends."""

    def __init__(self, observer: Observer, plans: dict[str, PlannedOrder]) -> None:
        self._observer = observer
        self._plans = plans
        self._todo = {oid: plan.after for oid, plan in plans.items() if plan.after != "keep"}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.cash_tasks: dict[str, asyncio.Task[None]] = {}
        self.taken: dict[str, int] = {}  # order id -> kopecks the desk took on receipt
        self.cash_at: dict[str, float] = {}  # order id -> when (wall clock)
        self.done: Counter[str] = Counter()  # "cancel", "deliver", "refused: not_paid", ...
        self.errors: list[str] = []
        self._js: JetStreamContext | None = None

    def busy(self) -> int:
        """Actions under way, or due (their order is paid) and not yet started."""
        due = sum(
            1
            for order_id, after in self._todo.items()
            if order_id not in self.tasks and self._ready(order_id, after)
        )
        working = [*self.tasks.values(), *self.cash_tasks.values()]
        return due + sum(1 for task in working if not task.done())

    def on_reserved(self, fact: Reserved) -> None:
        plan = self._plans.get(fact.order_id)
        if plan is None or plan.payment != "cash" or fact.order_id in self.cash_tasks:
            return
        self.cash_tasks[fact.order_id] = asyncio.create_task(self._cash(plan, fact))

    async def _cash(self, plan: PlannedOrder, fact: Reserved) -> None:
        if plan.behaviour == "never":
            return  # nobody comes: the hold ends
        ends = fact.expires_at.timestamp()
        when = {
            "at_once": time.time() + plan.wait,
            "near_end": ends - plan.wait,
            "late": ends + plan.wait,
        }[plan.behaviour]
        await asyncio.sleep(max(0.0, when - time.time()))
        self.cash_at[plan.order_id] = time.time()
        subject = subjects.payment_fact(subjects.PaymentKind.CASH_RECEIVED, plan.order_id)
        deadline = time.monotonic() + 120
        for press in ("a", "b"):  # two admins press "paid": told once
            while True:
                try:
                    assert self._js is not None
                    command = CashReceived(plan.order_id, 1, datetime.now(UTC))
                    await bus.publish(
                        self._js, subject, command, f"cash-{plan.order_id}-{press}", give_up_after=5
                    )
                    break
                except (nats.errors.Error, nats.js.errors.Error, *bus.TRANSIENT) as exc:
                    if time.monotonic() > deadline:
                        self.errors.append(f"order {plan.order_id}: cash not told: {exc!r}")
                        return
                    await asyncio.sleep(0.5)
            self.taken[plan.order_id] = fact.total

    async def run(self, js: JetStreamContext, stop: asyncio.Event) -> None:
        self._js = js
        while not stop.is_set():
            for order_id, after in self._todo.items():
                if order_id not in self.tasks and self._ready(order_id, after):
                    self.tasks[order_id] = asyncio.create_task(self._act(js, order_id, after))
            await asyncio.sleep(0.2)

    def _ready(self, order_id: str, after: After) -> bool:
        if self._observer.status(order_id) != Status.PAID:
            return False
        return after in ("cancel", "deliver") or bool(
            self._observer.of(order_id, PaymentSucceeded)  # a refund needs the money taken
        )

    async def _act(self, js: JetStreamContext, order_id: str, after: After) -> None:
        deadline = time.monotonic() + 120
        while True:
            try:
                await self._once(js, order_id, after)
                return
            except (nats.errors.Error, nats.js.errors.Error, *bus.TRANSIENT) as exc:
                if time.monotonic() > deadline:
                    self.errors.append(f"order {order_id}: the shop could not {after}: {exc!r}")
                    return
                await asyncio.sleep(0.5)

    async def _once(self, js: JetStreamContext, order_id: str, after: After) -> None:
        if after in ("cancel", "deliver"):
            order = lifecycle.fold(self._observer.by_order[order_id])
            assert order is not None
            step: typing.Literal["cancelled", "delivered"] = (
                "cancelled" if after == "cancel" else "delivered"
            )
            answer = await fulfilment.take(js, order, step, 1, datetime.now(UTC))
            done = after if isinstance(answer, OrderFulfilment) else f"refused: {answer.reason}"
        else:
            (committed, *_) = self._observer.of(order_id, Committed)
            first = committed.lines[0]
            request = RefundRequested(
                f"ret-{order_id}",
                order_id,
                "returned",
                (OrderLine(first.sku, 1, first.unit_price),),
                restock=after == "return",
            )
            subject = subjects.payment_fact(subjects.PaymentKind.REFUND_REQUESTED, order_id)
            await bus.publish(js, subject, request, request.request_id, give_up_after=5)
            done = after
        self.done[done] += 1


# The run ----------------------------------------------------------------------------------------
@dataclass
class Summary:
    seed: int
    seconds: float
    workdir: Path
    counts: dict[str, int] = field(default_factory=dict)
    statuses: Counter[str] = field(default_factory=Counter)
    kills: Counter[str] = field(default_factory=Counter)
    exits: list[str] = field(default_factory=list)  # processes that ended without being killed
    notes: list[str] = field(default_factory=list)  # not broken, but worth knowing
    violations: dict[str, list[str]] = field(default_factory=dict)
    phases: dict[str, float] = field(default_factory=dict)  # seconds: start, chaos, settle, check
    wall: float = 0.0
    targets: tuple[str, ...] = TARGETS  # what the kills are counted by

    @property
    def ok(self) -> bool:
        return not self.violations

    def lines(self) -> list[str]:
        c = self.counts
        kills = ", ".join(f"{name} {self.kills[name]}" for name in self.targets)
        lines = [
            f"chaos seed {self.seed}: {self.seconds:g} s of chaos, {self.wall:.0f} s in all ("
            + ", ".join(f"{name} {secs:.1f} s" for name, secs in self.phases.items())
            + "); "
            f"orders placed {c.get('placed', 0)}, reserved {c.get('reserved', 0)}, "
            f"rejected {c.get('rejected', 0)}, paid {c.get('paid', 0)}, "
            f"paid late {c.get('paid_late', 0)}, captured {c.get('captured', 0)}, "
            f"cancelled {c.get('cancelled', 0)}, expired {c.get('expired', 0)}",
            f"  paid by: card {c.get('pay card', 0)}, SBP {c.get('pay sbp', 0)}, on receipt "
            f"{c.get('pay cash', 0)} (the desk took the money of {c.get('cash taken', 0)})",
            "  after paid: "
            + (
                ", ".join(f"{k[5:]} {n}" for k, n in sorted(c.items()) if k.startswith("desk "))
                or "nothing"
            )
            + f"; kills: {kills}; restocks {c.get('restocks', 0)} "
            f"(+{c.get('restocked', 0)} units); final statuses: "
            + ", ".join(f"{s} {n}" for s, n in sorted(self.statuses.items())),
        ]
        if self.exits:
            lines.append(f"  ended by themselves (restarted): {'; '.join(self.exits)}")
        lines.extend(f"  note: {note}" for note in self.notes)
        lines.append("  every invariant holds" if self.ok else "  BROKEN: see below")
        return lines

    def report(self, replay: str) -> str:
        """The summary and, for each broken invariant, how many orders and which."""
        out = self.lines()
        for invariant, problems in self.violations.items():
            out.append(f"BROKEN {invariant}: {len(problems)}")
            out.extend(f"  - {problem}" for problem in problems[:SHOWN])
            if len(problems) > SHOWN:
                out.append(f"  ... and {len(problems) - SHOWN} more")
        if not self.ok:
            out.append(f"logs: {self.workdir}")
            out.append(f"replay: {replay}")
        return "\n".join(out)


class Run:
    """One chaos run in `workdir`: its processes, its fake YooKassa, its schedule."""

    def __init__(
        self, seed: int, seconds: float, workdir: Path, rate: float, ttl: int, cluster: bool
    ) -> None:
        self.seed = seed
        self.seconds = seconds
        self.workdir = workdir
        self.ttl = ttl
        self.plan = schedule(seed, seconds, rate, cluster)
        self.plans = {p.order_id: p for p in self.plan.orders}
        self.summary = Summary(seed, seconds, workdir)
        self.cluster = NatsCluster(workdir / "nats") if cluster else None
        if self.cluster is not None:
            self.summary.targets = CLUSTER_TARGETS
        self.fake = FakeYooKassa()
        self.customers = Customers(self.fake, self.plans)
        self.observer = Observer(self.customers.on_pending)
        self.desk = Desk(self.observer, self.plans)
        self.observer.on_reserved = self.desk.on_reserved
        self.events: list[tuple[float, str]] = []  # (wall clock, "payments killed") for timelines
        self.publish_errors: list[str] = []
        self.restocked: dict[str, PlannedRestock] = {}  # confirmed by the inventory
        self.restock_errors: list[str] = []
        servers = self.cluster.nodes if self.cluster else [EmbeddedNats(workdir / "nats")]
        self.nodes = [NatsTarget(server) for server in servers]
        self.nats_url = self.cluster.url if self.cluster else servers[0].url
        self.targets: dict[str, Target] = {node.name: node for node in self.nodes}
        self.acked: dict[tuple[str, int], str] = {}  # the driver's publishes JetStream acked
        self.data = workdir / "data"
        self.nc: Client | None = None
        self.reader: asyncio.Task[None] | None = None  # the Observer

    # -- set-up -----------------------------------------------------------------------------------
    def _env(self, **settings: Any) -> dict[str, str]:
        """The process environment less any shop setting of ours, plus the run's settings."""
        names = {f.encode_name for f in msgspec.structs.fields(Settings)}
        env = {key: value for key, value in os.environ.items() if key not in names}
        env |= {
            "NATS_URL": self.nats_url,
            "STREAM_REPLICAS": "3" if self.cluster else "1",
            "DATA_DIR": str(self.data),
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "info",
        }
        return env | {key.upper(): str(value) for key, value in settings.items()}

    def _catalog(self) -> Path:
        path = self.workdir / "catalog.yaml"
        products = "".join(
            f"      - {{sku: {sku}, title: {title}, price: '{price // 100}.{price % 100:02d}', "
            f"stock: {units}}}\n"
            for sku, title, price, units in PRODUCTS
        )
        path.write_text(f"categories:\n  - id: goods\n    title: Goods\n    products:\n{products}")
        return path

    async def _start(self) -> None:
        logs = self.workdir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        if self.cluster is not None:
            await asyncio.to_thread(self.cluster.start)  # and waits for a meta leader
        else:
            await self.nodes[0].start()
        await self.fake.start()
        self.payments_port, crm_port = free_port(), free_port()
        self.fake.webhook_url = f"http://127.0.0.1:{self.payments_port}/yookassa/webhook"
        settings: dict[str, dict[str, Any]] = {
            "inventory": {
                "catalog_file": self._catalog(),
                "reservation_ttl": self.ttl,
                "cash_hold": CASH_HOLD,
                "snapshot_every": 200,  # restarts load snapshots, not only the whole log
            },
            "payments": {
                "payments_http_port": self.payments_port,
                "yookassa_shop_id": self.fake.shop_id,
                "yookassa_secret_key": self.fake.secret_key,
                "yookassa_api_url": self.fake.api_url,
                "yookassa_trusted_networks": "127.0.0.1/32",
                "payments_capture": "two_stage",
                # A notification lost to a dead process is found again within seconds.
                "payments_reconcile_after": 2,
                "payments_reconcile_every": 1,
            },
            "crm_sync": {"crm_http_port": crm_port, "crm_stock_every": 1},  # CSV in DATA_DIR/crm
        }
        names = [*SERVICES, SECOND_INVENTORY] if self.cluster else list(SERVICES)
        for name in names:
            service = "inventory" if name == SECOND_INVENTORY else name
            env = self._env(**settings[service])
            target = ServiceTarget(name, env, logs / f"{name}.log", service)
            await target.start()
            self.targets[name] = target
        self.nc = await bus.connect(self.nats_url, name="chaos")
        self.js: JetStreamContext = self.nc.jetstream(timeout=10)
        await subjects.declare_streams(self.js)

    async def _ready(self) -> bool:
        """Every service has made its consumers, the catalog is in, payments answers."""
        wanted = {
            subjects.ORDERS: {subjects.INVENTORY_ORDERS_CONSUMER, subjects.CRM_ORDERS_CONSUMER},
            subjects.INVENTORY: {
                subjects.PAYMENTS_INVENTORY_CONSUMER,
                subjects.CRM_INVENTORY_CONSUMER,
            },
            subjects.PAYMENTS: {subjects.INVENTORY_PAYMENTS_CONSUMER},
        }
        try:
            for stream, names in wanted.items():
                have = {info.name for info in await self.js.consumers_info(stream)}
                if not names <= have:
                    return False
            kv = await self.js.key_value(subjects.STOCK_BUCKET)
            for sku in PRICES:
                await kv.get(sku)
        except (nats.js.errors.Error, *bus.TRANSIENT):
            return False
        url = f"http://127.0.0.1:{self.payments_port}/healthz"
        try:
            async with aiohttp.ClientSession() as http, http.get(url) as reply:
                return reply.status == 200
        except aiohttp.ClientError:
            return False

    # -- the chaos --------------------------------------------------------------------------------
    async def _orders(self, t0: float) -> None:
        """Each planned order at its time, published as the bot does, retried through outages."""

        async def place(plan: PlannedOrder, n: int) -> None:
            placed = OrderPlaced(
                order_id=plan.order_id,
                customer_id=100_000 + n,
                lines=plan.lines,
                total=sum(line.qty * line.unit_price for line in plan.lines),
                placed_at=datetime.now(UTC),
                contact=Contact(name=f"Customer {n}", phone="+79001234567", address="Moscow"),
                chat_id=100_000 + n,
                payment=plan.payment,
            )
            subject = subjects.order_placed(plan.order_id)
            try:
                ack = await bus.publish(
                    self.js, subject, placed, msg_id=plan.order_id, give_up_after=120
                )
            except Exception as exc:  # told as a broken run below
                self.publish_errors.append(f"order {plan.order_id}: not published: {exc!r}")
            else:
                self.acked[(ack.stream, ack.seq)] = subject

        async with asyncio.TaskGroup() as tasks:
            for n, plan in enumerate(self.plan.orders):
                await _sleep_until(t0 + plan.at)
                tasks.create_task(place(plan, n))

    async def _restocks(self, t0: float) -> None:
        """The owner's restocks: admin requests, idempotent by id, asked again until answered."""
        for restock in self.plan.restocks:
            await _sleep_until(t0 + restock.at)
            assert self.nc is not None
            request = AdminRequest(
                (AdjustStock(restock.adjustment_id, restock.sku, restock.qty, "restock"),)
            )
            deadline = time.monotonic() + 60
            while True:
                try:
                    answer = await self.nc.request(
                        subjects.INVENTORY_ADMIN, bus.encode(request), timeout=3
                    )
                except (nats.errors.Error, *bus.TRANSIENT) as exc:
                    if time.monotonic() > deadline:
                        self.restock_errors.append(f"restock {restock}: no answer ({exc!r})")
                        break
                    await asyncio.sleep(0.3)
                    continue
                reply = msgspec.json.decode(answer.data, type=AdminReply)
                if reply.errors:
                    self.restock_errors.append(f"restock {restock}: refused: {reply.errors}")
                else:
                    self.restocked[restock.adjustment_id] = restock
                break

    async def _kills(self, t0: float) -> None:
        for kill in self.plan.kills:
            await _sleep_until(t0 + kill.at)
            name = kill.target
            if kill.target in LEADERS:
                name = await self._leader(kill.target)
            target = self.targets[name]
            what = kill.target if name == kill.target else f"{kill.target} ({name})"
            async with target.lock:
                target.down = True
                target.kill()
                self.summary.kills[kill.target] += 1
                self._event(f"{what} killed")
                await asyncio.sleep(kill.down_for)
                await restart(target)
                target.down = False
                self._event(f"{what} restarted")
            if kill.target in LEADERS:
                await self._caught_up(name)

    async def _leader(self, role: str) -> str:
        """The node that holds `role` now (waiting out an election, if one is under way)."""
        assert self.cluster is not None and self.nc is not None
        quick = self.nc.jetstream(timeout=1)
        deadline = time.monotonic() + 20
        while True:
            leader: str | None = None
            if role in LEADER_OF:
                with contextlib.suppress(nats.js.errors.Error, *bus.TRANSIENT):
                    cluster = (await quick.stream_info(LEADER_OF[role])).cluster
                    leader = cluster.leader if cluster else None
            else:
                leader = await asyncio.to_thread(self.cluster.meta_leader)
            if leader in self.targets:
                return leader
            if time.monotonic() > deadline:
                raise RuntimeError(f"no {role} found in 20 s")
            await asyncio.sleep(0.1)

    async def _caught_up(self, node: str) -> None:
        """A restarted node holds a current copy of every stream again before the next NATS kill:
        two nodes down (or one down, one behind) is more than three copies promise to survive."""

        assert self.nc is not None
        quick = self.nc.jetstream(timeout=1)  # a request lost in the election is asked again

        async def current() -> bool:
            try:
                for name in (*STREAMS, *SERVICE_BUCKETS):
                    cluster = (await quick.stream_info(name)).cluster
                    if cluster is None or not cluster.leader:
                        return False
                    peers = {p.name: p.current for p in cluster.replicas or []}
                    if cluster.leader != node and not peers.get(node):
                        return False
            except (nats.js.errors.Error, *bus.TRANSIENT):
                return False
            return True

        if not await _until(current, 30):
            self.summary.notes.append(f"{node} was not current 30 s after its restart")
        else:
            self._event(f"{node} current again")

    def _event(self, what: str) -> None:
        """Something the chaos did: kept for the orders' timelines, and in driver.log."""
        self.events.append((time.time(), what))
        _log.info("chaos.event", what=what)

    async def _watchdog(self, stop: asyncio.Event) -> None:
        """A process that ended without being killed is told and started again, as `shop up` or
        docker would (a service gives up when NATS is unreachable at its start, for one)."""
        while not stop.is_set():
            for target in self.targets.values():
                if target.down or target.alive() or target.lock.locked():
                    continue
                async with target.lock:
                    if target.alive():
                        continue
                    self.summary.exits.append(f"{target.name} (exit {target.exit_code()})")
                    self._event(f"{target.name} ended by itself (exit {target.exit_code()})")
                    await asyncio.sleep(0.5)
                    await restart(target)
                    self._event(f"{target.name} restarted")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.25)

    # -- settling ---------------------------------------------------------------------------------
    async def _unsettled(self) -> list[str]:
        """What still moves (empty once the shop is at rest)."""
        why = [f"{t.name} is not running" for t in self.targets.values() if not t.alive()]
        if self.reader is not None and self.reader.done():
            return [f"the test's reader of the streams stopped: {self.reader!r}"]
        if busy := self.customers.busy():
            why.append(f"{busy} customers still to act")
        if busy := self.desk.busy():
            why.append(f"{busy} of the shop's actions after paid still to go")
        holds = [
            p["id"] for p in self.fake.payments.values() if p["status"] == "waiting_for_capture"
        ]
        if holds:
            why.append(f"{len(holds)} payments waiting for capture: {', '.join(holds[:3])}")
        if why:
            return why
        try:
            for stream in STREAMS:
                info = await self.js.stream_info(stream)
                if len(self.observer.facts[stream]) != info.state.messages:
                    why.append(
                        f"the test has read {len(self.observer.facts[stream])} of "
                        f"{info.state.messages} facts on {stream}"
                    )
                for consumer in await self.js.consumers_info(stream):
                    if not consumer.config.durable_name:
                        continue  # a reader's (a catch-up, a watch): no work waits on it
                    # The test's own reader: an ack of its lost in a NATS restart is harmless,
                    # having read every fact (counted above) is what matters.
                    unacked = 0 if consumer.name.startswith("chaos-") else consumer.num_ack_pending
                    if consumer.num_pending or unacked:
                        filters = consumer.config.filter_subjects or [
                            consumer.config.filter_subject or ">"
                        ]
                        floor = consumer.ack_floor.stream_seq if consumer.ack_floor else 0
                        why.append(
                            f"consumer {consumer.name}: {consumer.num_pending} pending, "
                            f"{unacked} unacked (from "
                            f"{self.observer.first_after(stream, floor, filters)})"
                        )
        except (nats.js.errors.Error, *bus.TRANSIENT) as exc:
            return [f"NATS: {exc!r}"]
        orders = self.observer.orders()
        open_ = [oid for oid in orders if self.observer.status(oid) not in FINAL]
        if open_:
            shown = ", ".join(f"{oid} ({self.observer.status(oid)})" for oid in open_[:5])
            why.append(f"{len(open_)} orders not final: {shown}")
        untold = self._untold()
        if untold:
            why.append(f"{len(untold)} YooKassa statuses not told as facts: {untold[0]}")
        rows = len(_csv(self.data / "crm" / csv_sheet.ORDERS))
        if not why and rows < len(orders):
            why.append(f"orders.csv has {rows} rows for {len(orders)} orders")
        return why

    def _untold(self) -> list[str]:
        """Payments whose final status in YooKassa has no fact on the bus."""
        kinds = {"succeeded": "payment_succeeded", "canceled": "payment_canceled"}
        missing = []
        for payment in self.fake.payments.values():
            kind = kinds.get(payment["status"])
            order_id = payment["metadata"].get("order_id", "")
            told = {_tag(f) for f in self.observer.by_order.get(order_id, [])}
            if kind is not None and kind not in told:
                missing.append(f"order {order_id}: payment {payment['id']} is {payment['status']}")
        return missing

    async def _settle(self) -> list[str]:
        """Wait until nothing moves; what still did at the deadline (empty if it settled)."""
        start = time.monotonic()
        slow: list[str] = []
        said: list[str] = []
        while True:
            why = await self._unsettled()
            waited = time.monotonic() - start
            if why != said:
                _log.info("chaos.settling", after=round(waited, 1), waiting_for=why)
                said = why
            if why and not slow and waited > SLOW_SETTLE:
                slow = why
            if not why or waited > SETTLE_DEADLINE:
                break
            await asyncio.sleep(0.5)
        if slow and not why:
            self.summary.notes.append(
                f"settling took {waited:.0f} s; after {SLOW_SETTLE:g} s still: {'; '.join(slow)}"
            )
        return why

    # -- the whole run ----------------------------------------------------------------------------
    async def go(self) -> Summary:
        started = time.monotonic()
        stop = asyncio.Event()
        background: list[asyncio.Task[None]] = []
        try:
            await self._start()
            if not await _until(self._ready, 60):
                raise RuntimeError(f"the shop did not start in 60 s; logs in {self.workdir}")
            phase = self._phase("start", started)
            assert self.nc is not None
            self.reader = asyncio.create_task(self.observer.run(self.nc, self.js, stop))
            background.append(self.reader)
            background.append(asyncio.create_task(self._watchdog(stop)))
            background.append(asyncio.create_task(self.desk.run(self.js, stop)))
            t0 = time.monotonic()
            await asyncio.gather(self._orders(t0), self._restocks(t0), self._kills(t0))
            phase = self._phase("chaos", phase)
            # Settle: no more orders nor kills; every customer acts within TTL + 4 s of their Pay
            # button, then payments, the inventory and crm_sync finish what they have.
            why = await self._settle()
            if why:
                self.summary.violations["the shop settles (no order, hold or fact left open)"] = [
                    f"not settled after the deadline: {reason}" for reason in why
                ]
            phase = self._phase("settle", phase)
            await self._check()
            self._phase("check", phase)
        finally:
            stopping = time.monotonic()
            stop.set()
            await asyncio.gather(*background, return_exceptions=True)
            for task in [*self.customers.tasks.values(), *self.desk.tasks.values()]:
                task.cancel()
            # The services first (each drains its NATS connection), NATS last.
            for target in sorted(self.targets.values(), key=lambda t: isinstance(t, NatsTarget)):
                target.stop()
            if self.nc is not None:
                with contextlib.suppress(Exception):
                    await self.nc.close()
            await self.fake.stop()
            self._phase("stop", stopping)
        self.summary.wall = time.monotonic() - started
        return self.summary

    def _phase(self, name: str, since: float) -> float:
        now = time.monotonic()
        self.summary.phases[name] = now - since
        return now

    # -- the verdict ------------------------------------------------------------------------------
    def _broken(self, invariant: str, problem: str) -> None:
        self.summary.violations.setdefault(invariant, []).append(problem)

    async def _check(self) -> None:
        observer, fake = self.observer, self.fake
        orders = observer.orders()
        for problem in self.publish_errors:
            self._broken("every order placed", problem)
        for problem in self.restock_errors:
            self._broken("every restock applied", problem)
        for problem in self.customers.errors:
            self._broken("customers can pay", problem)
        for problem in self.desk.errors:
            self._broken("the shop can act after paid", problem)

        # The inventory's events are the truth about stock: fold them, checking as we go.
        state = inventory.EMPTY
        restocks: Counter[str] = Counter()
        for seq, event in observer.inventory_events():
            try:
                state = inventory.evolve(state, event)
            except Exception as exc:
                self._broken("the INVENTORY stream folds", f"event #{seq} {event!r}: {exc!r}")
                continue
            if isinstance(event, StockAdjusted) and event.reason == "restock":
                restocks[event.adjustment_id] += 1
            for sku in _skus(event):
                changed = state.products[sku]
                if changed.reserved < 0 or changed.reserved > changed.on_hand:
                    self._broken(
                        "no oversell",
                        f"after INVENTORY #{seq} ({_tag(event)} {getattr(event, 'order_id', '')})"
                        f" {sku}: on hand {changed.on_hand}, reserved {changed.reserved}",
                    )
        for adjustment_id, times in restocks.items():
            if times > 1:
                self._broken("every restock applied once", f"{adjustment_id} applied {times} times")
        for adjustment_id in self.restocked.keys() - restocks.keys():
            self._broken("every restock applied once", f"{adjustment_id} confirmed but not in log")

        # YooKassa is the truth about money.
        by_order: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for payment in fake.payments.values():
            by_order[payment["metadata"].get("order_id", "")].append(payment)
        sold: Counter[str] = Counter()  # units committed and not returned to stock, by SKU
        for order_id in orders:
            payments = by_order.get(order_id, [])
            self._check_order(order_id, payments, state, sold)
        for order_id in by_order.keys() - set(orders):
            self._broken("at most one payment per order", f"payment for unknown order {order_id}")
        for payment_id, times in fake.captures.items():
            if times > 1:
                self._broken("nothing captured twice", f"payment {payment_id} captured {times}x")

        # On hand adds up, and nothing is left reserved.
        restocked = Counter[str]()
        for _, event in observer.inventory_events():
            if isinstance(event, StockAdjusted) and event.reason == "restock":
                restocked[event.sku] += event.delta
        for sku in PRICES:
            product = state.products.get(sku)
            on_hand = product.on_hand if product else 0
            expected = INITIAL[sku] + restocked[sku] - sold[sku]
            if on_hand != expected:
                self._broken(
                    "on hand = initial + restocked - units sold and not returned to stock",
                    f"{sku}: on hand {on_hand}, expected {INITIAL[sku]} + {restocked[sku]} - "
                    f"{sold[sku]} = {expected}",
                )
            if product and product.reserved:
                self._broken("nothing left reserved", f"{sku}: {product.reserved} reserved")
        await self._check_read_model(state)
        self._check_crm(orders, state)
        await self._check_dead_letters()
        await self._check_kept()
        if self.cluster is not None:
            await self._check_replicas()
            self._count_fencing()

        # What happened, for the summary.
        c = self.summary.counts
        c["placed"] = len(orders)
        c["reserved"] = sum(1 for oid in orders if observer.of(oid, Reserved))
        c["rejected"] = sum(1 for oid in orders if observer.of(oid, Rejected))
        c["paid"] = len(self.customers.paid)
        c["paid_late"] = len(self.customers.late)
        c["captured"] = sum(1 for p in fake.payments.values() if p["status"] == "succeeded")
        statuses = Counter(observer.status(oid).value for oid in orders)
        c["cancelled"] = statuses[Status.CANCELLED.value]
        c["expired"] = statuses[Status.EXPIRED.value]
        for done, times in self.desk.done.items():
            c[f"desk {done}"] = times
        for method in PAYMENTS:
            c[f"pay {method}"] = sum(1 for oid in orders if self.plans[oid].payment == method)
        c["cash taken"] = len(self.desk.taken)
        c["restocks"] = len(self.restocked)
        c["restocked"] = sum(restocked.values())
        self.summary.statuses = statuses

    def _check_order(
        self,
        order_id: str,
        payments: list[dict[str, Any]],
        state: inventory.State,
        sold: Counter[str],
    ) -> None:
        observer = self.observer
        plan = self.plans.get(order_id)
        method = plan.payment if plan is not None else "card"
        for payment in payments:
            asked = (payment.get("payment_method") or {}).get("type")
            if method == "cash" or asked != ("sbp" if method == "sbp" else "bank_card"):
                self._broken(
                    "each order paid the way its customer chose",
                    f"order {order_id} ({method}): payment {payment['id']} by {asked}",
                )
        if method == "cash":
            payments = self._till(order_id)
        if len(payments) > 1:
            ids = ", ".join(p["id"] for p in payments)
            self._broken("at most one payment per order", f"order {order_id}: payments {ids}")
        answers = [f for f in observer.by_order[order_id] if isinstance(f, Reserved | Rejected)]
        if len(answers) != 1:
            self._broken(
                "every order answered once (reserved or rejected)",
                f"order {order_id}: {[_tag(f) for f in answers] or 'no answer'}",
            )
        held = [p for p in payments if p["status"] == "waiting_for_capture"]
        for payment in held:
            self._broken(
                "no hold left waiting for capture",
                f"order {order_id}: payment {payment['id']}; {self._timeline(order_id)}",
            )
        taken = [
            p
            for p in payments
            if p["status"] == "succeeded"
            and _kopecks(p["refunded_amount"]["value"]) < _kopecks(p["amount"]["value"])
        ]
        stock = state.orders.get(order_id)
        refunds = observer.of(order_id, PaymentRefunded)
        # What the shop keeps: the goods of a committed order less every line refunded (to stock
        # or written off), and the money held or taken less every refund.
        goods = 0
        if stock is not None and stock.status == "committed":
            back: Counter[str] = Counter()
            for refund in refunds:
                back.update({line.sku: line.qty for line in refund.lines})
            for line in stock.lines:
                gone = min(line.qty, back[line.sku])
                back[line.sku] -= gone
                goods += (line.qty - gone) * line.unit_price
        money = sum(_kopecks(p["amount"]["value"]) for p in held) + sum(
            _kopecks(p["amount"]["value"]) - _kopecks(p["refunded_amount"]["value"])
            for p in payments
            if p["status"] == "succeeded"
        )
        committed = goods > 0
        if committed and not (taken or held):
            self._broken(
                "money held or taken <=> stock committed",
                f"order {order_id}: stock committed without money "
                f"({_payments(payments)}); {self._timeline(order_id)}",
            )
        elif (taken or held) and not committed:
            self._broken(
                "money held or taken <=> stock committed",
                f"order {order_id}: money {'taken' if taken else 'held'} "
                f"({_payments(payments)}) but the stock is "
                f"{stock.status if stock else 'unknown to the inventory'}; "
                f"{self._timeline(order_id)}",
            )
        elif money != goods:
            self._broken(
                "money held or taken <=> stock committed",
                f"order {order_id}: the shop keeps {money} kopecks for goods worth {goods} "
                f"({_payments(payments)}); {self._timeline(order_id)}",
            )
        commits = observer.of(order_id, Committed)
        if len(commits) > 1:
            self._broken(
                "nothing captured twice (stock committed once per order)",
                f"order {order_id}: {len(commits)} committed facts; {self._timeline(order_id)}",
            )
        if stock is not None and stock.status == "committed" and commits:
            restocked: Counter[str] = Counter()  # written-off units stay sold: they are gone
            for refund in refunds:
                if refund.restock:
                    restocked.update({line.sku: line.qty for line in refund.lines})
            for line in commits[0].lines:
                sold[line.sku] += line.qty - min(line.qty, restocked[line.sku])
                restocked[line.sku] -= min(line.qty, restocked[line.sku])

    def _till(self, order_id: str) -> list[dict[str, Any]]:
        """An order paid on receipt's money as a YooKassa payment would say it: what the desk
        took, less what payments told it to give back over the counter (empty: nothing taken).
        Its money is told once, and only if taken."""
        told = self.observer.of(order_id, PaymentSucceeded)
        taken = self.desk.taken.get(order_id)
        if len(told) != (0 if taken is None else 1):
            self._broken(
                "the money of an order paid on receipt told once, when taken",
                f"order {order_id}: the desk took {taken}, told {len(told)} times; "
                f"{self._timeline(order_id)}",
            )
        if taken is None:
            return []
        back = sum(refund.amount for refund in self.observer.of(order_id, PaymentRefunded))
        return [
            {
                "id": f"cash-{order_id}",
                "status": "succeeded",
                "amount": {"value": rubles(taken)},
                "refunded_amount": {"value": rubles(back)},
            }
        ]

    async def _check_read_model(self, state: inventory.State) -> None:
        """The stock KV (the bot's view) comes to say what the log says."""
        expected = {sku: (p.on_hand, p.reserved) for sku, p in state.products.items()}

        async def levels() -> dict[str, tuple[int, int]]:
            kv = await self.js.key_value(subjects.STOCK_BUCKET)
            found = {}
            for sku in expected:
                entry = await kv.get(sku)
                level = msgspec.json.decode(entry.value or b"", type=StockLevel)
                found[sku] = (level.on_hand, level.reserved)
            return found

        async def same() -> bool:
            try:
                return await levels() == expected
            except (nats.js.errors.Error, msgspec.DecodeError, *bus.TRANSIENT):
                return False

        if not await _until(same, 15):
            self._broken(
                "the stock read model says what the log says",
                f"stock KV (on hand, reserved) {await levels()}, the log {expected}",
            )

    def _check_crm(self, orders: list[str], state: inventory.State) -> None:
        crm = self.data / "crm"
        rows = _csv(crm / csv_sheet.ORDERS)
        seen = Counter(row.get("Order", "") for row in rows)
        known = set(orders)
        invariant = "the CRM has every order once, with the lifecycle's status"
        for order_id in orders:
            if seen[order_id] != 1:
                self._broken(invariant, f"order {order_id}: {seen[order_id]} rows in orders.csv")
        for order_id in seen.keys() - known:
            self._broken(invariant, f"orders.csv has a row for unknown order {order_id!r}")
        for row in rows:
            order_id = row.get("Order", "")
            if order_id not in known:
                continue
            status = self.observer.status(order_id)
            if not status_matches(row.get("Status", ""), status):
                self._broken(
                    invariant,
                    f"order {order_id}: orders.csv says {row.get('Status')!r}, the lifecycle "
                    f"{status.value!r}; {self._timeline(order_id)}",
                )

        invariant = "the CRM has every sold line once"
        sales = _csv(crm / csv_sheet.SALES)
        for fact_key, times in Counter(row.get("Fact", "") for row in sales).items():
            if times > 1:
                self._broken(invariant, f"sales.csv has fact {fact_key!r} {times} times")
        positive: Counter[tuple[str, str]] = Counter()
        net: Counter[tuple[str, str]] = Counter()
        for row in sales:
            qty = int(Decimal(row.get("Qty") or "0"))
            key = (row.get("Order", ""), row.get("SKU", ""))
            net[key] += qty
            if qty > 0:
                positive[key] += qty
        committed: Counter[tuple[str, str]] = Counter()
        kept: Counter[tuple[str, str]] = Counter()  # still the customer's at the end
        for order_id in orders:
            for fact in self.observer.of(order_id, Committed):
                committed.update({(order_id, line.sku): line.qty for line in fact.lines})
            stock = state.orders.get(order_id)
            if stock is not None and stock.status == "committed":
                kept.update({(order_id, line.sku): line.qty for line in stock.lines})
            for refund in self.observer.of(order_id, PaymentRefunded):
                kept.subtract({(order_id, line.sku): line.qty for line in refund.lines})
        for key in sorted(committed.keys() | positive.keys()):
            if committed[key] != positive[key]:
                self._broken(
                    invariant,
                    f"order {key[0]} {key[1]}: committed {committed[key]}, "
                    f"sales.csv {positive[key]}",
                )
        for key in sorted(kept.keys() | net.keys()):
            if kept[key] != net[key]:
                self._broken(
                    "the CRM's ledger nets to what was sold",
                    f"order {key[0]} {key[1]}: sales.csv nets {net[key]}, sold {kept[key]}; "
                    f"{self._timeline(key[0])}",
                )

    async def _check_kept(self) -> None:
        """Every fact JetStream acknowledged (to the driver) or delivered (to the test's reader)
        is still in its stream, at its sequence, at the end: nothing a kill took back."""
        seen = {
            (stream, seq): subject
            for stream, by_seq in self.observer.subjects.items()
            for seq, subject in by_seq.items()
        }
        for (stream, seq), subject in {**seen, **self.acked}.items():
            try:
                kept = (await self.js.get_msg(stream, seq)).subject
            except nats.js.errors.NotFoundError:
                kept = None
            if kept != subject:
                self._broken(
                    "every acknowledged fact still there",
                    f"{stream} #{seq}: {subject} was acknowledged; now {kept or 'nothing'}",
                )

    async def _check_replicas(self) -> None:
        """Every stream, bucket and object store the services made has three copies."""
        for name in (*STREAMS, subjects.DEADLETTER, subjects.ALERTS, *SERVICE_BUCKETS):
            try:
                replicas = (await self.js.stream_info(name)).config.num_replicas
            except nats.js.errors.NotFoundError:
                replicas = None
            if replicas != 3:
                self._broken(
                    "three copies of everything (STREAM_REPLICAS=3)", f"{name}: {replicas}"
                )

    def _count_fencing(self) -> None:
        """How often the two inventories' fencing acted: told, as proof it was exercised."""
        counts: Counter[str] = Counter()
        for name in ("inventory", SECOND_INVENTORY):
            for line in (
                (self.workdir / "logs" / f"{name}.log").read_text(errors="replace").splitlines()
            ):
                for event in ("append.failed", "writer.taken_over", "writer.claimed"):
                    if f'"event": "{event}"' in line or f'"event":"{event}"' in line:
                        counts[event] += 1
        self.summary.counts |= {f"fencing {k}": v for k, v in counts.items()}
        self.summary.notes.append(
            "the inventories' fencing: "
            + (", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "never acted")
        )

    async def _check_dead_letters(self) -> None:
        try:
            info = await self.js.stream_info(subjects.DEADLETTER)
        except nats.js.errors.NotFoundError:
            return
        if not info.state.messages:
            return
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            with contextlib.suppress(nats.js.errors.NotFoundError):
                msg = await self.js.get_msg(subjects.DEADLETTER, seq)
                headers = msg.headers or {}
                self._broken(
                    "nothing dead-lettered",
                    f"{msg.subject}: {headers.get('Shop-Dead-Reason', '?')}",
                )

    def _timeline(self, order_id: str) -> str:
        """The order's story, from its placing: facts, the customer, and the kills meanwhile."""
        facts = self.observer.by_order.get(order_id, [])
        placed = [f.placed_at for f in facts if isinstance(f, OrderPlaced)]
        if not placed:
            return "never placed"
        start = placed[0].timestamp()
        story: list[tuple[float, str]] = []
        for fact in facts:
            at = (fact.placed_at if isinstance(fact, OrderPlaced) else fact.at).timestamp()
            story.append((at, _describe(fact)))
            if isinstance(fact, Reserved):
                story.append((fact.expires_at.timestamp(), "(reservation ends)"))
        plan = self.plans.get(order_id)
        if order_id in self.customers.paid and plan is not None:
            story.append((self.customers.paid[order_id], f"customer paid ({plan.behaviour})"))
        if order_id in self.desk.cash_at:
            story.append((self.desk.cash_at[order_id], "the desk took the money"))
        if order_id in self.customers.expired:
            story.append((self.customers.expired[order_id], "YooKassa expired the payment"))
        end = max(at for at, _ in story) + 1.0
        story += [(at, what) for at, what in self.events if start - 1.0 <= at <= end]
        story.sort(key=lambda item: item[0])
        return "; ".join(f"{at - start:+.2f}s {what}" for at, what in story)


# Helpers ----------------------------------------------------------------------------------------
def _tag(fact: Any) -> str:
    return str(fact.__struct_config__.tag)


def _describe(fact: Any) -> str:
    """A fact in a few words: its kind, and its reason where it has one."""
    reason = getattr(fact, "reason", "")
    return f"{_tag(fact)}({reason})" if reason else _tag(fact)


def _matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: `*` is one token, a final `>` one or more."""
    wanted, tokens = pattern.split("."), subject.split(".")
    for n, token in enumerate(wanted):
        if token == ">":
            return len(tokens) > n
        if n >= len(tokens) or token not in ("*", tokens[n]):
            return False
    return len(tokens) == len(wanted)


def _skus(event: Any) -> list[str]:
    if isinstance(event, StockAdjusted):
        return [event.sku]
    return [line.sku for line in getattr(event, "lines", ())]


def _payments(payments: list[dict[str, Any]]) -> str:
    if not payments:
        return "no payment"
    described = []
    for payment in payments:
        details = payment.get("cancellation_details") or {}
        why = f": {details.get('party')}/{details.get('reason')}" if details else ""
        described.append(f"payment {payment['id']} {payment['status']}{why}")
    return ", ".join(described)


def _kopecks(value: str) -> int:
    return int(Decimal(value) * 100)


def _csv(path: Path) -> list[dict[str, str]]:
    try:
        with path.open(encoding="utf-8", newline="") as file:
            return list(csv.DictReader(file))
    except FileNotFoundError:
        return []


async def _sleep_until(moment: float) -> None:
    await asyncio.sleep(max(0.0, moment - time.monotonic()))


async def _until(condition: Callable[[], Awaitable[bool]], timeout: float) -> bool:
    """Whether `condition` came true within `timeout` s (polled; never a blind sleep)."""
    deadline = time.monotonic() + timeout
    while True:
        if await condition():
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.1)


async def run(
    seed: int,
    seconds: float,
    workdir: Path,
    rate: float = 8.0,
    ttl: int = 5,
    cluster: bool = False,
) -> Summary:
    """One chaos run: `seconds` of orders and kills, then settling and the checks.

    `rate` is orders a second; `ttl` the reservation's seconds; `cluster`: on three NATS nodes
    (see LEADERS). The driver's own log (the bus client's warnings through NATS restarts) goes
    to workdir/driver.log.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    saved = structlog.get_config()
    with (workdir / "driver.log").open("a", encoding="utf-8") as log:
        structlog.configure(
            processors=[
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                structlog.processors.JSONRenderer(),
            ],
            logger_factory=structlog.PrintLoggerFactory(log),
            cache_logger_on_first_use=False,
        )
        try:
            return await Run(seed, seconds, workdir, rate, ttl, cluster).go()
        finally:
            structlog.configure(**saved)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.chaos", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--seed", type=int, default=None, help="replay a run (default: random)")
    parser.add_argument("--seconds", type=float, default=600.0, help="of chaos (default 600)")
    parser.add_argument("--rate", type=float, default=8.0, help="orders a second (default 8)")
    parser.add_argument("--ttl", type=int, default=5, help="reservation seconds (default 5)")
    parser.add_argument("--workdir", type=Path, default=None, help="kept (default: a temp dir)")
    parser.add_argument(
        "--cluster", action="store_true", help="three NATS nodes, leaders killed (make cluster)"
    )
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1_000_000)
    print(f"chaos seed {seed}", flush=True)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix=f"chaos-{seed}-"))
    summary = asyncio.run(run(seed, args.seconds, workdir, args.rate, args.ttl, args.cluster))
    replay = f".venv/bin/python -m tests.chaos --seed {seed} --seconds {args.seconds:g}"
    if args.cluster:
        replay += " --cluster"
    if args.rate != 8.0 or args.ttl != 5:
        replay += f" --rate {args.rate:g} --ttl {args.ttl}"
    print(summary.report(replay), flush=True)
    if not summary.ok:
        raise SystemExit(1)
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)  # a passing run's logs are not worth keeping


if __name__ == "__main__":
    main(sys.argv[1:])
