"""The bot, driven like a person through a fake Telegram, with the real inventory and payments
(and a fake YooKassa) on a real nats-server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from nats.js import JetStreamContext

from libs.embedded_nats import free_port
from tests.fakes.telegram import FakeTelegram, User, message_text
from tests.fakes.yookassa import FakeYooKassa
from tests.harness import ServiceProcess, inventory_ready, wait_until

Start = Callable[..., ServiceProcess]


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as fake:
        yield fake


@pytest.fixture
async def yookassa() -> AsyncIterator[FakeYooKassa]:
    fake = FakeYooKassa()
    await fake.start()
    yield fake
    await fake.stop()


async def _shop(
    services: Start,
    nats_url: str,
    catalog_file: Path,
    js: JetStreamContext,
    telegram: FakeTelegram,
    yookassa: FakeYooKassa,
    admin: User,
    **settings: Any,
) -> ServiceProcess:
    port = free_port()
    yookassa.webhook_url = f"http://127.0.0.1:{port}/yookassa/webhook"
    services("inventory", nats_url, catalog_file=catalog_file)
    services(
        "payments",
        nats_url,
        payments_http_port=port,
        yookassa_shop_id=yookassa.shop_id,
        yookassa_secret_key=yookassa.secret_key,
        yookassa_api_url=yookassa.api_url,
        yookassa_trusted_networks="127.0.0.1/32",
    )
    bot = services(
        "bot",
        nats_url,
        bot_token=telegram.token,
        telegram_api_url=telegram.url,
        admin_chat_id=admin.id,
        admin_user_ids=str(admin.id),
        shop_name="Тестовая лавка",
        **settings,
    )
    await wait_until(lambda: inventory_ready(js), what="inventory ready")
    await wait_until(lambda: bool(telegram.calls_to("getUpdates")), what="the bot polling")
    return bot


async def test_the_whole_journey(
    nats_url: str,
    js: JetStreamContext,
    services: Start,
    catalog_file: Path,
    telegram: FakeTelegram,
    yookassa: FakeYooKassa,
) -> None:
    admin = telegram.user("Админ")
    await telegram.send_command(admin, "/start")  # the admin chat exists
    await _shop(services, nats_url, catalog_file, js, telegram, yookassa, admin)
    anna = telegram.user("Анна")

    await telegram.send_command(anna, "/start")
    await telegram.wait_message(anna.id, "Тестовая лавка")
    await telegram.tap(anna, "Каталог")
    await telegram.wait_message(anna.id, lambda m: "Goods" in str(m.get("reply_markup")))
    await telegram.tap(anna, "Goods")
    await telegram.wait_message(anna.id, lambda m: "A few" in str(m.get("reply_markup")))
    await telegram.tap(anna, "A few")
    card = await telegram.wait_message(anna.id, "990")
    await telegram.tap(anna, "➕", card["message_id"])
    await telegram.wait_message(anna.id, lambda m: "'2'" in str(m.get("reply_markup")))
    tap = await telegram.tap(anna, "В корзину")
    answer = await telegram.wait_answer(tap["id"])
    assert "A few" in answer["text"]

    await telegram.tap(anna, "Корзина")
    await telegram.wait_message(anna.id, "1\u00a0980")
    await telegram.tap(anna, "Оформить")
    last = (await telegram.wait_message(anna.id, "обращаться"))["message_id"]

    await telegram.send_text(anna, "Анна")
    last = (await telegram.wait_message(anna.id, "телефон", after=last))["message_id"]
    await telegram.send_text(anna, "8 912 345")  # too short: a precise hint, same question
    last = (await telegram.wait_message(anna.id, "цифр", after=last))["message_id"]
    await telegram.send_text(anna, "8 (912) 345-67-89")
    last = (await telegram.wait_message(anna.id, "Куда доставить", after=last))["message_id"]
    await telegram.send_text(anna, "Москва, Ленина")  # no house number
    last = (await telegram.wait_message(anna.id, "дома", after=last))["message_id"]
    await telegram.send_text(anna, "Москва, ул. Ленина, д. 5, кв. 12")
    last = (await telegram.wait_message(anna.id, "комментарий", after=last))["message_id"]
    await telegram.send_text(anna, "-")
    summary = await telegram.wait_message(anna.id, "+7 912 345-67-89", after=last)
    assert "Ленина" in message_text(summary)

    await telegram.tap(anna, "Подтвердить")
    pay = await telegram.wait_message(anna.id, lambda m: "'url'" in str(m.get("reply_markup")), 20)
    url = next(b["url"] for row in telegram.buttons(anna.id, pay["message_id"]) for b in row)
    payment_id = url.rsplit("/", 1)[1]
    await yookassa.pay(payment_id)
    await telegram.wait_message(anna.id, "Оплата получена", timeout=20)
    notice = await telegram.wait_message(admin.id, "+79123456789", timeout=20)
    assert "Ленина" in message_text(notice) and payment_id in message_text(notice)
