"""Every call the bot makes to Telegram goes through here, within Telegram's limits.

A request middleware on the bot's session, so handlers' answers and notifications alike are
paced: about one message a second per chat (a burst of three allowed) and `TELEGRAM_MAX_RATE`
a second overall. A 429 is honoured (`retry_after`) and the call made again, a bounded number
of times; so are network errors and Telegram's 5xx. What fails for good (the user blocked the
bot, a bad request) raises as aiogram raises it, and callers decide (notifications are acked).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from typing import Any

from aiogram import Bot
from aiogram.client.session.middlewares.base import BaseRequestMiddleware, NextRequestMiddlewareType
from aiogram.exceptions import TelegramNetworkError, TelegramRetryAfter, TelegramServerError
from aiogram.methods import Response, TelegramMethod
from aiogram.methods.base import TelegramType
from aiolimiter import AsyncLimiter

from libs import log, metrics

_log = log.get(__name__)

PER_CHAT = (3, 3.0)  # a burst of 3, then one a second
MAX_ATTEMPTS = 8
PACED = frozenset(
    {
        "SendMessage",
        "SendPhoto",
        "EditMessageText",
        "EditMessageCaption",
        "EditMessageMedia",
        "EditMessageReplyMarkup",
        "DeleteMessage",
    }
)

SENT = metrics.Counter(
    "shop_telegram_sends",
    "Messages sent, edited or deleted in Telegram (the paced calls), by method",
    ["method"],
    registry=metrics.REGISTRY,
)
TOO_MANY = metrics.Counter(
    "shop_telegram_429",
    "Telegram's 429 Too Many Requests answers (each honoured, then the call made again)",
    registry=metrics.REGISTRY,
)
SEND_SECONDS = metrics.Histogram(
    "shop_telegram_send_seconds",
    "A paced call from its start to Telegram's answer: the pace, 429 waits and retries included",
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
    registry=metrics.REGISTRY,
)


class Throttle(BaseRequestMiddleware):
    def __init__(self, max_rate: float, per_chat: tuple[int, float] = PER_CHAT) -> None:
        self._per_chat_spec = per_chat
        self._chats: OrderedDict[int | str, AsyncLimiter] = OrderedDict()
        self._global = AsyncLimiter(max(1, int(max_rate)), 1.0)
        self.retries = 0

    def _chat(self, chat_id: int | str) -> AsyncLimiter:
        limiter = self._chats.get(chat_id)
        if limiter is None:
            limiter = self._chats[chat_id] = AsyncLimiter(*self._per_chat_spec)
            if len(self._chats) > 10_000:  # forget the quietest chats
                self._chats.popitem(last=False)
        else:
            self._chats.move_to_end(chat_id)
        return limiter

    async def __call__(
        self,
        make_request: NextRequestMiddlewareType[TelegramType],
        bot: Bot,
        method: TelegramMethod[TelegramType],
    ) -> Response[TelegramType]:
        name = type(method).__name__
        chat_id: Any = getattr(method, "chat_id", None)
        paced = name in PACED and isinstance(chat_id, int | str)
        if not paced:
            return await self._call(make_request, bot, method, paced)
        started = time.monotonic()
        answer = await self._call(make_request, bot, method, paced)
        SEND_SECONDS.observe(time.monotonic() - started)
        SENT.labels(name).inc()
        return answer

    async def _call(
        self,
        make_request: NextRequestMiddlewareType[TelegramType],
        bot: Bot,
        method: TelegramMethod[TelegramType],
        paced: bool,
    ) -> Response[TelegramType]:
        name = type(method).__name__
        chat_id: Any = getattr(method, "chat_id", None)
        delay = 0.5
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                if paced:
                    async with self._chat(chat_id), self._global:
                        return await make_request(bot, method)
                return await make_request(bot, method)
            except TelegramRetryAfter as exc:
                TOO_MANY.inc()
                wait: float = exc.retry_after
                error: Exception = exc
            except (TelegramNetworkError, TelegramServerError) as exc:
                if attempt == MAX_ATTEMPTS:
                    raise
                wait, delay = delay, min(delay * 2, 10.0)
                error = exc
            if attempt == MAX_ATTEMPTS:
                raise error
            self.retries += 1
            _log.info("telegram.retry", method=name, attempt=attempt, wait=wait, why=str(error))
            await asyncio.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover
