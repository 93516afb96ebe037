"""The shop window through the fake Telegram, with the real inventory: search by typing, photo
cards browsed in place, and back-in-stock notices told once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from nats.js import JetStreamContext

from tests.fakes.telegram import FakeTelegram, message_text
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
