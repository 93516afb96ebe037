"""Failures on demand for the HTTP fakes: rules of a mode, for requests matching a pattern, for
the next N of them and/or a time window; checked in the order added, the first live one applies.
"""

from __future__ import annotations

import asyncio
import fnmatch
from dataclasses import dataclass


@dataclass
class _Rule:
    mode: str
    pattern: str  # fnmatch on "METHOD /path"; one starting with "/" means any method
    remaining: int | None
    until: float | None

    def live(self, now: float) -> bool:
        return (self.remaining is None or self.remaining > 0) and (
            self.until is None or now < self.until
        )


class Faults:
    def __init__(self, modes: tuple[str, ...], everything: str = "/") -> None:
        self._modes = modes
        self._everything = everything  # the paths that the empty pattern matches start so
        self._rules: list[_Rule] = []

    def add(self, mode: str, count: int | None, seconds: float | None, paths: str) -> None:
        if mode not in self._modes:
            raise ValueError(f"mode must be one of {self._modes}, not {mode!r}")
        until = None if seconds is None else asyncio.get_running_loop().time() + seconds
        self._rules.append(_Rule(mode, paths, count, until))

    def clear(self) -> None:
        self._rules.clear()

    def take(self, method: str, path: str) -> str | None:
        """The mode this request fails with (counting it against its rule), or None."""
        now = asyncio.get_running_loop().time()
        self._rules = [rule for rule in self._rules if rule.live(now)]
        for rule in self._rules:
            if self._matches(rule.pattern, method, path):
                if rule.remaining is not None:
                    rule.remaining -= 1
                return rule.mode
        return None

    def _matches(self, pattern: str, method: str, path: str) -> bool:
        if not pattern:
            return path.startswith(self._everything)
        pattern = f"* {pattern}" if pattern.startswith("/") else pattern
        return fnmatch.fnmatchcase(f"{method} {path}", pattern)
