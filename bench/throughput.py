"""Benchmark 1: durable reservations per second through the actor vs raw acked JetStream publish."""

from __future__ import annotations

import asyncio
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy, StorageType, StreamConfig

from bench.common import (
    BenchError,
    Bus,
    Inventory,
    Result,
    cpu_seconds,
    fresh_bus,
    inventory_events,
    inventory_ready,
    order,
    rate,
    running,
    stock_level,
    us,
    wait_until,
)
from libs import bus, subjects
from libs.bus import PipelinedPublisher
from libs.contracts import OrderPlaced
from libs.runner import Consumer, Delivery, Runner
from services.inventory import catalog
from services.inventory.core import EMPTY, Reserve, decide, evolve
from services.inventory.store import subject_of

N = 20_000
WINDOW = 1_000  # messages in flight per PipelinedPublisher window
WARMUP = 1_000
RAW_RUNS = 3  # the raw rate is the median of these
SKU = "BULK"
TARGET = 0.5

Message = tuple[str, bytes, dict[str, str] | None]


def orders(prefix: str, count: int, subject: str) -> list[Message]:
    """`count` OrderPlaced facts on `subject`.<id>, each with its Nats-Msg-Id, as the bot sends."""
    messages: list[Message] = []
    for i in range(count):
        order_id = f"{prefix}{i}"
        messages.append(
            (f"{subject}.{order_id}", bus.encode(order(order_id, SKU)), {"Nats-Msg-Id": order_id})
        )
    return messages


async def publish_all(nc: Client, messages: list[Message]) -> None:
    """Publish in windows of WINDOW, every ack awaited before the next window goes."""
    publisher = PipelinedPublisher(nc)
    for start in range(0, len(messages), WINDOW):
        results = await publisher.publish(messages[start : start + WINDOW], timeout=30)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            raise BenchError(f"{len(failed)} publishes failed, first: {failed[0]!r}")


def _server_cpu(b: Bus) -> float | None:
    process = b.server.process
    return None if process is None else cpu_seconds(process.pid)


def _per(before: float | None, after: float | None, count: int) -> float | None:
    return None if before is None or after is None or count <= 0 else (after - before) / count


async def raw_publish(
    b: Bus, n: int = N, runs: int = RAW_RUNS
) -> tuple[float, float | None, float | None]:
    """Median acked-publish rate over `runs` runs of `n`, and client/server CPU per message.

    A scratch file stream configured like ORDERS (dedup window on, every message with a
    Nats-Msg-Id, the bus's replica count): the fastest honest acked publish from Python.
    """
    await b.js.add_stream(
        StreamConfig(
            name="BENCH_RAW",
            subjects=["bench.raw.>"],
            storage=StorageType.FILE,
            duplicate_window=subjects.DUPLICATE_WINDOW_S,
            num_replicas=b.replicas,
        )
    )
    await publish_all(b.nc, orders("w", WARMUP, "bench.raw"))
    rates: list[float] = []
    client_cpu, server_cpu = time.process_time(), _server_cpu(b)
    for run in range(runs):
        messages = orders(f"r{run}x", n, "bench.raw")
        started = time.perf_counter()
        await publish_all(b.nc, messages)
        rates.append(n / (time.perf_counter() - started))
    client = (time.process_time() - client_cpu) / (n * runs)  # includes building messages
    server = _per(server_cpu, _server_cpu(b), n * runs)
    await b.js.delete_stream("BENCH_RAW")
    return statistics.median(rates), client, server


async def parts(b: Bus, catalog_file: Path) -> list[str]:
    """The inventory's per-order steps, each measured alone in this process on the same data."""
    # The shop's durable pull consumer, as the inventory uses it (decoded, not acted upon).
    fetched: list[Msg] = []
    pulled = asyncio.Event()
    stop = asyncio.Event()

    async def handle(deliveries: list[Delivery[OrderPlaced]]) -> None:
        fetched.extend(d.msg for d in deliveries)
        if len(fetched) >= N:
            pulled.set()
            stop.set()

    pull = Consumer[OrderPlaced](
        stream=subjects.ORDERS,
        durable="bench-pull",
        subjects=[subjects.ORDERS_PLACED_ALL],
        kind=OrderPlaced,
        handle_batch=handle,
        batch=1000,
        max_ack_pending=N + 1,
    )
    runner = Runner(b.nc, b.js, "bench", max_deliveries=10, stop=stop)
    cpu, started = time.process_time(), time.perf_counter()
    consumer = asyncio.create_task(runner.consume(pull))
    await asyncio.wait_for(pulled.wait(), 60)
    fetch_cpu = (time.process_time() - cpu) / N
    fetch_rate = N / (time.perf_counter() - started)
    await consumer
    await b.js.delete_consumer(subjects.ORDERS, "bench-pull")

    # The same messages pushed to a callback (an ordered consumer): what receiving costs.
    received = 0
    all_received = asyncio.Event()

    async def on_msg(msg: Msg) -> None:
        nonlocal received
        received += 1
        if received == N:
            all_received.set()

    cpu = time.process_time()
    push = await b.js.subscribe(
        subjects.ORDERS_PLACED_ALL,
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.ALL,
        cb=on_msg,
    )
    await asyncio.wait_for(all_received.wait(), 60)
    push_cpu = (time.process_time() - cpu) / N
    await push.unsubscribe()

    # The pure core: decode, decide, evolve, encode, for the same orders.
    decode = msgspec.json.Decoder(OrderPlaced).decode
    encode = msgspec.json.Encoder().encode
    state, now = EMPTY, datetime.now(UTC)
    for command in catalog.load(catalog_file):
        for event in decide(state, command, now):
            state = evolve(state, event)
    cpu = time.process_time()
    for msg in fetched:
        placed = decode(msg.data)
        for event in decide(state, Reserve(placed.order_id, placed.lines, placed.total, 900), now):
            state = evolve(state, event)
            _ = (subject_of(event), encode(event))
    core_cpu = (time.process_time() - cpu) / N
    return [
        f"  the inventory's steps alone, CPU per order: durable pull consumer {us(fetch_cpu)} "
        f"({fetch_rate:,.0f}/s; the same messages by push callback: {us(push_cpu)}), "
        f"decode+decide+evolve+encode {us(core_cpu)}"
    ]


async def run(workdir: Path) -> Result:
    result = Result("throughput")
    async with fresh_bus(workdir) as b:
        raw_rate, raw_client_cpu, raw_server_cpu = await raw_publish(b)

        # The actor: first start imports the catalog; stop it, queue N orders, start it again.
        inventory = Inventory(b, {SKU: N * 10})
        async with running(inventory):
            await wait_until(lambda: inventory_ready(b.js, SKU), 60, "catalog import", inventory)
        base = await inventory_events(b.js)
        await publish_all(b.nc, orders("o", N, "orders.placed"))

        # CPU of both processes from the first outcome seen to the last.
        marks: list[tuple[int, float | None, float | None]] = []

        async def all_outcomes() -> bool:
            count = await inventory_events(b.js) - base
            if count > 0 and not marks:
                marks.append((count, inventory.cpu(), _server_cpu(b)))
            if count >= N:
                marks.append((count, inventory.cpu(), _server_cpu(b)))
            return count >= N

        spawned = time.perf_counter()
        async with running(inventory):
            # Polled seldom: on two cores the poller's CPU would be taken from the actor.
            await wait_until(all_outcomes, 180, f"{N:,} outcomes", inventory, poll=0.05)
            wall = time.perf_counter() - spawned

            async def caught_up() -> bool:
                got = await stock_level(b.js, SKU)
                return got is not None and got.seq >= base + N

            await wait_until(caught_up, 10, "the stock read model", inventory)
            level = await stock_level(b.js, SKU)
        assert level is not None
        if level.reserved != N:
            raise BenchError(f"expected {N:,} reserved, the read model says {level.reserved:,}")
        # The actor consumes as soon as it is up, and "up" is not observable from outside on a
        # restart (the consumer already exists). So the rate is taken from the server's own
        # timestamps: first outcome to last outcome, N-1 intervals. This leaves out process
        # start, load and the first batch's decide (one batch of ~500), so it is the actor's
        # steady-state rate; the wall time from spawn is printed next to it.
        first = await b.js.get_msg(subjects.INVENTORY, base + 1)
        last = await b.js.get_msg(subjects.INVENTORY, base + N)
        assert first.time is not None and last.time is not None
        span = (last.time - first.time).total_seconds()
        actor_rate = (N - 1) / span
        (n0, inv0, srv0), (n1, inv1, srv1) = marks[0], marks[-1]
        breakdown = await parts(b, inventory.catalog_file)
    ratio = actor_rate / raw_rate
    verdict = "ok" if ratio >= TARGET else "BELOW TARGET"
    result.lines += [
        f"raw JetStream acked publish: {raw_rate:,.0f}/s (median of {RAW_RUNS} x {N:,}, "
        f"pipelined in windows of {WINDOW:,}); CPU per message: client {us(raw_client_cpu)}, "
        f"nats-server {us(raw_server_cpu)}",
        f"reservations through the actor: {N:,} in {span:.2f} s = {actor_rate:,.0f}/s "
        f"(first to last outcome, server timestamps; all {N:,} reserved); CPU per order: "
        f"inventory {us(_per(inv0, inv1, n1 - n0))}, nats-server {us(_per(srv0, srv1, n1 - n0))}",
        f"  wall time from process spawn to last outcome: {wall:.2f} s "
        f"= {rate(N, wall)} including start and load",
        *breakdown,
        f"ratio {ratio:.2f} (target >= {TARGET}) {verdict}",
    ]
    result.summary.append(
        f"reservations: {actor_rate:,.0f}/s durable through the actor; raw JetStream acked "
        f"publish: {raw_rate:,.0f}/s; ratio {ratio:.2f} (target >= {TARGET})"
    )
    return result
