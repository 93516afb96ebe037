"""Every word the bot says, in Russian (the default) and English, from `locales/*.toml`.

Messages are HTML (send them with parse_mode=HTML): what goes into their placeholders is
escaped, so a product title or a customer's name can never break a message. Texts in a
`button` or `toast` table and the command descriptions are plain text and taken as they are.
A missing key or a missing placeholder raises `KeyError` at once.
"""

from __future__ import annotations

import html
import string
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import fields
from functools import cache
from importlib import resources
from typing import Any

import phonenumbers

from libs.money import format_rub
from services.bot.validation import (
    ADDRESS_PARTS,
    AddressProblem,
    ChoiceProblem,
    CommentProblem,
    EmailProblem,
    NameProblem,
    PhoneProblem,
    Problem,
)

LANGUAGES = ("ru", "en")
DEFAULT_LANGUAGE = "ru"
COMMANDS = ("start", "catalog", "cart", "orders", "help", "cancel")
# What the admins' menu shows (their chats only): /orders is the desk's list there.
ADMIN_COMMANDS = ("start", "orders", "order", "stock", "catalog", "cart", "help", "cancel")
_ADMIN_OWN = frozenset({"orders", "order", "stock", "catalog"})
_PLAIN_TABLES = frozenset({"button", "toast"})
_HINT_KINDS: Mapping[type[Problem], str] = {
    PhoneProblem: "phone",
    AddressProblem: "address",
    NameProblem: "name",
    EmailProblem: "email",
    CommentProblem: "comment",
    ChoiceProblem: "choice",
}


class Html(str):
    """Text that is already HTML: put into a message as it is, not escaped again."""

    __slots__ = ()


def is_plain(key: str) -> bool:
    """Buttons, toasts (callback answers) and command descriptions are not HTML."""
    parts = key.split(".")
    return parts[0] == "command" or not _PLAIN_TABLES.isdisjoint(parts[:-1])


def placeholders(template: str) -> frozenset[str]:
    """The names of a template's {placeholders}."""
    return frozenset(name for _, name, _, _ in string.Formatter().parse(template) if name)


class Texts:
    """The texts of one language."""

    def __init__(self, language: str, texts: Mapping[str, str]) -> None:
        self.language = language
        self._texts = dict(texts)

    def t(self, key: str, /, **params: object) -> str:
        """The text `key` with its placeholders filled (an `Html` string for a message)."""
        try:
            template = self._texts[key]
        except KeyError:
            raise KeyError(f"no text {key!r} in {self.language}.toml") from None
        if is_plain(key):
            values = {name: str(value) for name, value in params.items()}
        else:
            values = {name: _escaped(value) for name, value in params.items()}
        try:
            text = template.format_map(values)
        except KeyError as exc:
            raise KeyError(f"text {key!r} ({self.language}) needs {{{exc.args[0]}}}") from None
        return text if is_plain(key) else Html(text)

    def has(self, key: str) -> bool:
        return key in self._texts

    def known_keys(self) -> frozenset[str]:
        return frozenset(self._texts)

    def template(self, key: str) -> str:
        return self._texts[key]

    @staticmethod
    def money(kopecks: int) -> str:
        """12990 -> '129.90 ₽', 89000 -> '890 ₽'."""
        return format_rub(kopecks)

    @staticmethod
    def phone(e164: str) -> str:
        """'+79123456789' -> '+7 912 345-67-89', as people read it."""
        try:
            number = phonenumbers.parse(e164, None)
        except phonenumbers.NumberParseException:
            return e164
        return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL))

    def lines(self, parts: Iterable[str], separator: str = "\n") -> Html:
        """Join pieces of a message (texts from `t`, escaped otherwise) into one."""
        return Html(separator.join(_escaped(part) for part in parts))

    def listing(self, items: Iterable[str]) -> Html:
        """'город, улицу и номер дома' / 'the city, the street and the house number'."""
        words = [_escaped(item) for item in items]
        if len(words) < 2:
            return Html("".join(words))
        head = self._texts["list.separator"].join(words[:-1])
        return Html(f"{head}{self._texts['list.last']}{words[-1]}")

    def hint(self, problem: Problem) -> str:
        """What to tell a customer whose input was refused, from the problem's code."""
        kind = _HINT_KINDS[type(problem)]
        params: dict[str, object] = {f.name: getattr(problem, f.name) for f in fields(problem)}
        if isinstance(problem, AddressProblem):
            params["missing"] = self.listing(
                self.t(f"address.part.{part}") for part in ADDRESS_PARTS if part in problem.missing
            )
        return self.t(f"hint.{kind}.{problem.code}", **params)

    def cancel_reason(self, reason: str) -> str:
        """YooKassa's `cancellation_details.reason`, in words; unknown ones get a general one."""
        key = f"payment.cancel_reason.{reason}"
        return self.t(key if key in self._texts else "payment.cancel_reason.default")

    def status(self, status: str) -> str:
        """An order's lifecycle status (libs.lifecycle.Status) in words ('ждёт оплаты'); an
        unknown one is shown as it is."""
        key = f"status.{status}"
        return self.t(key) if key in self._texts else status

    def commands(self) -> list[tuple[str, str]]:
        """(command, description) for the bot's menu of commands (setMyCommands)."""
        return [(name, self.t(f"command.{name}")) for name in COMMANDS]

    def admin_commands(self) -> list[tuple[str, str]]:
        """The menu of commands in an admin's chat and the admin chat (BotCommandScopeChat)."""
        return [
            (name, self.t(f"command.admin.{name}" if name in _ADMIN_OWN else f"command.{name}"))
            for name in ADMIN_COMMANDS
        ]


def _escaped(value: object) -> str:
    return value if isinstance(value, Html) else html.escape(str(value), quote=False)


def for_language(code: str | None) -> Texts:
    """The texts for a Telegram `language_code`: English for en, en-US...; Russian otherwise."""
    language = "en" if code and code.strip().lower().startswith("en") else DEFAULT_LANGUAGE
    return load(language)


@cache
def load(language: str) -> Texts:
    """Read and check `locales/<language>.toml` (once per process)."""
    if language not in LANGUAGES:
        raise ValueError(f"no texts for language {language!r}")
    source = resources.files("services.bot").joinpath("locales", f"{language}.toml")
    document = tomllib.loads(source.read_text(encoding="utf-8"))
    return Texts(language, _flatten(document, f"{language}.toml"))


def _flatten(table: Mapping[str, Any], origin: str, prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for name, value in table.items():
        key = f"{prefix}{name}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, origin, f"{key}."))
        elif isinstance(value, str):
            _check_template(value, key, origin)
            flat[key] = value
        else:
            raise ValueError(f"{origin}: {key} is not a string")
    return flat


def _check_template(template: str, key: str, origin: str) -> None:
    """Only plain {name} placeholders: no positions, attributes, indexes or conversions."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"{origin}: {key}: {exc}") from None
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion:
            raise ValueError(f"{origin}: {key}: placeholder {{{name}}} must be a plain name")
