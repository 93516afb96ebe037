"""The inventory's storage on JetStream: the event log (with fencing), snapshots and read models."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

import msgspec
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy

from libs import log, subjects
from libs.bus import TRANSIENT, PipelinedPublisher, PublishRefused
from libs.contracts import (
    CatalogCategory,
    CatalogDelivery,
    CatalogProduct,
    CategoryUpserted,
    CommitFailed,
    Committed,
    DeliverySet,
    InventoryEvent,
    PriceSet,
    ProductUpserted,
    Rejected,
    Released,
    Reserved,
    StockAdjusted,
    StockLevel,
    WriterClaimed,
)
from services.inventory.core import EMPTY, State, decode_snapshot, encode_snapshot, evolve

_log = log.get(__name__)
# The catch-up's consumer sends a heartbeat this often when it has nothing to send; nothing new
# for STALL_HEARTBEATS of them while behind, and a fresh consumer takes over, at most
# CATCH_UP_RESUMES times per catch-up.
CATCH_UP_HEARTBEAT_S = 1.0
STALL_HEARTBEATS = 3
CATCH_UP_RESUMES = 10
_decode_event = msgspec.json.Decoder(InventoryEvent).decode
_encode = msgspec.json.Encoder().encode


class AppendFailed(Exception):
    """Some events of a batch may not be in the stream: fenced off by another writer, or no ack."""


def subject_of(event: InventoryEvent) -> str:
    """inventory.<fact>.<order id | sku | category id>; the fact is the event's tag."""
    match event:
        case Reserved() | Rejected() | Committed() | CommitFailed() | Released():
            key = event.order_id
        case StockAdjusted() | PriceSet() | ProductUpserted():
            key = event.sku
        case CategoryUpserted():
            key = event.category_id
        case DeliverySet():
            key = "shop"
        case WriterClaimed():
            return subjects.INVENTORY_WRITER
    return subjects.inventory_fact(str(event.__struct_config__.tag), key)


class EventLog:
    """The INVENTORY stream as an append-only log with one writer at a time.

    A writer first claims the log (a `writer_claimed` event on `inventory.writer`). Each of its
    appends then carries two conditions the stream checks: the sequence it follows
    (`Nats-Expected-Last-Sequence`) and that the last claim is still its own
    (`Nats-Expected-Last-Subject-Sequence` on `inventory.writer`). An instance with a stale
    view, or one another instance has taken over from, cannot write: it fails, catches up,
    and decides again (claiming the log back first if it was taken over).
    """

    def __init__(self, nc: Client, js: JetStreamContext, snapshots: object) -> None:
        self._js = js
        self._publisher = PipelinedPublisher(nc)
        self._snapshots = snapshots
        self.stream_created = ""
        self.lease = ("", 0)  # the last claim seen: (writer id, its sequence)

    async def load(self) -> tuple[State, int]:
        info = await self._js.stream_info(subjects.INVENTORY)
        self.stream_created = str(info.created)
        state, seq = EMPTY, 0
        started = time.perf_counter()
        snapshot = await self._read_snapshot()
        if snapshot is not None:
            snap_state, snap_seq, created = snapshot
            if created == self.stream_created and snap_seq <= info.state.last_seq:
                state, seq = snap_state, snap_seq
            else:
                _log.warning("snapshot.ignored", reason="taken of another stream", seq=snap_seq)
        state, new_seq = await self.catch_up(state, seq)
        _log.info(
            "inventory.loaded",
            snapshot_seq=seq,
            replayed=new_seq - seq,
            seq=new_seq,
            seconds=round(time.perf_counter() - started, 3),
        )
        return state, new_seq

    async def catch_up(self, state: State, seq: int) -> tuple[State, int]:
        """Fold every event after `seq` into `state`, up to the stream's last sequence now.

        Read with an ordered push consumer, folded in its delivery callback (awaiting each
        message would cost more than folding it). nats-py resets an ordered consumer by itself
        on a gap or missed heartbeats, but not always to good effect: a reset before the first
        message starts again at sequence 1 (it knows no sequence yet), and a consumer it
        recreates while the stream has no leader (an election) is not asked for again until
        the next missed heartbeats, if ever: in a cluster chaos run both inventories stalled
        here ~100 s after repeated leader changes. So what is folded is kept, an event at or
        before it is skipped, and when nothing new comes for STALL_HEARTBEATS heartbeats while
        still behind, the subscription is dropped and a fresh one resumes right after the last
        event folded: at most CATCH_UP_RESUMES times, then TimeoutError (the caller backs off
        and catches up again).
        """
        info = await self._js.stream_info(subjects.INVENTORY)
        last = info.state.last_seq
        if last <= seq:
            return state, seq
        done = [seq]  # the last event folded

        def fold_one(msg: Msg) -> None:
            nonlocal state
            at = msg.metadata.sequence.stream
            if at <= done[0]:
                return  # folded already: a reset consumer sends it again
            done[0] = at
            try:
                event = _decode_event(msg.data)
                if isinstance(event, WriterClaimed):
                    self.lease = (event.writer_id, at)
                state = evolve(state, event)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                # Only the actor writes here; a stranger's message is logged and skipped.
                _log.error("event.undecodable", seq=at, subject=msg.subject, error=str(exc))

        why = ""
        for resume in range(CATCH_UP_RESUMES + 1):
            if resume:
                _log.warning("catch_up.resumed", seq=done[0], last=last, why=why, resume=resume)
            try:
                why = await self._follow(fold_one, done, last)
            except TRANSIENT as exc:  # the consumer not made: no leader yet, say
                why = repr(exc)
                await asyncio.sleep(CATCH_UP_HEARTBEAT_S)
            if done[0] >= last:
                return state, done[0]
        raise TimeoutError(f"catch-up stalled at {done[0]} of {last}: {why}")

    async def _follow(self, fold_one: Callable[[Msg], None], done: list[int], last: int) -> str:
        """One ordered consumer from the event after `done[0]` until `last` is folded (returns
        "") or nothing new has come for STALL_HEARTBEATS heartbeats (returns why)."""
        caught_up = asyncio.Event()

        async def on_event(msg: Msg) -> None:
            fold_one(msg)
            if done[0] >= last:
                caught_up.set()

        sub = await self._js.subscribe(
            subjects.INVENTORY_ALL,
            ordered_consumer=True,
            cb=on_event,
            idle_heartbeat=CATCH_UP_HEARTBEAT_S,
            config=ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=done[0] + 1
            ),
        )
        quiet = CATCH_UP_HEARTBEAT_S * STALL_HEARTBEATS
        try:
            while not caught_up.is_set():
                before = done[0]
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(caught_up.wait(), timeout=quiet)
                if done[0] == before and not caught_up.is_set():
                    return f"nothing new for {quiet:g} s"
            return ""
        finally:
            # Bounded: a subscription dropped while the bus is away must not hold the actor.
            with contextlib.suppress(*TRANSIENT, nats.errors.Error):
                await asyncio.wait_for(sub.unsubscribe(), timeout=quiet)

    async def append(
        self,
        events: list[InventoryEvent],
        after_seq: int,
        lease_seq: int | None,
        timeout: float = 10.0,
    ) -> None:
        """Append all or nothing, right after `after_seq`; raise AppendFailed on any doubt.

        `lease_seq` is the sequence of this writer's claim (None only to make a claim). The
        conditions ride on the first message of one atomic batch: per-message conditions would
        not be enough when two writers' pipelines interleave.
        """
        expect = {"Nats-Expected-Last-Sequence": str(after_seq)}
        if lease_seq is not None:
            expect["Nats-Expected-Last-Subject-Sequence"] = str(lease_seq)
            expect["Nats-Expected-Last-Subject-Sequence-Subject"] = subjects.INVENTORY_WRITER
        try:
            seq = await self._publisher.publish_atomic(
                [(subject_of(event), _encode(event)) for event in events], timeout, expect
            )
        except (*TRANSIENT, PublishRefused) as exc:
            raise AppendFailed(repr(exc)) from exc
        if seq != after_seq + len(events):
            raise AppendFailed(f"appended up to {seq}, expected {after_seq + len(events)}")

    async def still_writer(self, lease_seq: int) -> bool:
        """Whether the last claim on the log is still the one at `lease_seq`: then everything
        appended since is that writer's own. Raise AppendFailed when the stream cannot say."""
        try:
            last = await self._js.get_last_msg(subjects.INVENTORY, subjects.INVENTORY_WRITER)
        except (*TRANSIENT, nats.errors.Error) as exc:
            raise AppendFailed(repr(exc)) from exc
        return last.seq == lease_seq

    async def claim(self, writer_id: str, timeout: float = 10.0) -> int:
        """Become the one writer: from the claim's sequence (returned) on, only we can append.

        Unconditional, so a new instance always gets in; the one it took over from fails its
        next append and finds out.
        """
        claim = WriterClaimed(writer_id, datetime.now(UTC))
        try:
            seq = await self._publisher.publish_atomic(
                [(subject_of(claim), _encode(claim))], timeout
            )
        except (*TRANSIENT, PublishRefused) as exc:
            raise AppendFailed(repr(exc)) from exc
        self.lease = (writer_id, seq)
        return seq

    async def _read_snapshot(self) -> tuple[State, int, str] | None:
        try:
            result = await self._snapshots.get(subjects.SNAPSHOT_NAME)  # type: ignore[attr-defined]
        except nats.js.errors.ObjectNotFoundError:
            return None
        try:
            return decode_snapshot(result.data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            _log.warning("snapshot.unreadable", error=str(exc))
            return None

    async def write_snapshot(self, state: State, seq: int) -> None:
        started = time.perf_counter()
        data = encode_snapshot(state, seq, self.stream_created)
        await self._snapshots.put(subjects.SNAPSHOT_NAME, data)  # type: ignore[attr-defined]
        _log.info(
            "snapshot.written",
            seq=seq,
            bytes=len(data),
            seconds=round(time.perf_counter() - started, 3),
        )


class ReadModels:
    """The bot's view: catalog and stock levels in KV, rewritten for what the commits touched.

    Written by a task of its own, one write at a time, off the actor's path: what several
    commits touched meanwhile goes out together, and a failed write is retried. The values are
    what the stream holds (they carry its sequence), never ahead of it.
    """

    def __init__(self, nc: Client) -> None:
        self._publisher = PipelinedPublisher(nc)
        self._dirty_skus: set[str] = set()
        self._dirty_catalog: set[str] = set()  # KV keys
        self._state: State = EMPTY
        self._seq = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self, state: State, seq: int) -> None:
        self._state, self._seq = state, seq
        self._wake.set()
        if self._task is None:
            self._task = asyncio.create_task(self._writer())

    def touch(self, events: Iterable[InventoryEvent], state: State, seq: int) -> None:
        for event in events:
            match event:
                case Reserved(lines=lines) | Committed(lines=lines) | Released(lines=lines):
                    self._dirty_skus.update(line.sku for line in lines)
                case StockAdjusted(sku=sku):
                    self._dirty_skus.add(sku)
                case PriceSet(sku=sku) | ProductUpserted(sku=sku):
                    self._dirty_catalog.add(f"product.{sku}")
                    self._dirty_skus.add(sku)
                case CategoryUpserted(category_id=category_id):
                    self._dirty_catalog.add(f"category.{category_id}")
                case DeliverySet():
                    self._dirty_catalog.add(subjects.CATALOG_DELIVERY_KEY)
        self._state, self._seq = state, seq
        if self._dirty_skus or self._dirty_catalog:
            self._wake.set()

    def touch_all(self, state: State) -> None:
        self._dirty_skus.update(state.products.keys())
        self._dirty_catalog.update(f"product.{sku}" for sku in state.products)
        self._dirty_catalog.update(f"category.{cid}" for cid in state.categories)
        self._dirty_catalog.add(subjects.CATALOG_DELIVERY_KEY)

    async def close(self, timeout: float = 5.0) -> None:
        """Stop the writer after one last write of what is still dirty."""
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        with contextlib.suppress(*TRANSIENT):
            await self.flush(timeout)

    async def _writer(self) -> None:
        backoff = 0.1
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                written = await self.flush()
            except Exception as exc:  # the writer must outlive any one failure
                _log.warning("read_models.stale", error=repr(exc))
                written = False
            if written:
                backoff = 0.1
            else:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                self._wake.set()

    async def flush(self, timeout: float = 5.0) -> bool:
        """Write what changed; on failure keep it dirty for the next time. True when written."""
        state, seq = self._state, self._seq
        skus, catalog = self._dirty_skus, self._dirty_catalog
        self._dirty_skus, self._dirty_catalog = set(), set()
        messages: list[tuple[str, bytes, dict[str, str] | None]] = []
        for sku in skus:
            p = state.products[sku]
            level = StockLevel(sku, p.on_hand, p.reserved, p.available, seq, p.file_restocks)
            messages.append((f"$KV.{subjects.STOCK_BUCKET}.{sku}", _encode(level), None))
        for key in catalog:
            kind, _, ident = key.partition(".")
            value: CatalogProduct | CatalogCategory | CatalogDelivery
            if kind == "product":
                p = state.products[ident]
                value = CatalogProduct(
                    p.sku,
                    p.title,
                    p.description,
                    p.price,
                    p.photo_url,
                    p.category_id,
                    p.position,
                    p.weight,
                    p.visible,
                )
            elif key == subjects.CATALOG_DELIVERY_KEY:
                value = CatalogDelivery(state.delivery, state.min_order)
            else:
                c = state.categories[ident]
                value = CatalogCategory(c.category_id, c.title, c.position)
            messages.append((f"$KV.{subjects.CATALOG_BUCKET}.{key}", _encode(value), None))
        if not messages:
            return True
        written = False
        try:
            results = await self._publisher.publish(messages, timeout)
            failed = [r for r in results if isinstance(r, BaseException)]
            if failed:
                _log.warning("read_models.stale", error=repr(failed[0]), pending=len(messages))
            written = not failed
        finally:
            if not written:
                # Read models lag behind the truth for a moment, never for long: retried.
                self._dirty_skus |= skus
                self._dirty_catalog |= catalog
        return written
