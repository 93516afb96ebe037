"""The admin chat as an order desk and the customer's side of it, without Telegram or NATS:
the card and its buttons in each state, the history, the refusals' toasts, the confirmations,
the partial return's picks and amounts (kopecks), /orders' listing; what the customer is told
at each step (services.bot.notices, services.bot.messages) and My orders' card."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from libs import delivery, fulfilment, lifecycle
from libs.contracts import (
    Committed,
    Contact,
    DeliveryChoice,
    FulfilmentEntry,
    OrderFulfilment,
    OrderLine,
    OrderPlaced,
    PaymentAuthorized,
    PaymentCanceled,
    PaymentRefunded,
    PaymentSucceeded,
    Reserved,
    ReservedLine,
)
from libs.lifecycle import Order, Status
from services.bot import desk, messages
from services.bot.messages import Message, render
from services.bot.model import OpenOrder
from services.bot.notices import Kind, Notice, notices
from services.bot.texts import for_language

RU, EN = for_language("ru"), for_language("en")
T0 = datetime(2026, 12, 5, 10, 0, tzinfo=UTC)
ID = "261205-ABCDE"
ADMIN, HELPER, CUSTOMER = 11, 12, 7
CONTACT = Contact("Анна", "+79123456789", "Москва, ул. Ленина, д. 5")
LINES = (OrderLine("FEW", 2, 99_000), OrderLine("TEA", 1, 50_000))
PLACED = OrderPlaced(ID, CUSTOMER, LINES, 248_000, T0, CONTACT, chat_id=CUSTOMER)
TITLES = {"FEW": "A few", "TEA": "Чай"}
NAMES = {ADMIN: "Админ", HELPER: "Помощник"}
RESERVED = (ReservedLine("FEW", 2, 99_000), ReservedLine("TEA", 1, 50_000))


def paid(captured: bool = True) -> Order:
    order = lifecycle.fold(
        [
            PLACED,
            PaymentAuthorized(ID, "pay-1", 248_000, T0 + timedelta(minutes=1)),
            Committed(ID, RESERVED, "pay-1", T0 + timedelta(minutes=1, seconds=1)),
        ]
    )
    assert order is not None
    if captured:
        order = lifecycle.evolve(order, PaymentSucceeded(ID, "pay-1", 248_000, T0 + timedelta(2)))
    return order


def step(order: Order, name: str, by: int = ADMIN, minutes: int = 10, **kw: object) -> Order:
    taken = fulfilment.decide(order, name, by, T0 + timedelta(minutes=minutes), **kw)  # type: ignore[arg-type]
    assert isinstance(taken, OrderFulfilment), taken
    return lifecycle.evolve(order, taken)


def refund(
    order: Order, refund_id: str, amount: int, *lines: OrderLine, minutes: int = 20
) -> Order:
    fact = PaymentRefunded(
        ID, "pay-1", refund_id, amount, lines, "returned", T0 + timedelta(minutes=minutes)
    )
    return lifecycle.evolve(order, fact)


def text(message: Message, t: object = RU) -> str:
    return render(t, message.text)  # type: ignore[arg-type]


def labels(message: Message, t: object = RU) -> list[str]:
    return [render(t, b.text) for row in message.buttons for b in row]  # type: ignore[arg-type]


# The card ----------------------------------------------------------------------------------------
def test_a_paid_orders_card_offers_every_next_step() -> None:
    card = desk.card(paid(), TITLES, NAMES)
    said = text(card)
    assert "Новый оплаченный заказ №261205-ABCDE" in said and "Статус: <b>оплачен</b>" in said
    assert "A few × 2 = 1\u00a0980 ₽" in said and "История" not in said
    assert labels(card) == [
        "📦 Собран",
        "🚚 Отправлен",
        "🏬 Готов к выдаче",
        "✅ Вручён",
        "❌ Отменить с возвратом денег",
        "↩️ Вернуть позиции",
    ]
    assert labels(card, EN)[0] == "📦 Packed"


def test_the_card_goes_forward_with_the_order_and_tells_who_did_what_when() -> None:
    packed = step(paid(), "packed", ADMIN, 10)
    assert labels(desk.card(packed, TITLES, NAMES))[:3] == [
        "🚚 Отправлен",
        "🏬 Готов к выдаче",
        "✅ Вручён",
    ]
    shipped = step(packed, "shipped", HELPER, 75, carrier="russian_post", tracking="RA1RU")
    card = desk.card(shipped, TITLES, NAMES)
    said = text(card)
    assert "Статус: <b>отправлен</b>" in said
    assert "📦 05.12 10:10 собран — Админ" in said
    assert "🚚 05.12 11:15 отправлен (Почта России, RA1RU) — Помощник" in said
    assert labels(card) == ["✅ Вручён", "❌ Отменить с возвратом денег", "↩️ Вернуть позиции"]
    en = text(card, EN)
    assert "shipped (Russian Post, RA1RU) by Помощник" in en and "Status: <b>shipped</b>" in en
    delivered = step(shipped, "delivered", 99, 200)
    card = desk.card(delivered, TITLES, {})
    assert "вручён — id 99" in text(card), "an admin the bot never saw: by id"
    assert labels(card) == ["↩️ Вернуть позиции"], "only returns after the end"


def test_a_cancelled_card_has_no_buttons_and_says_who_cancelled() -> None:
    cancelled = step(paid(), "cancelled", CUSTOMER, by_customer=True)
    card = desk.card(cancelled, TITLES, NAMES)
    assert card.buttons == ()
    assert "отменён — покупатель" in text(card)
    assert "Статус: <b>деньги возвращаются</b>" in text(card)
    back = refund(cancelled, "r-all", 248_000)
    assert "Статус: <b>отменён</b>" in text(desk.card(back, TITLES, NAMES))
    assert "возврат 2\u00a0480 ₽" in text(desk.card(back, TITLES, NAMES))


def test_shipped_without_a_tracking_number() -> None:
    shipped = step(paid(), "shipped", ADMIN)
    assert "отправлен (без трек-номера)" in text(desk.card(shipped, TITLES, NAMES))
    boxberry = step(paid(), "shipped", ADMIN, carrier="boxberry")
    assert "отправлен (Boxberry)" in text(desk.card(boxberry, TITLES, NAMES))


@pytest.mark.parametrize(
    "reason", ["not_paid", "cancelled", "delivered", "packed", "already", "backwards", "busy"]
)
def test_every_refusal_has_a_clear_toast_in_both_languages(reason: str) -> None:
    for t in (RU, EN):
        toast = render(t, desk.refused(reason))
        assert toast and "desk." not in toast and len(toast) <= 200
    assert render(RU, desk.refused("unheard_of")) == render(RU, desk.refused("busy"))


def test_refusals_reach_the_toasts() -> None:
    delivered = step(step(paid(), "packed"), "delivered")
    answer = fulfilment.decide(delivered, "packed", ADMIN, T0)
    assert isinstance(answer, fulfilment.Refused)
    assert render(RU, desk.refused(answer.reason)) == "Заказ уже вручён."
    assert render(RU, desk.done("packed")) == "Готово: собран"


# Cancel with refund ------------------------------------------------------------------------------
def test_the_cancellation_asks_with_the_amount_left() -> None:
    question = desk.cancel_confirm(paid())
    assert text(question) == "Отменить заказ №261205-ABCDE и вернуть 2\u00a0480 ₽?"
    assert labels(question) == ["Да, отменить и вернуть деньги", "Отмена"]
    partly = refund(paid(), "r-1", 50_000, OrderLine("TEA", 1, 50_000))
    assert "вернуть 1\u00a0980 ₽" in text(desk.cancel_confirm(partly))
    assert "give back 1\u00a0980 ₽" in text(desk.cancel_confirm(partly), EN)


# Shipping ----------------------------------------------------------------------------------------
def test_the_tracking_dialog() -> None:
    ask = desk.ask_tracking(paid())
    assert "трек-номер" in text(ask) and labels(ask) == ["Без трека", "Отмена"]
    carriers = desk.ask_carrier(ID, "ABC123")
    assert "<code>ABC123</code>" in text(carriers)
    assert labels(carriers) == [
        "Почта России",
        "СДЭК",
        "Boxberry",
        "Яндекс Доставка",
        "другая служба",
        "Отмена",
    ]
    assert "трек" not in text(desk.ask_carrier(ID, "")).lower()
    assert "RA123456789RU" in text(desk.tracking_hint())
    entry = FulfilmentEntry(step="shipped", at=T0, by=ADMIN, carrier="cdek", tracking="1234567890")
    assert "СДЭК, 1234567890" in text(desk.shipped(ID, entry))


# A partial return --------------------------------------------------------------------------------
def test_a_return_picks_within_what_is_left_and_shows_the_amount() -> None:
    order = paid()
    picks = desk.pick(order, {}, 0, +1)
    picks = desk.pick(order, picks, 0, +1)
    picks = desk.pick(order, picks, 0, +1)  # only 2 were bought
    assert picks == {0: 2}
    assert desk.return_amount(order, picks) == 198_000
    picks = desk.pick(order, picks, 1, +1)
    assert desk.return_amount(order, picks) == 248_000
    assert desk.pick(order, picks, 1, -1) == {0: 2}
    assert desk.pick(order, {}, 7, +1) == {}, "a line the order does not have"
    assert desk.return_lines(order, {0: 1, 1: 1}) == (
        OrderLine("FEW", 1, 99_000),
        OrderLine("TEA", 1, 50_000),
    )


def test_what_was_returned_before_cannot_be_returned_again() -> None:
    once = refund(paid(), "r-1", 99_000, OrderLine("FEW", 1, 99_000))
    assert [left for _, left in desk.returnable(once)] == [1, 1]
    assert desk.pick(once, {0: 2}, 0, +1) == {0: 1}
    assert desk.return_amount(once, {0: 5, 1: 1}) == 149_000
    # Money refunded without lines: never more back than is left of the payment.
    money = refund(paid(), "r-m", 200_000)
    assert desk.return_amount(money, {0: 2, 1: 1}) == 48_000


def test_the_picker_then_the_choice_of_stock_or_write_off() -> None:
    order = paid()
    empty = desk.picker(order, {}, TITLES)
    assert "К возврату: <b>0 ₽</b>" in text(empty)
    assert not any("Далее" in label for label in labels(empty)), "nothing picked: no Next"
    picked = desk.picker(order, {0: 1}, TITLES)
    assert labels(picked) == [
        "−",
        "A few: 1 из 2",
        "+",
        "−",
        "Чай: 0 из 1",
        "+",
        "Далее: вернуть 990 ₽",
        "Отмена",
    ]
    confirm = desk.return_confirm(order, {0: 1}, TITLES)
    assert "Вернуть <b>990 ₽</b>" in text(confirm) and "A few × 1 = 990 ₽" in text(confirm)
    assert labels(confirm) == ["📦 Вернулся на склад", "🗑 Списать", "Отмена"]
    assert "списан" in text(desk.return_requested(order, 99_000, restock=False))
    assert "на склад" in text(desk.return_requested(order, 99_000, restock=True))


# /orders -----------------------------------------------------------------------------------------
def entry(n: int, status: Status) -> OpenOrder:
    return OpenOrder(
        order_id=f"o-{n:02d}", status=status.value, total=99_000, placed_at=T0 + timedelta(n)
    )


def test_open_orders_by_status_with_counts_and_pages() -> None:
    entries = [entry(n, Status.SHIPPED) for n in range(3)]
    entries += [entry(n, Status.PAID) for n in range(3, 9)]
    entries += [entry(9, Status.PACKED), entry(10, Status.DELIVERED)]  # delivered: not open
    first = desk.listing(entries, 0)
    said = text(first)
    assert "Открытые заказы: 10" in said
    assert said.index("оплачен: 6") < said.index("собран: 1") < said.index("отправлен: 3")
    orders = [label for label in labels(first) if label.startswith("№")]
    assert len(orders) == desk.PAGE and orders[0].startswith("№o-03 · оплачен")
    assert labels(first)[-2:] == ["1/2", "▶︎"]
    second = desk.listing(entries, 1)
    assert [label for label in labels(second) if label.startswith("№")] == [
        "№o-01 · отправлен · 990 ₽",
        "№o-02 · отправлен · 990 ₽",
    ]
    assert labels(second)[-2:] == ["◀︎", "2/2"]
    assert text(desk.listing([entry(1, Status.CANCELLED)], 0)) == "Открытых заказов нет."


def test_open_means_sold_and_not_done_with() -> None:
    assert desk.is_open(paid())
    assert desk.is_open(step(paid(), "shipped"))
    assert not desk.is_open(step(paid(), "delivered"))
    assert desk.is_open(step(paid(), "cancelled")), "until the money is back"
    assert not desk.is_open(refund(step(paid(), "cancelled"), "r", 248_000))
    assert desk.open_entry(paid()).status == "paid"


# The customer ------------------------------------------------------------------------------------
def told(*orders: Order) -> list[tuple[str, Kind]]:
    said: set[str] = set()
    out: list[tuple[str, Kind]] = []
    for before, after in itertools.pairwise(orders):
        new = notices(before, after, said)
        said |= {n.key for n in new if n.key}
        out += [(n.to, n.kind) for n in new]
    return out


def test_the_customer_hears_of_the_steps_that_matter_once() -> None:
    order = paid()
    packed = step(order, "packed")
    shipped = step(packed, "shipped", carrier="cdek", tracking="1234567890")
    delivered = step(shipped, "delivered")
    assert told(order, packed) == [], "packing is the shop's own business"
    assert told(order, packed, shipped, shipped, delivered) == [
        ("customer", Kind.SHIPPED),
        ("customer", Kind.DELIVERED),
    ]
    assert told(order, step(order, "ready_for_pickup")) == [("customer", Kind.READY_FOR_PICKUP)]


def test_a_refund_after_packing_is_told() -> None:
    packed = step(paid(), "packed")
    returned = refund(packed, "r-1", 99_000, OrderLine("FEW", 1, 99_000))
    assert told(packed, returned) == [("customer", Kind.REFUNDED), ("admin", Kind.REFUNDED)]


def test_a_cancellation_tells_how_much_comes_back_then_that_it_is_back() -> None:
    order = paid()
    by_customer = step(order, "cancelled", CUSTOMER, by_customer=True)
    back = refund(by_customer, "r-all", 248_000, minutes=30)
    assert told(order, by_customer, back) == [
        ("customer", Kind.ORDER_CANCELLED),
        ("admin", Kind.CUSTOMER_CANCELLED),
        ("customer", Kind.CANCEL_MONEY_BACK),
    ]
    by_shop = step(step(order, "packed"), "cancelled", ADMIN, 15)
    assert told(order, by_shop) == [("customer", Kind.ORDER_CANCELLED)], "the admin pressed it"
    # The money's fact first (another consumer): told all the same, once.
    refunded_first = refund(order, "r-all", 248_000, minutes=30)
    cancel = fulfilment.decide(order, "cancelled", ADMIN, T0 + timedelta(minutes=15))
    assert isinstance(cancel, OrderFulfilment)
    both = lifecycle.evolve(refunded_first, cancel)
    assert told(order, refunded_first, both)[-2:] == [
        ("customer", Kind.ORDER_CANCELLED),
        ("customer", Kind.CANCEL_MONEY_BACK),
    ]
    held = step(paid(captured=False), "cancelled", ADMIN)
    hold_cancelled = lifecycle.evolve(
        held, PaymentCanceled(ID, "pay-1", "canceled_by_merchant", T0 + timedelta(minutes=30))
    )
    assert told(paid(captured=False), held, hold_cancelled) == [
        ("customer", Kind.ORDER_CANCELLED),
        ("customer", Kind.CANCEL_MONEY_BACK),
    ], "a hold cancelled by the shop is not a lapsed payment"


def notice_text(kind: Kind, order: Order, t: object = RU, to: str = "customer") -> Message:
    message = messages.for_notice(Notice(to, kind), order, TITLES, T0)  # type: ignore[arg-type]
    assert message is not None
    return message


def test_shipped_names_the_carrier_and_links_its_tracking_page() -> None:
    shipped = step(paid(), "shipped", carrier="russian_post", tracking="RA123456789RU")
    message = notice_text(Kind.SHIPPED, shipped)
    assert text(message) == (
        "🚚 Заказ <b>№261205-ABCDE</b> отправлен: Почта России, RA123456789RU."
    )
    assert "Russian Post, RA123456789RU" in text(message, EN)
    assert [b.url for row in message.buttons for b in row] == [
        "https://www.pochta.ru/tracking?barcode=RA123456789RU"
    ]
    bare = notice_text(Kind.SHIPPED, step(paid(), "shipped", carrier="yandex"))
    assert "Яндекс Доставка" in text(bare) and bare.buttons == (), "no page to link to"


def test_the_end_of_the_road_in_both_languages() -> None:
    delivered = step(paid(), "delivered")
    assert "Спасибо за покупку" in text(notice_text(Kind.DELIVERED, delivered))
    assert "Thank you" in text(notice_text(Kind.DELIVERED, delivered), EN)
    ready = step(paid(), "ready_for_pickup")
    assert "готов к выдаче" in text(notice_text(Kind.READY_FOR_PICKUP, ready))


def test_a_cancelled_order_says_how_much_and_when() -> None:
    partly = refund(paid(), "r-1", 50_000, OrderLine("TEA", 1, 50_000), minutes=5)
    by_customer = step(partly, "cancelled", CUSTOMER, 10, by_customer=True)
    said = text(notice_text(Kind.ORDER_CANCELLED, by_customer))
    assert "как вы просили" in said and "1\u00a0980 ₽" in said and "несколько дней" in said
    held = step(paid(captured=False), "cancelled", ADMIN)
    said = text(notice_text(Kind.ORDER_CANCELLED, held))
    assert said.startswith("Магазин отменил") and "блокировка снимается" in said
    assert "2\u00a0480 ₽" in said
    assert "hold is released" in text(notice_text(Kind.ORDER_CANCELLED, held), EN)
    back = refund(by_customer, "r-2", 198_000, minutes=30)
    assert "возвращены: 1\u00a0980 ₽" in text(notice_text(Kind.CANCEL_MONEY_BACK, back))
    admin = text(notice_text(Kind.CUSTOMER_CANCELLED, by_customer, to="admin"))
    assert "Покупатель отменил заказ №261205-ABCDE (Анна)" in admin


def card(order: Order, contact: str = "") -> Message:
    return messages.order_card(
        order,
        order.status,
        T0,
        order.total,
        TITLES,
        may_cancel=fulfilment.customer_may_cancel(order),
        contact=contact,
    )


def test_my_orders_card_cancels_until_packed_then_says_whom_to_write_to() -> None:
    order = paid()
    open_card = card(order)
    assert "Отменить заказ" in labels(open_card)[0]
    packed = step(order, "packed")
    closed = card(packed, "@shop_help")
    assert not any("Отменить" in label for label in labels(closed))
    assert "напишите нам: @shop_help" in text(closed)
    assert "напишите магазину" in text(card(packed))
    assert "write to the shop" in text(card(packed), EN)
    shipped = step(packed, "shipped", minutes=90, carrier="cdek", tracking="1234567890")
    history = text(card(shipped))
    assert "Статус: отправлен" in history
    assert "05.12 10:10 — собран" in history
    assert "05.12 11:30 — отправлен: СДЭК, 1234567890" in history
    delivered = step(shipped, "delivered", minutes=200)
    assert "напишите" not in text(card(delivered)), "delivered: nothing to cancel"


def test_the_customers_cancellation_is_asked_with_the_amount() -> None:
    question = messages.cancel_question(paid())
    assert text(question) == "Отменить заказ №261205-ABCDE? Вернём 2\u00a0480 ₽."
    assert labels(question) == ["Да, отменить заказ", "Нет, оставить"]
    partly = refund(paid(), "r-1", 50_000, OrderLine("TEA", 1, 50_000))
    assert "Вернём 1\u00a0980 ₽" in text(messages.cancel_question(partly))
    assert msgspec.json.encode(question.buttons[0][0].data)  # packs


def test_an_order_paid_on_receipt_has_the_cash_and_release_buttons_until_paid() -> None:
    t0 = datetime(2026, 12, 1, 10, tzinfo=UTC)
    placed = OrderPlaced("o-cash", 7, (OrderLine("FEW", 1, 99_000),), 99_000, t0, payment="cash")
    held = lifecycle.evolve(
        lifecycle.evolve(None, placed),
        Reserved("o-cash", (ReservedLine("FEW", 1, 99_000),), 99_000, t0 + timedelta(days=3), t0),
    )
    card = desk.card(held, {"FEW": "A few"}, {})
    pressed = [b.data for row in card.buttons for b in row]
    assert pressed == ["d:o-cash:cash_paid", "d:o-cash:release"]
    said = render(for_language("ru"), card.text)
    assert "отложен, оплата при получении" in said
    assert [render(for_language("ru"), b.text) for row in card.buttons for b in row] == [
        "💵 Оплачено при получении",
        "↩️ Не забрали: вернуть в продажу",
    ]
    assert desk.is_open(held), "/orders lists it: the desk has a step to take"
    paid = lifecycle.evolve(
        lifecycle.evolve(held, PaymentSucceeded("o-cash", "cash-o-cash", 99_000, t0)),
        Committed("o-cash", (ReservedLine("FEW", 1, 99_000),), "cash-o-cash", t0),
    )
    assert paid.status is Status.PAID
    assert "cash_paid" not in str(desk.card(paid, {}, {}).buttons), "then the steps after paid"


def test_the_card_and_my_orders_say_the_delivery_and_how_it_is_paid() -> None:
    t0 = datetime(2026, 12, 1, 10, tzinfo=UTC)
    courier = DeliveryChoice(method_id="courier-msk", price=30_000, city="Москва")
    placed = OrderPlaced(
        "o-dlv", 7, (OrderLine("FEW", 1, 99_000),), 129_000, t0, delivery=courier, payment="sbp"
    )
    order = lifecycle.evolve(None, placed)
    titles = {"FEW": "A few", delivery.as_sku("courier-msk"): "Курьер по Москве"}
    ru = for_language("ru")
    for said in (
        render(ru, desk.card(order, titles, {}).text),
        render(
            ru, messages.order_card(order, order.status, t0, 129_000, titles, may_cancel=False).text
        ),
    ):
        assert "🚚 Курьер по Москве — 300 ₽" in said and "💳 Оплата через СБП" in said
    free = lifecycle.evolve(
        None, msgspec.structs.replace(placed, delivery=DeliveryChoice(method_id="pickup", price=0))
    )
    assert "🚚 pickup — бесплатно" in render(ru, desk.card(free, {}, {}).text), "a method gone"
    plain = lifecycle.evolve(None, msgspec.structs.replace(placed, delivery=None, payment="card"))
    assert "🚚" not in render(ru, desk.card(plain, {}, {}).text), "as before delivery existed"
    held = msgspec.structs.replace(order, payment="cash")
    assert "оплата при получении" in render(ru, desk.card(held, titles, {}).text)


def test_a_step_taken_in_the_sheet_says_so_on_the_card() -> None:
    shipped = step(
        paid(), "shipped", fulfilment.BY_SHEET, 30, carrier="cdek", tracking="1234567890"
    )
    said = text(desk.card(shipped, TITLES, NAMES))
    assert "отправлен (СДЭК, 1234567890) — Google-таблица" in said
    assert "by the Google Sheet" in text(desk.card(shipped, TITLES, NAMES), EN)
