"""aiogram's FSM storage in a NATS KV bucket: a customer mid-checkout survives a bot restart, and
replicas behind one webhook share where each customer is."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
from aiogram.fsm.state import State
from aiogram.fsm.storage.base import BaseStorage, StateType, StorageKey

from libs.kv import Documents


class Conversation(msgspec.Struct):
    state: str | None = None
    data: dict[str, Any] = {}


class NatsStorage(BaseStorage):
    def __init__(self, documents: Documents[Conversation]) -> None:
        self._docs = documents

    @staticmethod
    def _key(key: StorageKey) -> str:
        # KV keys allow [-/_=.a-zA-Z0-9]; ids are integers (negative for groups).
        thread = f".{key.thread_id}" if key.thread_id else ""
        return f"{key.destiny}.{key.bot_id}.{key.chat_id}.{key.user_id}{thread}"

    async def set_state(self, key: StorageKey, state: StateType = None) -> None:
        value = state.state if isinstance(state, State) else state

        def change(current: Conversation | None) -> Conversation:
            return Conversation(value, current.data if current else {})

        await self._docs.update(self._key(key), change)

    async def get_state(self, key: StorageKey) -> str | None:
        found = await self._docs.get(self._key(key))
        return found.state if found else None

    async def set_data(self, key: StorageKey, data: Mapping[str, Any]) -> None:
        def change(current: Conversation | None) -> Conversation:
            return Conversation(current.state if current else None, dict(data))

        await self._docs.update(self._key(key), change)

    async def get_data(self, key: StorageKey) -> dict[str, Any]:
        found = await self._docs.get(self._key(key))
        return dict(found.data) if found else {}

    async def close(self) -> None:
        pass
