"""The single-writer actor: one task feeds the pure core one command at a time, with group commit.

Commands arrive on one queue (orders, payment facts, admin requests, expiry timers). The actor
takes a batch, decides it against its state, appends the events pipelined, waits for the acks,
and only then acks the inputs and answers. No locks: the queue is the serialisation.
"""

from __future__ import annotations

import asyncio
import heapq
from dataclasses import dataclass
from datetime import UTC, datetime

from nats.aio.msg import Msg

from libs import log
from libs.bus import TRANSIENT
from libs.contracts import InventoryEvent, Rejected, Reserved
from services.inventory.core import Command, CommandRefused, Expire, State, decide, evolve
from services.inventory.store import AppendFailed, EventLog, ReadModels

_log = log.get(__name__)

# Commands per group commit. Each makes at most one event, and one atomic batch of JetStream
# holds at most 1,000 messages.
MAX_BATCH = 1_000


@dataclass(slots=True)
class Job:
    """A command, and how to tell its source it is done: ack a message, or resolve a future."""

    command: Command
    msg: Msg | None = None
    done: asyncio.Future[list[InventoryEvent] | str] | None = None


class Actor:
    def __init__(
        self,
        events: EventLog,
        read_models: ReadModels,
        snapshot_every: int,
        queue_size: int = 20_000,
    ) -> None:
        self._events = events
        self._read_models = read_models
        self._snapshot_every = snapshot_every
        self.queue: asyncio.Queue[Job] = asyncio.Queue(maxsize=queue_size)
        self.state = State()
        self.seq = 0
        self._timers: list[tuple[datetime, str]] = []
        self._snapshot_seq = 0
        self._snapshot_task: asyncio.Task[None] | None = None

    async def load(self) -> None:
        self.state, self.seq = await self._events.load()
        self._snapshot_seq = self.seq
        self._timers = self.state.reservations()
        heapq.heapify(self._timers)
        self._read_models.touch_all(self.state)
        await self._read_models.flush(self.state, self.seq)

    async def submit(self, command: Command) -> list[InventoryEvent] | str:
        """Run one command through the actor; the events it caused, or why it was refused."""
        done: asyncio.Future[list[InventoryEvent] | str] = (
            asyncio.get_running_loop().create_future()
        )
        await self.queue.put(Job(command, done=done))
        return await done

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            jobs = await self._next_batch(stop)
            if jobs:
                await self.apply(jobs, stop)

    async def _next_batch(self, stop: asyncio.Event) -> list[Job]:
        jobs: list[Job] = []
        if self.queue.empty():
            wait = 1.0
            if self._timers:
                wait = min(wait, max(0.0, (self._timers[0][0] - _now()).total_seconds()))
            try:
                jobs.append(await asyncio.wait_for(self.queue.get(), timeout=wait))
            except TimeoutError:
                pass
        while len(jobs) < MAX_BATCH and not self.queue.empty():
            jobs.append(self.queue.get_nowait())
        now = _now()
        while self._timers and self._timers[0][0] <= now and len(jobs) < MAX_BATCH:
            _, order_id = heapq.heappop(self._timers)
            jobs.append(Job(Expire(order_id)))
        return jobs

    async def apply(self, jobs: list[Job], stop: asyncio.Event | None = None) -> None:
        """Group commit: decide all, append all, then ack and answer all."""
        assert len(jobs) <= MAX_BATCH, "one group commit is one atomic batch"
        backoff = 0.05
        while True:
            now = _now()
            state = self.state
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
            if not events:
                break
            try:
                await self._events.append(events, self.seq)
                self.seq += len(events)
                break
            except AppendFailed as exc:
                # Fenced off (another writer got there first) or unsure: what is in the stream is
                # the truth; take it in and decide the whole batch again.
                _log.warning("append.failed", error=str(exc), seq=self.seq, batch=len(jobs))
                while True:
                    try:
                        self.state, self.seq = await self._events.catch_up(self.state, self.seq)
                        break
                    except (*TRANSIENT, AppendFailed) as err:
                        _log.warning("catch_up.failed", error=repr(err))
                    if stop is not None and stop.is_set():
                        return  # inputs stay unacked and come back to whoever runs next
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 2.0)
        self.state = state
        _log.debug("batch.committed", commands=len(jobs), events=len(events), seq=self.seq)
        self._after_commit(events)
        await self._read_models.flush(self.state, self.seq)
        for job, outcome in zip(jobs, outcomes, strict=True):
            if job.msg is not None:
                try:
                    await job.msg.ack()
                except TRANSIENT:
                    pass  # redelivered later; the command is idempotent
            if job.done is not None and not job.done.done():
                job.done.set_result(outcome)
        if self.seq - self._snapshot_seq >= self._snapshot_every:
            self._snapshot()

    def _after_commit(self, events: list[InventoryEvent]) -> None:
        self._read_models.touch(events)
        for event in events:
            if isinstance(event, Reserved):
                heapq.heappush(self._timers, (event.expires_at, event.order_id))
            if isinstance(event, Rejected):
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
        if self._snapshot_task is not None:
            await asyncio.wait([self._snapshot_task], timeout=10)


def _now() -> datetime:
    return datetime.now(UTC)
