"""Test helpers: services as real processes, facts collected from the bus, waiting on conditions."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import nats
import pytest
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy
from prometheus_client.parser import text_string_to_metric_families

from libs import bus, subjects
from libs.contracts import InventoryEvent, OrderLine, OrderPlaced, StockLevel

ROOT = Path(__file__).resolve().parent.parent


async def wait_until(
    condition: Callable[[], bool | Awaitable[bool]], timeout: float = 20.0, what: str = ""
) -> None:
    """Poll a condition until it holds; fail naming `what` after `timeout` s. Never sleep blind."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or condition}")
        await asyncio.sleep(0.02)


async def reset_bus(url: str, store_dir: Path | None = None) -> None:
    """Delete every stream (buckets and object stores too): each test starts empty.

    The server removes a deleted stream's files after it has answered; a stream of the same
    name created before they are gone fails ("error creating store for stream", seen once on a
    loaded CI machine), so wait until the store holds no stream directory.
    """
    nc = await nats.connect(url)
    js = nc.jetstream()
    for info in await js.streams_info():
        await js.delete_stream(str(info.config.name))
    await nc.close()
    if store_dir is not None:
        await wait_until(
            lambda: not any(store_dir.glob("jetstream/*/streams/*")),
            timeout=30,
            what="the deleted streams' files removed",
        )


CATALOG = """
categories:
  - id: goods
    title: Goods
    products:
      - {sku: LAST, title: The last one, price: 100, stock: 10}
      - {sku: MANY, title: Plenty, price: "25.50", stock: 100000}
      - {sku: FEW, title: A few, price: 990, stock: 50}
"""


def shop(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The `shop` command, as an operator runs it."""
    return subprocess.run(
        [sys.executable, "-m", "shop", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class ServiceProcess:
    """`shop run NAME` as a real OS process, killable with SIGKILL like a crash."""

    def __init__(self, name: str, env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.env = env
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ServiceProcess:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "shop", "run", self.name],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        log.close()
        return self

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def terminate(self, timeout: float = 20.0) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


class Facts:
    """Every fact of a stream so far (the inventory's unless told), by kind and by order id."""

    def __init__(self, subject: str = subjects.INVENTORY_ALL, kind: Any = InventoryEvent) -> None:
        self.by_order: dict[str, list[Any]] = defaultdict(list)
        self.by_kind: dict[str, list[Any]] = defaultdict(list)
        self.count = 0
        self._subject = subject
        self._decode = msgspec.json.Decoder(kind).decode

    def kinds(self, order_id: str) -> list[str]:
        return [str(e.__struct_config__.tag) for e in self.by_order.get(order_id, [])]

    def of(self, order_id: str, kind: str) -> list[Any]:
        """The order's facts of one kind (a tag: "reserved", "payment_pending", ...)."""
        return [e for e in self.by_order.get(order_id, []) if e.__struct_config__.tag == kind]

    async def start(self, js: JetStreamContext) -> None:
        async def on_msg(msg: Any) -> None:
            event = self._decode(msg.data)
            self.count += 1
            self.by_kind[str(event.__struct_config__.tag)].append(event)
            order_id = getattr(event, "order_id", None)
            if order_id is not None:
                self.by_order[order_id].append(event)

        await js.subscribe(
            self._subject,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.ALL,
            cb=on_msg,
        )

    def outcomes(self, order_ids: list[str]) -> int:
        return sum(1 for oid in order_ids if self.by_order.get(oid))


def order(order_id: str, *lines: tuple[str, int, int], customer_id: int = 1) -> OrderPlaced:
    """An order with (sku, qty, unit_price) lines and the right total."""
    order_lines = tuple(OrderLine(sku, qty, price) for sku, qty, price in lines)
    return OrderPlaced(
        order_id=order_id,
        customer_id=customer_id,
        lines=order_lines,
        total=sum(line.qty * line.unit_price for line in order_lines),
        placed_at=datetime.now(UTC),
    )


async def place(js: JetStreamContext, *orders: OrderPlaced) -> None:
    """Publish orders concurrently, as many customers pressing Confirm at once."""
    await asyncio.gather(
        *(bus.publish(js, subjects.order_placed(o.order_id), o, msg_id=o.order_id) for o in orders)
    )


async def stock_level(js: JetStreamContext, sku: str) -> StockLevel | None:
    try:
        kv = await js.key_value(subjects.STOCK_BUCKET)
        entry = await kv.get(sku)
    except nats.js.errors.Error:
        return None
    assert entry.value is not None
    return msgspec.json.decode(entry.value, type=StockLevel)


async def inventory_ready(js: JetStreamContext, sku: str = "LAST") -> bool:
    """The service is up once it imported its catalog and created its consumer."""
    if await stock_level(js, sku) is None:
        return False
    try:
        await js.consumer_info(subjects.ORDERS, subjects.INVENTORY_ORDERS_CONSUMER)
    except nats.js.errors.NotFoundError:
        return False
    return True


async def http_get(port: int, path: str) -> tuple[int, str]:
    """A service's listener on 127.0.0.1: (status, body), (0, "") while nothing answers."""
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{port}{path}") as reply,
        ):
            return reply.status, await reply.text()
    except aiohttp.ClientError:
        return 0, ""


async def metric(port: int, name: str, **labels: str) -> float | None:
    """One sample's value on a service's GET /metrics (None: not there, or no answer)."""
    status, text = await http_get(port, "/metrics")
    if status != 200:
        return None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None
