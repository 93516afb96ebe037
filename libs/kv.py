"""Typed documents in a NATS KV bucket, changed by compare-and-set: replicas never lose a write.
And listing a bucket, which nats-py's own KeyValue.keys() does not do reliably."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import msgspec
import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, KeyValueConfig, StorageType
from nats.nuid import NUID

T = TypeVar("T")
_GONE = ("DEL", "PURGE")  # KV-Operation of a deleted key's marker
_nuid = NUID()


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
        cls, js: JetStreamContext, bucket: str, kind: type[T], ttl: float | None = None
    ) -> Documents[T]:
        config = KeyValueConfig(bucket=bucket, history=1, storage=StorageType.FILE, ttl=ttl)
        return cls(js, bucket, await js.create_key_value(config), kind)

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

    async def values(self) -> list[T]:
        """Every readable document, in one pass over the bucket (not a get per key)."""
        found = []
        for _, raw in await entries(self._js, self._bucket):
            with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
                found.append(self._decode(raw))
        return found
