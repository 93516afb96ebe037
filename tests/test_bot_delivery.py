"""Checkout with the shop's delivery methods, driven like a person through the fake Telegram with
the real inventory, payments and bot on a real nats-server (the fake YooKassa takes the money):
pickup asks no address, a courier outside its city is said at once, the post is priced by weight,
the courier is free from its threshold, a minimum order is told before the form, and a method
the shop switched off between the summary and Confirm is asked again. The customer pays what
the summary said: goods and delivery."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nats.aio.client import Client
from nats.js import JetStreamContext

from libs import bus, subjects
from libs.catalog_view import CatalogView
from libs.contracts import AdminRequest, SetDelivery
from tests.fakes.telegram import FakeTelegram, User, message_text
from tests.fakes.yookassa import FakeYooKassa
from tests.harness import ServiceProcess, stock_level, wait_until
from tests.test_bot import STEP, _shop, _shows

Start = Callable[..., ServiceProcess]

CATALOG = """
categories:
  - id: goods
    title: Goods
    products:
      - {sku: FEW, title: A few, price: 990, stock: 50, weight: 600}
      - {sku: LAST, title: Cheap, price: "25.50", stock: 100}
delivery:
  min_order: 500
  methods:
    - id: pickup
      title: Самовывоз
      kind: pickup
      price: 0
      address: Москва, ул. Мясницкая, 24
      hours: 10:00–21:00
    - id: courier
      title: Курьер по Москве
      kind: courier
      price: 300
      free_from: 3000
      cities: [Москва]
    - id: post
      title: Почта России
      kind: post
      price: 350
      base_weight: 1000
      per_kg: 70
"""


async def _cart(telegram: FakeTelegram, user: User, product: str, qty: int) -> None:
    """`qty` of `product` in the cart, and the cart open."""
    await telegram.send_command(user, "/start")
    await telegram.wait_message(user.id, "Тестовая лавка", STEP)
    await telegram.tap(user, "Каталог")
    await telegram.wait_message(user.id, _shows("Goods"), STEP)
    await telegram.tap(user, "Goods")
    await telegram.wait_message(user.id, _shows(product), STEP)
    await telegram.tap(user, product)
    card = await telegram.wait_message(user.id, "₽", STEP)
    for n in range(qty - 1):
        await telegram.tap(user, "➕", card["message_id"])
        await telegram.wait_message(user.id, _shows(f"'{n + 2}'"), STEP)
    await telegram.wait_answer((await telegram.tap(user, "В корзину"))["id"])
    await telegram.tap(user, "Корзина")
    await telegram.wait_message(user.id, _shows("Оформить"), STEP)


async def _to_delivery(telegram: FakeTelegram, user: User, product: str, qty: int) -> int:
    """Through the cart, the name and the phone, to the delivery question (its message id)."""
    await _cart(telegram, user, product, qty)
    await telegram.tap(user, "Оформить")
    last = (await telegram.wait_message(user.id, "обращаться", STEP))["message_id"]
    await telegram.send_text(user, user.first_name)
    last = (await telegram.wait_message(user.id, "телефон", STEP, after=last))["message_id"]
    await telegram.send_text(user, "+7 912 345-67-89")
    asked = await telegram.wait_message(user.id, "Как вам удобнее получить", STEP, after=last)
    return int(asked["message_id"])


def _labels(telegram: FakeTelegram, user: User, message_id: int) -> list[str]:
    return [b["text"] for row in telegram.buttons(user.id, message_id) for b in row]


async def _pays(telegram: FakeTelegram, yookassa: FakeYooKassa, user: User, summary: int) -> str:
    """Confirm the summary: what YooKassa was asked to take, in rubles."""
    await telegram.tap(user, "Подтвердить", summary)
    pay = await telegram.wait_message(
        user.id, lambda m: "'url'" in str(m.get("reply_markup")), STEP
    )
    url = next(b["url"] for row in telegram.buttons(user.id, pay["message_id"]) for b in row)
    payment = yookassa.payments[url.rsplit("/", 1)[1]]
    return str(payment["amount"]["value"])


async def test_delivery_choices_priced_for_the_cart_end_to_end(
    nats_url: str,
    nc: Client,
    js: JetStreamContext,
    services: Start,
    tmp_path: Path,
    telegram: FakeTelegram,
    yookassa: FakeYooKassa,
) -> None:
    catalog_file = tmp_path / "catalog.yaml"
    catalog_file.write_text(CATALOG)
    admin = telegram.user("Админ")
    await telegram.send_command(admin, "/start")
    await _shop(services, nats_url, catalog_file, js, telegram, yookassa, admin)
    pavel, kira, fedor, lena = (telegram.user(n) for n in ("Павел", "Кира", "Фёдор", "Лена"))

    async def pavel_picks_up() -> None:
        asked = await _to_delivery(telegram, pavel, "A few", 1)
        assert _labels(telegram, pavel, asked)[:3] == [
            "Самовывоз — бесплатно",
            "Курьер по Москве — 300 ₽",
            "Почта России — 350 ₽",  # 600 g: within the base kilogram
        ]
        await telegram.tap(pavel, "Самовывоз", asked)
        # No address for pickup: straight to the comment.
        last = await telegram.wait_message(pavel.id, "комментарий", STEP, after=asked)
        await telegram.send_text(pavel, "-")
        summary = await telegram.wait_message(
            pavel.id, "Проверьте заказ", STEP, after=last["message_id"]
        )
        said = message_text(summary)
        assert "Самовывоз: Москва, ул. Мясницкая, 24, 10:00–21:00" in said
        assert "Доставка: Самовывоз — бесплатно" in said and "Итого: 990 ₽" in said
        assert not any("Куда доставить" in message_text(m) for m in telegram.sent(pavel.id))
        assert await _pays(telegram, yookassa, pavel, summary["message_id"]) == "990.00"

    async def kira_is_outside_the_couriers_city() -> None:
        asked = await _to_delivery(telegram, kira, "A few", 2)
        assert "Почта России — 420 ₽" in _labels(telegram, kira, asked), "1.2 kg: one kg more"
        await telegram.tap(kira, "Курьер по Москве", asked)
        last = await telegram.wait_message(kira.id, "Куда доставить", STEP, after=asked)
        await telegram.send_text(kira, "Казань, ул. Баумана, д. 5")
        refused = await telegram.wait_message(kira.id, "не возит", STEP, after=last["message_id"])
        assert "город Казань" in message_text(refused) and "только Москва" in message_text(refused)
        again = await telegram.wait_message(
            kira.id, "Как вам удобнее получить", STEP, after=refused["message_id"]
        )
        await telegram.tap(kira, "Почта России", again["message_id"])
        # The address stands: on to the comment.
        last = await telegram.wait_message(kira.id, "комментарий", STEP, after=again["message_id"])
        await telegram.send_text(kira, "-")
        summary = await telegram.wait_message(
            kira.id, "Проверьте заказ", STEP, after=last["message_id"]
        )
        said = message_text(summary)
        assert "Товары: 1\u00a0980 ₽" in said and "Почта России — 420 ₽" in said
        assert "Итого: 2\u00a0400 ₽" in said and "Баумана" in said
        assert await _pays(telegram, yookassa, kira, summary["message_id"]) == "2400.00"

    async def fedor_gets_the_courier_free() -> None:
        asked = await _to_delivery(telegram, fedor, "A few", 4)  # 3 960 ₽: free from 3 000
        assert "Курьер по Москве — бесплатно" in _labels(telegram, fedor, asked)
        await telegram.tap(fedor, "Курьер по Москве", asked)
        last = await telegram.wait_message(fedor.id, "Куда доставить", STEP, after=asked)
        await telegram.send_text(fedor, "г. Москва, ул. Ленина, д. 5")
        last = await telegram.wait_message(fedor.id, "комментарий", STEP, after=last["message_id"])
        await telegram.send_text(fedor, "-")
        summary = await telegram.wait_message(
            fedor.id, "Проверьте заказ", STEP, after=last["message_id"]
        )
        assert "Итого: 3\u00a0960 ₽" in message_text(summary)
        assert await _pays(telegram, yookassa, fedor, summary["message_id"]) == "3960.00"

    async def lena_is_below_the_minimum() -> None:
        await _cart(telegram, lena, "Cheap", 1)
        await telegram.tap(lena, "Оформить")
        told = await telegram.wait_message(lena.id, "Минимальная сумма заказа", STEP)
        assert "500 ₽" in message_text(told) and "474.50 ₽" in message_text(told)

    await asyncio.gather(
        pavel_picks_up(),
        kira_is_outside_the_couriers_city(),
        fedor_gets_the_courier_free(),
        lena_is_below_the_minimum(),
    )

    # The shop switches the courier off while Max looks at his summary.
    max_ = telegram.user("Макс")
    asked = await _to_delivery(telegram, max_, "A few", 1)
    await telegram.tap(max_, "Курьер по Москве", asked)
    last = await telegram.wait_message(max_.id, "Куда доставить", STEP, after=asked)
    await telegram.send_text(max_, "Москва, ул. Ленина, д. 7")
    last = await telegram.wait_message(max_.id, "комментарий", STEP, after=last["message_id"])
    await telegram.send_text(max_, "-")
    summary = await telegram.wait_message(
        max_.id, "Проверьте заказ", STEP, after=last["message_id"]
    )
    view = await CatalogView.open(nc, js)
    try:
        shop = view.delivery()
        kept = tuple(m for m in shop.methods if m.id != "courier")
        request = AdminRequest((SetDelivery(kept, shop.min_order),))
        await nc.request(subjects.INVENTORY_ADMIN, bus.encode(request), timeout=30)
        await wait_until(lambda: len(view.delivery().methods) == 2, what="the courier gone")
    finally:
        await view.close()
    payments = len(yookassa.payments)
    await telegram.tap(max_, "Подтвердить", summary["message_id"])
    # The bot asks again (or, had it not yet seen the change, the inventory refuses the order):
    # either way Max hears the courier is gone, and no money is asked for.
    told = await telegram.wait_message(
        max_.id, "способа получения больше нет", STEP, after=summary["message_id"]
    )
    assert "Курьер" not in str(telegram.buttons(max_.id)), "only the methods there are now"
    assert len(yookassa.payments) == payments
    assert told


async def test_cash_at_pickup_committed_by_the_desk_or_released_when_not_collected(
    nats_url: str,
    js: JetStreamContext,
    services: Start,
    tmp_path: Path,
    telegram: FakeTelegram,
    yookassa: FakeYooKassa,
) -> None:
    """PAYMENT_METHODS=card,sbp,cash: Olga picks pickup and pays on receipt; no payment is made
    at YooKassa, the admin chat gets her order's card and marks it paid (twice: once), and the
    stock is committed. Ivan's order is not collected: the desk puts it back on sale."""
    catalog_file = tmp_path / "catalog.yaml"
    catalog_file.write_text(CATALOG)
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
        payment_methods="card,sbp,cash",
    )
    olga, ivan = telegram.user("Ольга"), telegram.user("Иван")

    async def on_receipt(user: User) -> dict[str, Any]:
        """Pickup, paid on receipt, confirmed: the admin card of the order."""
        asked = await _to_delivery(telegram, user, "A few", 1)
        await telegram.tap(user, "Самовывоз", asked)
        pay = await telegram.wait_message(user.id, "Как вам удобнее оплатить", STEP, after=asked)
        assert _labels(telegram, user, pay["message_id"])[:3] == [
            "💳 Картой онлайн",
            "⚡ СБП",
            "💵 При получении",
        ]
        await telegram.tap(user, "При получении", pay["message_id"])
        last = await telegram.wait_message(user.id, "комментарий", STEP, after=pay["message_id"])
        await telegram.send_text(user, "-")
        summary = await telegram.wait_message(
            user.id, "Проверьте заказ", STEP, after=last["message_id"]
        )
        assert "Оплата: наличными или картой при получении" in message_text(summary)
        await telegram.tap(user, "Подтвердить", summary["message_id"])
        held = await telegram.wait_message(user.id, "Оплата при получении", STEP)
        number = message_text(held).split("№")[1].split()[0]
        return await telegram.wait_message(
            admin.id, lambda m: number in message_text(m) and "Оплачено" in str(m), STEP
        )

    olgas, ivans = await asyncio.gather(on_receipt(olga), on_receipt(ivan))
    assert not yookassa.payments, "nothing to pay online"
    before = await stock_level(js, "FEW")
    assert before is not None and before.reserved == 2

    first = await telegram.tap(admin, "Оплачено при получении", olgas["message_id"])
    await telegram.tap(admin, "Оплачено при получении", olgas["message_id"])  # a double tap
    assert "оплачено" in (await telegram.wait_answer(first["id"]))["text"]
    await telegram.wait_message(olga.id, "Оплата получена", STEP)
    await telegram.wait_message(
        admin.id, lambda m: "cash_paid" not in str(m) and "Собран" in str(m), STEP
    )

    await telegram.tap(admin, "Не забрали", ivans["message_id"])
    await telegram.wait_message(ivan.id, "отмен", STEP)

    async def settled() -> bool:
        level = await stock_level(js, "FEW")
        return level is not None and (level.on_hand, level.reserved) == (49, 0)

    await wait_until(settled, what="Olga's unit sold, Ivan's back on sale")
