"""Every message the bot sends goes through here, within Telegram's limits.

About one message a second per chat (short bursts allowed) and about 25 a second overall; a 429
is honoured (`retry_after`) and retried, bounded. A message either goes out or fails for good
(the user blocked the bot, the chat is gone): callers ack the fact behind it only then.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
)
from aiolimiter import AsyncLimiter

from libs import log

_log = log.get(__name__)
T = TypeVar("T")

PER_CHAT = (3, 3.0)  # a burst of 3, then one a second
GLOBAL = (25, 1.0)
MAX_ATTEMPTS = 8


class Undeliverable(Exception):
    """The message cannot go out, now or later (blocked, chat not found, a bad request)."""


class Sender:
    def __init__(self, per_chat: tuple[int, float] = PER_CHAT, overall: tuple[int, float] = GLOBAL):
        self._per_chat_spec = per_chat
        self._chats: OrderedDict[int, AsyncLimiter] = OrderedDict()
        self._global = AsyncLimiter(*overall)
        self.retries = 0

    def _chat(self, chat_id: int) -> AsyncLimiter:
        limiter = self._chats.get(chat_id)
        if limiter is None:
            limiter = self._chats[chat_id] = AsyncLimiter(*self._per_chat_spec)
            if len(self._chats) > 10_000:  # forget the quietest chats
                self._chats.popitem(last=False)
        else:
            self._chats.move_to_end(chat_id)
        return limiter

    async def send(self, chat_id: int, call: Callable[[], Awaitable[T]]) -> T:
        """Run one Bot API call for `chat_id` within the limits; Undeliverable if it never can."""
        delay = 0.5
        for attempt in range(1, MAX_ATTEMPTS + 1):
            async with self._chat(chat_id), self._global:
                try:
                    return await call()
                except TelegramRetryAfter as exc:
                    wait = float(exc.retry_after)
                    error: Exception = exc
                except (TelegramNetworkError, TelegramServerError) as exc:
                    wait = delay
                    delay = min(delay * 2, 10.0)
                    error = exc
                except TelegramForbiddenError as exc:
                    _log.info("message.undeliverable", chat_id=chat_id, reason=exc.message)
                    raise Undeliverable(exc.message) from None
                except TelegramBadRequest as exc:
                    if "message is not modified" in exc.message:
                        return None  # type: ignore[return-value]  # already as wanted
                    _log.warning("message.refused", chat_id=chat_id, reason=exc.message)
                    raise Undeliverable(exc.message) from None
            self.retries += 1
            _log.info(
                "message.retry", chat_id=chat_id, attempt=attempt, wait=wait, error=str(error)
            )
            await asyncio.sleep(wait)
        raise Undeliverable(f"still failing after {MAX_ATTEMPTS} attempts")
