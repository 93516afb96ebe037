"""Settings from the environment (12-factor), validated once at start.

A missing or malformed variable stops the process with one line naming it.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Annotated, Literal, cast, get_args

import msgspec

from libs.contracts import PaymentMethod

Seconds = Annotated[int, msgspec.Meta(ge=1)]
_BOT_TOKEN = re.compile(r"\d+:[\w-]+")
Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
PAYMENT_METHODS: tuple[str, ...] = get_args(PaymentMethod)


class Settings(msgspec.Struct, frozen=True, rename="upper"):
    """One field per environment variable; the README's configuration table lists them all."""

    nats_url: str | None = None
    data_dir: Path = Path("data")
    embedded_nats_port: Port = 4222
    catalog_file: Path | None = None
    reservation_ttl: Seconds = 900
    snapshot_every: Annotated[int, msgspec.Meta(ge=10)] = 10_000
    # copies of every stream, KV bucket and object store (3 on a three-node NATS cluster)
    stream_replicas: Annotated[int, msgspec.Meta(ge=1, le=5)] = 1
    # the embedded nats-server's disk sync: `always` (every write, before its ack) or an interval
    # in seconds or milliseconds (`120s` is nats-server's own default; writes acked since the
    # last sync are lost to a power cut or an OS crash)
    nats_sync_interval: Annotated[str, msgspec.Meta(pattern=r"^(always|[1-9][0-9]*(s|ms))$")] = (
        "always"
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "console", "json"] = "auto"
    # a fact whose handler keeps failing is dead-lettered (and told) after this many deliveries
    max_deliveries: Annotated[int, msgspec.Meta(ge=1)] = 10
    # inventory: GET /healthz and /metrics
    inventory_http_host: str = "127.0.0.1"
    inventory_http_port: Port = 8084
    # bot
    bot_token: str | None = None  # required by the bot; never logged
    telegram_api_url: str = "https://api.telegram.org"
    telegram_max_rate: Annotated[float, msgspec.Meta(gt=0)] = 25.0  # messages a second, overall
    bot_mode: Literal["polling", "webhook"] = "polling"
    webhook_url: str = ""  # the public https URL Telegram posts updates to (webhook mode)
    webhook_secret: str = ""  # checked in X-Telegram-Bot-Api-Secret-Token
    bot_http_host: str = "127.0.0.1"
    bot_http_port: Port = 8082  # the webhook (in webhook mode), /healthz and /metrics
    shop_name: str = "Чайная лавка"
    shop_contact: str = ""  # whom a customer writes to about an order (@username, a phone)
    admin_chat_id: int | None = None
    admin_user_ids: str = ""  # comma-separated Telegram user ids
    low_stock_threshold: Annotated[int, msgspec.Meta(ge=0)] = 3
    reminder_before: Seconds = 120  # remind the customer this long before the reservation ends
    # payments
    yookassa_shop_id: str | None = None  # unset: the sandbox provider
    yookassa_secret_key: str | None = None
    yookassa_api_url: str = "https://api.yookassa.ru/v3"
    yookassa_trusted_networks: str = ""  # comma-separated; empty: YooKassa's published networks
    payments_trusted_proxies: str = ""  # whose X-Forwarded-For is believed
    payments_http_host: str = "127.0.0.1"
    payments_http_port: Port = 8081
    payments_public_url: str = ""  # where browsers reach the sandbox checkout; empty: host:port
    payments_return_url: str = ""  # where YooKassa sends the customer back; empty: a thanks page
    payments_capture: Literal["two_stage", "one_stage"] = "two_stage"
    payments_reconcile_after: Seconds = 180
    payments_reconcile_every: Seconds = 30
    receipts: bool = False  # 54-FZ receipts with each payment and refund
    receipt_vat_code: Annotated[int, msgspec.Meta(ge=1, le=12)] = 1
    receipt_payment_subject: str = "commodity"
    receipt_payment_mode: str = "full_prepayment"
    # how customers may pay, offered in this order (one: not asked): `card` (held, captured once
    # the stock is committed), `sbp` (the Faster Payments System, charged at once, refunded if
    # the stock cannot be committed), `cash` (cash or card at pickup or to the courier)
    payment_methods: str = "card"
    cash_hold: Seconds = 3 * 24 * 3600  # how long a cash order's goods are held for it
    # crm_sync
    google_service_account_file: Path | None = None  # unset: the CSV CRM under DATA_DIR/crm
    sheets_spreadsheet_id: str | None = None
    sheets_api_url: str = "https://sheets.googleapis.com"
    sheets_writes_per_minute: Annotated[int, msgspec.Meta(ge=1, le=300)] = 50  # reads alike
    sheets_timeout: Seconds = 30  # one HTTP request to Google
    sheets_pacing: bool = True  # gather more facts per write as the write quota fills
    crm_alert_after: Seconds = 300  # alert the admins when a fact waits longer for the sheet
    crm_stock_every: Seconds = 10  # the Stock tab is refreshed at most this often
    catalog_sync_every: Seconds = 30  # the sheet's Catalog tab is read (and applied) this often
    crm_http_host: str = "127.0.0.1"
    crm_http_port: Port = 8083  # GET /healthz and /metrics

    def __post_init__(self) -> None:
        if self.yookassa_shop_id and not self.yookassa_secret_key:
            raise ValueError("YOOKASSA_SECRET_KEY is required with YOOKASSA_SHOP_ID")
        if self.bot_mode == "webhook" and not (self.webhook_url and self.webhook_secret):
            raise ValueError("BOT_MODE=webhook needs WEBHOOK_URL and WEBHOOK_SECRET")
        if self.bot_token is not None and not _BOT_TOKEN.fullmatch(self.bot_token):
            raise ValueError("BOT_TOKEN does not look like a bot token (123456:ABC-...)")
        if bool(self.google_service_account_file) != bool(self.sheets_spreadsheet_id):
            raise ValueError(
                "GOOGLE_SERVICE_ACCOUNT_FILE and SHEETS_SPREADSHEET_ID go together "
                "(or neither: the CRM is then written as CSV files under DATA_DIR/crm)"
            )
        methods = [m.strip() for m in self.payment_methods.split(",") if m.strip()]
        unknown = [m for m in methods if m not in PAYMENT_METHODS]
        if unknown or not methods or len(set(methods)) != len(methods):
            raise ValueError(
                f"PAYMENT_METHODS: {self.payment_methods!r} is not a list of "
                f"{', '.join(PAYMENT_METHODS)} (each at most once, separated by commas)"
            )
        for part in self.admin_user_ids.split(","):
            if part.strip() and not part.strip().lstrip("-").isdigit():
                raise ValueError(f"ADMIN_USER_IDS: {part.strip()!r} is not a Telegram user id")

    @property
    def admins(self) -> frozenset[int]:
        return frozenset(int(p) for p in self.admin_user_ids.split(",") if p.strip())

    @property
    def pay_by(self) -> tuple[PaymentMethod, ...]:
        """The payment methods offered, in the shop's order."""
        return tuple(
            cast(PaymentMethod, m.strip()) for m in self.payment_methods.split(",") if m.strip()
        )

    @property
    def sandbox(self) -> bool:
        return not self.yookassa_shop_id

    @property
    def payments_base_url(self) -> str:
        return self.payments_public_url.rstrip("/") or (
            f"http://{self.payments_http_host}:{self.payments_http_port}"
        )


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
        name = where.rstrip("`")
        if not name:  # a rule across settings (__post_init__): its message names them
            raise SettingsError(f"invalid settings: {message}") from None
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
