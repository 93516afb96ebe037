"""The consumer runner's one failure policy, against a real nats-server."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
import nats.errors
import nats.js.errors
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext

from libs import bus, shutdown, subjects
from libs.contracts import DeadLettered, OrderPlaced
from libs.runner import Consumer, Delivery, Runner, backoff
from tests.harness import order, place, wait_until

MAX_DELIVERIES = 3
Start = Callable[..., Awaitable[None]]


class Outage(Exception):
    """Stands for YooKassa or Telegram being out."""


@pytest.fixture
async def running(nc: Client, js: JetStreamContext) -> AsyncIterator[Start]:
    """Start consumers under a runner; stopped at the end of the test."""
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []

    async def start(*consumers: Consumer[Any]) -> None:
        runner = Runner(nc, js, "test", max_deliveries=MAX_DELIVERIES, stop=stop)
        tasks.append(asyncio.create_task(runner.run(consumers)))

    yield start
    stop.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 10)


def _orders(**handlers: Any) -> Consumer[OrderPlaced]:
    return Consumer[OrderPlaced](
        stream=subjects.ORDERS,
        durable="test-orders",
        subjects=[subjects.ORDERS_PLACED_ALL],
        kind=OrderPlaced,
        **handlers,
    )


async def _dead(js: JetStreamContext) -> list[tuple[str, dict[str, str]]]:
    info = await js.stream_info(subjects.DEADLETTER)
    found = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        if info.state.messages == 0:
            break
        msg = await js.get_msg(subjects.DEADLETTER, seq)
        found.append((str(msg.subject), dict(msg.headers or {})))
    return found


async def _alerts(js: JetStreamContext) -> list[DeadLettered]:
    info = await js.stream_info(subjects.ALERTS)
    if info.state.messages == 0:
        return []
    decode = msgspec.json.Decoder(DeadLettered).decode
    return [
        decode((await js.get_msg(subjects.ALERTS, seq)).data or b"")
        for seq in range(info.state.first_seq, info.state.last_seq + 1)
    ]


async def _settled(js: JetStreamContext) -> bool:
    try:
        info = await js.consumer_info(subjects.ORDERS, "test-orders")
    except nats.js.errors.NotFoundError:
        return False  # not declared yet
    return bool(info.num_pending == 0 and info.num_ack_pending == 0)


def test_backoff_doubles_up_to_a_minute() -> None:
    assert [backoff(n) for n in (1, 2, 3, 4)] == [1, 2, 4, 8]
    assert backoff(30) == 60


def test_a_consumer_takes_one_kind_of_handler() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        _orders()


async def test_undecodable_is_dead_lettered_told_and_acked_and_the_rest_go_on(
    js: JetStreamContext, running: Start
) -> None:
    handled: list[str] = []

    async def handle(placed: OrderPlaced) -> None:
        handled.append(placed.order_id)

    await js.publish(subjects.order_placed("junk"), b'{"type": "order_placed", "order_id": 7}')
    await place(js, order("good", ("A", 1, 100)))
    await running(_orders(handle=handle))
    await wait_until(lambda: handled == ["good"], what="the good order handled")
    await wait_until(lambda: _settled(js), what="everything acked")
    [(subject, headers)] = await _dead(js)
    assert subject == "deadletter.test.orders.placed.junk"
    assert headers["Shop-Dead-Reason"].startswith("undecodable:")
    [alert] = await _alerts(js)
    assert (alert.service, alert.subject, alert.stream) == ("test", "orders.placed.junk", "ORDERS")


async def test_a_failing_handler_is_retried_then_dead_lettered_once_and_told_once(
    js: JetStreamContext, running: Start
) -> None:
    tries: Counter[str] = Counter()

    async def handle(placed: OrderPlaced) -> None:
        tries[placed.order_id] += 1
        if placed.order_id == "poison":
            raise KeyError("no such thing")

    await place(js, order("poison", ("A", 1, 100)), order("fine", ("A", 1, 100)))
    await running(_orders(handle=handle))
    await wait_until(lambda: tries["fine"] == 1, what="the other order handled meanwhile")
    await wait_until(lambda: _settled(js), timeout=30, what="the poison given up on")
    assert tries == {"poison": MAX_DELIVERIES, "fine": 1}
    [(subject, headers)] = await _dead(js)
    assert subject == "deadletter.test.orders.placed.poison"
    assert "KeyError" in headers["Shop-Dead-Reason"]
    assert f"after {MAX_DELIVERIES} deliveries" in headers["Shop-Dead-Reason"]
    [alert] = await _alerts(js)
    assert alert.subject == "orders.placed.poison" and "no such thing" in alert.reason


async def test_an_outage_is_waited_out_however_many_deliveries_it_takes(
    js: JetStreamContext, running: Start
) -> None:
    tries: list[str] = []

    async def handle(placed: OrderPlaced) -> None:
        tries.append(placed.order_id)
        if len(tries) <= MAX_DELIVERIES:
            raise Outage("the provider is down")

    await place(js, order("patient", ("A", 1, 100)))
    await running(_orders(handle=handle, retry_on=(Outage,)))
    await wait_until(lambda: len(tries) == MAX_DELIVERIES + 1, timeout=30, what="handled at last")
    await wait_until(lambda: _settled(js), what="acked")
    assert (await js.stream_info(subjects.DEADLETTER)).state.messages == 0


async def test_a_batch_handler_keeps_what_it_acked_and_the_rest_follow_the_policy(
    js: JetStreamContext, running: Start
) -> None:
    seen: Counter[str] = Counter()

    async def handle_batch(deliveries: list[Delivery[OrderPlaced]]) -> None:
        for delivery in deliveries:
            seen[delivery.value.order_id] += 1
            if delivery.value.order_id != "bad":
                await delivery.msg.ack()
        raise RuntimeError("one of them is bad")

    await place(js, order("ok1", ("A", 1, 100)), order("bad", ("A", 1, 100)))
    await running(_orders(handle_batch=handle_batch))
    await wait_until(lambda: _settled(js), timeout=30, what="the bad one given up on")
    assert seen == {"ok1": 1, "bad": MAX_DELIVERIES}
    assert [subject for subject, _ in await _dead(js)] == ["deadletter.test.orders.placed.bad"]


async def test_a_consumer_deleted_under_the_runner_is_declared_again(
    js: JetStreamContext, running: Start
) -> None:
    handled: list[str] = []

    async def handle(placed: OrderPlaced) -> None:
        handled.append(placed.order_id)

    await place(js, order("first", ("A", 1, 100)))
    await running(_orders(handle=handle))
    await wait_until(lambda: handled == ["first"], what="the first order")
    await wait_until(lambda: _settled(js), what="acked")
    await js.delete_consumer(subjects.ORDERS, "test-orders")
    await place(js, order("second", ("A", 1, 100)))
    # Declared again from the start of the stream: the first comes again, and the second.
    await wait_until(lambda: "second" in handled, timeout=20, what="the second order")


async def test_a_start_step_waits_out_any_number_of_bus_errors_until_stopped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """bus.outlasting: no deadline (an hour's worth of tries must not overflow its backoff),
    and a stop while it waits ends it with shutdown.Stopped, naming the step."""
    monkeypatch.setattr(bus, "START_RETRY_MAX_S", 0.0)
    calls = 0

    async def unanswered() -> str:
        nonlocal calls
        calls += 1
        if calls <= 1_500:
            raise nats.errors.NoRespondersError
        return "declared"

    assert await bus.outlasting(unanswered, "declare streams") == "declared"
    stop = asyncio.Event()

    async def stopped_meanwhile() -> None:
        stop.set()
        raise nats.errors.TimeoutError

    with pytest.raises(shutdown.Stopped, match="a bucket"):
        await bus.outlasting(stopped_meanwhile, "a bucket", stop)
