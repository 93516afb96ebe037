"""The bot's texts: both languages have every key with the same placeholders, every message
is well-formed Telegram HTML, every problem code has a hint, and the examples the hints give
pass the checks they explain."""

from __future__ import annotations

import itertools
import re
from html.parser import HTMLParser
from typing import get_args

import pytest

from libs.lifecycle import Status
from services.bot import texts
from services.bot.texts import COMMANDS, LANGUAGES, Html, Texts, for_language, is_plain, load
from services.bot.validation import (
    ADDRESS_PARTS,
    Address,
    AddressProblem,
    AddressProblemCode,
    CommentProblem,
    CommentProblemCode,
    EmailProblem,
    EmailProblemCode,
    NameProblem,
    NameProblemCode,
    PhoneProblem,
    PhoneProblemCode,
    Problem,
    parse_address,
    parse_email,
    parse_phone,
)

RU, EN = load("ru"), load("en")
ALL = [RU, EN]
TELEGRAM_TAGS = frozenset({"b", "i", "u", "s", "code", "pre", "a", "tg-spoiler", "blockquote"})
YOOKASSA_REASONS = [
    "expired_on_confirmation",
    "insufficient_funds",
    "card_expired",
    "general_decline",
    "canceled_by_merchant",
    "3d_secure_failed",
    "fraud_suspected",
    "payment_method_restricted",
]


def every_problem() -> list[Problem]:
    problems: list[Problem] = [PhoneProblem(code, digits=9) for code in get_args(PhoneProblemCode)]
    problems += [AddressProblem(code, limit=300) for code in get_args(AddressProblemCode)]
    problems += [NameProblem(code) for code in get_args(NameProblemCode)]
    problems += [EmailProblem(code) for code in get_args(EmailProblemCode)]
    problems += [CommentProblem(code) for code in get_args(CommentProblemCode)]
    return problems


def render(lang: Texts, key: str) -> str:
    return lang.t(key, **dict.fromkeys(texts.placeholders(lang.template(key)), "x"))


# Completeness ------------------------------------------------------------------------------------
def test_both_languages_have_the_same_keys() -> None:
    assert sorted(RU.known_keys() - EN.known_keys()) == []
    assert sorted(EN.known_keys() - RU.known_keys()) == []


@pytest.mark.parametrize("key", sorted(RU.known_keys()))
def test_placeholders_match_between_languages(key: str) -> None:
    assert texts.placeholders(RU.template(key)) == texts.placeholders(EN.template(key)), key


@pytest.mark.parametrize("key", sorted(RU.known_keys()))
def test_every_text_is_filled_and_nonempty(key: str) -> None:
    for lang in ALL:
        text = render(lang, key)
        assert text.strip(), f"{lang.language}: {key} is empty"
        assert "{" not in text and "}" not in text, f"{lang.language}: {key}"
        if not key.startswith("list."):  # separators: ", ", " и "
            assert text == text.strip(), f"{lang.language}: {key} has edge whitespace"


class _TagChecker(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.open: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in TELEGRAM_TAGS:
            self.errors.append(f"<{tag}> is not Telegram HTML")
        self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.open or self.open.pop() != tag:
            self.errors.append(f"</{tag}> closes nothing")


@pytest.mark.parametrize("key", sorted(RU.known_keys()))
def test_messages_are_telegram_html_and_buttons_are_plain(key: str) -> None:
    for lang in ALL:
        template = lang.template(key)
        if is_plain(key):
            assert not re.search(r"<[a-z/]", template), f"{lang.language}: {key} is plain text"
            continue
        assert "&" not in template, f"{lang.language}: {key}: a bare & breaks Telegram HTML"
        checker = _TagChecker()
        checker.feed(render(lang, key))
        checker.close()
        assert checker.errors == [] and checker.open == [], f"{lang.language}: {key}"


def test_buttons_and_toasts_fit_telegram() -> None:
    for lang in ALL:
        for key in lang.known_keys():
            if ".toast." in key:
                assert len(render(lang, key)) <= 150, key  # answerCallbackQuery allows 200
            elif ".button." in key:
                assert len(render(lang, key)) <= 40, key  # readable on a phone


def test_command_descriptions() -> None:
    for lang in ALL:
        commands = lang.commands()
        assert [name for name, _ in commands] == list(COMMANDS)
        for name, description in commands:
            assert re.fullmatch(r"[a-z0-9_]{1,32}", name)
            assert 3 <= len(description) <= 256


# Language choice ---------------------------------------------------------------------------------
@pytest.mark.parametrize("code", ["en", "en-US", "en-gb", "EN", "en_AU"])
def test_english_for_english_speakers(code: str) -> None:
    assert for_language(code).language == "en"
    assert for_language(code).t("menu.button.cart") == "🛒 Cart"


@pytest.mark.parametrize("code", [None, "", "ru", "de", "uk", "be", "kk", "zh-hans"])
def test_russian_for_everyone_else(code: str | None) -> None:
    assert for_language(code).language == "ru"
    assert for_language(code).t("menu.button.cart") == "🛒 Корзина"


def test_languages_are_loaded_once() -> None:
    assert for_language("en-US") is for_language("en") is load("en")
    assert set(LANGUAGES) == {"ru", "en"}
    with pytest.raises(ValueError, match="de"):
        load("de")


# Filling placeholders ----------------------------------------------------------------------------
def test_a_missing_key_or_placeholder_fails_loudly() -> None:
    with pytest.raises(KeyError, match=r"catalog\.nope"):
        RU.t("catalog.nope")
    with pytest.raises(KeyError, match=r"\{qty\}"):
        RU.t("cart.line", title="Сенча", amount="690 ₽")


def test_extra_params_are_ignored() -> None:
    assert RU.t("cart.title", total="1 ₽") == "<b>Корзина</b>"


def test_values_are_escaped_in_messages_but_not_in_buttons() -> None:
    line = RU.t("cart.line", title="Чай <Сенча> & Co", qty=2, amount=RU.money(129_000))
    assert line == "Чай &lt;Сенча&gt; &amp; Co × 2 = 1\u00a0290 ₽"
    assert isinstance(line, Html)
    button = RU.t("catalog.button.product", title="Чай <Сенча>", price=RU.money(12_990))
    assert button == "Чай <Сенча> · 129.90 ₽"
    assert not isinstance(button, Html)


def test_html_pieces_are_not_escaped_twice() -> None:
    lines = RU.lines([RU.t("cart.line", title="A&B", qty=1, amount="1 ₽"), "<plain & simple>"])
    assert lines == "A&amp;B × 1 = 1 ₽\n&lt;plain &amp; simple&gt;"
    paid = RU.t("order.paid", number="42", lines=lines, total=RU.t("cart.total", total="1 ₽"))
    assert "A&amp;B × 1" in paid and "&amp;amp;" not in paid


def test_money() -> None:
    assert RU.money(12_990) == "129.90 ₽"
    assert EN.money(89_000) == "890 ₽"
    assert RU.t("order.button.pay", amount=RU.money(129_000)) == "💳 Оплатить 1\u00a0290 ₽"
    assert EN.t("order.button.pay", amount=EN.money(129_000)) == "💳 Pay 1\u00a0290 ₽"


def test_phones_are_shown_as_people_read_them() -> None:
    assert RU.phone("+79123456789") == "+7 912 345-67-89"
    assert EN.phone("+442079460958") == "+44 20 7946 0958"
    assert RU.phone("not a phone") == "not a phone"


def test_availability_texts() -> None:
    assert RU.t("catalog.few_left", count=3) == "осталось 3 шт."
    assert RU.t("catalog.out_of_stock") == "нет в наличии"
    assert RU.t("catalog.in_stock") == "в наличии"


# Hints, reasons, statuses ------------------------------------------------------------------------
@pytest.mark.parametrize("problem", every_problem(), ids=repr)
def test_every_problem_has_a_hint_in_both_languages(problem: Problem) -> None:
    for lang in ALL:
        if isinstance(problem, AddressProblem) and problem.code == "incomplete":
            continue  # below, with its missing parts
        assert lang.hint(problem)


def test_phone_hints_count_the_digits() -> None:
    assert "сейчас их 9" in RU.hint(PhoneProblem("too_short", 9))
    assert "(it has 9)" in EN.hint(PhoneProblem("too_short", 9))


@pytest.mark.parametrize(
    "missing",
    [
        frozenset(parts)
        for n in range(1, len(ADDRESS_PARTS) + 1)
        for parts in itertools.combinations(ADDRESS_PARTS, n)
    ],
    ids=lambda parts: "+".join(sorted(parts)),
)
def test_address_hints_name_every_missing_part(missing: frozenset[str]) -> None:
    problem = AddressProblem("incomplete", missing=missing)  # type: ignore[arg-type]
    for lang in ALL:
        hint = lang.hint(problem)
        for part in ADDRESS_PARTS:
            assert (lang.t(f"address.part.{part}") in hint) == (part in missing), hint
    assert RU.hint(AddressProblem("incomplete", missing=frozenset({"city", "house"}))) == (
        "Укажите ещё город или населённый пункт и номер дома. "
        "Например: <i>Москва, ул. Ленина, д. 5, кв. 12</i>."
    )
    assert EN.hint(AddressProblem("incomplete", missing=frozenset(ADDRESS_PARTS))).startswith(
        "Please add the city or town, the street and the house number."
    )


def test_yookassa_cancel_reasons_are_explained() -> None:
    for lang in ALL:
        default = lang.cancel_reason("something_new")
        assert default == lang.t("payment.cancel_reason.default")
        for reason in YOOKASSA_REASONS:
            assert lang.cancel_reason(reason) != default, reason
    assert RU.cancel_reason("insufficient_funds") == "на карте недостаточно средств"


@pytest.mark.parametrize("status", list(Status), ids=str)
def test_every_lifecycle_status_has_its_word_in_both_languages(status: Status) -> None:
    for lang in ALL:
        assert lang.has(f"status.{status.value}"), f"{lang.language}: status.{status.value}"
        assert lang.status(status) == lang.t(f"status.{status.value}")


def test_order_statuses_have_names() -> None:
    for lang in ALL:
        names = [lang.status(status) for status in Status]
        assert len(set(names)) == len(Status), "each status its own word"
        assert lang.status("unheard_of") == "unheard_of"
    assert RU.status(Status.AWAITING_PAYMENT) == "ждёт оплаты"
    assert EN.status(Status.RETURNING_MONEY) == "money on its way back"
    words = {key.removeprefix("status.") for key in RU.known_keys() if key.startswith("status.")}
    assert words == {status.value for status in Status}, "no word for a status that is not one"


# The examples the texts give pass the checks -----------------------------------------------------
def _examples(key_prefix: str) -> list[str]:
    found = []
    for lang in ALL:
        for key in lang.known_keys():
            if key.startswith(key_prefix):
                found += re.findall(r"<i>(.*?)</i>", lang.template(key))
    return found


def test_example_addresses_are_accepted() -> None:
    examples = _examples("hint.address.") + _examples("checkout.ask_address")
    assert examples
    for example in examples:
        assert isinstance(parse_address(example), Address), example


def test_example_phones_are_accepted() -> None:
    examples = _examples("hint.phone.") + _examples("checkout.ask_phone")
    assert examples
    for example in examples:
        assert isinstance(parse_phone(example), str), example


def test_example_emails_are_accepted() -> None:
    examples = [e for e in _examples("hint.email.") if "@" in e]
    assert examples
    for example in examples:
        assert isinstance(parse_email(example), str), example
