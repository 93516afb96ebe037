"""After paid, through the fake Telegram with the real inventory, payments (a fake YooKassa) and
bot: the admin chat as an order desk and the customer's own cancellation. What each step says
and shows is unit-tested apart (tests/test_bot_desk.py); these prove the wiring."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nats.js import JetStreamContext

from libs import subjects
from libs.contracts import OrderFulfilment
from shop.embedded_nats import free_port
from tests.fakes.telegram import FakeTelegram, User, message_text
from tests.fakes.yookassa import FakeYooKassa
from tests.harness import Facts, ServiceProcess, inventory_ready, stock_level, wait_until
from tests.test_bot import Start, _has_pay_button, _order_number, _shows, _to_summary

STEP = 20.0


async def _shop(
    services: Start,
    nats_url: str,
    catalog_file: Path,
    js: JetStreamContext,
    telegram: FakeTelegram,
    yookassa: FakeYooKassa,
    admins: list[User],
) -> ServiceProcess:
    """The shop with the first admin's chat as the admin chat and all of them admins."""
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
        admin_chat_id=admins[0].id,
        admin_user_ids=",".join(str(a.id) for a in admins),
        shop_name="Тестовая лавка",
    )
    await wait_until(lambda: inventory_ready(js), what="inventory ready")
    await wait_until(lambda: bool(telegram.calls_to("getUpdates")), what="the bot polling")
    return bot


async def _paid(
    telegram: FakeTelegram, yookassa: FakeYooKassa, user: User, admin: User, plus: int = 0
) -> tuple[str, str, int]:
    """`user` buys "A few" (1 + plus) and pays: the order's number, its payment and its card's
    message id in the admin chat."""
    summary = await _to_summary(telegram, user, "A few", plus=plus)
    await telegram.tap(user, "Подтвердить", summary)
    pay = await telegram.wait_message(user.id, _has_pay_button, STEP)
    url = next(b["url"] for row in telegram.buttons(user.id, pay["message_id"]) for b in row)
    payment_id = url.rsplit("/", 1)[1]
    await yookassa.pay(payment_id)
    await telegram.wait_message(user.id, "Оплата получена", STEP)
    card = await telegram.wait_message(admin.id, payment_id, STEP)
    return _order_number(pay), payment_id, int(card["message_id"])


def _labels(message: dict[str, Any]) -> list[str]:
    rows = message.get("reply_markup", {}).get("inline_keyboard", [])
    return [button["text"] for row in rows for button in row]


async def _available(js: JetStreamContext, sku: str = "FEW") -> int:
    level = await stock_level(js, sku)
    assert level is not None
    return level.available


async def test_paid_to_delivered_from_the_admin_chat(
    nats_url: str,
    js: JetStreamContext,
    services: Start,
    catalog_file: Path,
    telegram: FakeTelegram,
    yookassa: FakeYooKassa,
) -> None:
    """Packed (two admins pressing at once: one change; a stranger's press: a toast), shipped
    with a Почта России number (a wrong one first, and the bot restarted mid-dialog), delivered;
    the customer told with the tracking link, the card edited in place all along."""
    admin, helper, stranger = (telegram.user(n) for n in ("Админ", "Помощник", "Чужой"))
    await telegram.send_command(admin, "/start")
    steps = Facts(subjects.ORDERS_FULFILMENT_ALL, OrderFulfilment)
    await steps.start(js)
    bot = await _shop(services, nats_url, catalog_file, js, telegram, yookassa, [admin, helper])
    anna = telegram.user("Анна")
    number, _, card_id = await _paid(telegram, yookassa, anna, admin)
    card = telegram.message(admin.id, card_id)
    assert "Статус: оплачен" in message_text(card)
    assert {"📦 Собран", "❌ Отменить с возвратом денег", "↩️ Вернуть позиции"} <= set(_labels(card))
    menu = [c["command"] for c in telegram.commands({"type": "chat", "chat_id": admin.id})]
    assert {"orders", "order", "stock"} <= set(menu)
    assert "order" not in [c["command"] for c in telegram.commands()], "admins only"

    tap = await telegram.tap(stranger, "Собран", card_id, chat=admin.id)
    assert "администратор" in (await telegram.wait_answer(tap["id"]))["text"]
    assert steps.count == 0, "a stranger's press changes nothing"

    taps = [await telegram.tap(a, "Собран", card_id, chat=admin.id) for a in (admin, helper)]
    for tap in taps:
        await telegram.wait_answer(tap["id"], STEP)
    await telegram.wait_for(
        lambda: "Статус: собран" in message_text(telegram.message(admin.id, card_id)),
        STEP,
        "the card edited in place",
    )
    assert steps.count == 1 and len(steps.by_order[number][0].history) == 1, "one change"

    await telegram.send_command(admin, "/orders")
    listing = await telegram.wait_message(admin.id, "Открытые заказы: 1", STEP)
    assert "собран: 1" in message_text(listing) and number in str(listing["reply_markup"])

    await telegram.tap(admin, "Отправлен", card_id, chat=admin.id)
    ask = await telegram.wait_message(admin.id, "трек-номер", STEP, after=listing["message_id"])
    await telegram.send_text(admin, "не помню")
    hint = await telegram.wait_message(admin.id, "не похоже", STEP, after=ask["message_id"])
    assert steps.count == 1, "a malformed number saves nothing"

    bot.kill()  # mid-dialog: the admin's place in it is kept in NATS KV
    bot.start()
    await telegram.send_text(admin, "RA 123456789 RU")
    await telegram.wait_message(admin.id, "Почта России", 30, after=hint["message_id"])
    told = await telegram.wait_message(anna.id, "отправлен", STEP)
    assert "Почта России, RA123456789RU" in message_text(told)
    links = [b.get("url") for row in telegram.buttons(anna.id, told["message_id"]) for b in row]
    assert links == ["https://www.pochta.ru/tracking?barcode=RA123456789RU"]
    await telegram.wait_for(
        lambda: "Статус: отправлен" in message_text(telegram.message(admin.id, card_id)),
        STEP,
        "the card edited in place",
    )
    history = message_text(telegram.message(admin.id, card_id))
    assert "собран — Админ" in history or "собран — Помощник" in history
    assert "отправлен (Почта России, RA123456789RU) — Админ" in history

    await telegram.tap(admin, "Вручён", card_id, chat=admin.id)
    await telegram.wait_message(anna.id, "Спасибо за покупку", STEP)
    await telegram.wait_for(
        lambda: "Статус: вручён" in message_text(telegram.message(admin.id, card_id)),
        STEP,
        "the card edited in place",
    )
    assert "Вручён" not in str(_labels(telegram.message(admin.id, card_id)))
    assert [len(s.history) for s in steps.by_order[number]] == [1, 2, 3]


async def test_the_customer_cancels_before_packing_and_the_shop_after(
    nats_url: str,
    js: JetStreamContext,
    services: Start,
    catalog_file: Path,
    telegram: FakeTelegram,
    yookassa: FakeYooKassa,
) -> None:
    """Boris cancels his paid order from My orders: the money and the stock come back, he and
    the admin chat are told. Gleb's order is packed: no Cancel any more (a forged press is
    refused); the shop cancels it and gives the money back."""
    admin = telegram.user("Админ")
    await telegram.send_command(admin, "/start")
    await _shop(services, nats_url, catalog_file, js, telegram, yookassa, [admin])
    boris = telegram.user("Борис")
    first, first_payment, _ = await _paid(telegram, yookassa, boris, admin)
    assert await _available(js) == 49

    last = telegram.last(boris.id)["message_id"]
    await telegram.send_command(boris, "/orders")
    await telegram.wait_message(boris.id, "Мои заказы", STEP, after=last)
    await telegram.tap(boris, f"№{first}")
    card = await telegram.wait_message(boris.id, _shows("Отменить заказ"), STEP, after=last)
    await telegram.tap(boris, "Отменить заказ", card["message_id"])
    await telegram.wait_message(boris.id, "Вернём 990", STEP, after=last)
    await telegram.tap(boris, "Да, отменить", card["message_id"])
    await telegram.wait_message(boris.id, "как вы просили", STEP)
    await telegram.wait_message(admin.id, "Покупатель отменил заказ", STEP)
    # Captured as soon as the stock was committed, or still held: refunded, or the hold cancelled.
    await wait_until(lambda: _money_back(yookassa, first_payment), what="the money back")
    await telegram.wait_message(boris.id, "возвращены: 990", STEP)
    await wait_until(lambda: _is(js, 50), what="the stock back")

    gleb = telegram.user("Глеб")  # a fresh chat: the test walks from /start
    second, second_payment, card_id = await _paid(telegram, yookassa, gleb, admin)
    await telegram.tap(admin, "Собран", card_id, chat=admin.id)
    await telegram.wait_for(
        lambda: "Статус: собран" in message_text(telegram.message(admin.id, card_id)), STEP
    )
    last = telegram.last(gleb.id)["message_id"]
    await telegram.send_command(gleb, "/orders")
    await telegram.wait_message(gleb.id, "Мои заказы", STEP, after=last)
    await telegram.tap(gleb, f"№{second}")
    card = await telegram.wait_message(gleb.id, "собран", STEP, after=last)
    assert "напишите магазину" in message_text(card)
    assert not any("Отменить" in label for label in _labels(card))
    forged = await telegram.tap_data(gleb, f"x:{second}:1", card["message_id"])
    assert "собран" in (await telegram.wait_answer(forged["id"]))["text"]

    await telegram.tap(admin, "Отменить с возвратом", card_id, chat=admin.id)
    await telegram.wait_for(
        lambda: "и вернуть 990" in message_text(telegram.message(admin.id, card_id)), STEP
    )
    await telegram.tap(admin, "Да, отменить", card_id, chat=admin.id)
    await telegram.wait_message(gleb.id, "Магазин отменил", STEP)
    await wait_until(lambda: _money_back(yookassa, second_payment), what="the money back")
    await wait_until(lambda: _is(js, 50), what="the stock back again")
    await telegram.wait_for(
        lambda: "Статус: отменён" in message_text(telegram.message(admin.id, card_id)), STEP
    )


async def _is(js: JetStreamContext, available: int) -> bool:
    return await _available(js) == available


def _money_back(yookassa: FakeYooKassa, payment_id: str) -> bool:
    refunded = any(r["payment_id"] == payment_id for r in yookassa.refunds.values())
    return refunded or yookassa.payments[payment_id]["status"] == "canceled"


async def test_a_partial_return_back_to_stock_then_written_off(
    nats_url: str,
    js: JetStreamContext,
    services: Start,
    catalog_file: Path,
    telegram: FakeTelegram,
    yookassa: FakeYooKassa,
) -> None:
    admin = telegram.user("Админ")
    await telegram.send_command(admin, "/start")
    await _shop(services, nats_url, catalog_file, js, telegram, yookassa, [admin])
    vera = telegram.user("Вера")
    _, _, card_id = await _paid(telegram, yookassa, vera, admin, plus=2)  # 3 × 990 ₽
    assert await _available(js) == 47

    for choice, available, refunds in (("Вернулся на склад", 48, 1), ("Списать", 48, 2)):
        await telegram.tap(admin, "Вернуть позиции", card_id, chat=admin.id)
        await telegram.wait_for(
            lambda: "Что вернуть" in message_text(telegram.message(admin.id, card_id)), STEP
        )
        await telegram.tap(admin, "+", card_id, chat=admin.id)
        await telegram.wait_for(
            lambda: "вернуть 990" in str(_labels(telegram.message(admin.id, card_id))), STEP
        )
        await telegram.tap(admin, "Далее", card_id, chat=admin.id)
        await telegram.wait_for(
            lambda: "Списать" in str(_labels(telegram.message(admin.id, card_id))), STEP
        )
        tap = await telegram.tap(admin, choice, card_id, chat=admin.id)
        await telegram.tap(admin, tap["data"], card_id, chat=admin.id)  # pressed twice: once

        def told(n: int = refunds) -> bool:
            return len([m for m in telegram.sent(vera.id) if "↩️" in message_text(m)]) >= n

        def shown(n: int = refunds) -> bool:
            return message_text(telegram.message(admin.id, card_id)).count("возврат") == n

        await telegram.wait_for(told, STEP, "the customer told of the refund")
        await telegram.wait_for(shown, STEP, "the card shows the refund")
        assert await _available(js) == available
        assert len(yookassa.refunds) == refunds
    refunds_told = [m for m in telegram.sent(vera.id) if "↩️" in message_text(m)]
    assert len(refunds_told) == 2 and all("990" in message_text(m) for m in refunds_told)

    # Then picked up at the shop: ready for pickup, then handed over, the customer told each time
    # and the card edited in place, its buttons only what is still possible (a delivered order
    # can still be returned).
    await telegram.tap(admin, "🏬 Готов к выдаче", card_id, chat=admin.id)
    await telegram.wait_message(vera.id, "готов к выдаче", STEP)
    await telegram.wait_for(
        lambda: (
            "✅ Вручён" in _labels(telegram.message(admin.id, card_id))
            and "🏬 Готов к выдаче" not in _labels(telegram.message(admin.id, card_id))
        ),
        STEP,
        "the card offers what comes after pickup",
    )
    await telegram.tap(admin, "✅ Вручён", card_id, chat=admin.id)
    await telegram.wait_message(vera.id, "вручён. Спасибо", STEP)
    await telegram.wait_for(
        lambda: (
            "вручён" in message_text(telegram.message(admin.id, card_id))
            and _labels(telegram.message(admin.id, card_id)) == ["↩️ Вернуть позиции"]
        ),
        STEP,
        "the card says delivered; only a return is left to press",
    )
