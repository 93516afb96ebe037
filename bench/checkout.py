"""Benchmark 6: from the customer's Confirm to the Pay button, at 50 concurrent customers.

The inventory, payments and bot run as real processes on a fresh nats-server; Telegram and
YooKassa are the test fakes in this process, answering at once. Fifty customers fill their
carts and the checkout form first, read the summary for a few seconds, then all tap Confirm
together. Measured per customer: the
tap's update handed to the fake Telegram, to the fake receiving the message with the Pay
button. Our own services' share is that time less what the fake YooKassa spent creating the
payment (its handler, timed around the request).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

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
from shop.embedded_nats import free_port
from tests.fakes.telegram import Call, FakeTelegram, User, message_text
from tests.fakes.yookassa import FakeYooKassa

CUSTOMERS = 50
THINK_SECONDS = 4.0
SKU = "TEA"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class TimedYooKassa(FakeYooKassa):
    """The fake YooKassa, noting how long each payment creation took inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.create_seconds: dict[str, float] = {}  # idempotence key -> seconds

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        try:
            return await super()._middleware(request, handler)
        finally:
            if request.method == "POST" and request.path.endswith("/payments"):
                key = request.headers.get("Idempotence-Key", "")
                self.create_seconds[key] = time.perf_counter() - started


async def _fill_checkout(telegram: FakeTelegram, user: User) -> int:
    """Cart and form, as a customer does it; the summary's message id."""
    await telegram.send_command(user, "/start")
    await telegram.wait_message(user.id, "Bench", 60)
    await telegram.tap(user, "Каталог")
    await telegram.wait_message(user.id, lambda m: "Bench" in str(m.get("reply_markup")), 60)
    await telegram.tap(user, "Bench")
    await telegram.wait_message(user.id, lambda m: SKU in str(m.get("reply_markup")), 60)
    await telegram.tap(user, SKU)
    await telegram.wait_message(user.id, "₽", 60)
    await telegram.wait_answer((await telegram.tap(user, "В корзину"))["id"], 60)
    await telegram.tap(user, "Корзина")
    await telegram.wait_message(user.id, "Итого", 60)
    await telegram.tap(user, "Оформить")
    last = (await telegram.wait_message(user.id, "обращаться", 60))["message_id"]
    for answer, question in (
        (user.first_name, "телефон"),
        ("+7 912 345-67-89", "Куда доставить"),
        ("Москва, ул. Ленина, д. 5", "комментарий"),
        ("-", "Подтвердить"),
    ):
        await telegram.send_text(user, answer)
        last = (await telegram.wait_message(user.id, question, 60, after=last))["message_id"]
    return int(last)


def _pay_button_call(telegram: FakeTelegram, chat_id: int, after: float) -> Call | None:
    for call in telegram.calls:
        if (
            call.at >= after
            and call.params.get("chat_id") == chat_id
            and "'url'" in str(call.params.get("reply_markup"))
        ):
            return call
    return None


async def run(workdir: Path) -> Result:
    result = Result("checkout")
    yookassa = TimedYooKassa()
    await yookassa.start()
    port = free_port()
    yookassa.webhook_url = f"http://127.0.0.1:{port}/yookassa/webhook"
    e2e: list[float] = []
    own: list[float] = []
    try:
        async with FakeTelegram() as telegram, fresh_bus(workdir) as b:
            inventory = Inventory(b, {SKU: 1000})  # one category "Bench", product "TEA"
            payments = Inventory(
                b,
                {SKU: 1000},
                name="payments",
                service="payments",
                env={
                    "YOOKASSA_SHOP_ID": yookassa.shop_id,
                    "YOOKASSA_SECRET_KEY": yookassa.secret_key,
                    "YOOKASSA_API_URL": yookassa.api_url,
                    "YOOKASSA_TRUSTED_NETWORKS": "127.0.0.1/32",
                    "PAYMENTS_HTTP_PORT": str(port),
                },
            )
            bot = Inventory(
                b,
                {SKU: 1000},
                name="bot",
                service="bot",
                env={
                    "BOT_TOKEN": telegram.token,
                    "TELEGRAM_API_URL": telegram.url,
                    "SHOP_NAME": "Bench",
                    # Real Telegram allows ~30 messages/s overall: 50 confirms (two messages
                    # each) would measure that pacing. The fake has no limit; measure the shop.
                    "TELEGRAM_MAX_RATE": "1000",
                },
            )
            async with running(inventory), running(payments), running(bot):
                await wait_until(lambda: inventory_ready(b.js, SKU), 60, "catalog", inventory)
                customers = [telegram.user(f"Customer{i}") for i in range(CUSTOMERS)]
                summaries = await asyncio.gather(*(_fill_checkout(telegram, c) for c in customers))
                # A person reads the summary before confirming. Not a wait for anything: the bot
                # paces each chat to about a message a second (Telegram's limit), and a customer
                # who has just typed seven answers would otherwise measure that pacing.
                await asyncio.sleep(THINK_SECONDS)
                tapped: dict[int, float] = {}

                async def confirm(customer: User, summary: int) -> None:
                    tapped[customer.id] = time.monotonic()
                    await telegram.tap(customer, "Подтвердить", summary)

                await asyncio.gather(
                    *(confirm(c, s) for c, s in zip(customers, summaries, strict=True))
                )
                calls: dict[int, Call] = {}

                def all_answered() -> bool:
                    for customer in customers:
                        if customer.id not in calls:
                            found = _pay_button_call(telegram, customer.id, tapped[customer.id])
                            if found is None:
                                return False
                            calls[customer.id] = found
                    return True

                await telegram.wait_for(all_answered, 120, "every Pay button")
                for customer in customers:
                    seconds = calls[customer.id].at - tapped[customer.id]
                    e2e.append(seconds)
                    order_id = _order_id(telegram, customer.id)
                    inside = yookassa.create_seconds.get(f"shop-pay-{order_id}-1", 0.0)
                    own.append(max(0.0, seconds - inside))
    finally:
        await yookassa.stop()
    e2e.sort()
    own.sort()
    p50, p99 = percentile(e2e, 0.5), percentile(e2e, 0.99)
    o50, o99 = percentile(own, 0.5), percentile(own, 0.99)
    share = sum(own) / sum(e2e)
    result.lines += [
        f"{CUSTOMERS} customers tap Confirm at once; Confirm to the Pay button at the fake "
        f"Telegram: p50 {ms(p50)}, p99 {ms(p99)}, max {ms(e2e[-1])}",
        f"our own services' time (less the fake YooKassa's payment creation): p50 {ms(o50)}, "
        f"p99 {ms(o99)}; {share:.0%} of the total",
        f"(overall pacing off for the fake; at Telegram's ~25 messages/s the {CUSTOMERS} "
        f"confirms' {2 * CUSTOMERS} messages alone take {2 * CUSTOMERS / 25:.0f} s)",
    ]
    result.summary.append(
        f"checkout at {CUSTOMERS} concurrent: Confirm to Pay button p50 {ms(p50)}, p99 {ms(p99)};"
        f" own share {share:.0%}"
    )
    return result


def _order_id(telegram: FakeTelegram, chat_id: int) -> str:
    for message in telegram.sent(chat_id):
        text: Any = message_text(message)
        if "№" in text:
            return str(text.split("№", 1)[1].split()[0]).strip(".,:")
    return ""
