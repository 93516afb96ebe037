"""Shared bench plumbing: a fresh nats-server, the inventory as a real process, orders, stats."""

from __future__ import annotations

import asyncio
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from libs import bus, subjects
from libs.contracts import OrderLine, OrderPlaced, StockLevel
from shop.embedded_nats import EmbeddedNats, NatsCluster

ROOT = Path(__file__).resolve().parent.parent
POLL = 0.005  # seconds between polls of a condition; never a blind sleep


class BenchError(Exception):
    """A benchmark could not complete (a timeout, a wrong outcome); the message says which."""


@dataclass
class Result:
    """What one benchmark prints: its detail lines, and the line that goes into the summary."""

    name: str
    lines: list[str] = field(default_factory=list)
    summary: list[str] = field(default_factory=list)


@dataclass
class Bus:
    server: EmbeddedNats  # on a cluster, its first node
    nc: Client
    js: JetStreamContext
    workdir: Path
    url: str = ""  # NATS_URL for the services: every node of a cluster
    replicas: int = 1  # STREAM_REPLICAS

    def __post_init__(self) -> None:
        self.url = self.url or self.server.url


@asynccontextmanager
async def fresh_bus(workdir: Path, sync_interval: str = "always") -> AsyncIterator[Bus]:
    """A new nats-server with its own store in `workdir`, connected, with the shop's streams.

    `sync_interval`: the shop's default (NATS_SYNC_INTERVAL), every write on disk before its ack.
    """
    server = EmbeddedNats(workdir / "nats", sync_interval=sync_interval)
    server.start()
    try:
        nc = await bus.connect(server.url, name="bench")
        try:
            js = nc.jetstream(timeout=10)
            await subjects.declare_streams(js)
            yield Bus(server, nc, js, workdir)
        finally:
            await nc.close()
    finally:
        server.stop()


@asynccontextmanager
async def fresh_cluster(workdir: Path, replicas: int) -> AsyncIterator[Bus]:
    """Three new nats-servers from deploy/nats-cluster.conf on loopback, the shop's streams with
    `replicas` copies; the services are told the same (STREAM_REPLICAS)."""
    cluster = NatsCluster(workdir / "nats")
    cluster.start()
    try:
        nc = await bus.connect(cluster.url, name="bench")
        try:
            js = nc.jetstream(timeout=10)
            await subjects.declare_streams(js, replicas=replicas)
            yield Bus(cluster.nodes[0], nc, js, workdir, cluster.url, replicas)
        finally:
            await nc.close()
    finally:
        cluster.stop()


def catalog_yaml(stock: dict[str, int], price_rub: int = 100) -> str:
    """A one-category catalog, one product per SKU, every one at `price_rub` rubles."""
    products = "\n".join(
        f"      - {{sku: {sku}, title: {sku}, price: {price_rub}, stock: {count}}}"
        for sku, count in stock.items()
    )
    return f"categories:\n  - id: bench\n    title: Bench\n    products:\n{products}\n"


class Inventory:
    """`python -m shop run SERVICE` (the inventory unless told) as its own OS process."""

    def __init__(
        self,
        bus_: Bus,
        stock: dict[str, int],
        name: str = "inventory",
        service: str = "inventory",
        env: dict[str, str] | None = None,
    ) -> None:
        self._dir = bus_.workdir
        self._url = bus_.url
        self._replicas = bus_.replicas
        self.catalog_file = self._dir / "catalog.yaml"
        self.catalog_file.write_text(catalog_yaml(stock))
        self.log_file = self._dir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._service = service
        self._env = env or {}

    def start(self) -> None:
        env = {
            **os.environ,
            "NATS_URL": self._url,
            "DATA_DIR": str(self._dir / "data"),
            "CATALOG_FILE": str(self.catalog_file),
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "warning",
            "STREAM_REPLICAS": str(self._replicas),
            **self._env,
        }
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "shop", "run", self._service],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def cpu(self) -> float | None:
        return None if self.process is None else cpu_seconds(self.process.pid)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (a clean stop), then SIGKILL if it does not go; safe to call twice."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


@asynccontextmanager
async def running(inventory: Inventory) -> AsyncIterator[Inventory]:
    """The inventory process for the duration of the block; stopped on the way out, always."""
    inventory.start()
    try:
        yield inventory
    except BaseException:
        tail = inventory.log_tail()
        if tail:
            print(f"  (inventory log tail)\n{tail}", file=sys.stderr)
        raise
    finally:
        inventory.stop()


async def wait_until(
    condition: Callable[[], bool | Awaitable[bool]],
    timeout: float,
    what: str,
    inventory: Inventory | None = None,
    poll: float = POLL,
) -> None:
    """Poll `condition` every `poll` s until it holds; BenchError naming `what` after `timeout`."""
    deadline = time.perf_counter() + timeout
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if inventory is not None and not inventory.alive():
            raise BenchError(f"the inventory process exited while waiting for {what}")
        if time.perf_counter() > deadline:
            raise BenchError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(poll)


async def stock_level(js: JetStreamContext, sku: str) -> StockLevel | None:
    try:
        kv = await js.key_value(subjects.STOCK_BUCKET)
        entry = await kv.get(sku)
    except (nats.js.errors.Error, *bus.TRANSIENT):  # a new bucket's stream may still elect
        return None
    if entry.value is None:
        return None
    return msgspec.json.decode(entry.value, type=StockLevel)


async def inventory_ready(js: JetStreamContext, sku: str) -> bool:
    """Up once the catalog is imported (the SKU is in the stock read model) and it consumes."""
    if await stock_level(js, sku) is None:
        return False
    try:
        await js.consumer_info(subjects.ORDERS, subjects.INVENTORY_ORDERS_CONSUMER)
    except (nats.js.errors.NotFoundError, *bus.TRANSIENT):
        return False
    return True


async def inventory_events(js: JetStreamContext) -> int:
    info = await js.stream_info(subjects.INVENTORY)
    return int(info.state.messages)


PRICE_KOPECKS = 100_00  # catalog_yaml's default price, 100 rubles


def order(order_id: str, sku: str, qty: int = 1, customer_id: int = 1) -> OrderPlaced:
    """A valid one-line order at the catalog price."""
    return OrderPlaced(
        order_id=order_id,
        customer_id=customer_id,
        lines=(OrderLine(sku, qty, PRICE_KOPECKS),),
        total=qty * PRICE_KOPECKS,
        placed_at=datetime.now(UTC),
    )


class Outcomes:
    """When each order's outcome (reserved or rejected) arrived, from a core subscription.

    JetStream's publishes are delivered to core subscribers too, so `inventory.reserved.>` and
    `inventory.rejected.>` see those facts as soon as the server has stored them.
    """

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.kinds: dict[str, str] = {}

    async def start(self, nc: Client) -> None:
        async def on_msg(msg: Msg) -> None:
            now = time.perf_counter()
            _, kind, key = msg.subject.split(".", 2)
            if key not in self.arrived:
                self.arrived[key] = now
                self.kinds[key] = kind

        for kind in ("reserved", "rejected"):
            await nc.subscribe(subjects.inventory_fact(kind, ">"), cb=on_msg)
        await nc.flush()

    def answered(self, order_ids: list[str]) -> int:
        return sum(1 for oid in order_ids if oid in self.arrived)


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU a process has used so far (Linux /proc), or None where unavailable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(sorted_values: list[float], q: float) -> float:
    """The nearest-rank percentile (q in 0..1) of an ascending list."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


def us(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1e6:.0f} µs"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def rate(count: float, seconds: float) -> str:
    return f"{count / seconds:,.0f}/s"
