"""The checkout form as data (services.bot.form): the questions in order, what an answer means,
what the customer is told when it is wrong, and the summary; without Telegram or NATS."""

from __future__ import annotations

import msgspec
import pytest

from libs.contracts import (
    CatalogDelivery,
    CatalogProduct,
    Contact,
    DeliveryChoice,
    DeliveryMethod,
)
from services.bot import cart, form
from services.bot.form import FIELDS, CheckoutAnswers, NotTheirs
from services.bot.messages import render
from services.bot.texts import for_language
from services.bot.validation import AddressProblem, PhoneProblem

RU, EN = for_language("ru"), for_language("en")
NAME, PHONE, DELIVERY, PAYMENT, ADDRESS, EMAIL, COMMENT = (form.BY_NAME[n] for n in form.BY_NAME)
PLAIN, RECEIPTS = form.Shop(receipts=False), form.Shop(receipts=True)


def test_every_question_answers_a_field_of_the_answers_and_is_worded_in_both_languages() -> None:
    assert [f.name for f in FIELDS] == list(CheckoutAnswers.__struct_fields__)
    for field in FIELDS:
        assert RU.has(field.ask) and EN.has(field.ask), field.ask
        assert RU.has(f"checkout.button.edit_{field.name}"), "the summary can change it"


def test_the_questions_in_order_as_the_customer_reads_them() -> None:
    # (The way to pay is a question too, answered by itself when the shop takes cards alone.)
    asked = [RU.t(f.ask) for f in form.questions(PLAIN) if f is not PAYMENT]
    for question, words in zip(
        asked, ("обращаться", "телефон", "Куда доставить", "комментарий"), strict=True
    ):
        assert words in question
    asked_en = [EN.t(f.ask) for f in form.questions(PLAIN) if f is not PAYMENT]
    for question, words in zip(
        asked_en, ("your name", "phone", "Where should we deliver", "Anything to add"), strict=True
    ):
        assert words in question


def test_the_email_is_asked_only_with_receipts_before_the_comment() -> None:
    assert form.questions(PLAIN) == (NAME, PHONE, PAYMENT, ADDRESS, COMMENT)
    assert form.questions(RECEIPTS) == (NAME, PHONE, PAYMENT, ADDRESS, EMAIL, COMMENT)


def test_the_next_question_is_the_first_not_answered_then_the_summary() -> None:
    assert form.next_question({"user_id": 7}, PLAIN) == NAME
    assert form.next_question({"name": "Анна"}, PLAIN) == PHONE
    answered = {"name": "Анна", "phone": "+79123456789", "address": "Москва, Ленина 5"}
    assert form.next_question(answered, PLAIN) == PAYMENT, "(answered by itself: card alone)"
    answered |= {"payment": "card"}
    assert form.next_question(answered, PLAIN) == COMMENT
    assert form.next_question(answered, RECEIPTS) == EMAIL
    assert form.next_question(answered | {"email": "", "comment": ""}, RECEIPTS) is None, (
        "a skipped question is answered"
    )
    # One answer changed from the summary (taken out and asked again): back to the summary.
    assert form.next_question(answered | {"comment": "-"}, PLAIN) is None
    assert form.next_question(answered | {"address": "", "comment": ""}, PLAIN) == ADDRESS, (
        "an address is not optional"
    )


def test_the_keyboards_and_the_skip_buttons() -> None:
    assert PHONE.keyboard == "share_phone" and PHONE.contact is not None
    assert [f.name for f in FIELDS if f.optional] == ["email", "comment"]
    assert all(f.keyboard == "skip" for f in FIELDS if f.optional)
    assert all(f.keyboard == "none" for f in (NAME, ADDRESS))
    assert DELIVERY.keyboard == "choices" and not isinstance(DELIVERY.parse("курьер"), str)
    assert PAYMENT.keyboard == "choices" and not isinstance(PAYMENT.parse("картой"), str)
    assert [f.name for f in FIELDS if f.contact] == ["phone"], "only the phone takes a contact"


def test_the_states_keep_the_names_stored_conversations_have() -> None:
    # A customer mid-checkout across an upgrade keeps their place: the states are as before.
    assert [f.state for f in FIELDS] == [
        "Form:name",
        "Form:phone",
        "Form:delivery",
        "Form:payment",
        "Form:address",
        "Form:email",
        "Form:comment",
    ]
    assert form.CONFIRM == "Form:confirm"
    assert set(form.STATES) == {*form.BY_STATE, form.CONFIRM}


def test_a_short_phone_gets_a_hint_that_counts_the_digits() -> None:
    problem = PHONE.parse("8 912 345")
    assert isinstance(problem, PhoneProblem) and problem.code == "too_short"
    assert "цифр" in RU.hint(problem)
    assert PHONE.parse("8 (912) 345-67-89") == "+79123456789"


def test_an_address_without_a_house_number_asks_for_it() -> None:
    problem = ADDRESS.parse("Москва, Ленина")
    assert isinstance(problem, AddressProblem) and problem.code == "incomplete"
    assert "дома" in RU.hint(problem)
    assert ADDRESS.parse("Москва, ул. Ленина, д. 5, кв. 12") == "Москва, ул. Ленина, д. 5, кв. 12"


def test_a_far_too_long_answer_is_refused_with_a_hint() -> None:
    problem = ADDRESS.parse("x" * 5000)
    assert isinstance(problem, AddressProblem) and problem.code == "too_long"
    assert RU.hint(problem)


def test_a_dash_means_no_comment_and_a_name_is_tidied() -> None:
    assert COMMENT.parse("-") == ""
    assert COMMENT.parse("домофон 12") == "домофон 12"
    assert NAME.parse("  Анна  ") == "Анна"
    assert not isinstance(NAME.parse("12345"), str)


def test_a_shared_contact_must_be_the_customers_own() -> None:
    assert isinstance(form.read_contact(PHONE, "+79990001122", 11, 10), NotTheirs)
    assert isinstance(form.read_contact(PHONE, "+79990001122", None, 10), NotTheirs)
    assert "другого человека" in RU.t("checkout.contact_not_yours")
    # Telegram sends a shared number without its plus: it is international all the same.
    assert form.read_contact(PHONE, "79123456789", 10, 10) == "+79123456789"
    with pytest.raises(AssertionError):
        form.read_contact(NAME, "79123456789", 10, 10)


def test_the_answers_are_read_from_a_conversation_among_its_other_keys() -> None:
    data = {"user_id": 7, "order_id": "261201-ABCDE", "editing": False, "name": "Анна"}
    assert CheckoutAnswers.of(data) == CheckoutAnswers(name="Анна")
    assert CheckoutAnswers.of({}) == CheckoutAnswers()
    full = CheckoutAnswers(
        name="Анна", phone="+79123456789", address="Москва", email="a@b.ru", comment="-"
    )
    assert CheckoutAnswers.of(msgspec.structs.asdict(full)) == full
    assert full.contact() == Contact("Анна", "+79123456789", "Москва", "a@b.ru", "-")


def test_saved_details_answer_all_but_the_delivery_and_the_comment() -> None:
    contact = Contact("Анна", "+79123456789", "Москва", "a@b.ru", "домофон 12")
    saved = CheckoutAnswers.saved(contact)
    assert saved == {
        "name": "Анна",
        "phone": "+79123456789",
        "address": "Москва",
        "email": "a@b.ru",
    }
    assert CheckoutAnswers.of(saved).contact() == msgspec.structs.replace(contact, comment="")
    no_address = CheckoutAnswers.saved(Contact("Анна", "+79123456789"))
    assert "address" not in no_address, "asked again when the delivery needs one"


def test_the_summary_shows_the_cart_and_every_answer() -> None:
    product = CatalogProduct("FEW", "A few", "", 99_000, "", "goods", 0)
    items = cart.priced({"FEW": 2}, {"FEW": product})
    answers = CheckoutAnswers(
        name="Анна", phone="+79123456789", address="Москва, ул. Ленина, д. 5", comment="<b>"
    )
    said = render(RU, form.summary(answers, items))
    assert "Проверьте заказ" in said
    assert "A few × 2 = 1\u00a0980 ₽" in said and "1\u00a0980 ₽" in said
    assert "+7 912 345-67-89" in said and "Ленина" in said and "Анна" in said
    assert "✉️ —" in said, "no e-mail: a dash"
    assert "&lt;b&gt;" in said, "what the customer typed is escaped"
    assert "Please check your order" in render(EN, form.summary(answers, items))


# The delivery step ------------------------------------------------------------------------------
PICKUP = DeliveryMethod(
    id="pickup",
    title="Самовывоз",
    kind="pickup",
    price=0,
    address="Москва, Тверская 1",
    hours="10–20",
)
COURIER = DeliveryMethod(
    id="courier",
    title="Курьер по Москве",
    kind="courier",
    price=30_000,
    free_from=500_000,
    cities=("Москва",),
)
POST = DeliveryMethod(
    id="post", title="Почта России", kind="post", price=35_000, base_weight=1000, per_kg=5_000
)
SHOP = form.Shop(False, CatalogDelivery((PICKUP, COURIER, POST), min_order=100_000))
TEA = CatalogProduct("TEA", "Сенча", "", 69_000, "", "tea", 0, weight=600)


def _items(qty: int) -> cart.Priced:
    return cart.priced({"TEA": qty}, {"TEA": TEA})


def test_each_method_is_a_button_with_its_price_for_this_cart() -> None:
    labels = [render(RU, o.label()) for o in form.offers(SHOP, _items(2))]
    # 1.2 kg by post: the base kilogram and one started kilogram over it.
    assert labels == [
        "Самовывоз — бесплатно",
        "Курьер по Москве — 300 ₽",
        "Почта России — 400 ₽",
    ]
    free = {o.method.id: o.price for o in form.offers(SHOP, _items(8))}
    assert free["courier"] == 0, "free from 5 000 ₽ of goods"
    assert render(EN, form.offers(SHOP, _items(1))[0].label()) == "Самовывоз — free"


def test_pickup_asks_no_address_and_a_courier_or_the_post_does() -> None:
    asked = {"name": "Анна", "phone": "+79123456789", "payment": "card"}
    assert form.next_question(asked, SHOP) == DELIVERY
    assert form.next_question(asked | {"delivery": "pickup"}, SHOP) == COMMENT
    assert form.next_question(asked | {"delivery": "courier"}, SHOP) == ADDRESS
    assert form.next_question(asked | {"delivery": "post"}, SHOP) == ADDRESS
    # Changed from the summary, pickup to courier: the address it now needs, then the summary.
    done = asked | {"delivery": "courier", "comment": ""}
    assert form.next_question(done, SHOP) == ADDRESS
    assert form.next_question(done | {"address": "Москва, Ленина 5"}, SHOP) is None
    # A shop without methods never asks.
    assert DELIVERY not in form.questions(PLAIN)


def test_the_order_delivery_at_the_carts_price_and_a_courier_only_in_its_cities() -> None:
    moscow = CheckoutAnswers(delivery="courier", address="г. Москва, ул. Ленина, д. 5")
    assert form.choice(moscow, _items(2), SHOP) == DeliveryChoice(
        method_id="courier", price=30_000, city="Москва"
    )
    kazan = CheckoutAnswers(delivery="courier", address="Казань, ул. Баумана, д. 5")
    refused = form.choice(kazan, _items(2), SHOP)
    assert isinstance(refused, form.NotServed)
    said = render(RU, refused.say())
    assert "Курьер по Москве не возит в город Казань" in said and "только Москва" in said
    by_post = CheckoutAnswers(delivery="post", address="Казань, ул. Баумана, д. 5")
    assert form.choice(by_post, _items(2), SHOP) == DeliveryChoice(
        method_id="post", price=40_000, city="Казань"
    )
    pickup = CheckoutAnswers(delivery="pickup", address="Москва, Ленина 5")
    assert form.choice(pickup, _items(2), SHOP) == DeliveryChoice(method_id="pickup", price=0)
    assert pickup.contact(PICKUP).address == "", "a pickup order has no delivery address"
    assert form.choice(CheckoutAnswers(), _items(2), PLAIN) is None


def test_a_method_the_shop_dropped_is_stale_and_the_minimum_order_is_said() -> None:
    answered = {"name": "Анна", "phone": "+79123456789", "payment": "card", "comment": ""}
    assert form.next_question(answered | {"delivery": "drone"}, SHOP) == DELIVERY, "asked again"
    assert form.next_question(answered | {"delivery": "pickup"}, SHOP) is None
    short = form.below_minimum(_items(1), SHOP)
    assert short is not None
    assert render(RU, short) == (
        "Минимальная сумма заказа — 1\u00a0000 ₽. Добавьте товаров ещё на 310 ₽."
    )
    assert form.below_minimum(_items(2), SHOP) is None
    assert form.below_minimum(_items(1), PLAIN) is None


def test_the_summary_shows_goods_delivery_and_total_and_where_to_pick_up() -> None:
    answers = CheckoutAnswers(name="Анна", phone="+79123456789", delivery="post")
    answers = msgspec.structs.replace(answers, address="Казань, ул. Баумана, д. 5")
    chosen = form.choice(answers, _items(2), SHOP)
    assert isinstance(chosen, DeliveryChoice)
    said = render(RU, form.summary(answers, _items(2), SHOP, chosen))
    assert "Товары: 1\u00a0380 ₽\nДоставка: Почта России — 400 ₽" in said
    assert "Итого: <b>1\u00a0780 ₽</b>" in said and "Баумана" in said
    pickup = msgspec.structs.replace(answers, delivery="pickup")
    chosen = form.choice(pickup, _items(2), SHOP)
    assert isinstance(chosen, DeliveryChoice)
    said = render(RU, form.summary(pickup, _items(2), SHOP, chosen))
    assert "Доставка: Самовывоз — бесплатно" in said and "Итого: <b>1\u00a0380 ₽</b>" in said
    assert "📍 Самовывоз: Москва, Тверская 1, 10–20" in said and "Баумана" not in said


def test_the_ways_to_pay_cash_only_where_the_goods_are_handed_over() -> None:
    shop = form.Shop(False, SHOP.delivery, pay_by=("card", "sbp", "cash"))
    answers = CheckoutAnswers(delivery="pickup")
    labels = [render(RU, c.label) for c in form.choices(PAYMENT, shop, _items(2), answers)]
    assert labels == ["💳 Картой онлайн", "⚡ СБП", "💵 При получении"]
    for delivered, ways in (("pickup", 3), ("courier", 3), ("post", 2)):
        assert len(shop.payments(delivered)) == ways, delivered
    # Cash chosen for pickup, then the post instead: the way to pay is asked again.
    data = {"name": "Анна", "phone": "+79123456789", "delivery": "post", "payment": "cash"}
    assert form.next_question(data, shop) == PAYMENT
    assert form.next_question(data | {"payment": "sbp"}, shop) == ADDRESS
    assert CheckoutAnswers(payment="sbp").paying() == "sbp"
    assert CheckoutAnswers().paying() == "card", "a shop that did not ask takes cards"
    said = render(RU, form.summary(CheckoutAnswers(payment="cash"), _items(1)))
    assert "💳 Оплата: наличными или картой при получении" in said
