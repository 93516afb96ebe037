"""The shop window through the fake Telegram, with the real inventory: search by typing, photo
cards browsed in place, and back-in-stock notices told once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from nats.aio.client import Client
from nats.js import JetStreamContext

from libs import bus, kv, subjects
from libs.contracts import AdjustStock, AdminRequest
from tests.fakes.telegram import FakeTelegram, User, message_text
from tests.harness import ServiceProcess, inventory_ready, wait_until

Start = Callable[..., ServiceProcess]

CATALOG = """
categories:
  - id: tea
    title: Чай
    products:
      - {sku: GREEN, title: Зелёный чай, description: "Китай, листовой", price: 450, stock: 20}
      - {sku: BLACK, title: Чёрный чай, description: "Ассам, крупный лист", price: 390, stock: 20}
      - {sku: GONE, title: Старый чай, description: снят с продажи, price: 100, stock: 5,
         visible: false}
  - id: honey
    title: Мёд
    products:
      - {sku: HONEY, title: Мёд гречишный, description: Алтай, price: 700, stock: 3}
"""


async def _window(
    services: Start,
    nats_url: str,
    js: JetStreamContext,
    telegram: FakeTelegram,
    tmp_path: Path,
    catalog: str = CATALOG,
    *,
    replicas: int = 1,
) -> list[ServiceProcess]:
    """The inventory with `catalog` and `replicas` bots polling the fake Telegram (one at a time:
    the others stand by, and all of them consume the inventory's facts)."""
    path = tmp_path / "window.yaml"
    path.write_text(catalog)
    services("inventory", nats_url, catalog_file=path)
    bots = [
        services(
            "bot",
            nats_url,
            bot_token=telegram.token,
            telegram_api_url=telegram.url,
            shop_name="Тестовая лавка",
        )
        for _ in range(replicas)
    ]
    sku = "GREEN" if "GREEN" in catalog else "SOLD"
    await wait_until(lambda: inventory_ready(js, sku), what="inventory ready")
    await wait_until(lambda: bool(telegram.calls_to("getUpdates")), what="the bot polling")
    return bots


def _shows(text: str) -> Callable[[dict[str, object]], bool]:
    return lambda message: text in str(message.get("reply_markup"))


async def test_search_by_typing_outside_a_form(
    nats_url: str, js: JetStreamContext, services: Start, telegram: FakeTelegram, tmp_path: Path
) -> None:
    await _window(services, nats_url, js, telegram, tmp_path)
    vera = telegram.user("Вера")
    await telegram.send_text(vera, "ЧАЙ лист")  # case, two words, both must match
    found = await telegram.wait_message(vera.id, "Нашлось")
    names = [b["text"] for row in telegram.buttons(vera.id, found["message_id"]) for b in row]
    assert any("Зелёный чай" in n for n in names) and any("Чёрный чай" in n for n in names)
    assert not any("Старый" in n or "Мёд" in n for n in names), "hidden and unmatched left out"

    await telegram.tap(vera, "Чёрный чай")
    await telegram.wait_message(vera.id, "Ассам")
    await telegram.tap(vera, "Назад")  # back to the results, not to the category
    await telegram.wait_message(
        vera.id, lambda m: "Нашлось" in message_text(m) and "Зелёный" in str(m)
    )

    last = (await telegram.send_text(vera, "мед"))["message_id"]  # е finds ё
    await telegram.wait_message(vera.id, _shows("Мёд гречишный"), after=last)
    last = (await telegram.send_text(vera, "кофе"))["message_id"]
    nothing = await telegram.wait_message(vera.id, "ничего не нашлось", after=last)
    await telegram.tap(vera, "Каталог", nothing["message_id"])
    await telegram.wait_message(vera.id, _shows("Мёд"), after=last)
    last = (await telegram.send_command(vera, "/чай"))["message_id"]
    await telegram.wait_message(vera.id, "Такой команды я не знаю", after=last)

    # Inside the checkout form the same words are an answer, not a query.
    await telegram.send_text(vera, "зеленый")
    await telegram.tap(vera, "Зелёный чай")
    await telegram.wait_message(vera.id, "Китай")
    tap = await telegram.tap(vera, "В корзину")
    await telegram.wait_answer(tap["id"])
    await telegram.tap(vera, "Корзина")
    await telegram.wait_message(vera.id, _shows("Оформить"))
    await telegram.tap(vera, "Оформить")
    last = (await telegram.wait_message(vera.id, "обращаться"))["message_id"]
    await telegram.send_text(vera, "Чай")
    asked = await telegram.wait_message(vera.id, after=last)
    assert "телефон" in message_text(asked) and "Нашлось" not in message_text(asked)


SOLD_OUT = """
categories:
  - id: tea
    title: Чай
    products:
      - {sku: SOLD, title: Пуэр, description: выдержанный, price: 900, stock: 0}
      - {sku: LATE, title: Улун, description: молочный, price: 800, stock: 0}
"""


async def _restock(nc: Client, sku: str, qty: int, adjustment_id: str) -> None:
    request = AdminRequest((AdjustStock(adjustment_id, sku, qty, "restock"),))
    await nc.request(subjects.INVENTORY_ADMIN, bus.encode(request), timeout=30)


async def _ask_to_be_told(telegram: FakeTelegram, user: User, words: str, title: str) -> None:
    last = (await telegram.send_text(user, words))["message_id"]
    await telegram.wait_message(user.id, _shows(title), after=last)
    await telegram.tap(user, title)
    card = await telegram.wait_message(user.id, "нет в наличии", after=last)
    tap = await telegram.tap(user, "о поступлении", card["message_id"])
    assert "Сообщим" in (await telegram.wait_answer(tap["id"]))["text"]
    await telegram.wait_message(user.id, _shows("✅ Сообщим"), after=last)


def _told(telegram: FakeTelegram, user: User, title: str) -> int:
    return sum(f"«{title}» снова в наличии" in message_text(m) for m in telegram.sent(user.id))


async def test_back_in_stock_told_once_by_two_replicas_and_across_a_restart(
    nats_url: str,
    nc: Client,
    js: JetStreamContext,
    services: Start,
    telegram: FakeTelegram,
    tmp_path: Path,
) -> None:
    bots = await _window(services, nats_url, js, telegram, tmp_path, SOLD_OUT, replicas=2)
    anna, boris = telegram.user("Анна"), telegram.user("Борис")
    await _ask_to_be_told(telegram, anna, "пуэр", "Пуэр")
    await _ask_to_be_told(telegram, boris, "ПУЭР выдержанный", "Пуэр")
    await _ask_to_be_told(telegram, boris, "пуэр", "Пуэр")  # asking twice is asking once

    await _restock(nc, "SOLD", 3, "restock-sold-1")
    for user in (anna, boris):
        await telegram.wait_message(user.id, "«Пуэр» снова в наличии")
    # Both replicas looked; each waiting customer's key was claimed by one of them: no key is
    # left, so no second notice can come.
    await wait_until(lambda: _none_waiting(js), what="every waiting customer claimed and told")
    assert _told(telegram, anna, "Пуэр") == 1 and _told(telegram, boris, "Пуэр") == 1
    last = telegram.last(anna.id)["message_id"]
    await telegram.tap(anna, "Открыть товар")
    await telegram.wait_message(
        anna.id, lambda m: "осталось 3" in message_text(m) and "В корзину" in str(m), after=last - 1
    )

    # Told across a restart: asked, every bot killed, restocked meanwhile, one bot back.
    await _ask_to_be_told(telegram, anna, "улун", "Улун")
    for bot in bots:
        bot.kill()
    await _restock(nc, "LATE", 1, "restock-late-1")
    bots[0].start()
    await telegram.wait_message(anna.id, "«Улун» снова в наличии", timeout=30)
    await wait_until(lambda: _none_waiting(js), what="Anna's ask claimed")
    assert _told(telegram, anna, "Улун") == 1


async def _none_waiting(js: JetStreamContext) -> bool:
    return not await kv.keys(js, subjects.BOT_BACK_IN_STOCK_BUCKET)


async def test_photo_cards_browsed_in_place(
    nats_url: str, js: JetStreamContext, services: Start, telegram: FakeTelegram, tmp_path: Path
) -> None:
    """A product with a photo (a URL, or a file_id of the admin's upload) is a photo message with
    the card as its caption: a list becomes it in place (editMessageMedia), the quantity edits
    the caption only, a photo card becomes another in place, and a list after a photo card is a
    new message (the photo deleted: Telegram cannot turn a photo back into text)."""
    owner = telegram.user("Владелец")
    await telegram.send_photo(owner)  # the admin's upload: Telegram knows this file_id
    file_id = telegram.updates[-1]["message"]["photo"][-1]["file_id"]
    url = "https://shop.example/puer.jpg"
    catalog = f"""
categories:
  - id: tea
    title: Чай
    products:
      - {{sku: GREEN, title: Пуэр, description: выдержанный, price: 900, stock: 9, photo: "{url}"}}
      - {{sku: FILE, title: Улун, description: молочный, price: 800, stock: 9, photo: "{file_id}"}}
      - {{sku: PLAIN, title: Сенча, description: японский, price: 700, stock: 9}}
"""
    await _window(services, nats_url, js, telegram, tmp_path, catalog)
    gleb = telegram.user("Глеб")
    await telegram.send_command(gleb, "/catalog")
    await telegram.wait_message(gleb.id, _shows("Чай"))
    await telegram.tap(gleb, "Чай")
    listing = await telegram.wait_message(gleb.id, _shows("Пуэр"))
    at = listing["message_id"]

    await telegram.tap(gleb, "Пуэр")
    card = await telegram.wait_message(gleb.id, lambda m: "photo" in m and "Пуэр" in str(m))
    assert card["message_id"] == at and "выдержанный" in card["caption"], "the list became it"
    shown = card["photo"][-1]["file_id"]
    assert telegram.photo_sources[shown] == url
    captions = len(telegram.calls_to("editMessageCaption"))
    await telegram.tap(gleb, "➕", at)
    await telegram.wait_message(gleb.id, _shows("'2'"))
    assert telegram.message(gleb.id, at)["photo"][-1]["file_id"] == shown, "not fetched again"
    assert len(telegram.calls_to("editMessageCaption")) == captions + 1

    # Another photo card from this one (a button of an older message): a photo for a photo.
    await telegram.tap_data(gleb, "p:FILE:1:0", at)
    await telegram.wait_message(gleb.id, lambda m: m["message_id"] == at and "Улун" in str(m))
    assert telegram.message(gleb.id, at)["photo"][-1]["file_id"] == file_id

    await telegram.tap(gleb, "Назад", at)
    again = await telegram.wait_message(gleb.id, _shows("Сенча"), after=at)
    assert telegram.is_deleted(gleb.id, at) and "photo" not in again
    await telegram.tap(gleb, "Сенча")
    plain = await telegram.wait_message(gleb.id, "японский", after=at)
    assert plain["message_id"] == again["message_id"] and "photo" not in plain, "text stays text"
