"""Fencing on the real stream: a stale writer cannot append; it catches up and decides again."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from nats.js import JetStreamContext

from libs import subjects
from libs.contracts import (
    CountStock,
    InventoryEvent,
    OrderLine,
    Rejected,
    Reserved,
    UpsertCategory,
    UpsertProduct,
)
from services.inventory.actor import Actor, Job
from services.inventory.core import Command, Reserve
from services.inventory.store import AppendFailed, EventLog, ReadModels


async def _actor(js: JetStreamContext) -> Actor:
    _, _, snapshots = await subjects.declare_buckets(js)
    actor = Actor(EventLog(js, snapshots), ReadModels(js), snapshot_every=1000)
    await actor.load()
    return actor


async def _one(actor: Actor, command: Command) -> InventoryEvent:
    """Run one command through the actor's group commit (no run loop) and return its event."""
    done: asyncio.Future[list[InventoryEvent] | str] = asyncio.get_running_loop().create_future()
    await actor.apply([Job(command, done=done)])
    outcome = done.result()
    assert isinstance(outcome, list) and len(outcome) == 1, outcome
    return outcome[0]


def _reserve(order_id: str) -> Reserve:
    return Reserve(order_id, (OrderLine("ONE", 1, 500),), 500, ttl_seconds=60)


async def test_stale_writer_is_fenced_and_decides_again(js: JetStreamContext) -> None:
    first = await _actor(js)
    await first.apply(
        [
            Job(UpsertCategory("c", "Category")),
            Job(UpsertProduct("ONE", "The only one", 500, "c")),
            Job(CountStock("ONE", 1)),
        ]
    )
    # A second instance loads now; then the first sells the last unit behind its back.
    second = await _actor(js)
    assert second.seq == first.seq == 3
    assert isinstance(await _one(first, _reserve("first-buyer")), Reserved)
    assert second.state.products["ONE"].available == 1, "the second's view is stale"

    # The stream itself refuses an append that does not follow its last sequence ...
    now = datetime.now(UTC)
    with pytest.raises(AppendFailed):
        await second._events.append([Reserved("x", (), 0, now, now)], after_seq=second.seq)

    # ... so the actor catches up and decides again, with the true numbers: no oversell.
    outcome = await _one(second, _reserve("second-buyer"))
    assert isinstance(outcome, Rejected)
    assert outcome.problems[0].available == 0
    assert second.seq == 5
    assert (await js.stream_info(subjects.INVENTORY)).state.last_seq == 5
