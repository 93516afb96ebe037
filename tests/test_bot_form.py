"""The checkout form as data (services.bot.form): the questions in order, what an answer means,
what the customer is told when it is wrong, and the summary; without Telegram or NATS."""

from __future__ import annotations

import msgspec
import pytest

from libs.contracts import CatalogProduct, Contact
from services.bot import cart, form
from services.bot.form import FIELDS, CheckoutAnswers, NotTheirs
from services.bot.messages import render
from services.bot.texts import for_language
from services.bot.validation import AddressProblem, PhoneProblem

RU, EN = for_language("ru"), for_language("en")
NAME, PHONE, ADDRESS, EMAIL, COMMENT = (form.BY_NAME[n] for n in form.BY_NAME)


def test_every_question_answers_a_field_of_the_answers_and_is_worded_in_both_languages() -> None:
    assert [f.name for f in FIELDS] == list(CheckoutAnswers.__struct_fields__)
    for field in FIELDS:
        assert RU.has(field.ask) and EN.has(field.ask), field.ask
        assert RU.has(f"checkout.button.edit_{field.name}"), "the summary can change it"


def test_the_questions_in_order_as_the_customer_reads_them() -> None:
    asked = [RU.t(f.ask) for f in form.questions(receipts=False)]
    for question, words in zip(
        asked, ("обращаться", "телефон", "Куда доставить", "комментарий"), strict=True
    ):
        assert words in question
    asked_en = [EN.t(f.ask) for f in form.questions(receipts=False)]
    for question, words in zip(
        asked_en, ("your name", "phone", "Where should we deliver", "Anything to add"), strict=True
    ):
        assert words in question


def test_the_email_is_asked_only_with_receipts_before_the_comment() -> None:
    assert form.questions(receipts=False) == (NAME, PHONE, ADDRESS, COMMENT)
    assert form.questions(receipts=True) == (NAME, PHONE, ADDRESS, EMAIL, COMMENT)


def test_after_an_answer_the_next_question_then_the_summary() -> None:
    assert form.after(NAME, receipts=False, editing=False) == PHONE
    assert form.after(ADDRESS, receipts=False, editing=False) == COMMENT
    assert form.after(ADDRESS, receipts=True, editing=False) == EMAIL
    assert form.after(COMMENT, receipts=True, editing=False) is None
    # One answer changed from the summary: back to the summary.
    assert form.after(NAME, receipts=False, editing=True) is None
    # A question not asked in this shop (a forged Edit button): the summary.
    assert form.after(EMAIL, receipts=False, editing=False) is None


def test_the_keyboards_and_the_skip_buttons() -> None:
    assert PHONE.keyboard == "share_phone" and PHONE.contact is not None
    assert [f.name for f in FIELDS if f.optional] == ["email", "comment"]
    assert all(f.keyboard == "skip" for f in FIELDS if f.optional)
    assert all(f.keyboard == "none" for f in (NAME, ADDRESS))
    assert [f.name for f in FIELDS if f.contact] == ["phone"], "only the phone takes a contact"


def test_the_states_keep_the_names_stored_conversations_have() -> None:
    # A customer mid-checkout across an upgrade keeps their place: the states are as before.
    assert [f.state for f in FIELDS] == [
        "Form:name",
        "Form:phone",
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


def test_saved_details_answer_all_but_the_comment() -> None:
    contact = Contact("Анна", "+79123456789", "Москва", "a@b.ru", "домофон 12")
    saved = CheckoutAnswers.saved(contact)
    assert saved.comment == "" and saved.name == "Анна" and saved.address == "Москва"
    assert saved.contact() == msgspec.structs.replace(contact, comment="")


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
