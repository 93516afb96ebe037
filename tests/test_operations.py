"""Operations: every service's GET /healthz and GET /metrics, through real processes."""

from __future__ import annotations

import asyncio
import importlib
import pkgutil
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from nats.aio.client import Client
from nats.js import JetStreamContext

from libs import health, metrics
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


# deploy/alerts.yml ---------------------------------------------------------------------------
ROOT = Path(__file__).resolve().parent.parent
# PromQL's own words, and the one series Prometheus makes itself that the rules read.
PROMQL_WORDS = {"and", "or", "unless", "bool", "offset"}
PROMETHEUS_OWN = {"up"}


def exported_metric_names() -> set[str]:
    """Every sample name the services can put on GET /metrics: each module of libs/ and
    services/ imported declares its metrics on the process's one registry (libs.metrics)."""
    for package in ("libs", "services"):
        for module in pkgutil.walk_packages([str(ROOT / package)], f"{package}."):
            importlib.import_module(module.name)
    suffixes = {
        "counter": ("_total", "_created"),
        "gauge": ("",),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
    }
    return {
        family.name + suffix
        for family in metrics.REGISTRY.collect()
        for suffix in suffixes[family.type]
    }


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression reads: its identifiers, less strings, label
    matchers, ranges, groupings (`by (...)`), functions (a name followed by '(') and keywords."""
    expr = re.sub(r'"[^"]*"', "", expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for found in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        if expr[found.end() :].lstrip().startswith("(") or found.group() in PROMQL_WORDS:
            continue
        names.add(found.group())
    return names


def test_metric_names_are_read_from_expressions() -> None:
    expr = (
        'max(shop_consumer_pending{durable="inventory-orders"}) > 0 and on() '
        "histogram_quantile(0.99, sum by (le) (rate(shop_x_bucket[5m]))) or vector(0)"
    )
    assert metric_names(expr) == {"shop_consumer_pending", "shop_x_bucket"}


def test_every_alert_reads_metrics_the_services_export() -> None:
    """A metric renamed in code and not in deploy/alerts.yml fails here, not on the pager."""
    prometheus = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text(encoding="utf-8"))
    assert prometheus["rule_files"] == ["alerts.yml"], "Prometheus loads deploy/alerts.yml"
    rules = yaml.safe_load((ROOT / "deploy" / "alerts.yml").read_text(encoding="utf-8"))
    exported = exported_metric_names()
    assert {"shop_consumer_pending", "shop_orders_reserved_total"} <= exported, exported
    alerts = [rule for group in rules["groups"] for rule in group["rules"]]
    assert alerts, "deploy/alerts.yml has no rules"
    for rule in alerts:
        name = rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        assert rule["annotations"]["summary"], name
        read = metric_names(rule["expr"])
        assert read, f"{name}: reads no metric"
        unknown = read - exported - PROMETHEUS_OWN
        assert not unknown, f"{name}: {sorted(unknown)} not exported by any service"
    # What the README's Operations section says to watch, each with a rule.
    watched = {
        "up",
        "shop_consumer_pending",
        "shop_consumer_last_fetch_timestamp_seconds",
        "shop_crm_oldest_fact_age_seconds",
        "shop_dead_letters_total",
        "shop_telegram_429_total",
        "shop_reservation_latency_seconds_bucket",
        "shop_webhook_refusals_total",
    }
    assert watched <= set().union(*(metric_names(rule["expr"]) for rule in alerts))
