"""The inventory's catch-up cannot hang: a consumer that goes quiet while the log is behind is
replaced by a fresh one from the event after the last folded (services.inventory.store).

A stand-in for JetStream's ordered consumer plays the ways a real one went wrong in the cluster
chaos runs: deliveries stop for good (a consumer recreated during an election, never asked for
again), or start again at sequence 1 (nats-py resets before its first message there).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import msgspec
import pytest

from libs.contracts import CountStock, InventoryEvent, OrderLine, UpsertCategory, UpsertProduct
from services.inventory import store
from services.inventory.core import EMPTY, Command, Reserve, State, decide, evolve
from services.inventory.store import EventLog


def history(orders: int) -> tuple[list[InventoryEvent], State]:
    """A catalog, then `orders` reservations of one unit: folding one twice would show."""
    now = datetime.now(UTC)
    commands: list[Command] = [
        UpsertCategory("c", "Category"),
        UpsertProduct("ONE", "One", 500, "c"),
        CountStock("ONE", orders),
        *(Reserve(f"o{n}", (OrderLine("ONE", 1, 500),), 500, 600) for n in range(orders)),
    ]
    state, events = EMPTY, []
    for command in commands:
        for event in decide(state, command, now):
            state = evolve(state, event)
            events.append(event)
    return events, state


@dataclass
class _Subscription:
    task: asyncio.Task[None]

    async def unsubscribe(self) -> None:
        self.task.cancel()


@dataclass
class _Log:
    """The INVENTORY stream as a fake JetStream context: subscription number i delivers what
    `deliveries(i, start)` says (stream sequences, in order), then nothing more."""

    events: list[InventoryEvent]
    deliveries: Callable[[int, int], range]
    starts: list[int] = field(default_factory=list)

    async def stream_info(self, stream: str) -> Any:
        return SimpleNamespace(state=SimpleNamespace(last_seq=len(self.events)))

    async def subscribe(
        self, subject: str, *, cb: Callable[[Any], Awaitable[None]], **kw: Any
    ) -> Any:
        start = kw["config"].opt_start_seq
        number = len(self.starts)
        self.starts.append(start)

        async def deliver() -> None:
            for seq in self.deliveries(number, start):
                event = self.events[seq - 1]
                msg = SimpleNamespace(
                    data=msgspec.json.encode(event),
                    subject="inventory.test",
                    metadata=SimpleNamespace(sequence=SimpleNamespace(stream=seq)),
                )
                await cb(msg)
                await asyncio.sleep(0)
            await asyncio.Event().wait()  # quiet from here on, as a lost consumer is

        return _Subscription(asyncio.create_task(deliver()))


@pytest.fixture(autouse=True)
def quick_heartbeats(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store, "CATCH_UP_HEARTBEAT_S", 0.02)


def _event_log(fake: _Log) -> EventLog:
    return EventLog(SimpleNamespace(), fake, None)  # type: ignore[arg-type]


async def test_a_consumer_that_goes_quiet_is_replaced_from_the_next_event() -> None:
    events, want = history(200)
    last = len(events)
    # The first consumer stops after 50 events; the next one is asked from 51 and sends the rest.
    fake = _Log(events, lambda i, start: range(start, 51 if i == 0 else last + 1))
    state, seq = await _event_log(fake).catch_up(EMPTY, 0)
    assert (state, seq) == (want, last)
    assert fake.starts == [1, 51]


async def test_a_consumer_that_starts_again_at_one_folds_nothing_twice() -> None:
    events, want = history(200)
    last = len(events)
    # After a snapshot at 20: the first consumer stops at 120; the next starts over at 1.
    snapshot = EMPTY
    for event in events[:20]:
        snapshot = evolve(snapshot, event)
    fake = _Log(events, lambda i, start: range(start, 121) if i == 0 else range(1, last + 1))
    state, seq = await _event_log(fake).catch_up(snapshot, 20)
    assert (state, seq) == (want, last)
    assert fake.starts == [21, 121]


async def test_consumers_that_all_go_quiet_end_in_a_timeout_not_a_hang() -> None:
    events, _ = history(50)
    fake = _Log(events, lambda i, start: range(start, start + 2))  # two events each, then quiet
    with pytest.raises(TimeoutError, match="catch-up stalled"):
        await asyncio.wait_for(_event_log(fake).catch_up(EMPTY, 0), timeout=10)
    assert len(fake.starts) == store.CATCH_UP_RESUMES + 1
    assert fake.starts == sorted(fake.starts) and fake.starts[1] == 3, "each from the next event"
