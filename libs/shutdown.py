"""A clean stop: SIGTERM or Ctrl-C sets an event the process's loops watch, then they drain."""

from __future__ import annotations

import asyncio
import contextlib
import signal


class Stopped(Exception):
    """SIGTERM or Ctrl-C came while the service was still starting (waiting for the bus, say):
    it ends there, cleanly (`shop run` exits 0)."""


def on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT; call it first thing, so a stop while starting is clean."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    """Sleep `seconds`, or less if `stop` is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
