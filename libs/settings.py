"""Settings from the environment (12-factor), validated once at start.

A missing or malformed variable stops the process with one line naming it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Literal

import msgspec

Seconds = Annotated[int, msgspec.Meta(ge=1)]
Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]


class Settings(msgspec.Struct, frozen=True, rename="upper"):
    """One field per environment variable; the README's configuration table lists them all."""

    nats_url: str | None = None
    data_dir: Path = Path("data")
    embedded_nats_port: Port = 4222
    catalog_file: Path | None = None
    reservation_ttl: Seconds = 900
    snapshot_every: Annotated[int, msgspec.Meta(ge=10)] = 10_000
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "console", "json"] = "auto"


class SettingsError(Exception):
    """A setting is missing or malformed; the message names the variable."""


def load(environ: dict[str, str] | None = None) -> Settings:
    env = os.environ if environ is None else environ
    names = [field.encode_name for field in msgspec.structs.fields(Settings)]
    raw = {name: env[name] for name in names if env.get(name, "").strip()}
    if "LOG_LEVEL" in raw:
        raw["LOG_LEVEL"] = raw["LOG_LEVEL"].lower()
    try:
        return msgspec.convert(raw, Settings, strict=False, dec_hook=_to_path)
    except msgspec.ValidationError as exc:
        # msgspec says "... - at `$.NAME`"; put the name first, where an operator looks.
        message, _, where = str(exc).partition(" - at `$.")
        name = where.rstrip("`") or "settings"
        value = raw.get(name)
        shown = f" (got {value!r})" if value is not None else ""
        raise SettingsError(f"invalid setting {name}: {message}{shown}") from None


def _to_path(type_: type, value: object) -> object:
    if type_ is Path and isinstance(value, str):
        return Path(value)
    raise NotImplementedError


def load_or_exit(environ: dict[str, str] | None = None) -> Settings:
    try:
        return load(environ)
    except SettingsError as exc:
        print(f"shop: {exc}", file=sys.stderr)  # noqa: T201 - before logging exists
        raise SystemExit(2) from None


def redact_url(url: str) -> str:
    """A NATS URL as it may appear in logs: credentials replaced."""
    parts = []
    for one in url.split(","):
        scheme, sep, rest = one.partition("://")
        if sep and "@" in rest:
            rest = "***@" + rest.rsplit("@", 1)[1]
        parts.append(f"{scheme}{sep}{rest}")
    return ",".join(parts)
