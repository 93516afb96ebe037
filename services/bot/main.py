"""The bot process: aiogram wired to the shop's read models, the bus and the notifications."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import nats.errors
from aiogram import BaseMiddleware, Bot, Dispatcher
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
)
from aiogram.types import BotCommand, BotCommandScopeChat, TelegramObject, User
from aiogram.webhook.aiohttp_server import SimpleRequestHandler
from aiohttp import web

from libs import bus, health, log, shutdown, subjects
from libs.contracts import AlertEvent, InventoryEvent, OrderFulfilment, PaymentEvent
from libs.kv import Documents
from libs.lease import Holder, Lease
from libs.runner import Consumer, Runner
from libs.settings import Settings
from services.bot.handlers import (
    admin,
    catalog_desk,
    checkout,
    desk,
    fallback,
    orders,
    search,
    shop,
)
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
POLLER_LEASE_S = 6.0  # a poller not heard of for this long is replaced by a standby
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
        desk.router_for(settings.admins),
        catalog_desk.router_for(settings.admins),
        checkout.router,
        shop.router,
        orders.router,
        search.router,
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
    # Every step waits out a bus outage (a NATS election, JetStream not up yet); SIGTERM ends it.
    nc, js = await bus.attach(settings.nats_url, SERVICE, replicas=replicas, stop=stop)
    store = await Store.open(nc, js, replicas=replicas, stop=stop)
    storage = NatsStorage(
        await Documents.open(
            js, subjects.BOT_CONVERSATIONS_BUCKET, Conversation, replicas=replicas, stop=stop
        )
    )
    session = AiohttpSession(api=TelegramAPIServer.from_base(settings.telegram_api_url))
    bot = Bot(settings.bot_token, session=session, default=DefaultBotProperties(parse_mode="HTML"))
    bot.session.middleware(Throttle(settings.telegram_max_rate))
    notifier = Notifier(bot, store, settings)
    dp = dispatcher(storage, settings, store=store, js=js, nc=nc)
    await _commands(bot, settings)

    consuming = Runner(nc, js, SERVICE, max_deliveries=settings.max_deliveries, stop=stop)
    # Telegram serves getUpdates to one poller per token (a second gets 409 Conflict): the
    # replicas share a lease, and a standby takes over within POLLER_LEASE_S of a holder's end.
    poller = Holder(
        await Documents.open(js, subjects.BOT_POLLER_BUCKET, Lease, replicas=replicas, stop=stop),
        "bot poller",
        f"{socket.gethostname()}:{os.getpid()}",
        POLLER_LEASE_S,
    )

    async def check() -> health.Report:
        report = {**health.basics(nc, consuming), "mode": settings.bot_mode}
        if settings.bot_mode == "polling":
            report["poller"] = "polling" if poller.holding else "standby"
        return report

    runner: web.AppRunner | None = None
    try:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(consuming.run(consumers(notifier)))
            tasks.create_task(notifier.run(stop))
            _log.info("bot.started", mode=settings.bot_mode, shop=settings.shop_name)
            if settings.bot_mode != "webhook":
                # Health and metrics alone on the webhook's port, which polling leaves free: one
                # address per service for compose and Prometheus, whatever the mode.
                host, port = settings.bot_http_host, settings.bot_http_port
                runner = await health.serve(host, port, check, required=False)
            if settings.bot_mode == "webhook":
                runner = await _webhook(dp, bot, settings, check)  # every replica serves its share
                await stop.wait()
            elif await poller.take(stop):  # one replica polls; the others stand by
                tasks.create_task(poller.keep(stop))
                await bot.delete_webhook(drop_pending_updates=False)
                polling = tasks.create_task(dp.start_polling(bot, handle_signals=False))
                _log.info("bot.polling")
                await stop.wait()
                await dp.stop_polling()
                await polling
    finally:
        if runner is not None:
            await runner.cleanup()
        await bot.session.close()
        await store.close()
        await nc.drain()
    _log.info("bot.stopped")


async def _commands(bot: Bot, settings: Settings) -> None:
    """The menu of commands: the customers' everywhere, the desk's in the admins' own chats and
    the admin chat (Telegram shows a chat's scope before the default one)."""
    admin_chats = {*settings.admins}
    if settings.admin_chat_id is not None:
        admin_chats.add(settings.admin_chat_id)
    for language in ("ru", "en"):
        t = for_language(language)
        code = None if language == "ru" else language
        commands = [BotCommand(command=c, description=d) for c, d in t.commands()]
        await bot.set_my_commands(commands, language_code=code)
        menu = [BotCommand(command=c, description=d) for c, d in t.admin_commands()]
        for chat_id in sorted(admin_chats):
            scope = BotCommandScopeChat(chat_id=chat_id)
            try:
                await bot.set_my_commands(menu, scope=scope, language_code=code)
            except TelegramBadRequest as exc:  # an admin who never wrote to the bot
                _log.warning("bot.admin_commands_not_set", chat_id=chat_id, reason=exc.message)


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
        Consumer[OrderFulfilment](
            stream=subjects.ORDERS,
            durable=subjects.BOT_FULFILMENT_CONSUMER,
            subjects=[subjects.ORDERS_FULFILMENT_ALL],
            kind=OrderFulfilment,
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


async def _webhook(
    dp: Dispatcher, bot: Bot, settings: Settings, check: health.Check
) -> web.AppRunner:
    app = web.Application()
    SimpleRequestHandler(dp, bot, secret_token=settings.webhook_secret).register(app, WEBHOOK_PATH)
    health.add_routes(app, check)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.bot_http_host, settings.bot_http_port).start()
    await bot.set_webhook(settings.webhook_url, secret_token=settings.webhook_secret)
    return runner
