"""Typed documents in a NATS KV bucket, changed by compare-and-set: replicas never lose a write."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

import msgspec
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType

T = TypeVar("T")


class Documents(Generic[T]):
    """One msgspec type per bucket, JSON-encoded; keys are the caller's (KV key characters)."""

    def __init__(self, kv: Any, kind: type[T]) -> None:
        self._kv = kv
        self._decode = msgspec.json.Decoder(kind).decode
        self._encode = msgspec.json.Encoder().encode

    @classmethod
    async def open(
        cls, js: JetStreamContext, bucket: str, kind: type[T], ttl: float | None = None
    ) -> Documents[T]:
        config = KeyValueConfig(bucket=bucket, history=1, storage=StorageType.FILE, ttl=ttl)
        return cls(await js.create_key_value(config), kind)

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

    async def keys(self) -> list[str]:
        try:
            return list(await self._kv.keys())
        except nats.js.errors.NoKeysError:
            return []
