"""Back-in-stock notices without Telegram: who is due, and the claim that makes "told once"."""

from __future__ import annotations

from nats.js import JetStreamContext

from libs.contracts import CatalogProduct
from libs.kv import Documents
from services.bot import back_in_stock
from services.bot import callbacks as cb
from services.bot import keyboards as kb
from services.bot.back_in_stock import Watcher, due
from services.bot.texts import for_language

T = for_language("ru")


def test_keys_are_per_product_and_customer() -> None:
    assert back_in_stock.key("TEA-1", 42) == "TEA-1.42"
    assert back_in_stock.sku_of("TEA-1.42") == "TEA-1"
    assert back_in_stock.key("TEA-1", 42) == back_in_stock.key("TEA-1", 42), "asking twice: once"


def test_due_once_available_and_on_sale() -> None:
    watching = [
        ("BACK.1", Watcher(1, "ru"), 10),
        ("BACK.2", Watcher(2, "en"), 11),
        ("EMPTY.1", Watcher(1), 12),
        ("HIDDEN.3", Watcher(3), 13),
    ]
    stock = {"BACK": 2, "EMPTY": 0, "HIDDEN": 5}
    found = due(watching, lambda sku: stock.get(sku, 0), lambda sku: sku != "HIDDEN")
    assert [(d.key, d.sku, d.watcher.chat_id, d.revision) for d in found] == [
        ("BACK.1", "BACK", 1, 10),
        ("BACK.2", "BACK", 2, 11),
    ]
    assert due(watching, lambda sku: 0, lambda sku: True) == []


def test_a_sold_out_card_offers_the_notice_and_an_available_one_does_not() -> None:
    item = CatalogProduct("SOLD", "Чай", "", 10000, "", "tea", 0)
    sold_out = [b.text for row in kb.product(T, item, 1, 0, 2).inline_keyboard for b in row]
    assert "🔔 Сообщить о поступлении" in sold_out and "🛒 В корзину" not in sold_out
    asked = kb.product(T, item, 1, 0, 2, from_search=True, watching=True)
    data = [b.callback_data for row in asked.inline_keyboard for b in row]
    assert cb.BackInStock(sku="SOLD", page=2, found=True).pack() in data
    assert "✅ Сообщим о поступлении" in [b.text for row in asked.inline_keyboard for b in row]
    in_stock = [b.text for row in kb.product(T, item, 1, 3, 0).inline_keyboard for b in row]
    assert not any("Сообщ" in text for text in in_stock)


async def test_a_claim_is_won_once_and_lost_to_a_newer_ask(js: JetStreamContext) -> None:
    watchers = await Documents.open(js, "t-back-in-stock", Watcher)
    await watchers.put("SOLD.1", Watcher(1))
    found = await watchers.get_with_revision("SOLD.1")
    assert found is not None
    _, revision = found
    # Two replicas claim at the revision they saw: one wins, the key is gone.
    assert [await watchers.claim("SOLD.1", revision) for _ in range(2)] == [True, False]
    assert await watchers.get("SOLD.1") is None
    # The customer asks again while a look is under way: the stale claim loses, the ask stays.
    await watchers.put("SOLD.1", Watcher(1))
    assert not await watchers.claim("SOLD.1", revision)
    assert await watchers.get("SOLD.1") == Watcher(1)
