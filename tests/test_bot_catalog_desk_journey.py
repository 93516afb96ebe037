"""The admin chat as a catalog desk, driven like a person through the fake Telegram with the real
inventory and bot on a real nats-server: /catalog, a double-tapped restock applied once, a
write-off beyond what is available refused with its numbers, a typed price, a product hidden
from customers, and a new product with a photo that customers then see."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from nats.aio.client import Client
from nats.js import JetStreamContext

from libs.catalog_view import CatalogView
from services.bot import callbacks as cb
from tests.fakes.telegram import FakeTelegram, User, message_text
from tests.fakes.yookassa import FakeYooKassa
from tests.harness import ServiceProcess, stock_level, wait_until
from tests.test_bot import STEP, _shop, _shows

Start = Callable[..., ServiceProcess]


def _data(telegram: FakeTelegram, user: User, message_id: int, label: str) -> str:
    """The callback data of the button labelled `label` on a message."""
    for row in telegram.buttons(user.id, message_id):
        for button in row:
            if button["text"] == label:
                return str(button["callback_data"])
    raise AssertionError(f"no button {label!r} on message {message_id}")


async def _on_hand(js: JetStreamContext, sku: str, expected: int) -> None:
    async def reached() -> bool:
        level = await stock_level(js, sku)
        return level is not None and level.on_hand == expected

    await wait_until(reached, STEP, f"{sku} on hand {expected}")


async def _category_list(telegram: FakeTelegram, customer: User) -> list[str]:
    """What a customer sees in the Goods category now (the buttons' texts)."""
    await telegram.send_command(customer, "/start")
    menu = await telegram.wait_message(customer.id, "Тестовая лавка", STEP)
    await telegram.tap(customer, "Каталог", menu["message_id"])
    await telegram.wait_message(customer.id, _shows("Goods"), STEP, after=menu["message_id"] - 1)
    await telegram.tap(customer, "Goods")
    shown = await telegram.wait_message(
        customer.id, _shows("Plenty"), STEP, after=menu["message_id"] - 1
    )
    return [b["text"] for row in telegram.buttons(customer.id, shown["message_id"]) for b in row]


async def test_the_catalog_desk_end_to_end(
    nats_url: str,
    nc: Client,
    js: JetStreamContext,
    services: Start,
    catalog_file: Path,
    telegram: FakeTelegram,
    yookassa: FakeYooKassa,
) -> None:
    admin = telegram.user("Админ")
    await telegram.send_command(admin, "/start")
    await _shop(services, nats_url, catalog_file, js, telegram, yookassa, admin)
    customer = telegram.user("Анна")
    catalog = await CatalogView.open(nc, js)
    try:
        # /catalog: every product with on hand / available.
        await telegram.send_command(admin, "/catalog")
        listing = await telegram.wait_message(admin.id, "Товары: 3", STEP)
        assert "A few · 990 ₽ · 50/50" in str(listing["reply_markup"])
        await telegram.tap(admin, "A few", listing["message_id"])
        card = await telegram.wait_message(admin.id, "доступно: 50", STEP)

        # +5 tapped twice on the same card (the same button's data): restocked once.
        plus_five = _data(telegram, admin, card["message_id"], "+5")
        taps = [await telegram.tap_data(admin, plus_five, card["message_id"]) for _ in range(2)]
        answers = sorted([(await telegram.wait_answer(tap["id"]))["text"] for tap in taps])
        assert answers == ["Пополнено: +5 шт.", "Это уже сделано."]
        await _on_hand(js, "FEW", 55)
        await telegram.wait_message(admin.id, "доступно: 55", STEP)  # the card, edited

        # A write-off beyond what is available: refused with the numbers, the question stays.
        await telegram.tap(admin, "Списать", card["message_id"])
        asked = await telegram.wait_message(admin.id, "сколько штук списать", STEP)
        await telegram.send_text(admin, "60")
        refused = await telegram.wait_message(
            admin.id, "Списать 60 шт. нельзя", STEP, after=asked["message_id"]
        )
        assert "доступно только 55" in message_text(refused)
        await telegram.send_text(admin, "5")
        await telegram.wait_message(admin.id, "Списано: 5 шт.", STEP, after=refused["message_id"])
        await _on_hand(js, "FEW", 50)

        # A typed price: a bad one gets a hint, then the new one is the catalog's.
        card = await telegram.wait_message(
            admin.id, "доступно: 50", STEP, after=asked["message_id"]
        )
        await telegram.tap(admin, "Цена", card["message_id"])
        asked = await telegram.wait_message(admin.id, "Пришлите новую цену", STEP)
        await telegram.send_text(admin, "12.345")
        await telegram.wait_message(admin.id, "не похоже на цену", STEP, after=asked["message_id"])
        await telegram.send_text(admin, "1290,50")
        await telegram.wait_message(admin.id, "Новая цена: 1\u00a0290.50 ₽", STEP)
        await wait_until(lambda: getattr(catalog.product("FEW"), "price", 0) == 129_050, STEP)

        # Hidden: gone from the customers' category list, still on the admins' /catalog.
        card = await telegram.wait_message(
            admin.id, "Цена: 1\u00a0290.50 ₽", STEP, after=asked["message_id"]
        )
        tap = await telegram.tap(admin, "Скрыть", card["message_id"])
        assert (await telegram.wait_answer(tap["id"]))["text"] == "Товар скрыт от покупателей"
        await wait_until(lambda: getattr(catalog.product("FEW"), "visible", True) is False, STEP)
        seen = await _category_list(telegram, customer)
        assert not any("A few" in label for label in seen)
        # A customer forging the desk's button: a toast, and the product stays hidden.
        forged = await telegram.tap_data(customer, cb.CatalogShown(sku="FEW", visible=True).pack())
        assert "администраторы" in (await telegram.wait_answer(forged["id"]))["text"]
        await telegram.send_command(admin, "/catalog")
        await telegram.wait_message(admin.id, _shows("🙈 A few"), STEP, after=card["message_id"])

        # A new product: category by button, title, price, stock, no description, a photo.
        await telegram.tap(admin, "Добавить товар")
        question = await telegram.wait_message(admin.id, "В какой раздел", STEP)
        await telegram.tap(admin, "Goods", question["message_id"])
        question = await telegram.wait_message(admin.id, "Название товара?", STEP)
        for answer, next_question in (
            ("Чай зелёный", "Цена в рублях"),
            ("250", "Сколько штук"),
            ("7", "Описание"),
        ):
            await telegram.send_text(admin, answer)
            question = await telegram.wait_message(
                admin.id, next_question, STEP, after=question["message_id"]
            )
        await telegram.tap(admin, "Пропустить", question["message_id"])
        asked = await telegram.wait_message(admin.id, "Фото товара", STEP)
        photo = await telegram.send_photo(admin)
        added = await telegram.wait_message(admin.id, "добавлен", STEP, after=asked["message_id"])
        sku = next(w for w in message_text(added).split() if w.startswith("CHAY-ZELENYY-"))
        sku = sku.rstrip(",")
        await _on_hand(js, sku, 7)
        made = catalog.product(sku)
        assert made is not None and made.price == 25_000 and made.category_id == "goods"
        assert made.photo_url == photo["photo"][-1]["file_id"]

        seen = await _category_list(telegram, customer)
        assert "Чай зелёный · 250 ₽" in seen
        still_hidden = catalog.product("FEW")
        assert still_hidden is not None and not still_hidden.visible
    finally:
        await catalog.close()
