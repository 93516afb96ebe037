"""The single-writer actor: one task feeds the pure core one command at a time, with group commit.

Commands arrive on one queue (orders, payment facts, admin requests, expiry timers). The actor
takes a batch, decides it against its state, appends its events as one atomic batch, and once
that is acked, acks the inputs and answers. No locks: the queue is the serialisation.
"""

from __future__ import annotations

import asyncio
import heapq
import random
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from nats.aio.msg import Msg

from libs import log, metrics
from libs.bus import TRANSIENT
from libs.contracts import InventoryEvent, Rejected, Reserved
from services.inventory.core import (
    Command,
    CommandRefused,
    Commit,
    Expire,
    Reserve,
    State,
    decide,
    evolve,
)
from services.inventory.store import AppendFailed, EventLog, ReadModels

_log = log.get(__name__)

# An order's payment already on the bus (its id), or None: asked before a reservation expires.
PaymentOnBus = Callable[[str], Awaitable[str | None]]
# How soon to ask again when the bus could not say.
RECHECK_S = 1.0

# Commands per group commit. Each makes at most one event, and one atomic batch of JetStream
# holds at most 1,000 messages.
MAX_BATCH = 1_000


RESERVED = metrics.Counter(
    "shop_orders_reserved", "Orders whose stock was reserved", registry=metrics.REGISTRY
)
REJECTED = metrics.Counter(
    "shop_orders_rejected", "Orders refused, by reason", ["reason"], registry=metrics.REGISTRY
)
RESERVATION_LATENCY = metrics.Histogram(
    "shop_reservation_latency_seconds",
    "From the order stored on the bus to its answer (reserved or rejected) stored",
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    registry=metrics.REGISTRY,
)


@dataclass(slots=True)
class Job:
    """A command, and how to tell its source it is done: ack a message, or resolve a future."""

    command: Command
    msg: Msg | None = None
    done: asyncio.Future[list[InventoryEvent] | str] | None = None


@dataclass(slots=True)
class _Batch:
    """One group commit on its way: decided against the state its predecessors will leave."""

    jobs: list[Job]
    outcomes: list[list[InventoryEvent] | str]
    events: list[InventoryEvent]
    state: State  # after this batch
    seq: int  # after this batch
    append: asyncio.Task[None] | None = None  # None when it made no events


class Actor:
    """Feeds the core one command at a time, with group commit, pipelined and fenced.

    The actor first claims the event log (see EventLog): from then on only it can append.
    While one batch's append awaits its ack, the next batch is decided against the state the
    first will leave and appended at once, expecting the sequence the first will end at. If
    the first fails, the second fails too: no one else can append in between (the claim), so
    the stream never reaches the sequence it expects. Then every batch in flight is decided
    again after catching up (and claiming the log again if another instance took it over).
    Acks and answers go out in order, once a batch and all before it are in the stream.
    """

    def __init__(
        self,
        events: EventLog,
        read_models: ReadModels,
        snapshot_every: int,
        queue_size: int = 50,
        pipeline: int = 2,
        payment_on_bus: PaymentOnBus | None = None,
    ) -> None:
        self._events = events
        self._read_models = read_models
        self._snapshot_every = snapshot_every
        self._pipeline = pipeline
        # Jobs in the lists they came in (a consumer's delivery batch, or one request).
        self.queue: asyncio.Queue[list[Job]] = asyncio.Queue(maxsize=queue_size)
        self.state = State()  # what the stream holds, up to seq
        self.seq = 0
        self.writer_id = uuid.uuid4().hex[:16]
        self._lease_seq = 0  # the sequence of our claim on the log
        self._inflight: deque[_Batch] = deque()
        self._redo: deque[Job] = deque()  # jobs of batches that must be decided again
        self._timers: list[tuple[datetime, str]] = []
        self._payment_on_bus = payment_on_bus
        self._expiring: set[asyncio.Task[None]] = set()
        self._snapshot_seq = 0
        self._snapshot_task: asyncio.Task[None] | None = None

    async def load(self) -> None:
        self.state, self.seq = await self._events.load()
        await self._recover(None)
        self._snapshot_seq = self.seq
        self._timers = self.state.reservations()
        heapq.heapify(self._timers)
        self._read_models.touch_all(self.state)
        self._read_models.start(self.state, self.seq)

    async def submit(self, command: Command) -> list[InventoryEvent] | str:
        """Run one command through the actor; the events it caused, or why it was refused."""
        done: asyncio.Future[list[InventoryEvent] | str] = (
            asyncio.get_running_loop().create_future()
        )
        await self.queue.put([Job(command, done=done)])
        return await done

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set() or self._inflight:
            jobs: list[Job] = []
            if not stop.is_set() and len(self._inflight) < self._pipeline:
                jobs = await self._next_batch(stop, block=not self._inflight)
            if jobs:
                self._begin(jobs)
            elif self._inflight:
                await self._settle_oldest(stop)

    async def apply(self, jobs: list[Job], stop: asyncio.Event | None = None) -> None:
        """One group commit to the end: decide, append, ack and answer (retried if fenced)."""
        assert not self._inflight, "apply is for when the run loop is not running"
        self._redo.extend(jobs)
        while self._redo and not (stop is not None and stop.is_set()):
            self._begin([self._redo.popleft() for _ in range(min(MAX_BATCH, len(self._redo)))])
            await self._settle_oldest(stop)

    async def _next_batch(self, stop: asyncio.Event, block: bool) -> list[Job]:
        jobs: list[Job] = []
        while self._redo and len(jobs) < MAX_BATCH:
            jobs.append(self._redo.popleft())
        if block and not jobs and self.queue.empty():
            wait = 1.0
            if self._timers:
                wait = min(wait, max(0.0, (self._timers[0][0] - _now()).total_seconds()))
            try:
                jobs.extend(await asyncio.wait_for(self.queue.get(), timeout=wait))
            except TimeoutError:
                pass
        while len(jobs) < MAX_BATCH and not self.queue.empty():
            jobs.extend(self.queue.get_nowait())
        if len(jobs) > MAX_BATCH:  # the rest goes first next time, in the order it came
            self._redo.extendleft(reversed(jobs[MAX_BATCH:]))
            del jobs[MAX_BATCH:]
        now = _now()
        due: list[str] = []
        while self._timers and self._timers[0][0] <= now and len(jobs) + len(due) < MAX_BATCH:
            due.append(heapq.heappop(self._timers)[1])
        if self._payment_on_bus is None:
            jobs.extend(Job(Expire(order_id)) for order_id in due)
        elif due:
            task = asyncio.create_task(self._expire(due))
            self._expiring.add(task)
            task.add_done_callback(self._expiring.discard)
        return jobs

    async def _expire(self, order_ids: list[str]) -> None:
        """Let reservations go only once the bus has no payment for them.

        A payment told before the expiry may still wait in the consumer (after a restart, it
        comes back only when its ack_wait ends): committing it first keeps the customer's order
        on time. A payment told after this look is a late payment, which the core decides.
        """
        assert self._payment_on_bus is not None
        found = await asyncio.gather(
            *(self._payment_on_bus(order_id) for order_id in order_ids), return_exceptions=True
        )
        jobs: list[Job] = []
        later = _now() + timedelta(seconds=RECHECK_S)
        for order_id, payment_id in zip(order_ids, found, strict=True):
            if isinstance(payment_id, BaseException):
                _log.warning("expiry.payment_unknown", order_id=order_id, error=repr(payment_id))
                heapq.heappush(self._timers, (later, order_id))
            elif payment_id is not None:
                jobs.append(Job(Commit(order_id, payment_id)))
            else:
                jobs.append(Job(Expire(order_id)))
        if jobs:
            await self.queue.put(jobs)

    def _begin(self, jobs: list[Job]) -> None:
        """Decide a batch after those in flight; append it now if none is in flight."""
        assert len(jobs) <= MAX_BATCH, "one group commit is one atomic batch"
        before = self._inflight[-1] if self._inflight else None
        state, seq = (before.state, before.seq) if before else (self.state, self.seq)
        now = _now()
        events: list[InventoryEvent] = []
        outcomes: list[list[InventoryEvent] | str] = []
        for job in jobs:
            try:
                decided = decide(state, job.command, now)
            except CommandRefused as exc:
                outcomes.append(str(exc))
                continue
            for event in decided:
                state = evolve(state, event)
            events.extend(decided)
            outcomes.append(decided)
        append = None
        if events:
            append = asyncio.create_task(self._events.append(events, seq, self._lease_seq))
        self._inflight.append(_Batch(jobs, outcomes, events, state, seq + len(events), append))

    async def _settle_oldest(self, stop: asyncio.Event | None) -> None:
        """Wait for the oldest batch in flight; commit it, or redo everything in flight."""
        batch = self._inflight[0]
        try:
            if batch.append is not None:
                await batch.append
            elif batch.jobs and not await self._events.still_writer(self._lease_seq):
                # A batch that decides nothing appends nothing, so no append fences it: an
                # instance taken over from would answer on its stale state and ack the fact (a
                # refund of an order it has not seen committed: the goods never come back).
                raise AppendFailed("taken over: a batch deciding nothing, on a stale state")
        except AppendFailed as exc:
            # Fenced off (another writer got there first) or unsure: what is in the stream is
            # the truth; take it in and decide every batch in flight again.
            _log.warning("append.failed", error=str(exc), seq=self.seq, batch=len(batch.jobs))
            await self._redo_inflight(stop)
            return
        self._inflight.popleft()
        self.state, self.seq = batch.state, batch.seq
        _log.debug(
            "batch.committed", commands=len(batch.jobs), events=len(batch.events), seq=self.seq
        )
        self._after_commit(batch.events)
        answered = time.time_ns()
        for job, outcome in zip(batch.jobs, batch.outcomes, strict=True):
            decided = isinstance(outcome, list) and bool(outcome)
            if decided and isinstance(job.command, Reserve) and job.msg is not None:
                # Answered now; a redelivered order, answered before, decides nothing.
                waited = (answered - stored_ns(job.msg)) / 1e9
                RESERVATION_LATENCY.observe(max(0.0, waited))
            if job.msg is not None:
                try:
                    await job.msg.ack()
                except TRANSIENT:
                    pass  # redelivered later; the command is idempotent
            if job.done is not None and not job.done.done():
                job.done.set_result(outcome)
        if self.seq - self._snapshot_seq >= self._snapshot_every:
            self._snapshot()

    async def _redo_inflight(self, stop: asyncio.Event | None) -> None:
        appends = [b.append for b in self._inflight if b.append is not None]
        await asyncio.gather(*appends, return_exceptions=True)
        jobs = [job for batch in self._inflight for job in batch.jobs]
        self._inflight.clear()
        self._redo.extendleft(reversed(jobs))
        await self._recover(stop)

    async def _recover(self, stop: asyncio.Event | None) -> None:
        """Catch up with the stream and hold the claim on it; retried until done or stopped.

        If stopped first, the inputs stay unacked and come back to whoever runs next.
        """
        backoff = 0.05
        while not (stop is not None and stop.is_set()):
            try:
                self.state, self.seq = await self._events.catch_up(self.state, self.seq)
                if self._events.lease == (self.writer_id, self._lease_seq):
                    return
                if self._lease_seq:
                    # Another instance took over: let it commit what it holds, then take back.
                    _log.info("writer.taken_over", by=self._events.lease[0])
                    await asyncio.sleep(random.uniform(0.0, 0.1))
                self._lease_seq = await self._events.claim(self.writer_id)
                _log.info("writer.claimed", writer_id=self.writer_id, seq=self._lease_seq)
                continue  # catch up to the claim; another may have claimed since
            except (*TRANSIENT, AppendFailed, TimeoutError) as err:
                _log.warning("catch_up.failed", error=repr(err))
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)

    def _after_commit(self, events: list[InventoryEvent]) -> None:
        self._read_models.touch(events, self.state, self.seq)
        for event in events:
            if isinstance(event, Reserved):
                RESERVED.inc()
                heapq.heappush(self._timers, (event.expires_at, event.order_id))
            if isinstance(event, Rejected):
                REJECTED.labels(event.reason).inc()
                _log.debug(
                    "reservation.rejected",
                    order_id=event.order_id,
                    reason=event.reason,
                    problems=[(p.sku, p.requested, p.available) for p in event.problems],
                )

    def _snapshot(self) -> None:
        if self._snapshot_task is not None and not self._snapshot_task.done():
            return
        self._snapshot_seq = self.seq
        self._snapshot_task = asyncio.create_task(self._write_snapshot(self.state, self.seq))

    async def _write_snapshot(self, state: State, seq: int) -> None:
        try:
            await self._events.write_snapshot(state, seq)
        except Exception as exc:  # a snapshot is an optimisation: never let it stop the actor
            _log.warning("snapshot.failed", error=repr(exc), seq=seq)

    async def close(self) -> None:
        for task in self._expiring:
            task.cancel()  # its reservations stay in the stream; the next start expires them
        if self._snapshot_task is not None:
            await asyncio.wait([self._snapshot_task], timeout=10)
        await self._read_models.close()


def stored_ns(msg: Msg) -> int:
    """When JetStream stored the message (Unix ns), from its ack subject.

    `msg.metadata` parses the whole subject into objects, a sixth of the actor's time per
    order; the timestamp alone is one token: `$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.
    <cseq>.<ns>.<pending>`, or with a domain and account hash in front and a token after.
    """
    tokens = (msg.reply or "").split(".")
    if len(tokens) == 9:
        return int(tokens[7])
    if len(tokens) >= 11:
        return int(tokens[9])
    return int(msg.metadata.timestamp.timestamp() * 1e9)


def _now() -> datetime:
    return datetime.now(UTC)
