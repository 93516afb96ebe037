"""`shop up`: the embedded NATS (unless NATS_URL is set) and every built service as its own process.

A service that dies is restarted with backoff; SIGTERM or Ctrl-C stops the services first
(each drains and exits), then NATS.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from libs import log, shutdown
from libs.settings import Settings, redact_url
from shop.embedded_nats import EmbeddedNats, NatsServerError

# Services that exist; one not listed here is not built yet and so not started.
SERVICES: dict[str, str] = {
    "inventory": "services.inventory.main",
    "payments": "services.payments.main",
    "bot": "services.bot.main",
    "crm_sync": "services.crm_sync.main",
}
# What a service cannot start without; `shop up` leaves it out, saying why.
NEEDS: dict[str, tuple[str, str]] = {
    "bot": ("bot_token", "BOT_TOKEN is not set (get one from @BotFather)"),
}

STOP_GRACE_S = 15.0
MAX_BACKOFF_S = 30.0
HEALTHY_AFTER_S = 30.0  # a service that ran this long gets its backoff reset

_log = log.get(__name__)


def url_file(data_dir: Path) -> Path:
    """Where `shop up` writes the address of the bus it started, so that the other `shop`
    commands run with the same DATA_DIR find it without NATS_URL."""
    return data_dir / "nats" / "url"


def running_bus(data_dir: Path) -> str | None:
    """The address a `shop up` with this DATA_DIR wrote, if one did."""
    try:
        return url_file(data_dir).read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def embedded_nats(settings: Settings) -> EmbeddedNats:
    """The bus `shop up` runs when NATS_URL is not set, with its disk sync (NATS_SYNC_INTERVAL)."""
    return EmbeddedNats(
        settings.data_dir / "nats",
        port=settings.embedded_nats_port,
        sync_interval=settings.nats_sync_interval,
    )


async def up(settings: Settings) -> int:
    nats: EmbeddedNats | None = None
    url = settings.nats_url
    if not url:
        nats = embedded_nats(settings)
        try:
            nats.start()
        except NatsServerError as exc:
            _log.error("nats.failed", error=str(exc))
            return 1
        url = nats.url
        _log.info(
            "nats.started",
            url=url,
            store=str(nats.store_dir),
            pid=nats.process and nats.process.pid,
            sync=nats.sync_interval,
        )
        url_file(settings.data_dir).write_text(url + "\n", encoding="utf-8")
    else:
        _log.info("nats.external", url=redact_url(url))

    stop = shutdown.on_signals()

    env = {**os.environ, "NATS_URL": url}
    names = []
    for name in SERVICES:
        setting, why = NEEDS.get(name, ("", ""))
        if setting and not getattr(settings, setting):
            _log.warning("service.skipped", name=name, reason=why)
        else:
            names.append(name)
    try:
        async with asyncio.TaskGroup() as tasks:
            for name in names:
                tasks.create_task(_supervise(name, env, stop))
            _log.info("shop.up", services=names)
            if sys.stdout.isatty():
                tasks.create_task(_tell_the_operator(settings, url, names, nats))
    finally:
        if nats is not None:
            with contextlib.suppress(OSError):
                url_file(settings.data_dir).unlink()
            nats.stop()
            _log.info("nats.stopped")
    _log.info("shop.down")
    return 0


async def _supervise(name: str, env: dict[str, str], stop: asyncio.Event) -> None:
    backoff = 1.0
    while not stop.is_set():
        with _sigterm_held():
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "shop",
                "run",
                name,
                env=env,
                start_new_session=True,  # Ctrl-C reaches us only; we stop services in order
            )
        started = time.monotonic()
        _log.info("service.started", name=name, pid=process.pid)
        exited = asyncio.create_task(process.wait())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait([exited, stopping], return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set():
            stopping.cancel()
            await _terminate(name, process, exited)
            return
        stopping.cancel()
        code = exited.result()
        if time.monotonic() - started > HEALTHY_AFTER_S:
            backoff = 1.0
        _log.error("service.died", name=name, pid=process.pid, code=code, restart_in=backoff)
        await shutdown.sleep_or_stop(stop, backoff)
        backoff = min(backoff * 2, MAX_BACKOFF_S)


@contextlib.contextmanager
def _sigterm_held() -> Iterator[None]:
    """SIGTERM blocked while a service is spawned. The child inherits the mask and unblocks it
    once its handler is set (shop.cli), so a stop that comes while it is still starting Python
    is a clean stop, not a death by signal."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


async def _terminate(
    name: str, process: asyncio.subprocess.Process, exited: asyncio.Task[int]
) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
    try:
        code = await asyncio.wait_for(asyncio.shield(exited), timeout=STOP_GRACE_S)
    except TimeoutError:
        _log.warning("service.killed", name=name, pid=process.pid, after_s=STOP_GRACE_S)
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        code = await exited
    _log.info("service.stopped", name=name, pid=process.pid, code=code)


async def _tell_the_operator(
    settings: Settings, url: str, names: list[str], nats: EmbeddedNats | None
) -> None:
    """Once the inventory answers: what runs and where to look, in a few lines (a terminal's
    `shop up` only; the logs say it all too)."""
    ready = await _inventory_answers(url, timeout=60.0)
    where = f"{redact_url(url)} (store {nats.store_dir})" if nats else redact_url(url)
    payments = (
        f"sandbox checkout at {settings.payments_base_url}/sandbox/ (no money moves)"
        if settings.sandbox
        else f"YooKassa shop {settings.yookassa_shop_id}"
    )
    crm = (
        f"Google Sheet {settings.sheets_spreadsheet_id}"
        if settings.sheets_spreadsheet_id
        else f"CSV files in {settings.data_dir / 'crm'}"
    )
    rows = [
        ("NATS", where),
        ("services", ", ".join(names) + ("" if ready else " (the inventory has not answered)")),
        ("payments", payments),
        ("bot", await _bot_name(settings) if "bot" in names else NEEDS["bot"][1]),
        ("CRM", crm),
        ("status", "shop status (in another terminal, with the same DATA_DIR)"),
    ]
    lines = ["The shop is up; Ctrl-C stops it.", *(f"  {n:<9} {v}" for n, v in rows)]
    sys.stdout.write("\n".join(lines) + "\n")  # for the operator: not a log line
    sys.stdout.flush()


async def _inventory_answers(url: str, timeout: float) -> bool:
    from libs import bus, subjects
    from libs.contracts import AdminRequest

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            nc = await bus.connect(url, name="shop-up")
        except bus.BusUnreachable:
            await asyncio.sleep(0.5)
            continue
        try:
            await nc.request(subjects.INVENTORY_ADMIN, bus.encode(AdminRequest(())), timeout=2)
            return True
        except Exception:  # not up yet: no responders, or a timeout
            await asyncio.sleep(0.5)
        finally:
            await nc.close()
    return False


async def _bot_name(settings: Settings) -> str:
    """@username from Telegram's getMe, or why it is not known."""
    from aiogram import Bot
    from aiogram.client.session.aiohttp import AiohttpSession
    from aiogram.client.telegram import TelegramAPIServer

    session = AiohttpSession(api=TelegramAPIServer.from_base(settings.telegram_api_url))
    bot = Bot(settings.bot_token or "", session=session)
    try:
        me = await asyncio.wait_for(bot.get_me(), 10)
        return f"@{me.username} (https://t.me/{me.username})"
    except Exception as exc:  # the operator sees why; the bot's own log says more
        return f"username unknown: {type(exc).__name__}"
    finally:
        await session.close()
