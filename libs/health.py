"""Each service's operations endpoints: GET /healthz (JSON; 200 healthy, 503 not) and GET /metrics.

A service gives a `Check`: an awaitable report, a JSON object whose `ok` says healthy. The
common part (connected to NATS, consuming) is `basics`; a service adds what is its own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from nats.aio.client import Client

from libs import log, metrics
from libs.runner import Runner

Report = dict[str, Any]
Check = Callable[[], Awaitable[Report]]

_log = log.get(__name__)


def basics(nc: Client, runner: Runner) -> Report:
    """Connected to NATS, and every consumer started is pulling (see Runner.health)."""
    consuming, consumers = runner.health()
    return {
        "ok": nc.is_connected and consuming,
        "nats": "connected" if nc.is_connected else "disconnected",
        "consuming": consuming,
        "consumers": consumers,
    }


def add_routes(app: web.Application, check: Check) -> None:
    async def healthz(_: web.Request) -> web.Response:
        report = await check()
        return web.json_response(report, status=200 if report.get("ok") else 503)

    async def metrics_text(_: web.Request) -> web.Response:
        response = web.Response(body=metrics.exposition())
        response.headers["Content-Type"] = metrics.CONTENT_TYPE_LATEST
        return response

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_text)


async def serve(
    host: str, port: int, check: Check, *, required: bool = True
) -> web.AppRunner | None:
    """Listen on host:port with /healthz and /metrics only.

    Not `required`: a port already taken (a second instance on the same host) is logged and
    the service runs on without the endpoints, since taking orders matters more than being
    watched; the compose healthcheck then says it.
    """
    app = web.Application()
    add_routes(app, check)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        await runner.cleanup()
        if required:
            raise
        _log.error("health.unavailable", listen=f"{host}:{port}", error=str(exc))
        return None
    return runner


async def close(listener: web.AppRunner | None) -> None:
    if listener is not None:
        await listener.cleanup()
