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
    finally:
        if nats is not None:
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
