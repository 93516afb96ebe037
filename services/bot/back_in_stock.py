"""Back-in-stock notices: who asked to be told when a sold-out product is back, and which of them
are due now. Pure: the bot's shell (services.bot.notify) claims and sends.

One KV key per (product, customer), `<sku>.<user id>`: asking twice is one key, and telling a
customer is claiming their key (a delete at the revision seen), which exactly one replica wins.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import msgspec


class Watcher(msgspec.Struct, frozen=True):
    """A customer waiting for a product: where to tell them, and in which language."""

    chat_id: int
    language: str = ""


@dataclass(frozen=True, slots=True)
class Due:
    key: str
    sku: str
    watcher: Watcher
    revision: int  # the key's revision seen: the claim deletes it only if still there


def key(sku: str, user_id: int) -> str:
    # SKUs are tokens ([A-Za-z0-9_-]) and user ids integers: both KV-key safe, '.' parts apart.
    return f"{sku}.{user_id}"


def sku_of(watch_key: str) -> str:
    return watch_key.rsplit(".", 1)[0]


def due(
    watching: Iterable[tuple[str, Watcher, int]],
    available: Callable[[str], int],
    on_sale: Callable[[str], bool],
) -> list[Due]:
    """The watchers to tell now: their product can be bought again (some available, and not
    hidden by the shop: a hidden one waits until shown). `watching`: (key, watcher, revision)."""
    found = []
    for watch_key, watcher, revision in watching:
        sku = sku_of(watch_key)
        if available(sku) > 0 and on_sale(sku):
            found.append(Due(watch_key, sku, watcher, revision))
    return found
