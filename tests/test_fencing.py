"""Fencing on the real stream: a stale writer cannot append; it catches up and decides again."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext

from libs import subjects
from libs.contracts import (
    Committed,
    CountStock,
    InventoryEvent,
    OrderLine,
    Rejected,
    Reserved,
    StockAdjusted,
    UpsertCategory,
    UpsertProduct,
)
from services.inventory.actor import Actor, Job
from services.inventory.core import Command, Commit, Reserve, ReturnStock
from services.inventory.store import AppendFailed, EventLog, ReadModels


async def _actor(nc: Client) -> Actor:
    js = nc.jetstream(timeout=10)
    _, _, snapshots = await subjects.declare_buckets(js)
    actor = Actor(EventLog(nc, js, snapshots), ReadModels(nc), snapshot_every=1000)
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


async def test_stale_writer_is_fenced_and_decides_again(nc: Client, js: JetStreamContext) -> None:
    first = await _actor(nc)
    assert first.seq == 1, "an actor starts by claiming the log"
    await first.apply(
        [
            Job(UpsertCategory("c", "Category")),
            Job(UpsertProduct("ONE", "The only one", 500, "c")),
            Job(CountStock("ONE", 1)),
        ]
    )
    # A second instance loads now and claims the log; the first then sells the last unit: it
    # is fenced off, catches up, claims the log back and sells.
    second = await _actor(nc)
    assert second.seq == 5
    assert isinstance(await _one(first, _reserve("first-buyer")), Reserved)
    assert first.seq == 7, "fenced once: caught up, claimed again (6), then reserved (7)"
    assert second.state.products["ONE"].available == 1, "the second's view is stale"

    # The stream itself refuses an append that does not follow its last sequence, or that
    # comes from a writer whose claim is no longer the last ...
    now = datetime.now(UTC)
    with pytest.raises(AppendFailed, match="wrong last sequence"):
        await second._events.append([Reserved("x", (), 0, now, now)], second.seq, lease_seq=5)
    with pytest.raises(AppendFailed, match="wrong last sequence"):
        await second._events.append([Reserved("x", (), 0, now, now)], first.seq, lease_seq=5)

    # ... so the actor catches up and decides again, with the true numbers: no oversell.
    outcome = await _one(second, _reserve("second-buyer"))
    assert isinstance(outcome, Rejected)
    assert outcome.problems[0].available == 0
    assert second.seq == 9
    assert (await js.stream_info(subjects.INVENTORY)).state.last_seq == 9


async def test_pipelined_batch_never_lands_on_another_writers_events(
    nc: Client, js: JetStreamContext
) -> None:
    """Two batches in flight; the first is fenced by another writer's append of the same length.

    The second expects the sequence the first would have ended at, which the other writer's
    append reaches too: only the claim on the log stops it from landing on a state it never saw.
    """
    first = await _actor(nc)
    await first.apply(
        [
            Job(UpsertCategory("c", "Category")),
            Job(UpsertProduct("ONE", "The only one", 500, "c")),
            Job(UpsertProduct("TWO", "Another", 500, "c")),
            Job(CountStock("ONE", 1)),
            Job(CountStock("TWO", 1)),
        ]
    )
    # A second instance claims the log and sells the last ONE behind the first's back: two
    # events (its claim, the reservation).
    second = await _actor(nc)
    assert isinstance(await _one(second, _reserve("a")), Reserved)
    # The first, unaware, has two batches in flight: two events (b gets the last TWO, d is
    # refused), then one that reserves ONE, which its stale view still shows as available.
    # That one expects the sequence the first batch would reach: exactly where the second
    # writer's events end.
    loop = asyncio.get_running_loop()
    futures: dict[str, asyncio.Future[list[InventoryEvent] | str]] = {}

    def job(order_id: str, sku: str) -> Job:
        futures[order_id] = loop.create_future()
        return Job(Reserve(order_id, (OrderLine(sku, 1, 500),), 500, 60), done=futures[order_id])

    first._begin([job("b", "TWO"), job("d", "TWO")])
    first._begin([job("c", "ONE")])
    while first._inflight or first._redo:
        if not first._inflight:
            first._begin([first._redo.popleft() for _ in range(len(first._redo))])
        await first._settle_oldest(None)
    # In the stream: ONE reserved once, by "a"; TWO once, by "b".
    reservations = []
    for seq in range(1, (await js.stream_info(subjects.INVENTORY)).state.last_seq + 1):
        msg = await js.get_msg(subjects.INVENTORY, seq)
        if msg.subject and msg.subject.startswith("inventory.reserved."):
            reservations.append(msg.subject)
    assert sorted(reservations) == ["inventory.reserved.a", "inventory.reserved.b"], "oversold"
    outcomes = {order_id: f.result() for order_id, f in futures.items()}
    assert [type(o[0]).__name__ for o in outcomes.values() if isinstance(o, list) and o] == [
        "Reserved",
        "Rejected",
        "Rejected",
    ], outcomes


async def test_a_writer_taken_over_from_never_answers_nothing_on_its_stale_state(
    nc: Client, js: JetStreamContext
) -> None:
    """A batch that decides nothing appends nothing, so no append fences it. Seen in the cluster
    chaos run (two inventories): an order paid on receipt was committed by one and cancelled a
    moment later; the other, taken over from and not having seen the commit, got the refund,
    found nothing to return, and acked it: the unit never came back on hand."""
    first = await _actor(nc)
    await first.apply(
        [
            Job(UpsertCategory("c", "Category")),
            Job(UpsertProduct("ONE", "The only one", 500, "c")),
            Job(CountStock("ONE", 1)),
        ]
    )
    assert isinstance(await _one(first, _reserve("o")), Reserved)
    second = await _actor(nc)  # claims the log: the first is taken over from
    assert isinstance(await _one(second, Commit("o", "cash-o")), Committed)
    assert first.state.orders["o"].status == "reserved", "the first's view is stale"

    back = await _one(first, ReturnStock("o", "cash-cancel-o", (OrderLine("ONE", 1, 500),)))
    assert isinstance(back, StockAdjusted) and (back.delta, back.on_hand) == (1, 1)
    assert first.state.products["ONE"].on_hand == 1
