"""What the customer and the admin chat are told, word for word and button for button
(services.bot.messages), without Telegram or NATS: the Notifier only sends these."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from libs import lifecycle
from libs.contracts import (
    Contact,
    CrmBehind,
    CrmCaughtUp,
    DeadLettered,
    FulfilmentEntry,
    LineProblem,
    OrderLine,
    OrderPlaced,
    Rejected,
    RejectReason,
)
from libs.lifecycle import Refund
from services.bot import callbacks as cb
from services.bot import keyboards as kb
from services.bot import messages
from services.bot.messages import CART_BUTTON, Joined, Message, Text, render
from services.bot.notices import Kind, Notice
from services.bot.texts import for_language

RU, EN = for_language("ru"), for_language("en")
T0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
CONTACT = Contact("Анна", "+79123456789", "Москва, ул. Ленина, д. 5, кв. 12")
PLACED = OrderPlaced(
    "261201-ABCDE", 7, (OrderLine("FEW", 2, 99_000),), 198_000, T0, CONTACT, chat_id=7
)
ORDER = msgspec.structs.replace(
    lifecycle.evolve(None, PLACED),
    amount=198_000,
    expires_at=T0 + timedelta(minutes=15),
    payment_id="pay-1",
    pay_url="https://pay.example/pay-1",
)
TITLES = {"FEW": "A few"}


def told(
    notice: Notice,
    order: lifecycle.Order = ORDER,
    rejected: Rejected | None = None,
    titles: dict[str, str] = TITLES,
) -> Message:
    message = messages.for_notice(notice, order, titles, T0, rejected)
    assert message is not None
    return message


def text(message: Message, language: str = "ru") -> str:
    return render(for_language(language), message.text)


def buttons(message: Message, language: str = "ru") -> list[list[tuple[str, str]]]:
    t = for_language(language)
    return [[(render(t, b.text), b.url or b.data) for b in row] for row in message.buttons]


def test_the_pay_button_replaces_the_reserving_message() -> None:
    message = told(Notice("customer", Kind.PAY))
    assert message.edit
    assert message.text_key == "order.awaiting_payment_minutes"
    assert "№261201-ABCDE" in text(message) and "1\u00a0980 ₽" in text(message)
    assert "15 мин" in text(message)
    assert buttons(message) == [[("💳 Оплатить 1\u00a0980 ₽", "https://pay.example/pay-1")]]
    assert buttons(message, "en") == [[("💳 Pay 1\u00a0980 ₽", "https://pay.example/pay-1")]]


def test_the_pay_message_says_at_least_a_minute_is_left() -> None:
    ending = msgspec.structs.replace(ORDER, expires_at=T0 + timedelta(seconds=20))
    assert "1 мин" in text(told(Notice("customer", Kind.PAY), ending))


def test_paid_names_the_goods_and_the_total_and_clears_nothing_else() -> None:
    message = told(Notice("customer", Kind.PAID))
    said = text(message)
    assert "Оплата получена" in said
    assert "A few × 2 = 1\u00a0980 ₽" in said
    assert "после окончания резерва" not in said
    assert message.buttons == () and not message.edit


def test_a_late_payment_is_told_as_such_to_both() -> None:
    late = text(told(Notice("customer", Kind.PAID, late=True)))
    assert "Оплата получена" in late and "после окончания резерва" in late
    assert late.index("Оплата получена") < late.index("после окончания резерва")
    card = text(told(Notice("admin", Kind.PAID, late=True)))
    assert "Новый оплаченный заказ" in card and "после окончания резерва" in card


def test_the_admin_card_of_a_paid_order_has_who_where_what_and_the_payment() -> None:
    order = msgspec.structs.replace(
        ORDER, contact=msgspec.structs.replace(CONTACT, comment="домофон 12")
    )
    card = text(told(Notice("admin", Kind.PAID), order))
    for part in ("Анна", "+79123456789", "Ленина", "A few × 2", "1\u00a0980 ₽", "pay-1"):
        assert part in card, part
    assert "домофон 12" in card
    assert "домофон" not in text(told(Notice("admin", Kind.PAID))), "no comment, no line"


def test_a_product_gone_from_the_catalog_is_named_by_its_sku() -> None:
    assert "FEW × 2" in text(told(Notice("customer", Kind.PAID), titles={}))


def test_what_customers_typed_cannot_break_a_message() -> None:
    order = msgspec.structs.replace(ORDER, contact=Contact("<b>Боб</b>", "+79123456789", "a&b"))
    card = text(told(Notice("admin", Kind.PAID), order, titles={"FEW": "<i>Tea</i>"}))
    assert "&lt;b&gt;Боб&lt;/b&gt;" in card and "a&amp;b" in card and "&lt;i&gt;Tea" in card
    assert "<b>Новый оплаченный заказ" in card, "the text's own HTML is kept"


def test_rejected_for_stock_offers_to_reduce_or_remove_each_line() -> None:
    fact = Rejected(
        "261201-ABCDE",
        "out_of_stock",
        (LineProblem("LAST", 7, 3), LineProblem("RARE", 1, 0)),
        T0,
    )
    message = told(Notice("customer", Kind.REJECTED), rejected=fact, titles={"LAST": "Last"})
    assert message.edit
    said = text(message)
    assert "Не получилось оформить" in said
    assert "осталось 3" in said and "Last" in said
    assert "RARE" in said, "a product without a title is named by its sku"
    assert said.rstrip().endswith(render(RU, Text("order.fix_hint")))
    assert [data for row in buttons(message) for _, data in row] == [
        cb.FixOrder(sku="LAST", qty=3).pack(),
        cb.FixOrder(sku="LAST", qty=0).pack(),
        cb.FixOrder(sku="RARE", qty=0).pack(),
        cb.Menu(to="cart").pack(),
    ]
    assert "3" in buttons(message)[0][0][0], "reduce to what is left"


def test_rejected_for_a_changed_price_says_both_prices() -> None:
    fact = Rejected(
        "261201-ABCDE", "price_mismatch", (LineProblem("FEW", 2, 50, 99_000, 120_000),), T0
    )
    said = text(told(Notice("customer", Kind.REJECTED), rejected=fact))
    assert "990 ₽" in said and "1\u00a0200 ₽" in said
    assert render(RU, Text("order.price_changed_hint")) in said


def test_rejected_for_a_product_no_longer_sold() -> None:
    fact = Rejected("261201-ABCDE", "unknown_sku", (LineProblem("FEW", 2, 0),), T0)
    message = told(Notice("customer", Kind.REJECTED), rejected=fact)
    assert render(RU, Text("order.product_gone_line", {"title": "A few"})) in text(message)
    assert len(message.buttons) == 2, "remove it, or open the cart"


def test_rejected_with_no_line_to_fix_offers_the_cart() -> None:
    message = told(Notice("customer", Kind.REJECTED))
    assert message.text_key == "order.failed" and message.edit
    assert message.buttons == ((CART_BUTTON,),)


@pytest.mark.parametrize(
    ("reason", "words"),
    [
        ("below_minimum", "меньше минимальной"),
        ("delivery_unknown", "способа получения больше нет"),
        ("delivery_city", "Курьер не возит"),
        ("delivery_price", "Стоимость доставки изменилась"),
        ("total_mismatch", "Не получилось оформить заказ"),
    ],
)
def test_rejected_for_the_order_as_a_whole_says_why_and_offers_the_cart(
    reason: RejectReason, words: str
) -> None:
    message = told(
        Notice("customer", Kind.REJECTED), rejected=Rejected("261201-ABCDE", reason, (), T0)
    )
    assert words in text(message) and message.edit
    assert text(message, "en") != text(message), "worded in English too"
    assert message.buttons == ((CART_BUTTON,),)


def test_a_payment_cancelled_by_yookassa_says_why() -> None:
    cancelled = msgspec.structs.replace(ORDER, payment_canceled="expired_on_confirmation")
    said = text(told(Notice("customer", Kind.PAYMENT_CANCELED), cancelled))
    assert "время на оплату истекло" in said and "№261201-ABCDE" in said
    assert "the time to pay ran out" in text(
        told(Notice("customer", Kind.PAYMENT_CANCELED), cancelled), "en"
    )
    odd = msgspec.structs.replace(ORDER, payment_canceled="something_new")
    assert render(RU, Text("payment.cancel_reason.default")) in text(
        told(Notice("customer", Kind.PAYMENT_CANCELED), odd)
    )
    lapsed = msgspec.structs.replace(ORDER, payment_canceled="expired_on_capture")
    assert "банк не успел" in text(told(Notice("admin", Kind.PAID_CANCELLED), lapsed))


def test_refunds_say_how_much_to_both() -> None:
    refund = Refund("r-1", 99_000, (), T0)
    customer = text(told(Notice("customer", Kind.REFUNDED, refund=refund)))
    admin = text(told(Notice("admin", Kind.REFUNDED, refund=refund)))
    assert "↩️" in customer and "990 ₽" in customer
    assert "990 ₽" in admin and "pay-1" in admin


def test_money_for_goods_gone_is_told_coming_back_then_back() -> None:
    gone = text(told(Notice("customer", Kind.STOCK_GONE)))
    assert "успел купить кто-то другой" in gone and "Деньги возвращаются" in gone
    assert "возвращена полностью" in text(told(Notice("customer", Kind.MONEY_BACK)))
    assert "возвращаются покупателю автоматически" in text(told(Notice("admin", Kind.STOCK_GONE)))


def test_a_payment_that_could_not_be_made_tells_the_admin_why() -> None:
    failed = msgspec.structs.replace(ORDER, payment_failed="invalid_request")
    assert "invalid_request" in text(told(Notice("admin", Kind.PAYMENT_FAILED), failed))
    released = msgspec.structs.replace(ORDER, released="payment_failed")
    assert "payment_failed" in text(told(Notice("admin", Kind.PAYMENT_FAILED), released))


CUSTOMER_KINDS = set(Kind) - {Kind.PAID_CANCELLED, Kind.CUSTOMER_CANCELLED}
ADMIN_KINDS = {
    Kind.PAID,
    Kind.ON_RECEIPT,
    Kind.PAYMENT_FAILED,
    Kind.STOCK_GONE,
    Kind.PAID_CANCELLED,
    Kind.REFUNDED,
    Kind.CUSTOMER_CANCELLED,
}
# Where the order is by then (a shipment names its carrier and number).
SHIPPED = msgspec.structs.replace(
    ORDER,
    committed_at=T0,
    fulfilment=(
        FulfilmentEntry(step="packed", at=T0, by=1),
        FulfilmentEntry(
            step="shipped", at=T0, by=1, carrier="russian_post", tracking="RA123456789RU"
        ),
    ),
)


@pytest.mark.parametrize("language", ["ru", "en"])
@pytest.mark.parametrize("to", ["customer", "admin"])
@pytest.mark.parametrize("kind", list(Kind))
def test_every_notice_is_worded_in_both_languages_or_is_not_news(
    kind: Kind, to: str, language: str
) -> None:
    notice = Notice("customer" if to == "customer" else "admin", kind, refund=None)
    order = SHIPPED if kind is Kind.SHIPPED else ORDER
    message = messages.for_notice(notice, order, TITLES, T0)
    if kind not in (CUSTOMER_KINDS if to == "customer" else ADMIN_KINDS):
        assert message is None
        return
    assert message is not None
    said = text(message, language)
    if message.text_key != "order.failed":  # the inventory said no more than "no"
        assert "№261201-ABCDE" in said or "#261201-ABCDE" in said
    kb.inline(for_language(language), message.buttons)  # the buttons build too


@pytest.mark.parametrize("kind", sorted(set(Kind) - messages.NAMING))
def test_only_the_naming_notices_need_the_products_titles(kind: Kind) -> None:
    # The Notifier looks titles up for NAMING only (a KV read per product on the way to Pay).
    for to in ("customer", "admin"):
        notice = Notice("customer" if to == "customer" else "admin", kind)
        with_titles = messages.for_notice(notice, ORDER, TITLES, T0)
        without = messages.for_notice(notice, ORDER, {}, T0)
        assert with_titles == without


def test_the_reminder_has_the_pay_button_again() -> None:
    message = messages.reminder(ORDER, T0 + timedelta(minutes=2, seconds=30), T0)
    said = text(message)
    assert said.startswith("⏰") and "2 мин" in said and "261201-ABCDE" in said
    assert buttons(message) == [[("💳 Оплатить 1\u00a0980 ₽", "https://pay.example/pay-1")]]


def test_low_stock_at_the_threshold_and_below_only() -> None:
    assert messages.low_stock("The last one", 4, 3) is None
    at = messages.low_stock("The last one", 3, 3)
    below = messages.low_stock("The last one", 2, 3)
    assert at is not None and below is not None
    assert text(below).startswith("📉") and "The last one: осталось 2" in text(below)
    assert "The last one: 2 left" in text(below, "en")


def test_the_sheets_alerts() -> None:
    since = datetime(2026, 11, 24, 9, 30, tzinfo=UTC)
    behind = CrmBehind(1234, since, "Google Sheets answered 503", since + timedelta(minutes=6))
    said = text(messages.alert(behind))
    assert "Таблица отстаёт" in said
    assert "1234 событий" in said and "6 мин" in said and "503" in said
    soon = CrmBehind(5, since, "", since + timedelta(seconds=10))
    assert "1 мин" in text(messages.alert(soon)), "at least a minute"
    caught_up = CrmCaughtUp(since, since + timedelta(minutes=9))
    assert "догнала: всё записано (отставала с 09:30" in text(messages.alert(caught_up))


def test_a_dead_lettered_message_is_told_with_where_it_is_kept() -> None:
    alert = DeadLettered(
        service="bot",
        stream="PAYMENTS",
        sequence=42,
        subject="payments.succeeded.o-1",
        reason="KeyError: 'x'",
        at=T0,
    )
    said = text(messages.alert(alert))
    assert "отложил сообщение" in said
    for part in ("bot", "PAYMENTS", "№42", "payments.succeeded.o-1", "KeyError"):
        assert part in said, part


def test_render_joins_pieces_and_escapes_only_what_is_not_a_text() -> None:
    joined = Joined((Text("order.rejected"), "<x>", "", Text("order.fix_hint")))
    said = render(RU, joined)
    assert said.split("\n")[1] == "&lt;x&gt;" and said.split("\n")[2] == ""
    assert (
        render(RU, Joined((Text("order.paid_late"), Text("order.paid_late")), "\n\n")).count("\n\n")
        == 1
    )
    unknown = Text("payment.cancel_reason.nope", fallback="payment.cancel_reason.default")
    assert render(EN, unknown) == EN.t("payment.cancel_reason.default")
    with pytest.raises(KeyError):
        render(EN, Text("payment.cancel_reason.nope"))


def test_no_buttons_no_keyboard() -> None:
    assert kb.inline(RU, ()) is None
    assert kb.pay(RU, "https://x", 100) == kb.inline(
        RU, ((messages.pay_button("https://x", 100),),)
    )
