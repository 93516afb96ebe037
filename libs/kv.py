"""Typed documents in a NATS KV bucket, changed by compare-and-set: replicas never lose a write.
Listing a bucket, which nats-py's own KeyValue.keys() does not do reliably; and a bucket mirrored
in memory (Mirror), for what is read on every tap and written rarely."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

import msgspec
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    Header,
    KeyValueConfig,
    StorageType,
)
from nats.nuid import NUID

from libs import bus, log, subjects

T = TypeVar("T")
_GONE = ("DEL", "PURGE")  # KV-Operation of a deleted key's marker
_nuid = NUID()
_log = log.get(__name__)


async def keys(js: JetStreamContext, bucket: str, match: str = ">") -> list[str]:
    """The live keys of a KV bucket (those matching `match`, e.g. ``product.>``)."""
    return [key for key, _ in await entries(js, bucket, match, values=False)]


async def entries(
    js: JetStreamContext, bucket: str, match: str = ">", *, values: bool = True
) -> list[tuple[str, bytes]]:
    """The live keys of a KV bucket matching `match`, with their values, in one pass.

    Not nats-py's ``KeyValue.keys()``: its watcher can decide "no more keys" while keys are still
    on their way to it (nats-io/nats.py#842; seen here as "the catalog is empty" on a loaded
    machine, and it would make a recovery scan skip work). A pull consumer delivers nothing until
    asked, so its pending count when created is exact, and so is the end of the listing.
    """
    stream, prefix = f"KV_{bucket}", f"$KV.{bucket}."
    name = _nuid.next().decode()
    info = await js.add_consumer(
        stream,
        ConsumerConfig(
            name=name,
            filter_subject=prefix + match,
            deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
            ack_policy=AckPolicy.NONE,
            headers_only=not values,
            mem_storage=True,
            inactive_threshold=60.0,  # gone by itself should this process die mid-listing
        ),
    )
    found: list[tuple[str, bytes]] = []
    try:
        left = info.num_pending or 0
        if left:
            sub = await js.pull_subscribe_bind(consumer=name, stream=stream)
            try:
                while left:
                    try:
                        batch = await sub.fetch(min(left, 1000), timeout=5)
                    except nats.errors.TimeoutError:
                        # only if keys were purged meanwhile: ask the server what is left
                        left = (await sub.consumer_info()).num_pending or 0
                        continue
                    for msg in batch:
                        left = msg.metadata.num_pending
                        headers = msg.headers or {}
                        if headers.get("KV-Operation") not in _GONE and not headers.get(
                            "Nats-Marker-Reason"
                        ):
                            found.append((msg.subject[len(prefix) :], msg.data))
            finally:
                await sub.unsubscribe()
    finally:
        with contextlib.suppress(nats.js.errors.NotFoundError, nats.errors.TimeoutError):
            await js.delete_consumer(stream, name)
    return found


class Documents(Generic[T]):
    """One msgspec type per bucket, JSON-encoded; keys are the caller's (KV key characters)."""

    def __init__(self, js: JetStreamContext, bucket: str, kv: Any, kind: type[T]) -> None:
        self._js, self._bucket, self._kv = js, bucket, kv
        self._decode = msgspec.json.Decoder(kind).decode
        self._encode = msgspec.json.Encoder().encode

    @classmethod
    async def open(
        cls,
        js: JetStreamContext,
        bucket: str,
        kind: type[T],
        ttl: float | None = None,
        *,
        replicas: int | None = None,
        stop: asyncio.Event | None = None,
    ) -> Documents[T]:
        """The bucket, created if new; `replicas` (STREAM_REPLICAS) as libs.subjects.key_value.

        With `stop` (a service starting), waited for through bus outages until stopped
        (bus.outlasting); without (tools, tests), the first error is raised.
        """
        config = KeyValueConfig(bucket=bucket, history=1, storage=StorageType.FILE, ttl=ttl)

        def declare() -> Awaitable[Any]:
            return subjects.key_value(js, config, replicas=replicas)

        step = f"bucket {bucket}"
        kv = await (declare() if stop is None else bus.outlasting(declare, step, stop))
        return cls(js, bucket, kv, kind)

    async def get(self, key: str) -> T | None:
        found = await self.get_with_revision(key)
        return None if found is None else found[0]

    async def get_with_revision(self, key: str) -> tuple[T, int] | None:
        try:
            entry = await self._kv.get(key)
        except nats.js.errors.KeyNotFoundError:
            return None
        if not entry.value:
            return None
        try:
            return self._decode(entry.value), entry.revision
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None  # unreadable (a schema that changed incompatibly): start afresh

    async def put(self, key: str, value: T) -> None:
        await self._kv.put(key, self._encode(value))

    async def create(self, key: str, value: T) -> T:
        """Store `value` if the key is new; else what is there (another replica was first)."""
        try:
            await self._kv.create(key, self._encode(value))
            return value
        except nats.js.errors.KeyWrongLastSequenceError:
            found = await self.get(key)
            return value if found is None else found

    async def update(self, key: str, change: Callable[[T | None], T]) -> T:
        """Apply `change` to the current value (None if none), again if someone wrote between."""
        while True:
            found = await self.get_with_revision(key)
            current, revision = found if found is not None else (None, 0)
            new = change(current)
            try:
                if revision:
                    await self._kv.update(key, self._encode(new), last=revision)
                else:
                    await self._kv.create(key, self._encode(new))
                return new
            except nats.js.errors.KeyWrongLastSequenceError:
                continue

    async def create_new(self, key: str, value: T) -> None:
        """Store `value` if the key is new; KeyWrongLastSequenceError if it exists."""
        await self._kv.create(key, self._encode(value))

    async def replace(self, key: str, value: T, revision: int) -> None:
        """Store `value` if the key is still at `revision`; KeyWrongLastSequenceError if not."""
        await self._kv.update(key, self._encode(value), last=revision)

    async def delete(self, key: str) -> None:
        try:
            await self._kv.delete(key)
        except nats.js.errors.KeyNotFoundError:
            pass

    async def claim(self, key: str, revision: int) -> bool:
        """Delete the key if it is still at `revision`; False if it changed or went meanwhile
        (another replica claimed it first)."""
        try:
            await self._kv.delete(key, last=revision)
        except nats.js.errors.APIError as exc:
            # nats-py's delete does not turn "wrong last sequence" into its KeyValue error (its
            # update does): 10071 and 10164 are the server's codes for it.
            if exc.err_code in (10071, 10164):
                return False
            raise
        return True

    async def values(self) -> list[T]:
        """Every readable document, in one pass over the bucket (not a get per key)."""
        found = []
        for _, raw in await entries(self._js, self._bucket):
            with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
                found.append(self._decode(raw))
        return found


# A mirror's watch: the server says it is alive this often while nothing changes, and a watch
# not heard from for MISSED_HEARTBEATS of them is taken for lost (a NATS restart, a consumer gone).
HEARTBEAT_S = 2.0
MISSED_HEARTBEATS = 3


@dataclass(frozen=True, slots=True)
class Held(Generic[T]):
    """A mirrored key's value, with its revision and when it was written."""

    value: T
    revision: int
    at: datetime


class Mirror(Generic[T]):
    """One KV bucket in memory, key -> decoded value: filled at `open`, kept current by a watch of
    its own; reads never go to the server.

    The watch is a push consumer of the bucket's stream (last value per key, then every change)
    with idle heartbeats, read by plain subscription: its consumer sequence must go up by one
    and each heartbeat must name the last one sent, and it must be heard from. A gap (messages
    lost on a reconnect), a lost watch (a NATS restart takes the consumer with it) or any
    surprise starts a new watch, which loads the whole bucket again (a key deleted meanwhile
    included) and is swapped in once complete; until then the reads see the last complete view.
    Not nats-py's ``KeyValue.watch()``: it decides "initial values done" by a race
    (nats-io/nats.py#842) and resumes a lost watch from a sequence, missing what was removed.
    """

    def __init__(
        self,
        nc: Client,
        js: JetStreamContext,
        bucket: str,
        decode: Callable[[str, bytes], T | None],
        *,
        heartbeat: float = HEARTBEAT_S,
    ) -> None:
        self.bucket = bucket
        self._nc, self._js, self._decode = nc, js, decode
        self._stream, self._prefix = f"KV_{bucket}", f"$KV.{bucket}."
        self._heartbeat = heartbeat
        self._held: dict[str, Held[T]] = {}
        self.version = 0  # goes up on every change seen and every load swapped in
        self.loads = 0  # complete loads of the bucket: 1 after open, more after gaps and losses
        self._changed = asyncio.Event()
        self._loaded = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls,
        nc: Client,
        js: JetStreamContext,
        bucket: str,
        decode: Callable[[str, bytes], T | None],
        *,
        heartbeat: float = HEARTBEAT_S,
    ) -> Mirror[T]:
        """The bucket mirrored, returned once it is loaded whole (the bucket must exist)."""
        mirror = cls(nc, js, bucket, decode, heartbeat=heartbeat)
        mirror._task = asyncio.create_task(mirror._keep(), name=f"mirror {bucket}")
        try:
            await mirror._loaded.wait()
        except BaseException:
            await mirror.close()
            raise
        return mirror

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # reads ----------------------------------------------------------------------------------------
    def get(self, key: str) -> T | None:
        held = self._held.get(key)
        return None if held is None else held.value

    def held(self, key: str) -> Held[T] | None:
        return self._held.get(key)

    def items(self, prefix: str = "") -> list[tuple[str, Held[T]]]:
        """Every key starting with `prefix`, with what it holds (in no particular order)."""
        return [(key, held) for key, held in self._held.items() if key.startswith(prefix)]

    def __len__(self) -> int:
        return len(self._held)

    async def changed(self, since: int) -> int:
        """Wait until the mirror is past version `since`; its version then."""
        while self.version == since:
            await self._changed.wait()
        return self.version

    def _bump(self) -> None:
        self.version += 1
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    # the watch ------------------------------------------------------------------------------------
    async def _keep(self) -> None:
        """Watch until closed: whatever ends a watch (a gap, a loss, an error), start again."""
        delay = 0.1
        while True:
            try:
                why = await self._watch()
                delay = 0.1
                _log.info("mirror.reloading", bucket=self.bucket, why=why)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the mirror must outlive any one failure
                _log.warning("mirror.watch_failed", bucket=self.bucket, error=repr(exc))
                await asyncio.sleep(delay * random.uniform(0.5, 1.5))
                delay = min(delay * 2, 5.0)

    async def _watch(self) -> str:
        """One watch: the bucket loaded into a fresh view, swapped in, kept current until the
        watch is lost or has a gap; why it ended."""
        watch = _Watch(self)
        inbox = self._nc.new_inbox()
        sub = await self._nc.subscribe(inbox, cb=watch.on_msg)
        name = _nuid.next().decode()
        try:
            info = await self._js.add_consumer(
                self._stream,
                ConsumerConfig(
                    name=name,
                    deliver_subject=inbox,
                    filter_subject=self._prefix + ">",
                    deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
                    ack_policy=AckPolicy.NONE,
                    idle_heartbeat=self._heartbeat,
                    flow_control=True,
                    mem_storage=True,
                    num_replicas=1,
                    inactive_threshold=60.0,  # gone by itself should this process die
                ),
            )
            # The load: what the consumer had pending when made, and what it sent meanwhile.
            sent = info.delivered.consumer_seq if info.delivered else 0
            watch.counted((info.num_pending or 0) + (sent or 0))
            return await watch.until_ended(self._heartbeat * MISSED_HEARTBEATS)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._js.delete_consumer(self._stream, name), 2.0)

    def _swap(self, view: dict[str, Held[T]]) -> None:
        """A complete load in place of the last one."""
        self._held = view
        self.loads += 1
        self._bump()
        self._loaded.set()

    def _apply(self, view: dict[str, Held[T]], msg: Msg, meta: Msg.Metadata) -> None:
        key = msg.subject[len(self._prefix) :]
        headers = msg.headers or {}
        if headers.get("KV-Operation") in _GONE or headers.get("Nats-Marker-Reason"):
            view.pop(key, None)
            return
        try:
            value = self._decode(key, msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            value = None  # unreadable (written by a newer version?): as if absent
        if value is None:
            view.pop(key, None)
        else:
            at = meta.timestamp if isinstance(meta.timestamp, datetime) else datetime.now(UTC)
            view[key] = Held(value, meta.sequence.stream, at)


class _Watch(Generic[T]):
    """One watch of a Mirror: its messages applied in order to a view of its own, which is
    swapped in once the load is complete and then kept current."""

    def __init__(self, mirror: Mirror[T]) -> None:
        self._mirror = mirror
        self._loop = asyncio.get_running_loop()
        self._view: dict[str, Held[T]] = {}
        self._seq = 0  # the consumer sequence last applied
        self._total: int | None = None  # how many the load is, once the consumer is made
        self._loading = True
        self._heard = self._loop.time()
        self._trouble: list[str] = []
        self._woken = asyncio.Event()

    def counted(self, total: int) -> None:
        self._total = total
        if self._loading and self._seq >= total and not self._trouble:
            self._loaded()

    async def until_ended(self, silence: float) -> str:
        """Wait until a gap or a failure, or until nothing was heard for `silence` s; why."""
        while not self._trouble:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._woken.wait(), silence / MISSED_HEARTBEATS)
            if not self._trouble and self._loop.time() - self._heard > silence:
                self._stop("lost: no heartbeat")
        return self._trouble[0]

    def _stop(self, why: str) -> None:
        self._trouble.append(why)
        self._woken.set()

    def _loaded(self) -> None:
        self._loading = False
        self._mirror._swap(self._view)  # the view lives on in the mirror, kept current here

    async def on_msg(self, msg: Msg) -> None:
        if self._trouble:
            return
        self._heard = self._loop.time()
        try:
            headers = msg.headers or {}
            if headers.get(Header.STATUS):
                await self._control(msg, headers)
                return
            meta = msg.metadata
            if meta.sequence.consumer != self._seq + 1:
                self._stop(f"gap: {meta.sequence.consumer} after {self._seq}")
                return
            self._seq = meta.sequence.consumer
            self._mirror._apply(self._view, msg, meta)
            if not self._loading:
                self._mirror._bump()
            elif self._total is not None and (self._seq >= self._total or not meta.num_pending):
                self._loaded()
        except Exception as exc:
            self._stop(f"failed: {exc!r}")

    async def _control(self, msg: Msg, headers: dict[str, str]) -> None:
        """A heartbeat (the last sequence sent, or a stall to undo) or a flow control request."""
        nc = self._mirror._nc
        if msg.reply:  # flow control: everything sent before it is applied
            await nc.publish(msg.reply)
            return
        stalled = headers.get(Header.CONSUMER_STALLED)
        if stalled:
            await nc.publish(stalled)
        last = headers.get(Header.LAST_CONSUMER)
        if last is not None and int(last) != self._seq:
            self._stop(f"gap: heartbeat after {last}, applied {self._seq}")
        elif self._loading and self._total is not None:
            self._loaded()  # idle before the count was reached: what was counted is gone


def decoder(kind: type[T]) -> Callable[[str, bytes], T | None]:
    """A Mirror's decode for a bucket of one msgspec type (JSON); an empty value is no value."""
    decode = msgspec.json.Decoder(kind).decode

    def decoded(_: str, raw: bytes) -> T | None:
        return decode(raw) if raw else None

    return decoded
