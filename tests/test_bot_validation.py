"""The checkout checks: real-looking phones and addresses that must pass, the ones that must
not (each with its problem), and properties over arbitrary text. Pure, no I/O."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.bot.validation import (
    ADDRESS_MAX,
    COMMENT_MAX,
    MAX_INPUT,
    NAME_MAX,
    Address,
    AddressPart,
    AddressProblem,
    CommentProblem,
    EmailProblem,
    NameProblem,
    PhoneProblem,
    check_contact,
    is_mobile,
    parse_address,
    parse_comment,
    parse_email,
    parse_name,
    parse_phone,
    parse_shared_phone,
)

PROPERTY_SETTINGS = settings(max_examples=300, deadline=None)


# Phone -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "e164"),
    [
        ("8 (912) 345-67-89", "+79123456789"),
        ("+7 912 345 67 89", "+79123456789"),
        ("9123456789", "+79123456789"),
        ("79123456789", "+79123456789"),
        ("89123456789", "+79123456789"),
        ("8(912)3456789", "+79123456789"),
        ("+7-912-345-67-89", "+79123456789"),
        ("+7.912.345.67.89", "+79123456789"),
        ("  +7 (912) 345–67–89  ", "+79123456789"),  # en dashes, spaces around
        ("+7\u00a0912\u00a0345\u00a067\u00a089", "+79123456789"),  # no-break spaces
        ("７９１２３４５６７８９", "+79123456789"),  # full-width digits
        ("8 (495) 123-45-67", "+74951234567"),  # a Moscow fixed line: a courier can call it
        ("8 800 555-35-35", "+78005553535"),  # toll-free
        ("+44 20 7946 0958", "+442079460958"),
        ("0044 20 7946 0958", "+442079460958"),  # 00 is an international prefix
        ("+375 29 123-45-67", "+375291234567"),
        ("+1 (650) 253-0000", "+16502530000"),
        ("+7 727 258 28 28", "+77272582828"),  # Kazakhstan shares +7
    ],
)
def test_phones_people_type_are_read(raw: str, e164: str) -> None:
    assert parse_phone(raw) == e164


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("", PhoneProblem("empty")),
        ("   ", PhoneProblem("empty")),
        ("912345678", PhoneProblem("too_short", 9)),
        ("8 912 345 67 8", PhoneProblem("too_short", 9)),  # 8 is the trunk prefix, not a digit
        ("+7 912 345 67 8", PhoneProblem("too_short", 9)),
        ("345-67-89", PhoneProblem("too_short", 7)),  # a local number without the city code
        ("12", PhoneProblem("too_short", 2)),
        ("1", PhoneProblem("too_short", 1)),
        ("+7 912 345 67 891", PhoneProblem("too_long", 11)),
        ("8 912 345 67 89 0", PhoneProblem("too_long", 11)),
        ("89123456789012345", PhoneProblem("too_long", 16)),
        ("Иван", PhoneProblem("letters", 0)),
        ("8-912-ABC-67-89", PhoneProblem("letters", 8)),
        ("+7 912 345 67 89 доб. 12", PhoneProblem("letters", 13)),
        ("+", PhoneProblem("not_a_number", 0)),
        ("#123", PhoneProblem("not_a_number", 3)),
        ("+7 912 345 67 89, +7 912 345 67 80", PhoneProblem("not_a_number", 22)),
        ("+7 912 345 67 89 +", PhoneProblem("not_a_number", 11)),
        ("+7 000 000 00 00", PhoneProblem("invalid", 10)),
        ("+999 123456", PhoneProblem("invalid", 9)),  # no such country code
        ("8 (111) 111-11-11", PhoneProblem("invalid", 10)),
    ],
)
def test_phones_that_cannot_be_called_are_refused_with_a_reason(
    raw: str, problem: PhoneProblem
) -> None:
    assert parse_phone(raw) == problem


def test_too_long_phone_input_is_refused_before_parsing() -> None:
    assert parse_phone("1" * (MAX_INPUT + 1)) == PhoneProblem("too_long", MAX_INPUT + 1)


def test_a_shared_contact_number_is_international_even_without_plus() -> None:
    assert parse_shared_phone("79123456789") == "+79123456789"
    assert parse_shared_phone("+79123456789") == "+79123456789"
    assert parse_shared_phone("447911123456") == "+447911123456"  # not read as a Russian one
    assert parse_shared_phone("") == PhoneProblem("empty")


def test_is_mobile_tells_which_numbers_take_sms() -> None:
    assert is_mobile("+79123456789")
    assert not is_mobile("+74951234567")


def test_a_shared_contact_must_be_the_senders_own() -> None:
    assert check_contact(42, 42)
    assert not check_contact(43, 42)
    assert not check_contact(None, 42)  # a contact card typed in by hand, or someone's vCard


RU_MOBILE = st.integers(min_value=900_000_0000, max_value=999_999_9999).map(str)


@PROPERTY_SETTINGS
@given(national=RU_MOBILE, style=st.sampled_from(range(8)))
def test_a_russian_mobile_in_any_common_format_gives_one_e164(national: str, style: int) -> None:
    e164 = f"+7{national}"
    if parse_phone(e164) != e164:
        return  # a range not yet given out to operators; not a mobile customers have
    a, b, c, d = national[:3], national[3:6], national[6:8], national[8:]
    written = [
        f"+7 {a} {b} {c} {d}",
        f"8 ({a}) {b}-{c}-{d}",
        f"8{national}",
        f"7{national}",
        national,
        f"+7({a}){b}-{c}-{d}",
        f"8-{a}-{b}-{c}-{d}",
        f" +7 {a} {b}{c}{d} ",
    ][style]
    assert parse_phone(written) == e164
    assert parse_shared_phone(f"7{national}") == e164


@PROPERTY_SETTINGS
@given(st.text(max_size=60))
def test_parse_phone_never_raises_and_a_result_reads_back_as_itself(raw: str) -> None:
    result = parse_phone(raw)
    if isinstance(result, str):
        assert result.startswith("+")
        assert parse_phone(result) == result
    else:
        assert isinstance(result, PhoneProblem)


@PROPERTY_SETTINGS
@given(st.from_regex(r"[+]?[0-9 ()\-]{0,24}", fullmatch=True))
def test_parse_phone_never_raises_on_phone_like_text(raw: str) -> None:
    assert isinstance(parse_phone(raw), str | PhoneProblem)


# Address -----------------------------------------------------------------------------------------
GOOD_ADDRESSES = [
    "г. Москва, ул. Ленина, д. 5, кв. 12",
    "Москва, Ленина 5-12",
    "Санкт-Петербург, Невский пр., 28",
    "пос. Коммунарка, ул. Лазурная, 10",
    "Казань, проспект Победы 100к2",
    "12 Baker Street, London",
    "москва, ленина 5",
    "Москва, Тверская, 7",
    "Москва Ленина 5",
    "г Москва ул Ленина д 5 кв 12",
    "ул. Ленина 5, Москва",
    "Екатеринбург, ул. 8 Марта, 14",
    "Москва, Варшавское ш., 120к1",
    "Новосибирск, Красный проспект, 77/1, кв. 40",
    "Москва, мкр. Солнцево, д. 10, корп. 2",
    "Нижний Новгород, ул. Большая Покровская, 12",
    "Ростов-на-Дону, пр. Ворошиловский 45, кв 3",
    "Краснодар, Красная ул., 100",
    "Москва, Кутузовский проспект, дом 30",
    "Сочи, Курортный пр-т 75",
    "Калининград, наб. Адмирала Трибуца, 9",
    "Москва, 1-я Тверская-Ямская ул., 21",
    "350 Fifth Avenue, New York, NY 10118",
    "10 Downing St, London SW1A 2AA",
    "221B Baker Street, London NW1 6XE",
    "Berlin, Unter den Linden 77",
    "Тверь, бульвар Радищева, 31",
    "п. Шушары, Пушкинская ул., 12",
    "Уфа, Мира 1",
    "Ленинградская обл., пгт Токсово, ул. Привокзальная, 10",
    "Самара, Московское шоссе, 4к2, подъезд 3, этаж 5, кв 41",
    "Владивосток, ул. Светланская, 1А",
    "Иркутск, микрорайон Юбилейный, 15",
    "Россия, Москва, ул. Ленина, 5",
    "123456, г. Москва, ул. Ленина, д. 5",
    "Московская обл., г. Химки, ул. Маяковского, 12",
    "д. Грибки, ул. Центральная, 3",
    "Санкт-Петербург, В.О., 5-я линия, 20",
    "г.Москва,ул.Ленина,д.5,кв.12",
    "Москва, ул Ленина, д5, кв7",
    "Москва, ул. 50 лет Октября, д. 3",
    "Казань, ул. Баумана, 51, офис 3",
    "Москва, Ленинский проспект, 32А, кв. 7, домофон 7К",
    "Москва\nул. Ленина 5\nкв. 12",
    "СПб, Невский 28",
    "д. Грибки, д. 15",  # a village without streets
    "СНТ Ромашка, участок 15",
    "Зеленоград, корпус 1105",
    "Moscow, Lenina st. 5, flat 12",
    "Flat 3, 12 Baker Street, London",
]


@pytest.mark.parametrize("raw", GOOD_ADDRESSES)
def test_real_addresses_are_accepted(raw: str) -> None:
    address = parse_address(raw)
    assert isinstance(address, Address), address
    assert parse_address(address.text) == address  # the clean text reads back the same


@pytest.mark.parametrize(
    ("raw", "city", "street", "house"),
    [
        ("г. Москва, ул. Ленина, д. 5, кв. 12", "г. Москва", "ул. Ленина", "5"),
        ("Москва, Ленина 5-12", "Москва", "Ленина", "5-12"),
        ("Санкт-Петербург, Невский пр., 28", "Санкт-Петербург", "Невский пр.", "28"),
        ("пос. Коммунарка, ул. Лазурная, 10", "пос. Коммунарка", "ул. Лазурная", "10"),
        ("Казань, проспект Победы 100к2", "Казань", "проспект Победы", "100к2"),
        ("12 Baker Street, London", "London", "Baker Street", "12"),
        ("Екатеринбург, ул. 8 Марта, 14", "Екатеринбург", "ул. 8 Марта", "14"),
        ("ул. Ленина 5, Москва", "Москва", "ул. Ленина", "5"),
        ("350 Fifth Avenue, New York, NY 10118", "New York", "Fifth Avenue", "350"),
        ("Москва, мкр. Солнцево, д. 10, корп. 2", "Москва", "мкр. Солнцево", "10"),
    ],
)
def test_the_parts_of_an_address_are_found(raw: str, city: str, street: str, house: str) -> None:
    assert parse_address(raw) == Address(text=raw, city=city, street=street, house=house)


def _missing(*parts: AddressPart) -> AddressProblem:
    return AddressProblem("incomplete", missing=frozenset(parts))


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("", AddressProblem("empty")),
        (" \n , ", AddressProblem("empty")),
        ("Москва, 5", AddressProblem("too_short", limit=10)),
        ("Москва, улица Ленина", _missing("house")),
        ("Москва, ул. Ленина, кв. 12", _missing("house")),  # a flat is not a house
        ("Москва, ул. 8 Марта", _missing("house")),  # "8 Марта" is the street's name
        ("123456, Москва, Ленина", _missing("house")),  # a postcode is not a house
        ("ул. Ленина, д. 5", _missing("city")),
        ("Ленина 5, кв 12", _missing("city")),
        ("г. Москва, д. 5", _missing("street")),
        ("Тверская, 7", _missing("street")),  # the first part is read as the city
        ("Санкт-Петербург", _missing("street", "house")),
        ("дом 5 кв 12 подъезд 3", _missing("city", "street")),
        ("12345678901234", _missing("city", "street", "house")),
        ("позвоните мне перед доставкой", _missing("city", "street", "house")),
        ("https://yandex.ru/maps/-/CDbRz8", AddressProblem("link")),
        ("Москва, ул. Ленина 5, @ivan_petrov", AddressProblem("link")),
        ("www.example.com Москва Ленина 5", AddressProblem("link")),
        ("Москва, t.me/shop, Ленина 5", AddressProblem("link")),
        ("Москва, ул. Ленина\x00 5", AddressProblem("control_chars")),
        ("Москва, ул. Ленина 5\u202e21 .вк", AddressProblem("control_chars")),
        ("Москва, ул. Ленина 5, " + "кв. 12 " * 50, AddressProblem("too_long", limit=ADDRESS_MAX)),
        ("Москва " * 200, AddressProblem("too_long", limit=ADDRESS_MAX)),  # over MAX_INPUT
    ],
)
def test_addresses_a_courier_cannot_use_are_refused_with_what_is_wrong(
    raw: str, problem: AddressProblem
) -> None:
    assert parse_address(raw) == problem


def test_an_address_is_tidied_for_the_courier() -> None:
    address = parse_address("  Москва,   ул.  Ленина\t5 \r\n\n кв. 12  ")
    assert isinstance(address, Address)
    assert address.text == "Москва, ул. Ленина 5, кв. 12"


@PROPERTY_SETTINGS
@given(st.text(max_size=400))
def test_parse_address_never_raises(raw: str) -> None:
    result = parse_address(raw)
    assert isinstance(result, Address | AddressProblem)
    if isinstance(result, AddressProblem):
        assert (result.code == "incomplete") == bool(result.missing)


@PROPERTY_SETTINGS
@given(
    st.lists(
        st.sampled_from(
            ["г.", "ул", "д.", "кв", "5", "12к2", "Москва", "Ленина", ",", "8", "Марта", "№", "-"]
        ),
        max_size=14,
    )
)
def test_parse_address_never_raises_on_address_like_text(words: list[str]) -> None:
    assert isinstance(parse_address(" ".join(words)), Address | AddressProblem)


# Name, e-mail, comment ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Иван", "Иван"),
        ("  Иван   Петров ", "Иван Петров"),
        ("Анна-Мария", "Анна-Мария"),
        ("O'Brien", "O'Brien"),
        ("Ivan 2", "Ivan 2"),
        ("", NameProblem("empty")),
        ("   ", NameProblem("empty")),
        ("12345", NameProblem("no_letters")),
        ("😀", NameProblem("no_letters")),
        ("@ivan_petrov", NameProblem("link")),
        ("https://vk.com/id1", NameProblem("link")),
        ("Иван\x00", NameProblem("control_chars")),
        ("Я" * (NAME_MAX + 1), NameProblem("too_long")),
        ("Я" * (MAX_INPUT + 1), NameProblem("too_long")),
    ],
)
def test_names(raw: str, expected: str | NameProblem) -> None:
    assert parse_name(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("ivan@mail.ru", "ivan@mail.ru"),
        ("  Ivan.Petrov@Mail.RU ", "Ivan.Petrov@mail.ru"),
        ("ivan+shop@gmail.com", "ivan+shop@gmail.com"),
        ("ivan@sub.domain.co.uk", "ivan@sub.domain.co.uk"),
        ("ivan@почта.РФ", "ivan@почта.рф"),
        ("mailto:ivan@mail.ru", "ivan@mail.ru"),
        ("", EmailProblem("empty")),
        ("ivan", EmailProblem("no_at")),
        ("ivan @mail.ru", EmailProblem("spaces")),
        ("@mail.ru", EmailProblem("bad_local")),
        ("a@b@mail.ru", EmailProblem("bad_local")),
        ("ivan..petrov@mail.ru", EmailProblem("bad_local")),
        ("иван@mail.ru", EmailProblem("bad_local")),
        ("ivan@", EmailProblem("bad_domain")),
        ("ivan@mail", EmailProblem("bad_domain")),
        ("ivan@mail,ru", EmailProblem("bad_domain")),
        ("ivan@mail.ru.", EmailProblem("bad_domain")),
        ("ivan@-mail.ru", EmailProblem("bad_domain")),
        ("ivan@mail.r", EmailProblem("bad_domain")),
        ("ivan@mail.ru\x07", EmailProblem("control_chars")),
        ("i" * 250 + "@mail.ru", EmailProblem("too_long")),
    ],
)
def test_emails(raw: str, expected: str | EmailProblem) -> None:
    assert parse_email(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("-", ""),
        ("—", ""),
        ("нет", ""),
        ("Нет.", ""),
        ("no", ""),
        ("", ""),
        ("  домофон  12 \r\n\n позвонить за час ", "домофон 12\nпозвонить за час"),
        ("нет домофона", "нет домофона"),
        ("x" * COMMENT_MAX, "x" * COMMENT_MAX),
        ("x" * (COMMENT_MAX + 1), CommentProblem("too_long")),
        ("x" * (MAX_INPUT + 1), CommentProblem("too_long")),
        ("звонок\x07", CommentProblem("control_chars")),
    ],
)
def test_comments(raw: str, expected: str | CommentProblem) -> None:
    assert parse_comment(raw) == expected


@PROPERTY_SETTINGS
@given(st.text(max_size=1200))
def test_nothing_raises_on_arbitrary_text(raw: str) -> None:
    assert isinstance(parse_name(raw), str | NameProblem)
    assert isinstance(parse_email(raw), str | EmailProblem)
    assert isinstance(parse_comment(raw), str | CommentProblem)
    assert isinstance(parse_address(raw), Address | AddressProblem)
    assert isinstance(parse_phone(raw), str | PhoneProblem)
