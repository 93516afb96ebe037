"""Benchmark 5: the payments webhook, notification in to 200 out (the fact acked by JetStream).

The inventory and payments run as real processes; a fake YooKassa answers at once. Orders are
reserved and their payments created first; then every payment is paid (one-stage) without a
notification, and the notifications are sent by a pool of concurrent callers, each one the
full path: the caller's network checked, the payment re-read from the API, checked against the
order, the fact published and acked, the record updated.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import msgspec

from bench.common import (
    BenchError,
    Inventory,
    Result,
    fresh_bus,
    inventory_ready,
    ms,
    order,
    percentile,
    running,
    wait_until,
)
from libs import bus, subjects
from shop.embedded_nats import free_port
from tests.fakes.yookassa import FakeYooKassa

ORDERS = 2_000
ALONE = 200  # sent one at a time first: the latency without queueing
CONCURRENCY = 50
SKU = "PAID"


async def run(workdir: Path) -> Result:
    result = Result("webhook")
    fake = FakeYooKassa()
    await fake.start()
    port = free_port()
    fake.webhook_url = f"http://127.0.0.1:{port}/yookassa/webhook"
    fake.auto_notify = False
    single: list[float] = []
    latencies: list[float] = []
    try:
        async with fresh_bus(workdir) as b:
            pending: dict[str, str] = {}  # payment id -> order id
            succeeded: set[str] = set()

            async def on_fact(msg: object) -> None:
                subject = str(getattr(msg, "subject", ""))
                data = getattr(msg, "data", b"")
                _, kind, order_id = subject.split(".", 2)
                if kind == "pending":
                    payment_id = msgspec.json.decode(data)["payment_id"]
                    pending[payment_id] = order_id
                elif kind == "succeeded":
                    succeeded.add(order_id)

            await b.nc.subscribe("payments.>", cb=on_fact)
            inventory = Inventory(b, {SKU: ORDERS})
            payments = Inventory(
                b,
                {SKU: ORDERS},
                name="payments",
                service="payments",
                env={
                    "YOOKASSA_SHOP_ID": fake.shop_id,
                    "YOOKASSA_SECRET_KEY": fake.secret_key,
                    "YOOKASSA_API_URL": fake.api_url,
                    "YOOKASSA_TRUSTED_NETWORKS": "127.0.0.1/32",
                    "PAYMENTS_HTTP_PORT": str(port),
                    "PAYMENTS_CAPTURE": "one_stage",
                },
            )
            async with running(inventory), running(payments):
                await wait_until(lambda: inventory_ready(b.js, SKU), 60, "catalog", inventory)
                await asyncio.gather(
                    *(
                        bus.publish(
                            b.js, subjects.order_placed(f"w{i}"), order(f"w{i}", SKU), f"w{i}"
                        )
                        for i in range(ORDERS)
                    )
                )
                await wait_until(lambda: len(pending) == ORDERS, 120, "every payment created")
                for payment_id in pending:
                    await fake.pay(payment_id)

                statuses: list[int] = []

                async def caller(
                    http: aiohttp.ClientSession, queue: list[str], latencies: list[float]
                ) -> None:
                    while queue:
                        payment_id = queue.pop()
                        body = {
                            "type": "notification",
                            "event": "payment.succeeded",
                            "object": fake.payments[payment_id],
                        }
                        started = time.perf_counter()
                        async with http.post(fake.webhook_url or "", json=body) as reply:
                            await reply.read()
                            statuses.append(reply.status)
                        latencies.append(time.perf_counter() - started)

                ids = list(pending)
                alone, crowd = ids[:ALONE], ids[ALONE:]
                connector = aiohttp.TCPConnector(limit=CONCURRENCY)
                async with aiohttp.ClientSession(connector=connector) as http:
                    await caller(http, alone, single)
                    started = time.perf_counter()
                    await asyncio.gather(
                        *(caller(http, crowd, latencies) for _ in range(CONCURRENCY))
                    )
                    seconds = time.perf_counter() - started
                if statuses.count(200) != ORDERS:
                    raise BenchError(f"not every notification was taken: {set(statuses)}")
                await wait_until(lambda: len(succeeded) == ORDERS, 30, "every fact")
    finally:
        await fake.stop()
    latencies.sort()
    single.sort()
    crowd_count = ORDERS - ALONE
    p50, p99 = percentile(latencies, 0.50), percentile(latencies, 0.99)
    s50, s99 = percentile(single, 0.50), percentile(single, 0.99)
    result.lines += [
        "notification in to 200 out: the caller checked, the payment re-read from the API "
        "(the SDK, in a thread), checked against the order, the fact acked, the record updated",
        f"one at a time ({ALONE} notifications): p50 {ms(s50)}, p99 {ms(s99)}",
        f"{CONCURRENCY} concurrent callers ({crowd_count:,}, each a different paid payment): "
        f"{crowd_count / seconds:,.0f}/s, p50 {ms(p50)}, p99 {ms(p99)}, max {ms(latencies[-1])}",
    ]
    result.summary.append(
        f"webhook: {crowd_count / seconds:,.0f} notifications/s at {CONCURRENCY} concurrent "
        f"(p99 {ms(p99)}); alone p50 {ms(s50)}, p99 {ms(s99)}"
    )
    return result
