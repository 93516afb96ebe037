"""Checks of what a customer types at checkout: each returns the clean value or a problem.

Pure: no I/O and no texts. A problem is a machine-readable code with the numbers a hint needs;
the bot words it in the customer's language (`Texts.hint`). The checks are forgiving on purpose:
refusing a real phone or address costs the shop a sale, so they refuse only what a courier
could not use.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from dataclasses import dataclass
from typing import Literal

import phonenumbers

MAX_INPUT = 1000  # longer input is refused with `too_long` before any other work
NAME_MAX = 64
ADDRESS_MIN = 10
ADDRESS_MAX = 300
EMAIL_MAX = 254
COMMENT_MAX = 500

# Problems ----------------------------------------------------------------------------------------
PhoneProblemCode = Literal["empty", "too_short", "too_long", "letters", "not_a_number", "invalid"]
AddressPart = Literal["city", "street", "house"]
AddressProblemCode = Literal[
    "empty", "too_short", "too_long", "link", "control_chars", "incomplete"
]
NameProblemCode = Literal["empty", "too_long", "no_letters", "link", "control_chars"]
EmailProblemCode = Literal[
    "empty", "too_long", "control_chars", "spaces", "no_at", "bad_local", "bad_domain"
]
CommentProblemCode = Literal["too_long", "control_chars"]
ADDRESS_PARTS: tuple[AddressPart, ...] = ("city", "street", "house")


@dataclass(frozen=True, slots=True)
class PhoneProblem:
    code: PhoneProblemCode
    # Digits of the number without its country code and trunk prefix when those could be told
    # apart (so "8 912 345 67 8" has 9), else every digit typed.
    digits: int = 0


@dataclass(frozen=True, slots=True)
class AddressProblem:
    code: AddressProblemCode
    missing: frozenset[AddressPart] = frozenset()  # for `incomplete`: every part not found
    limit: int = 0  # the bound broken, for `too_short` and `too_long`


@dataclass(frozen=True, slots=True)
class NameProblem:
    code: NameProblemCode
    limit: int = NAME_MAX


@dataclass(frozen=True, slots=True)
class EmailProblem:
    code: EmailProblemCode


@dataclass(frozen=True, slots=True)
class CommentProblem:
    code: CommentProblemCode
    limit: int = COMMENT_MAX


@dataclass(frozen=True, slots=True)
class ChoiceProblem:
    """A question answered with buttons got typed words instead."""

    code: Literal["typed"] = "typed"


Problem = (
    PhoneProblem | AddressProblem | NameProblem | EmailProblem | CommentProblem | ChoiceProblem
)


@dataclass(frozen=True, slots=True)
class Address:
    """A delivery address: the text as the courier reads it, and the parts found in it (a best
    guess, for the order card and the sheet; the text is what counts)."""

    text: str
    city: str
    street: str
    house: str


# Shared pieces -----------------------------------------------------------------------------------
_LINK = re.compile(
    r"https?://|www\.|\b(?:t|telegram)\.me\b|\btg://|@[A-Za-z0-9_]{3,}"
    r"|\b[\w-]+\.(?:ru|com|net|org|me|io|su|info|biz|рф|online|site|shop|store)\b",
    re.IGNORECASE,
)
# Direction overrides can make a text read differently from what it says.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _has_control_chars(text: str, allowed: str = "") -> bool:
    return any(
        (unicodedata.category(ch) == "Cc" and ch not in allowed) or ch in _BIDI_CONTROLS
        for ch in text
    )


def _collapse(text: str) -> str:
    return " ".join(text.split())


# Phone -------------------------------------------------------------------------------------------
_PHONE_SEPARATORS = re.compile(r"[\s()\-\u2010-\u2015./]")


def parse_phone(raw: str, default_region: str = "RU") -> str | PhoneProblem:
    """'8 (912) 345-67-89', '+7 912 345 67 89', '9123456789' -> '+79123456789'.

    A number without "+" is read as one of `default_region` (a leading 00 counts as "+").
    Any valid number is accepted, fixed lines and toll-free ones too: a courier can call
    them (`is_mobile` tells whether a receipt could go by SMS).
    """
    if len(raw) > MAX_INPUT:
        return PhoneProblem("too_long", _count_digits(raw))
    text = raw.strip()
    if not text:
        return PhoneProblem("empty")
    typed = _count_digits(text)
    if any(ch.isalpha() for ch in text):
        return PhoneProblem("letters", typed)
    compact = _PHONE_SEPARATORS.sub("", text)
    if compact.startswith("00"):
        compact = "+" + compact[2:]
    if not re.fullmatch(r"\+?\d+", compact):
        return PhoneProblem("not_a_number", typed)
    try:
        number = phonenumbers.parse(compact, default_region)
    except phonenumbers.NumberParseException as exc:
        if exc.error_type in (
            phonenumbers.NumberParseException.TOO_SHORT_NSN,
            phonenumbers.NumberParseException.TOO_SHORT_AFTER_IDD,
        ):
            return PhoneProblem("too_short", typed)
        if exc.error_type == phonenumbers.NumberParseException.TOO_LONG:
            return PhoneProblem("too_long", typed)
        if compact.startswith("+") or typed > 2:
            return PhoneProblem("invalid", typed)  # an unknown country code
        return PhoneProblem("too_short", typed)
    if phonenumbers.is_valid_number(number):
        return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))
    if not compact.startswith("+"):
        # The library keeps a trunk prefix it cannot strip ("8 912 345 67 8" is 10 digits
        # of nonsense to it); judge the length without the prefix, as the customer meant it.
        trunk = _national_prefix(default_region)
        if trunk and compact.startswith(trunk) and len(compact) > len(trunk):
            try:
                number = phonenumbers.parse(compact[len(trunk) :], default_region)
            except phonenumbers.NumberParseException:
                return PhoneProblem("invalid", typed)
    return _length_problem(number)


def parse_shared_phone(raw: str) -> str | PhoneProblem:
    """The phone of a contact shared in Telegram: international, often without its "+"."""
    text = raw.strip()
    if text and not text.startswith("+"):
        text = "+" + text
    return parse_phone(text)


def is_mobile(e164: str) -> bool:
    """Whether a number `parse_phone` returned can take an SMS (a receipt, for instance)."""
    kind = phonenumbers.number_type(phonenumbers.parse(e164, None))
    return bool(
        kind
        in (phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE)
    )


def check_contact(contact_user_id: int | None, from_user_id: int) -> bool:
    """A shared contact is taken only when it is the sender's own (not a friend's card)."""
    return contact_user_id is not None and contact_user_id == from_user_id


def _count_digits(text: str) -> int:
    return sum(ch.isdecimal() for ch in text)


def _national_prefix(region: str) -> str:
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region.upper())
    prefix = getattr(metadata, "national_prefix", None) if metadata is not None else None
    return prefix if isinstance(prefix, str) else ""


def _length_problem(number: phonenumbers.PhoneNumber) -> PhoneProblem:
    digits = len(phonenumbers.national_significant_number(number))
    region = phonenumbers.region_code_for_country_code(number.country_code or 0)
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
    usual: set[int] = set()
    if metadata is not None:
        for desc in (metadata.mobile, metadata.fixed_line, metadata.general_desc):
            lengths = getattr(desc, "possible_length", None) or ()
            usual.update(n for n in lengths if n > 0)
            if usual:
                break  # mobile and fixed lines say what people dial; the rest is exotic
    if usual and digits < min(usual):
        return PhoneProblem("too_short", digits)
    if usual and digits > max(usual):
        return PhoneProblem("too_long", digits)
    return PhoneProblem("invalid", digits)


# Address -----------------------------------------------------------------------------------------
def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Markers are compared lowercased, without their dot ("ул." -> "ул").
_STREET_MARKERS = _words(
    """ул улица пр пр-т пр-кт просп проспект пер переулок б-р бул бульв бульвар ш шоссе наб
    набережная пл площадь проезд пр-д туп тупик ал аллея мкр мкрн мкр-н микрорайон линия
    кв-л квартал тракт спуск въезд дорога street st avenue ave road rd lane ln boulevard blvd
    drive dr way place square sq court ct terrace crescent close highway hwy parkway row
    strasse straße"""
)
# Single letters here ("г", "д", "с", "п", "х") are settlements only before a word: "д. 5" is
# a house, "с1" a building.
_CITY_MARKERS = _words(
    """г гор город пос посёлок поселок п пгт рп дп кп с село д дер деревня ст-ца станица х хут
    хутор аул снт днп нп city town village"""
)
_REGION_MARKERS = _words("обл область край респ республика р-н район ао округ county state")
_COUNTRIES = _words("россия рф russia беларусь казахстан uk usa england germany deutschland")
_HOUSE_MARKERS = _words("д дом № house no вл влад владение зд здание уч участок")
# A number after these is a flat, a floor or a building, not the house.
_BUILDING_MARKERS = _words("к корп корпус стр строение лит литер литера")
_NOT_HOUSE_MARKERS = _BUILDING_MARKERS | _words(
    """кв квартира оф офис под подъезд эт этаж пом помещение комн комната apt apartment flat
    suite unit floor entrance домофон код"""
)
# Villages and garden plots often have no streets: "д. Грибки, д. 15".
_RURAL_MARKERS = _words(
    "п пос посёлок поселок с село д дер деревня х хут хутор аул снт днп нп кп village"
)
# "8 Марта", "50 лет Октября": the number is the street's name, not the house.
_NAME_AFTER_NUMBER = _words(
    """января февраля марта апреля мая июня июля августа сентября октября ноября декабря
    лет летия"""
)
_HOUSE = re.compile(
    r"№?\d{1,4}[a-zа-яё]?(?:[/-]\d{1,4}[a-zа-яё]?)?"
    r"(?:(?:к|корп|с|стр|лит)\.?\d{1,3}[a-zа-яё]?)?",
    re.IGNORECASE,
)
_ORDINAL = re.compile(r"\d{1,3}-?(?:я|й|е|ая|ой|ий|ья|го|ый|th|st|nd|rd)", re.IGNORECASE)
_UK_POSTCODE = re.compile(r"\b[A-Z]{1,2}\d[A-Z\d]?\s*\d[A-Z]{2}\b")
_WORD = re.compile(r"[^\W\d_](?:[^\W\d_]|['’-])*")
_MARKERS = _STREET_MARKERS | _CITY_MARKERS | _REGION_MARKERS
_GLUED_MARKER = re.compile(r"(?<![^\W\d_])(д|дом|кв|корп|стр|оф|эт|под|уч)(\d)", re.IGNORECASE)
_TOKEN_EDGES = "\"'«»“”„()[]{}:!?"

_Kind = Literal["word", "house", "number", "other"]
_Role = Literal["", "city", "street", "house", "region", "skip"]


@dataclass(slots=True)
class _Token:
    text: str  # as typed
    key: str  # lowercased, without the trailing dot
    kind: _Kind
    role: _Role = ""


def parse_address(raw: str) -> Address | AddressProblem:
    """A delivery address a courier can find: a city or settlement, a street and a house.

    'г. Москва, ул. Ленина, д. 5, кв. 12', 'Москва, Ленина 5-12', '12 Baker Street, London'.
    Whitespace is collapsed and a line break counts as a comma. Every missing part is
    reported at once. A village ('д. Грибки, д. 15') and a Zelenograd-style 'корпус 1105'
    need no street.
    """
    if len(raw) > MAX_INPUT:
        return AddressProblem("too_long", limit=ADDRESS_MAX)
    if _has_control_chars(raw, allowed="\t\n\r"):
        return AddressProblem("control_chars")
    lines = (_collapse(line).strip(" ,") for line in raw.splitlines())
    text = ", ".join(line for line in lines if line)
    if not text:
        return AddressProblem("empty")
    if _LINK.search(text):
        return AddressProblem("link")
    if len(text) < ADDRESS_MIN:
        return AddressProblem("too_short", limit=ADDRESS_MIN)
    if len(text) > ADDRESS_MAX:
        return AddressProblem("too_long", limit=ADDRESS_MAX)
    parts = _Parts.of(text)
    missing: set[AddressPart] = set()
    if not parts.city:
        missing.add("city")
    if not parts.street and not parts.street_optional:
        missing.add("street")
    if not parts.house:
        missing.add("house")
    if missing:
        return AddressProblem("incomplete", missing=frozenset(missing))
    return Address(text=text, city=parts.city, street=parts.street, house=parts.house)


def _tokenize(segment: str) -> list[_Token]:
    # "ул.Ленина", "д.5к2", "№5", "д5": a dot, a № or nothing at all glues a marker to what
    # follows.
    spaced = re.sub(r"(?<=[^\W\d_])\.(?=\w)", ". ", segment).replace("№", "№ ")
    spaced = _GLUED_MARKER.sub(r"\1 \2", spaced)
    tokens = []
    for piece in spaced.split():
        cleaned = piece.strip(_TOKEN_EDGES)
        key = cleaned.lower().rstrip(".").strip(_TOKEN_EDGES)
        if not key:
            continue
        kind: _Kind
        if _HOUSE.fullmatch(key):
            kind = "house"
        elif key.isdecimal():
            kind = "number"  # a postcode, or too long for a house
        elif _WORD.fullmatch(key) or _ORDINAL.fullmatch(key) or key == "№":
            kind = "word"
        else:
            kind = "other"
        tokens.append(_Token(cleaned, key, kind))
    for token, after in itertools.pairwise(tokens):
        if token.kind == "house" and after.key in _NAME_AFTER_NUMBER:
            token.kind = "word"  # "8 Марта", "50 лет Октября"
    return tokens


def _mark(tokens: list[_Token]) -> None:
    """Give tokens roles from the markers among them, within one comma-separated part."""
    has_number = any(t.kind == "house" for t in tokens)
    for i, token in enumerate(tokens):
        if token.role:
            continue
        after = tokens[i + 1] if i + 1 < len(tokens) else None
        key = token.key
        if key in _NOT_HOUSE_MARKERS and after is not None and after.kind in ("house", "number"):
            token.role = "skip"
            after.role = "skip"
        elif key in _HOUSE_MARKERS and after is not None and after.kind == "house":
            token.role = "skip"
            after.role = "house"
        elif key in _STREET_MARKERS and token.kind == "word":
            token.role = "street"
            _bind_words(tokens, i, "street", prefer_after=True)
        elif key in _CITY_MARKERS and after is not None and after.kind == "word":
            token.role = "city"
            _bind_words(tokens, i, "city", prefer_after=True, limit=1 if has_number else 3)
        elif key in _REGION_MARKERS:
            token.role = "region"
            _bind_words(tokens, i, "region", prefer_after=False)
        elif key in _COUNTRIES:
            token.role = "region"


def _bind_words(
    tokens: list[_Token], at: int, role: _Role, *, prefer_after: bool, limit: int = 4
) -> None:
    """A marker names the free words right after it ("ул. Ленина") or, failing that, right
    before it ("Невский пр.", "Московская обл.")."""
    for step in (1, -1) if prefer_after else (-1, 1):
        j, bound = at + step, 0
        while 0 <= j < len(tokens) and bound < limit and _is_free(tokens[j]):
            if tokens[j].key in _MARKERS:
                break
            tokens[j].role = role
            j += step
            bound += 1
        if bound:
            return


def _is_free(token: _Token) -> bool:
    return token.kind == "word" and not token.role


def _free_words(tokens: list[_Token]) -> list[_Token]:
    return [t for t in tokens if _is_free(t)]


def _only_words(tokens: list[_Token]) -> bool:
    """A part of nothing but a few plain words (and maybe a postcode): "Москва", "London"."""
    free = _free_words(tokens)
    return 1 <= len(free) <= 4 and all(_is_free(t) or t.kind == "number" for t in tokens)


def _assign(tokens: list[_Token], role: _Role) -> str:
    for token in tokens:
        token.role = role
    return " ".join(t.text for t in tokens)


def _joined(tokens: list[_Token], role: _Role) -> str:
    return " ".join(t.text for t in tokens if t.role == role)


@dataclass(slots=True)
class _Parts:
    city: str = ""
    street: str = ""
    house: str = ""
    street_optional: bool = False

    @classmethod
    def of(cls, text: str) -> _Parts:
        segments = [
            tokens
            for tokens in (
                _tokenize(part) for part in re.split(r"[,;]", _UK_POSTCODE.sub(" ", text))
            )
            if tokens
        ]
        for tokens in segments:
            _mark(tokens)
        found = cls()
        house_at = found._take_house(segments)
        found.city = next((c for c in (_joined(t, "city") for t in segments) if c), "")
        found.street = next((s for s in (_joined(t, "street") for t in segments) if s), "")
        if found.city:
            marker = next(t.key for s in segments for t in s if t.role == "city")
            found.street_optional = found.street_optional or marker in _RURAL_MARKERS
        if not found.street and house_at >= 0:
            found._street_near_house(segments, house_at)
        if not found.city:
            found._city_from_plain_words(segments)
        if not found.street and len(segments) > 1:
            # "Москва, Ленина" (no house yet): another part of plain words is the street
            plain = next((s for s in segments if _only_words(s)), None)
            if plain is not None:
                found.street = _assign(_free_words(plain), "street")
        return found

    def _take_house(self, segments: list[list[_Token]]) -> int:
        """The house: a number after "д."/"дом" first, else the first bare one, else a
        building ("корпус 1105" is the whole address in Zelenograd). Its part's index."""
        for wanted in ("marked", "bare", "building"):
            for at, tokens in enumerate(segments):
                for i, token in enumerate(tokens):
                    if token.kind != "house":
                        continue
                    before = tokens[i - 1].key if i > 0 else ""
                    if (
                        (wanted == "marked" and token.role == "house")
                        or (wanted == "bare" and not token.role)
                        or (wanted == "building" and before in _BUILDING_MARKERS)
                    ):
                        token.role = "house"
                        self.house = token.text
                        self.street_optional = wanted == "building"
                        return at
        return -1

    def _street_near_house(self, segments: list[list[_Token]], house_at: int) -> None:
        tokens = segments[house_at]
        at = next(i for i, t in enumerate(tokens) if t.role == "house")
        before = _free_words(tokens[:at])
        if len(segments) == 1 and not self.city and len(before) >= 2:
            # "Москва Ленина 5", no commas: the first word is the city
            self.city = _assign(before[:1], "city")
            before = before[1:]
        # A word before the house in its part ("Ленина 5") or after it ("12 Baker")
        self.street = _assign(before or _free_words(tokens[at + 1 :]), "street")
        if self.street or house_at == 0 or not _only_words(segments[house_at - 1]):
            return
        # "Москва, Тверская, 7": the part before the house, unless that is the first part
        # and no city was named, when it is the city ("Тверская, 7" lacks one or the other).
        if house_at - 1 > 0 or self.city:
            self.street = _assign(_free_words(segments[house_at - 1]), "street")

    def _city_from_plain_words(self, segments: list[list[_Token]]) -> None:
        if len(segments) == 1:
            # "ул Ленина 5 Москва", "Москва ул. Ленина 5": the words left over
            rest = _free_words(segments[0])
            if (rest and (self.street or self.house)) or (
                _only_words(segments[0]) and len(rest) <= 3
            ):
                self.city = _assign(rest[:3], "city")
            return
        # the first part of plain words: "Москва, ...", "..., London", "..., New York, NY"
        plain = next((s for s in segments if _only_words(s)), None)
        if plain is not None:
            self.city = _assign(_free_words(plain), "city")


# Name, e-mail, comment ---------------------------------------------------------------------------
def parse_name(raw: str) -> str | NameProblem:
    """How to address the customer: 1..64 characters with at least one letter."""
    if len(raw) > MAX_INPUT:
        return NameProblem("too_long")
    if _has_control_chars(raw, allowed="\t\n\r"):
        return NameProblem("control_chars")
    name = _collapse(raw)
    if not name:
        return NameProblem("empty")
    if len(name) > NAME_MAX:
        return NameProblem("too_long")
    if _LINK.search(name):
        return NameProblem("link")
    if not any(ch.isalpha() for ch in name):
        return NameProblem("no_letters")
    return name


_EMAIL_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_EMAIL_LABEL = re.compile(r"(?!-)[^\W_](?:[^\W_]|-){0,62}(?<!-)")


def parse_email(raw: str) -> str | EmailProblem:
    """'Ivan.Petrov@Mail.RU' -> 'Ivan.Petrov@mail.ru': a plain address with a dotted domain.

    The domain may be Cyrillic ('почта.рф'); it is lowercased, the name before @ kept as typed.
    """
    if len(raw) > MAX_INPUT:
        return EmailProblem("too_long")
    if _has_control_chars(raw):
        return EmailProblem("control_chars")
    text = raw.strip().removeprefix("mailto:")
    if not text:
        return EmailProblem("empty")
    if len(text) > EMAIL_MAX:
        return EmailProblem("too_long")
    if any(ch.isspace() for ch in text):
        return EmailProblem("spaces")
    if text.count("@") != 1:
        return EmailProblem("no_at" if "@" not in text else "bad_local")
    local, domain = text.split("@")
    if len(local) > 64 or not _EMAIL_LOCAL.fullmatch(local):
        return EmailProblem("bad_local")
    domain = domain.lower()
    labels = domain.split(".")
    if (
        len(labels) < 2
        or not all(_EMAIL_LABEL.fullmatch(label) for label in labels)
        or not (labels[-1].isalpha() or labels[-1].startswith("xn--"))
        or len(labels[-1]) < 2
    ):
        return EmailProblem("bad_domain")
    return f"{local}@{domain}"


_SKIP_WORDS = _words("- — – . нет не пропустить без skip no none n/a")


def parse_comment(raw: str) -> str | CommentProblem:
    """An optional note for the order, up to 500 characters; '-', 'нет' or 'no' mean none.

    Line breaks are kept ("домофон 12" on one line, "позвонить за час" on the next).
    """
    if len(raw) > MAX_INPUT:
        return CommentProblem("too_long")
    if _has_control_chars(raw, allowed="\t\n\r"):
        return CommentProblem("control_chars")
    lines = (_collapse(line) for line in raw.splitlines())
    comment = "\n".join(line for line in lines if line)
    if comment.lower().rstrip(".!") in _SKIP_WORDS or comment in _SKIP_WORDS:
        return ""
    if len(comment) > COMMENT_MAX:
        return CommentProblem("too_long")
    return comment
