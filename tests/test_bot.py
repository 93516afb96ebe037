"""The bot, driven like a person through a fake Telegram, with the real inventory and payments
(and a fake YooKassa) on a real nats-server."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from nats.js import JetStreamContext

from libs import bus, kv, subjects
from libs.contracts import CrmBehind, CrmCaughtUp, OrderLine, RefundRequested
from shop.embedded_nats import free_port
from tests.fakes.telegram import FakeTelegram, User, message_text
from tests.fakes.yookassa import FakeYooKassa
from tests.harness import ServiceProcess, http_get, inventory_ready, metric, wait_until

Start = Callable[..., ServiceProcess]


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
    ttl = settings.get("reservation_ttl", 900)
    services("inventory", nats_url, catalog_file=catalog_file, reservation_ttl=ttl)
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
    """Three customers at once: Anna browses, fills the form (a wrong phone and an address
    without a house on the way) and pays; Gleb's payment is cancelled by YooKassa; Dina buys all
    but two of a product and the admin chat hears the stock is low. The sheet's alerts reach the
    admin chat too."""
    admin = telegram.user("Админ")
    await telegram.send_command(admin, "/start")  # the admin chat exists
    await _shop(services, nats_url, catalog_file, js, telegram, yookassa, admin)
    anna, gleb, dina = telegram.user("Анна"), telegram.user("Глеб"), telegram.user("Дина")

    async def anna_pays() -> None:
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
        pay = await telegram.wait_message(anna.id, _has_pay_button, 20)
        url = next(b["url"] for row in telegram.buttons(anna.id, pay["message_id"]) for b in row)
        payment_id = url.rsplit("/", 1)[1]
        await yookassa.pay(payment_id)
        await telegram.wait_message(anna.id, "Оплата получена", timeout=20)
        # Dina's card has the same phone: Anna's is the one with her payment.
        notice = await telegram.wait_message(admin.id, payment_id, timeout=20)
        assert "+79123456789" in message_text(notice)
        assert "Ленина" in message_text(notice) and payment_id in message_text(notice)

    async def dina_leaves_two() -> None:
        # Eight of the ten "The last one": two left, at the threshold of three the admins hear.
        summary = await _to_summary(telegram, dina, "The last one", plus=7)
        await telegram.tap(dina, "Подтвердить", summary)
        pay = await telegram.wait_message(dina.id, _has_pay_button, 20)
        url = next(b["url"] for row in telegram.buttons(dina.id, pay["message_id"]) for b in row)
        await yookassa.pay(url.rsplit("/", 1)[1])
        await telegram.wait_message(admin.id, "📉", 20)
        assert any("The last one: осталось 2" in message_text(m) for m in telegram.sent(admin.id))

    *_, summary = await asyncio.gather(
        anna_pays(), dina_leaves_two(), _to_summary(telegram, gleb, "Plenty")
    )
    # Gleb pays nothing once the others were told, not meanwhile: the bot tells each consumer's
    # facts one by one, so his payment's fact could wait behind their paced messages while the
    # inventory's release of his order (which follows that fact) is told first, and the
    # reason is not known yet then (services/bot/notices.py tells a cancellation once).
    await telegram.tap(gleb, "Подтвердить", summary)
    pay = await telegram.wait_message(gleb.id, _has_pay_button, 20)
    url = next(b["url"] for row in telegram.buttons(gleb.id, pay["message_id"]) for b in row)
    payment_id = url.rsplit("/", 1)[1]
    yookassa.set_status(payment_id, "canceled")  # YooKassa gave up waiting for the payment
    await yookassa.notify(payment_id)
    await telegram.wait_message(gleb.id, "время на оплату истекло", 20)
    commands = [c["command"] for c in telegram.commands()]
    assert commands == ["start", "catalog", "cart", "orders", "help", "cancel"]
    assert telegram.commands(language_code="en"), "English descriptions too"

    # crm_sync's alerts reach the admin chat too (their wording: tests/test_bot_messages.py).
    since = datetime(2026, 11, 24, 9, 30, tzinfo=UTC)
    behind = CrmBehind(1234, since, "Google Sheets answered 503", since + timedelta(minutes=6))
    await bus.publish(js, subjects.ALERT_CRM_BEHIND, behind, "behind-1")
    text = message_text(await telegram.wait_message(admin.id, "Таблица отстаёт", 20))
    assert "1234 событий" in text and "6 мин" in text and "503" in text
    caught_up = CrmCaughtUp(since, since + timedelta(minutes=9))
    await bus.publish(js, subjects.ALERT_CRM_CAUGHT_UP, caught_up, "caught-up-1")
    await telegram.wait_message(admin.id, "догнала: всё записано (отставала с 09:30", 20)


WORDS = {
    "ru": {
        "catalog": "Каталог",
        "add": "В корзину",
        "cart": "Корзина",
        "checkout": "Оформить",
        "name": "обращаться",
        "phone": "телефон",
        "address": "Куда доставить",
        "comment": "комментарий",
        "confirm": "Подтвердить",
    },
    "en": {
        "catalog": "Catalog",
        "add": "Add to cart",
        "cart": "🛒 Cart",
        "checkout": "Check out",
        "name": "your name",
        "phone": "phone",
        "address": "Where should we deliver",
        "comment": "Anything to add",
        "confirm": "Confirm",
    },
}


# One step of a customer's way to the summary; generous: seen once at over 10 s on a loaded CI run
# (a tap answered late; not yet explained -- see the issue notes).
STEP = 20.0


async def _to_summary(telegram: FakeTelegram, user: User, product: str, plus: int = 0) -> int:
    """Put `product` in the cart (plus `plus` more) and fill the checkout form; the summary's id."""
    w = WORDS["en" if (user.language_code or "").startswith("en") else "ru"]
    await telegram.send_command(user, "/start")
    await telegram.wait_message(user.id, "Тестовая лавка", STEP)
    await telegram.tap(user, w["catalog"])
    await telegram.wait_message(user.id, lambda m: "Goods" in str(m.get("reply_markup")), STEP)
    await telegram.tap(user, "Goods")
    await telegram.wait_message(user.id, lambda m: product in str(m.get("reply_markup")), STEP)
    await telegram.tap(user, product)
    card = await telegram.wait_message(user.id, "₽", STEP)
    for n in range(plus):
        await telegram.tap(user, "➕", card["message_id"])
        await telegram.wait_message(user.id, _shows(f"'{n + 2}'"))
    tap = await telegram.tap(user, w["add"])
    await telegram.wait_answer(tap["id"])
    await telegram.tap(user, w["cart"])
    await telegram.wait_message(user.id, _shows(w["checkout"]), STEP)
    await telegram.tap(user, w["checkout"])
    last = (await telegram.wait_message(user.id, w["name"], STEP))["message_id"]
    for answer, question in (
        (user.first_name, w["phone"]),
        ("+7 912 345-67-89", w["address"]),
        ("Москва, ул. Ленина, д. 5", w["comment"]),
        ("-", w["confirm"]),
    ):
        await telegram.send_text(user, answer)
        last = (await telegram.wait_message(user.id, question, STEP, after=last))["message_id"]
    return int(last)


def _shows(text: str) -> Callable[[dict[str, Any]], bool]:
    """A message whose buttons show `text`."""
    return lambda message: text in str(message.get("reply_markup"))


def _has_pay_button(message: dict[str, Any]) -> bool:
    return "'url'" in str(message.get("reply_markup"))


async def test_out_of_stock_with_a_one_tap_fix_and_a_double_tapped_confirm(
    nats_url: str,
    js: JetStreamContext,
    services: Start,
    catalog_file: Path,
    telegram: FakeTelegram,
    yookassa: FakeYooKassa,
) -> None:
    admin = telegram.user("Админ")
    await telegram.send_command(admin, "/start")
    await _shop(services, nats_url, catalog_file, js, telegram, yookassa, admin)
    first, second = telegram.user("Первый"), telegram.user("Второй")
    # Both want 7 of the 10 "The last one"; the first confirms first (twice: one order).
    summaries = await asyncio.gather(
        *(_to_summary(telegram, u, "The last one", plus=6) for u in (first, second))
    )
    await telegram.tap(first, "Подтвердить", summaries[0])
    await telegram.tap(first, "Подтвердить", summaries[0])
    await telegram.wait_message(first.id, _has_pay_button, 20)
    assert len(yookassa.payments) == 1, "a double tap placed one order"

    await telegram.tap(second, "Подтвердить", summaries[1])
    answer = await telegram.wait_message(second.id, "осталось 3", 20)
    assert "The last one" in message_text(answer)
    await telegram.tap(second, "3", answer["message_id"])  # "reduce to 3"
    fixed = await telegram.wait_message(second.id, "Подтвердить", after=answer["message_id"])
    await telegram.tap(second, "Подтвердить", fixed["message_id"])
    await telegram.wait_message(second.id, _has_pay_button, 20)
    assert len(yookassa.payments) == 2


async def test_bot_restarted_mid_checkout_and_bad_input(
    nats_url: str,
    js: JetStreamContext,
    services: Start,
    catalog_file: Path,
    telegram: FakeTelegram,
    yookassa: FakeYooKassa,
) -> None:
    admin = telegram.user("Админ")
    await telegram.send_command(admin, "/start")
    bot = await _shop(services, nats_url, catalog_file, js, telegram, yookassa, admin)
    boris = telegram.user("Борис")
    await telegram.send_command(boris, "/start")
    await telegram.wait_message(boris.id, "Тестовая лавка")
    await telegram.tap(boris, "Каталог")
    await telegram.wait_message(boris.id, lambda m: "Goods" in str(m.get("reply_markup")))
    await telegram.tap(boris, "Goods")
    await telegram.wait_message(boris.id, lambda m: "A few" in str(m.get("reply_markup")))
    await telegram.tap(boris, "A few")
    await telegram.wait_message(boris.id, "990")
    tap = await telegram.tap(boris, "В корзину")
    await telegram.wait_answer(tap["id"])
    await telegram.tap(boris, "Корзина")
    await telegram.wait_message(boris.id, "Итого")
    await telegram.tap(boris, "Оформить")
    last = (await telegram.wait_message(boris.id, "обращаться"))["message_id"]
    await telegram.send_text(boris, "Борис")
    last = (await telegram.wait_message(boris.id, "телефон", after=last))["message_id"]

    bot.kill()
    bot.start()
    # Mid-checkout, after the restart: a sticker, a command, someone else's contact, then his.
    await telegram.send_sticker(boris)
    last = (await telegram.wait_message(boris.id, after=last, timeout=30))["message_id"]
    await telegram.send_command(boris, "/catalog")
    last = (await telegram.wait_message(boris.id, "/cancel", after=last))["message_id"]
    await telegram.send_contact(boris, "+79990001122", user_id=boris.id + 1)
    last = (await telegram.wait_message(boris.id, "другого человека", after=last))["message_id"]
    await telegram.send_contact(boris, "79123456789")
    last = (await telegram.wait_message(boris.id, "Куда доставить", after=last))["message_id"]
    await telegram.send_text(boris, "x" * 5000)  # far too long
    last = (await telegram.wait_message(boris.id, after=last))["message_id"]
    await telegram.send_text(boris, "Москва, ул. Ленина, д. 5")
    last = (await telegram.wait_message(boris.id, "комментарий", after=last))["message_id"]
    # A forged button, then a stale one: a toast, nothing else changes.
    forged = await telegram.tap_data(boris, "p:NO-SUCH-SKU:1:0")
    assert (await telegram.wait_answer(forged["id"]))["text"]
    garbage = await telegram.tap_data(boris, "zz:garbage")
    assert (await telegram.wait_answer(garbage["id"]))["text"]
    await telegram.send_text(boris, "-")
    await telegram.wait_message(boris.id, "+7 912 345-67-89", after=last)


async def test_reminder_then_expiry_and_a_429_storm_loses_nothing(
    nats_url: str,
    js: JetStreamContext,
    services: Start,
    catalog_file: Path,
    telegram: FakeTelegram,
    yookassa: FakeYooKassa,
) -> None:
    admin = telegram.user("Админ")
    await telegram.send_command(admin, "/start")
    bot_port = free_port()
    await _shop(
        services,
        nats_url,
        catalog_file,
        js,
        telegram,
        yookassa,
        admin,
        reservation_ttl=6,
        reminder_before=4,
        bot_http_port=bot_port,
    )
    late, quick = telegram.user("Опоздавший"), telegram.user("Быстрый")
    summaries = await asyncio.gather(*(_to_summary(telegram, u, "A few") for u in (late, quick)))
    await telegram.tap(late, "Подтвердить", summaries[0])
    await telegram.wait_message(late.id, _has_pay_button, 20)
    reminder = await telegram.wait_message(late.id, "⏰", 20)
    assert _has_pay_button(reminder), "the reminder has the Pay button again"
    await telegram.wait_message(late.id, "Время на оплату", 20)

    await telegram.tap(quick, "Подтвердить", summaries[1])
    pay = await telegram.wait_message(quick.id, _has_pay_button, 20)
    url = next(b["url"] for row in telegram.buttons(quick.id, pay["message_id"]) for b in row)
    telegram.flood(4, retry_after=1)  # Telegram says "too many requests" to everything for 4 s
    await yookassa.pay(url.rsplit("/", 1)[1])
    await telegram.wait_message(quick.id, "Оплата получена", 30)
    await telegram.wait_message(admin.id, "Быстрый", 30)
    assert telegram.throttled > 0, "the storm happened"
    paid = [m for m in telegram.sent(quick.id) if "Оплата получена" in message_text(m)]
    orders = [m for m in telegram.sent(admin.id) if "Быстрый" in message_text(m)]
    assert len(paid) == 1 and len(orders) == 1, "each told once"
    # What an operator sees of it on the bot's /metrics (polling mode: health and metrics alone
    # on BOT_HTTP_PORT).
    assert await metric(bot_port, "shop_orders_placed_total") == 2
    assert (await metric(bot_port, "shop_telegram_429_total") or 0) > 0
    assert (await metric(bot_port, "shop_telegram_sends_total", method="SendMessage") or 0) > 0
    assert (await metric(bot_port, "shop_telegram_send_seconds_count") or 0) > 0
    status, body = await http_get(bot_port, "/healthz")
    assert status == 200 and '"consuming": true' in body, body
    # The reminder loop reads only the orders awaiting payment: reminded, expired or paid, each
    # has left that list (and a shop's thousands of old orders are never in it).
    assert await kv.keys(js, subjects.BOT_AWAITING_BUCKET) == []


async def test_200_customers_race_for_the_last_5(
    nats_url: str,
    js: JetStreamContext,
    services: Start,
    tmp_path: Path,
    telegram: FakeTelegram,
    yookassa: FakeYooKassa,
) -> None:
    catalog = tmp_path / "race.yaml"
    catalog.write_text(
        "categories:\n  - id: goods\n    title: Goods\n    products:\n"
        "      - {sku: RARE, title: The rare one, price: 500, stock: 5}\n"
        "      - {sku: LAST, title: The last one, price: 100, stock: 10}\n"
    )
    admin = telegram.user("Админ")
    await telegram.send_command(admin, "/start")
    # Telegram's overall limit is for real chats; this fake has none, and the race is the point.
    await _shop(services, nats_url, catalog, js, telegram, yookassa, admin, telegram_max_rate=1000)
    customers = [telegram.user(f"Покупатель{i}") for i in range(200)]
    summaries = await asyncio.gather(*(_to_summary(telegram, c, "The rare one") for c in customers))
    await asyncio.gather(
        *(telegram.tap(c, "Подтвердить", s) for c, s in zip(customers, summaries, strict=True))
    )

    def outcome(customer: User) -> str | None:
        for message in telegram.sent(customer.id):
            if _has_pay_button(message):
                return "pay"
            if "Не получилось оформить" in message_text(message):
                return "out of stock"
        return None

    await telegram.wait_for(
        lambda: all(outcome(c) for c in customers), timeout=90, what="every customer answered"
    )
    results = [outcome(c) for c in customers]
    assert results.count("pay") == 5
    assert results.count("out of stock") == 195
    rejected = [c for c, r in zip(customers, results, strict=True) if r == "out of stock"]
    for customer in rejected:
        text = next(
            message_text(m)
            for m in telegram.sent(customer.id)
            if "Не получилось оформить" in message_text(m)
        )
        assert "The rare one" in text, text


async def test_webhook_mode_checks_the_secret_token(
    nats_url: str,
    js: JetStreamContext,
    services: Start,
    catalog_file: Path,
    telegram: FakeTelegram,
    yookassa: FakeYooKassa,
) -> None:
    admin = telegram.user("Админ")
    port = free_port()
    url = f"http://127.0.0.1:{port}/telegram/webhook"
    services("inventory", nats_url, catalog_file=catalog_file)
    services(
        "bot",
        nats_url,
        bot_token=telegram.token,
        telegram_api_url=telegram.url,
        bot_mode="webhook",
        bot_http_port=port,
        webhook_url=url,
        webhook_secret="s3cret-token",
        shop_name="Тестовая лавка",
    )
    await wait_until(lambda: inventory_ready(js), what="inventory ready")
    await wait_until(lambda: telegram.webhook_url == url, what="the webhook set")
    await telegram.send_command(admin, "/start")  # POSTed to the bot with the secret header
    await telegram.wait_message(admin.id, "Тестовая лавка")
    forged = {
        "update_id": 1,
        "message": {
            "message_id": 1,
            "date": 0,
            "chat": {"id": 1, "type": "private"},
            "text": "/start",
        },
    }
    async with aiohttp.ClientSession() as http:
        for headers in ({}, {"X-Telegram-Bot-Api-Secret-Token": "wrong"}):
            async with http.post(url, json=forged, headers=headers) as reply:
                assert reply.status == 401

    # Health and metrics on the webhook's listener.
    async def healthy() -> bool:  # healthy once its consumers pull, a moment after it starts
        return (await http_get(port, "/healthz"))[0] == 200

    await wait_until(healthy, 15, "the bot healthy")
    status, body = await http_get(port, "/healthz")
    assert status == 200 and '"mode": "webhook"' in body, body
    assert (await metric(port, "shop_telegram_sends_total", method="SendMessage") or 0) > 0


async def test_my_orders_stock_for_admins_only_and_english(
    nats_url: str,
    js: JetStreamContext,
    services: Start,
    catalog_file: Path,
    telegram: FakeTelegram,
    yookassa: FakeYooKassa,
) -> None:
    admin = telegram.user("Админ")
    await telegram.send_command(admin, "/start")
    await _shop(services, nats_url, catalog_file, js, telegram, yookassa, admin)
    vera = telegram.user("Вера")
    john = telegram.user("John", language_code="en")

    async def vera_orders_again_and_is_refunded() -> None:
        summary = await _to_summary(telegram, vera, "A few")
        await telegram.tap(vera, "Подтвердить", summary)
        pay = await telegram.wait_message(vera.id, _has_pay_button, 20)
        url = next(b["url"] for row in telegram.buttons(vera.id, pay["message_id"]) for b in row)
        await yookassa.pay(url.rsplit("/", 1)[1])
        await telegram.wait_message(vera.id, "Оплата получена", 20)

        # The customer is told before the bot records that she was (a crash in between tells
        # twice rather than never), so she may have to ask again to see the order paid.
        listings: list[dict[str, Any]] = []

        async def listed_paid() -> bool:
            last = telegram.last(vera.id)["message_id"]
            await telegram.send_command(vera, "/orders")
            listings.append(await telegram.wait_message(vera.id, "Мои заказы", after=last))
            return "оплачен" in str(listings[-1].get("reply_markup"))

        await wait_until(listed_paid, what="My orders listing the order as paid")
        await telegram.tap(vera, "оплачен", listings[-1]["message_id"])
        await telegram.wait_message(vera.id, "Статус: оплачен")

        await telegram.send_command(admin, "/stock")
        table = await telegram.wait_message(admin.id, "FEW")
        assert "50 / 0 / 49" not in message_text(table) and "49 / 0 / 49" in message_text(table)
        last = telegram.last(vera.id)["message_id"]
        await telegram.send_command(vera, "/stock")  # not an admin: an unknown command
        reply = await telegram.wait_message(vera.id, after=last)
        assert "FEW" not in message_text(reply)

        # Her next order offers the details she left last time.
        await telegram.send_command(vera, "/cart")
        await telegram.wait_message(vera.id, "Корзина")
        await telegram.tap(vera, "Каталог")
        await telegram.wait_message(vera.id, lambda m: "Goods" in str(m.get("reply_markup")))
        await telegram.tap(vera, "Goods")
        await telegram.wait_message(vera.id, lambda m: "A few" in str(m.get("reply_markup")))
        await telegram.tap(vera, "A few")
        await telegram.wait_message(vera.id, _shows("В корзину"))
        await telegram.wait_answer((await telegram.tap(vera, "В корзину"))["id"])
        await telegram.tap(vera, "Корзина")
        await telegram.wait_message(vera.id, _shows("Оформить"))
        await telegram.tap(vera, "Оформить")
        offer = await telegram.wait_message(vera.id, "те же данные")
        assert "Ленина" in message_text(offer)
        await telegram.tap(vera, "Да, те же", offer["message_id"])
        await telegram.wait_message(vera.id, "комментарий", after=offer["message_id"])

        # A refund of one of the paid order's lines (the admin flow's command): Vera is told.
        order_id = next(
            message_text(m).split("№", 1)[1].split()[0]
            for m in telegram.sent(vera.id)
            if "Оплата получена" in message_text(m)
        ).strip(":.,")
        refund = RefundRequested("back-1", order_id, "returned", (OrderLine("FEW", 1, 99000),))
        await bus.publish(
            js,
            subjects.payment_fact(subjects.PaymentKind.REFUND_REQUESTED, order_id),
            refund,
            msg_id="back-1",
        )
        await telegram.wait_message(vera.id, "↩️", 20)

    async def john_in_english() -> None:
        # Plenty, not A few: Vera's /stock table reads the A few line meanwhile.
        summary = await _to_summary(telegram, john, "Plenty")
        assert "Please check your order" in message_text(telegram.last(john.id))
        await telegram.tap(john, "Confirm", summary)
        pay = await telegram.wait_message(john.id, _has_pay_button, 20)
        assert "Pay" in str(pay.get("reply_markup"))

    await asyncio.gather(vera_orders_again_and_is_refunded(), john_in_english())


async def test_two_replicas_behind_one_webhook_share_the_checkout(
    nats_url: str,
    js: JetStreamContext,
    services: Start,
    catalog_file: Path,
    telegram: FakeTelegram,
    yookassa: FakeYooKassa,
) -> None:
    """Telegram posts to a balancer that alternates between two bot processes: the customer's
    cart and form live in NATS KV, so each step works whichever replica takes it."""
    ports = [free_port(), free_port()]
    turn = [0]

    async def balance(request: web.Request) -> web.Response:
        turn[0] += 1
        port = ports[turn[0] % 2]
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"http://127.0.0.1:{port}/telegram/webhook",
                data=await request.read(),
                headers={k: v for k, v in request.headers.items() if k.lower() != "host"},
            ) as reply,
        ):
            return web.Response(status=reply.status, body=await reply.read())

    app = web.Application()
    app.router.add_post("/telegram/webhook", balance)
    runner = web.AppRunner(app)
    await runner.setup()
    front = free_port()
    await web.TCPSite(runner, "127.0.0.1", front).start()
    try:
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
        for bot_port in ports:
            services(
                "bot",
                nats_url,
                bot_token=telegram.token,
                telegram_api_url=telegram.url,
                bot_mode="webhook",
                bot_http_port=bot_port,
                webhook_url=f"http://127.0.0.1:{front}/telegram/webhook",
                webhook_secret="shared-secret",
                shop_name="Тестовая лавка",
            )
        await wait_until(lambda: inventory_ready(js), what="inventory ready")
        await wait_until(lambda: telegram.webhook_url is not None, what="the webhook set")
        zoya = telegram.user("Зоя")
        summary = await _to_summary(telegram, zoya, "A few")
        await telegram.tap(zoya, "Подтвердить", summary)
        await telegram.wait_message(zoya.id, _has_pay_button, 20)
        assert turn[0] >= 10, "the steps went to both replicas"
    finally:
        await runner.cleanup()


def _order_number(message: dict[str, Any]) -> str:
    return message_text(message).split("№", 1)[1].split()[0].strip(":.,")


async def test_late_payments_are_told_truthfully(
    nats_url: str,
    js: JetStreamContext,
    services: Start,
    catalog_file: Path,
    telegram: FakeTelegram,
    yookassa: FakeYooKassa,
) -> None:
    """Two customers pay after their holds ended. The first one's goods are still there: paid,
    and told it was late; the second one's were sold meanwhile: told the money is coming back,
    then that it is back, and never "paid". The admin chat hears of both, each once."""
    admin = telegram.user("Админ")
    await telegram.send_command(admin, "/start")
    await _shop(
        services,
        nats_url,
        catalog_file,
        js,
        telegram,
        yookassa,
        admin,
        reservation_ttl=5,
        reminder_before=2,
    )
    lucky, unlucky, quick = (telegram.user(n) for n in ("Везучий", "Невезучий", "Быстрый"))
    *summaries, quicks = await asyncio.gather(
        _to_summary(telegram, lucky, "A few"),
        _to_summary(telegram, unlucky, "The last one", plus=9),  # all ten of them
        _to_summary(telegram, quick, "The last one"),
    )
    payments, numbers = {}, {}
    for user, summary in zip((lucky, unlucky), summaries, strict=True):
        await telegram.tap(user, "Подтвердить", summary)
        pay = await telegram.wait_message(user.id, _has_pay_button, 20)
        url = next(b["url"] for row in telegram.buttons(user.id, pay["message_id"]) for b in row)
        payments[user.id], numbers[user.id] = url.rsplit("/", 1)[1], _order_number(pay)
    for user in (lucky, unlucky):
        await telegram.wait_message(user.id, "Время на оплату", 20)

    # Meanwhile one of "The last one" is sold: nine are left, the late ten cannot be had.
    await telegram.tap(quick, "Подтвердить", quicks)
    pay = await telegram.wait_message(quick.id, _has_pay_button, 20)
    url = next(b["url"] for row in telegram.buttons(quick.id, pay["message_id"]) for b in row)
    await yookassa.pay(url.rsplit("/", 1)[1])
    await telegram.wait_message(quick.id, "Оплата получена", 20)

    await yookassa.pay(payments[lucky.id])
    paid = await telegram.wait_message(lucky.id, "Оплата получена", 20)
    assert "после окончания резерва" in message_text(paid), "told it was late, and is theirs"
    card = await telegram.wait_message(admin.id, "Везучий", 20)
    assert "Новый оплаченный заказ" in message_text(card)
    assert "после окончания резерва" in message_text(card)

    await yookassa.pay(payments[unlucky.id])
    gone = await telegram.wait_message(unlucky.id, "успел купить кто-то другой", 20)
    assert "Деньги возвращаются" in message_text(gone)
    back = await telegram.wait_message(unlucky.id, "возвращена полностью", 20)
    assert back["message_id"] > gone["message_id"]
    line = await telegram.wait_message(admin.id, f"№{numbers[unlucky.id]}", 20)
    assert "возвращаются покупателю автоматически" in message_text(line)

    # My orders, in the lifecycle's words.
    for user, word in ((lucky, "оплачен"), (unlucky, "отменён")):
        last = telegram.last(user.id)["message_id"]
        await telegram.send_command(user, "/orders")
        listing = await telegram.wait_message(user.id, "Мои заказы", after=last)
        assert f"№{numbers[user.id]}" in str(listing.get("reply_markup"))
        assert f"· {word}" in str(listing.get("reply_markup")), listing

    def said(user: User, text: str) -> int:
        return sum(text in message_text(m) for m in telegram.sent(user.id))

    assert said(lucky, "Оплата получена") == 1 and said(admin, "Везучий") == 1
    assert said(unlucky, "Оплата получена") == 0, "never told paid for goods it cannot have"
    assert said(admin, "Невезучий") == 0, "no paid order's card for it"
    assert said(unlucky, "возвращена полностью") == 1 and said(admin, "автоматически") == 1
