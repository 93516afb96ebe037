"""The bot process: aiogram wired to the shop's read models, the bus and the notifications."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import nats.errors
from aiogram import BaseMiddleware, Bot, Dispatcher
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import TelegramNetworkError, TelegramRetryAfter, TelegramServerError
from aiogram.types import BotCommand, TelegramObject, User
from aiogram.webhook.aiohttp_server import SimpleRequestHandler
from aiohttp import web

from libs import bus, log, shutdown, subjects
from libs.contracts import AlertEvent, InventoryEvent, PaymentEvent
from libs.kv import Documents
from libs.runner import Consumer, Runner
from libs.settings import Settings
from services.bot.handlers import admin, checkout, fallback, orders, shop
from services.bot.model import Store
from services.bot.notify import Notifier
from services.bot.sender import Throttle
from services.bot.storage import Conversation, NatsStorage
from services.bot.texts import for_language

_log = log.get(__name__)
SERVICE = "bot"
WEBHOOK_PATH = "/telegram/webhook"
# What a killed bot held comes back after this; a live one keeps what it is telling.
ACK_WAIT_S = 30.0
# Telegram or the bus out for a while: the fact is told when they are back, however long.
OUTAGES = (TelegramNetworkError, TelegramServerError, TelegramRetryAfter, nats.errors.Error)


class TextsFor(BaseMiddleware):
    """The user's language for every handler, as `t`."""

    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        user: User | None = data.get("event_from_user")
        data["t"] = for_language(user.language_code if user else None)
        return await handler(event, data)


def dispatcher(storage: NatsStorage, settings: Settings, **deps: Any) -> Dispatcher:
    dp = Dispatcher(storage=storage, settings=settings, **deps)
    dp.update.middleware(TextsFor())
    dp.include_routers(
        admin.router_for(settings.admins),
        checkout.router,
        shop.router,
        orders.router,
        fallback.router,
    )
    return dp


async def serve(settings: Settings) -> None:
    assert settings.nats_url, "shop run/up sets NATS_URL"
    if not settings.bot_token:
        message = "shop: BOT_TOKEN is not set: the bot needs the token @BotFather gave"
        print(message, file=sys.stderr)  # noqa: T201 - one line for the operator, then exit
        raise SystemExit(2)
    stop = shutdown.on_signals()
    replicas = settings.stream_replicas
    nc, js = await bus.attach(settings.nats_url, SERVICE, replicas=replicas)
    store = await Store.open(nc, js, replicas=replicas)
    storage = NatsStorage(
        await Documents.open(js, subjects.BOT_CONVERSATIONS_BUCKET, Conversation, replicas=replicas)
    )
    session = AiohttpSession(api=TelegramAPIServer.from_base(settings.telegram_api_url))
    bot = Bot(settings.bot_token, session=session, default=DefaultBotProperties(parse_mode="HTML"))
    bot.session.middleware(Throttle(settings.telegram_max_rate))
    notifier = Notifier(bot, store, settings)
    dp = dispatcher(storage, settings, store=store, js=js)
    for language in ("ru", "en"):
        t = for_language(language)
        commands = [BotCommand(command=c, description=d) for c, d in t.commands()]
        await bot.set_my_commands(commands, language_code=None if language == "ru" else language)

    consuming = Runner(nc, js, SERVICE, max_deliveries=settings.max_deliveries, stop=stop)
    runner: web.AppRunner | None = None
    try:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(consuming.run(consumers(notifier)))
            tasks.create_task(notifier.remind(stop))
            if settings.bot_mode == "webhook":
                runner = await _webhook(dp, bot, settings)
            else:
                await bot.delete_webhook(drop_pending_updates=False)
                polling = tasks.create_task(dp.start_polling(bot, handle_signals=False))
            _log.info("bot.started", mode=settings.bot_mode, shop=settings.shop_name)
            await stop.wait()
            if settings.bot_mode != "webhook":
                await dp.stop_polling()
                await polling
    finally:
        if runner is not None:
            await runner.cleanup()
        await bot.session.close()
        await store.close()
        await nc.drain()
    _log.info("bot.stopped")


def consumers(notifier: Notifier) -> list[Consumer[Any]]:
    """The facts the bot tells about: each told once it is handled (a fact comes back while
    Telegram or the bus is out)."""
    telling: dict[str, Any] = {
        "handle": notifier.on_fact,
        "ack_wait": ACK_WAIT_S,
        "retry_on": OUTAGES,
    }
    return [
        Consumer[InventoryEvent](
            stream=subjects.INVENTORY,
            durable=subjects.BOT_INVENTORY_CONSUMER,
            subjects=subjects.INVENTORY_FACTS_FOR_BOT,
            kind=InventoryEvent,
            **telling,
        ),
        Consumer[PaymentEvent](
            stream=subjects.PAYMENTS,
            durable=subjects.BOT_PAYMENTS_CONSUMER,
            subjects=subjects.PAYMENT_FACTS_FOR_BOT,
            kind=PaymentEvent,
            **telling,
        ),
        Consumer[AlertEvent](
            stream=subjects.ALERTS,
            durable=subjects.BOT_ALERTS_CONSUMER,
            subjects=[subjects.ALERTS_ALL],
            kind=AlertEvent,
            **telling,
        ),
    ]


async def _webhook(dp: Dispatcher, bot: Bot, settings: Settings) -> web.AppRunner:
    app = web.Application()
    SimpleRequestHandler(dp, bot, secret_token=settings.webhook_secret).register(app, WEBHOOK_PATH)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.bot_http_host, settings.bot_http_port).start()
    await bot.set_webhook(settings.webhook_url, secret_token=settings.webhook_secret)
    return runner
