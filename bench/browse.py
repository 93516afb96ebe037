"""Benchmark 8: 200 customers browse the shop window at once.

The inventory and the bot run as real processes on a fresh nats-server; Telegram is the test
fake in this process. Each customer walks /start -> Каталог -> the category -> a product card,
reading each page for about a second before the next tap (as a person does; the bot paces each
chat to about a message a second after a burst of three, and a walk without reading would
measure that pacing). The customers start within the first two seconds, so all 200 browse at
the same time.

Measured: the bot's own time per tap, from the update handed to the bot (the fake's getUpdates
answered with it) to the bot's answer arriving at the fake (the message sent or edited); and
what the walk cost the server: the JetStream consumers created (the server's advisories) and
the JetStream API requests made (every request on `$JS.API.>`, seen by a subscriber).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from nats.aio.msg import Msg

from bench.common import (
    Inventory,
    Result,
    fresh_bus,
    inventory_ready,
    ms,
    percentile,
    running,
    wait_until,
)
from tests.fakes.telegram import SENDING, Call, FakeTelegram, User

CUSTOMERS = 200
SKUS = [f"TEA{n:02d}" for n in range(1, 7)]  # one page of the category
READ_SECONDS = 1.0  # a customer reads a page about this long before the next tap
START_WITHIN_S = 2.0
STEPS = ("/start", "catalog", "category", "product card")
PAGE_VIEWS = ("catalog", "category", "product card")
CONSUMER_CREATED = "$JS.EVENT.ADVISORY.CONSUMER.CREATED.>"
JS_API = "$JS.API.>"


class TimedTelegram(FakeTelegram):
    """The fake Telegram, noting when each update was handed to the bot and each chat's calls."""

    def __init__(self) -> None:
        super().__init__()
        self.handed: dict[int, float] = {}  # update id -> when getUpdates answered with it
        self.chat_calls: dict[int, list[Call]] = defaultdict(list)

    async def _m_getUpdates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        updates: list[dict[str, Any]] = await super()._m_getUpdates(params)
        now = time.monotonic()
        for update in updates:
            self.handed.setdefault(update["update_id"], now)
        return updates

    def _record(self, method: str, params: dict[str, Any], via: str = "http") -> Call:
        call = super()._record(method, params, via)
        chat_id = params.get("chat_id")
        if method in SENDING and isinstance(chat_id, int):
            self.chat_calls[chat_id].append(call)
        return call


class Counts:
    """What the server saw during the walk: consumers created, JetStream API requests by kind."""

    def __init__(self) -> None:
        self.consumers: Counter[str] = Counter()  # stream -> consumers created on it
        self.api: Counter[str] = Counter()
        self.counting = False

    async def start(self, nc: Any) -> None:
        async def created(msg: Msg) -> None:
            if self.counting:
                # $JS.EVENT.ADVISORY.CONSUMER.CREATED.<stream>.<consumer>
                self.consumers[msg.subject.split(".")[5]] += 1

        async def request(msg: Msg) -> None:
            if self.counting:
                # $JS.API.CONSUMER.CREATE.<stream>..., $JS.API.DIRECT.GET.<stream>...
                self.api[".".join(msg.subject.split(".")[2:4])] += 1

        await nc.subscribe(CONSUMER_CREATED, cb=created)
        await nc.subscribe(JS_API, cb=request)
        await nc.flush()


async def _walk(telegram: TimedTelegram, user: User, sku: str, delay: float) -> list[float]:
    """One customer's four taps; the bot's own time for each."""
    await asyncio.sleep(delay)
    own: list[float] = []

    async def answered(update_id: int, expected: str) -> None:

        def answer() -> Call | None:
            handed = telegram.handed.get(update_id)
            if handed is None:
                return None
            return next((c for c in telegram.chat_calls[user.id] if c.at >= handed), None)

        call = await telegram.wait_for(answer, 60, f"the bot's answer to {user.id}")
        own.append(call.at - telegram.handed[update_id])
        await telegram.wait_message(user.id, lambda m: expected in str(m), 60)
        await asyncio.sleep(READ_SECONDS * random.uniform(0.8, 1.2))

    def last_update() -> int:
        update = telegram.updates[-1]  # the tap just made: nothing ran in between
        return int(update["update_id"])

    await telegram.send_command(user, "/start")
    await answered(last_update(), "Каталог")
    for button, expected in (("Каталог", "Bench"), ("Bench", sku), (sku, "₽")):
        await telegram.tap(user, button)
        await answered(last_update(), expected)
    return own


async def run(workdir: Path) -> Result:
    result = Result("browse")
    random.seed(8)
    counts = Counts()
    telegram = TimedTelegram()
    async with telegram, fresh_bus(workdir) as b:
        stock = dict.fromkeys(SKUS, 1000)
        inventory = Inventory(b, stock)  # one category "Bench", products TEA01..TEA06
        bot = Inventory(
            b,
            stock,
            name="bot",
            service="bot",
            env={
                "BOT_TOKEN": telegram.token,
                "TELEGRAM_API_URL": telegram.url,
                "SHOP_NAME": "Bench",
                "TELEGRAM_MAX_RATE": "1000",  # the fake has no overall limit: measure the shop
            },
        )
        async with running(inventory), running(bot):
            await wait_until(lambda: inventory_ready(b.js, SKUS[-1]), 60, "catalog", inventory)
            # The bot is up once it polls; one customer's walk first, so that what is measured
            # is the shop at work, not the first import of each handler.
            await telegram.wait_for(lambda: telegram.calls_to("getUpdates"), 60, "the bot")
            await _walk(telegram, telegram.user("Warm-up"), SKUS[0], 0)
            await counts.start(b.nc)
            customers = [telegram.user(f"Customer{i}") for i in range(CUSTOMERS)]
            counts.counting = True
            started = time.perf_counter()
            walks = await asyncio.gather(
                *(
                    _walk(telegram, c, random.choice(SKUS), random.uniform(0, START_WITHIN_S))
                    for c in customers
                )
            )
            elapsed = time.perf_counter() - started
            await b.nc.flush()
            counts.counting = False
    taps = CUSTOMERS * len(STEPS)
    views = CUSTOMERS * len(PAGE_VIEWS)
    every = sorted(t for walk in walks for t in walk)
    by_step = {step: sorted(walk[i] for walk in walks) for i, step in enumerate(STEPS)}
    p50, p99 = percentile(every, 0.5), percentile(every, 0.99)
    requests = sum(counts.api.values())
    kinds = ", ".join(f"{kind} {n}" for kind, n in counts.api.most_common(4))
    consumers = sum(counts.consumers.values())
    streams = ", ".join(f"on {stream} {n}" for stream, n in counts.consumers.most_common(3))
    result.lines += [
        f"{CUSTOMERS} customers, each /start -> catalog -> category -> product card, "
        f"at once ({taps} taps in {elapsed:.1f} s)",
        f"the bot's own time per tap: p50 {ms(p50)}, p99 {ms(p99)}, max {ms(every[-1])}",
        "  by step: "
        + "; ".join(
            f"{step} p50 {ms(percentile(v, 0.5))}, p99 {ms(percentile(v, 0.99))}"
            for step, v in by_step.items()
        ),
        f"{consumers} consumers created for {views} catalog page views "
        f"({consumers / views:.2f} per page view; {streams or 'none'})",
        f"{requests} JetStream API requests for {taps} taps ({kinds})",
    ]
    result.summary.append(
        f"browsing at {CUSTOMERS} concurrent: per tap p50 {ms(p50)}, p99 {ms(p99)}; "
        f"{consumers / views:.2f} consumers per page view, "
        f"{requests / taps:.1f} JetStream API requests per tap"
    )
    return result
