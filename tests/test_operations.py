"""Operations: every service's GET /healthz and GET /metrics, through real processes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from nats.aio.client import Client
from nats.js import JetStreamContext

from libs import health
from libs.runner import Runner
from shop.embedded_nats import free_port
from tests.harness import (
    Facts,
    ServiceProcess,
    http_get,
    inventory_ready,
    metric,
    order,
    place,
    wait_until,
)

Start = Callable[..., ServiceProcess]


async def report(port: int) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}/healthz") as reply,
    ):
        body: dict[str, Any] = await reply.json()
        body["status"] = reply.status
        return body


async def test_inventory_health_says_writer_or_standby_and_metrics_count_orders(
    nats_url: str, js: JetStreamContext, facts: Facts, services: Start, catalog_file: Path
) -> None:
    first_port, second_port = free_port(), free_port()
    services("inventory", nats_url, catalog_file=catalog_file, inventory_http_port=first_port)
    await wait_until(lambda: inventory_ready(js), what="inventory ready")

    async def healthy_writer() -> bool:
        status, _ = await http_get(first_port, "/healthz")
        return status == 200 and (await report(first_port))["role"] == "writer"

    await wait_until(healthy_writer, what="the inventory healthy and the writer")
    first = await report(first_port)
    assert first["nats"] == "connected" and first["consuming"] is True, first
    assert set(first["consumers"]) == {"inventory-orders", "inventory-payments"}, first

    await place(js, order("m1", ("LAST", 1, 10000)), order("m2", ("NOPE", 1, 100)))
    await wait_until(lambda: facts.outcomes(["m1", "m2"]) == 2, what="both answered")

    async def counted() -> bool:
        reserved = await metric(first_port, "shop_orders_reserved_total")
        rejected = await metric(first_port, "shop_orders_rejected_total", reason="unknown_sku")
        return reserved == 1 and rejected == 1

    await wait_until(counted, what="the reserved and rejected orders on /metrics")
    latency = await metric(first_port, "shop_reservation_latency_seconds_count")
    assert latency == 2
    lag = await metric(first_port, "shop_consumer_pending", durable="inventory-orders")
    assert lag == 0

    # A second instance claims the log as it starts; then one writes and the other stands by.
    services("inventory", nats_url, catalog_file=catalog_file, inventory_http_port=second_port)

    async def one_writer_one_standby() -> bool:
        roles = []
        for port in (first_port, second_port):
            status, _ = await http_get(port, "/healthz")
            if status != 200:
                return False
            roles.append((await report(port))["role"])
        return sorted(roles) == ["standby", "writer"]

    await wait_until(one_writer_one_standby, what="one writer and one standby")


async def test_health_is_503_when_not_healthy(nc: Client, js: JetStreamContext) -> None:
    """The shared listener answers 503 with the report when the check says not ok."""
    port = free_port()
    runner = Runner(nc, js, "test", max_deliveries=3, stop=asyncio.Event())

    async def check() -> health.Report:
        return {**health.basics(nc, runner), "ok": False, "why": "told so"}

    listener = await health.serve("127.0.0.1", port, check)
    try:
        body = await report(port)
        assert body["status"] == 503 and body["why"] == "told so", body
        assert body["nats"] == "connected" and body["consumers"] == {}, body
        status, text = await http_get(port, "/metrics")
        assert status == 200 and "shop_consumer_pending" in text
    finally:
        await health.close(listener)
