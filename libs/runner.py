"""The consumer runner: a service declares what it consumes as data, the runner does the rest.

It owns fetching, decoding, acking and one failure policy for every service:
- a message that does not decode is dead-lettered with the reason, told to the admin chat, and
  acked: it never blocks the stream;
- a handler that raises an expected outage (the bus, or the consumer's `retry_on`: YooKassa or
  Telegram unreachable) has the fact back later, with backoff, for as long as it takes;
- a handler that raises anything else has it back with backoff up to `max_deliveries`
  deliveries; then the fact is dead-lettered with the exception and told to the admin chat once;
- a bus error never ends the service: the loop backs off and pulls again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

import msgspec
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from libs import log, metrics, shutdown, subjects
from libs.bus import TRANSIENT, encode
from libs.contracts import DeadLettered

T = TypeVar("T")

_log = log.get(__name__)

MAX_BACKOFF_S = 60.0
# A consumer that has not pulled for this long (and is not handling a batch) is stalled.
STALLED_AFTER_S = 60.0
# How often the consumers' lag is read from the server (between batches it comes with them).
LAG_EVERY_S = 10.0


@dataclass(slots=True)
class Delivery(Generic[T]):
    """A decoded message and the JetStream message to ack once it has been acted upon."""

    value: T
    msg: Msg


@dataclass(frozen=True, kw_only=True)
class Consumer(Generic[T]):
    """One durable pull consumer of a service.

    Either `handle` (one fact at a time; one order's facts in order, orders side by side; the
    runner acks each once it returns) or `handle_batch` (the whole batch; it acks each delivery
    once its effect is durable, the runner applies the policy to what it leaves when it raises).
    """

    stream: str
    durable: str
    subjects: Sequence[str]
    kind: Any  # what the messages decode to: a msgspec Struct or a tagged union of them
    handle: Callable[[T], Awaitable[None]] | None = None
    handle_batch: Callable[[list[Delivery[T]]], Awaitable[None]] | None = None
    batch: int = 100
    ack_wait: float = 30.0  # kept alive while `handle` works: what a crashed instance held
    retry_on: tuple[type[BaseException], ...] = ()  # outages: retried for as long as they last
    max_ack_pending: int = 5_000

    def __post_init__(self) -> None:
        if (self.handle is None) == (self.handle_batch is None):
            raise ValueError(f"consumer {self.durable}: give exactly one of handle, handle_batch")

    def config(self) -> ConsumerConfig:
        """Explicit acks; the runner, not the server, bounds deliveries (a server-side limit
        drops the message silently)."""
        return ConsumerConfig(
            durable_name=self.durable,
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait,
            max_deliver=-1,
            max_ack_pending=self.max_ack_pending,
            filter_subjects=list(self.subjects),
        )


@dataclass(slots=True)
class Progress:
    """What /healthz says of one consumer: when it last pulled, whether it is handling now."""

    stream: str
    last_fetch: float | None = None  # time.time() of the last pull without an error
    handling_since: float | None = None
    error: str = ""  # the last pull's error, until one succeeds

    def report(self, now: float) -> tuple[bool, dict[str, Any]]:
        handling = self.handling_since is not None
        since = None if self.last_fetch is None else round(now - self.last_fetch, 1)
        healthy = handling or (since is not None and since < STALLED_AFTER_S)
        body: dict[str, Any] = {"ok": healthy, "last_fetch_s_ago": since}
        if self.handling_since is not None:
            body["handling_for_s"] = round(now - self.handling_since, 1)
        if self.error:
            body["error"] = self.error
        return healthy, body


def backoff(delivered: int) -> float:
    """Seconds before delivery number `delivered` + 1: 1, 2, 4 ... up to a minute."""
    return min(MAX_BACKOFF_S, 2.0 ** max(0, delivered - 1))


class Runner:
    """Runs a service's consumers until `stop` is set."""

    def __init__(
        self,
        nc: Client,
        js: JetStreamContext,
        service: str,
        *,
        max_deliveries: int,
        stop: asyncio.Event,
    ) -> None:
        self._nc = nc
        self._js = js
        self._service = service
        self._max_deliveries = max_deliveries
        self._stop = stop
        self.progress: dict[str, Progress] = {}  # by durable

    def health(self) -> tuple[bool, dict[str, Any]]:
        """Whether every consumer started is pulling (or handling what it pulled), and each's
        report by durable. None started (a standby) is healthy."""
        now = time.time()
        reports = {durable: p.report(now) for durable, p in self.progress.items()}
        return all(ok for ok, _ in reports.values()), {d: r for d, (_, r) in reports.items()}

    async def run(self, consumers: Sequence[Consumer[Any]]) -> None:
        async with asyncio.TaskGroup() as tasks:
            for consumer in consumers:
                tasks.create_task(self.consume(consumer))
            tasks.create_task(self._watch_lag(consumers))

    async def _watch_lag(self, consumers: Sequence[Consumer[Any]]) -> None:
        """The lag read from the server now and then: between batches it comes with each, but
        a consumer that is stuck, or idle, gets no batch to say it."""
        while not self._stop.is_set():
            await shutdown.sleep_or_stop(self._stop, LAG_EVERY_S)
            for consumer in consumers:
                try:
                    info = await self._js.consumer_info(consumer.stream, consumer.durable)
                except (*TRANSIENT, nats.js.errors.Error):
                    continue  # the pull loop says what is wrong
                labels = (consumer.stream, consumer.durable)
                metrics.CONSUMER_PENDING.labels(*labels).set(info.num_pending or 0)
                metrics.CONSUMER_ACK_PENDING.labels(*labels).set(info.num_ack_pending or 0)

    async def consume(self, consumer: Consumer[Any]) -> None:
        decode = msgspec.json.Decoder(consumer.kind).decode
        puller = _Puller(self._nc, consumer.stream, consumer.durable, consumer.batch)
        config = consumer.config()
        declared = False
        pause = 0.1
        progress = self.progress[consumer.durable] = Progress(consumer.stream)
        pending = metrics.CONSUMER_PENDING.labels(consumer.stream, consumer.durable)
        fetched = metrics.CONSUMER_LAST_FETCH.labels(consumer.durable)
        while not self._stop.is_set():
            try:
                if not declared:
                    await subjects.declare_consumer(self._js, consumer.stream, config)
                    await puller.start()
                    declared = True
                msgs = await puller.next()
            except (*TRANSIENT, nats.js.errors.Error) as exc:
                _log.warning("consumer.pull_failed", consumer=consumer.durable, error=repr(exc))
                progress.error = repr(exc)
                await shutdown.sleep_or_stop(self._stop, pause)
                pause = min(pause * 2, 5.0)
                continue
            if puller.status[:3] not in ("", "404", "408"):
                # 409 and the like: the consumer was deleted or is overloaded; declare it again.
                _log.warning("consumer.status", consumer=consumer.durable, status=puller.status)
                progress.error = puller.status
                puller.status, declared = "", False
                await puller.stop()
                await shutdown.sleep_or_stop(self._stop, pause)
                pause = min(pause * 2, 5.0)
                continue
            pause = 0.1
            progress.last_fetch, progress.error = time.time(), ""
            fetched.set(progress.last_fetch)
            if msgs:
                pending.set(msgs[-1].metadata.num_pending or 0)
            deliveries: list[Delivery[Any]] = []
            for msg in msgs:
                try:
                    deliveries.append(Delivery(decode(msg.data), msg))
                except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
                    await self._dead_letter(msg, f"undecodable: {exc}")
            if deliveries:
                progress.handling_since = time.time()
                try:
                    await self._handle(consumer, deliveries)
                finally:
                    progress.handling_since = None
        await puller.stop()

    async def _handle(self, consumer: Consumer[Any], deliveries: list[Delivery[Any]]) -> None:
        if consumer.handle_batch is not None:
            try:
                await consumer.handle_batch(deliveries)
            except Exception as exc:
                for delivery in deliveries:
                    if not delivery.msg.is_acked:
                        await self._failed(consumer, delivery, exc)
            return
        handle = consumer.handle
        assert handle is not None

        async def one(delivery: Delivery[Any]) -> None:
            try:
                await handle(delivery.value)
            except Exception as exc:
                await self._failed(consumer, delivery, exc)
                return
            with contextlib.suppress(*TRANSIENT):
                await delivery.msg.ack()

        async with working_on([d.msg for d in deliveries], consumer.ack_wait / 3):
            await per_order(deliveries, one)

    async def _failed(
        self, consumer: Consumer[Any], delivery: Delivery[Any], exc: Exception
    ) -> None:
        msg = delivery.msg
        delivered = msg.metadata.num_delivered or 1
        outage = isinstance(exc, (*TRANSIENT, *consumer.retry_on))
        if outage or delivered < self._max_deliveries:
            delay = backoff(delivered)
            why = "outage" if outage else "failure"
            metrics.DELIVERIES_RETRIED.labels(consumer.durable, why).inc()
            _log.warning(
                "delivery.retry_later",
                consumer=consumer.durable,
                subject=msg.subject,
                delivered=delivered,
                in_s=delay,
                error=f"{type(exc).__name__}: {exc}",
            )
            with contextlib.suppress(*TRANSIENT):
                await msg.nak(delay=delay)
            return
        _log.error(
            "delivery.failed",
            consumer=consumer.durable,
            subject=msg.subject,
            delivered=delivered,
            exc_info=exc,
        )
        await self._dead_letter(msg, f"{type(exc).__name__}: {exc} (after {delivered} deliveries)")

    async def _dead_letter(self, msg: Msg, reason: str) -> None:
        """Keep the message with why, tell the admin chat, ack it; if the bus fails meanwhile it
        is not acked and comes back to be dead-lettered then."""
        try:
            fact = await dead_letter(self._js, self._service, msg, reason)
            metrics.DEAD_LETTERS.labels(msg.metadata.stream).inc()
            if msg.metadata.stream != subjects.ALERTS:  # an alert about an alert could loop
                await self._js.publish(
                    subjects.alert_dead_letter(self._service),
                    encode(fact),
                    headers={"Nats-Msg-Id": f"alert:{fact.stream}:{fact.sequence}"},
                )
            await msg.ack()
        except TRANSIENT as exc:
            _log.warning("dead_letter.failed", subject=msg.subject, error=repr(exc))


async def dead_letter(js: JetStreamContext, service: str, msg: Msg, reason: str) -> DeadLettered:
    """Keep an unusable message, with why, where an operator can see it (the DEADLETTER stream)."""
    meta = msg.metadata
    headers = {
        "Shop-Dead-Reason": reason[:500],
        "Shop-Dead-Subject": msg.subject,
        "Shop-Dead-Stream": meta.stream,
        "Shop-Dead-Sequence": str(meta.sequence.stream),
        "Nats-Msg-Id": f"dead:{meta.stream}:{meta.sequence.stream}",
    }
    await js.publish(subjects.dead_letter(service, msg.subject), msg.data, headers=headers)
    _log.warning(
        "message.dead_lettered", subject=msg.subject, seq=meta.sequence.stream, reason=reason
    )
    return DeadLettered(
        service=service,
        stream=meta.stream,
        sequence=meta.sequence.stream,
        subject=msg.subject,
        reason=reason[:500],
        at=datetime.now(UTC),
    )


class _Puller:
    """Pull requests answered into one inbox by callback.

    nats-py's `fetch` awaits each message of a batch on its own (a timer and a task apiece);
    here the messages land in a buffer as they arrive and the loop takes them all at once.
    One request is outstanding at a time; it ends when its batch is delivered, or with a
    status (408 expired, 404 nothing pending, 409 ...), or when it is overdue (a NATS restart
    forgets requests).
    """

    def __init__(
        self, nc: Client, stream: str, durable: str, batch: int, expires: float = 1.0
    ) -> None:
        self._nc = nc
        self._subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self._batch = batch
        self._expires = expires
        self._inbox = nc.new_inbox()
        self._sub: Any = None
        self.buffer: list[Msg] = []
        self._arrived = asyncio.Event()
        self._owed = 0  # messages the outstanding request may still bring
        self._deadline = 0.0
        self.status = ""

    async def start(self) -> None:
        if self._sub is None:
            self._sub = await self._nc.subscribe(self._inbox, cb=self._on_msg)

    async def stop(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(*TRANSIENT, nats.errors.Error):
                await self._sub.unsubscribe()
            self._sub = None
        self._owed = 0

    async def _on_msg(self, msg: Msg) -> None:
        headers = msg.headers or {}
        status = headers.get("Status")
        if status:
            if status != "100":  # 100 is a heartbeat; anything else ends the request
                self._owed = 0
                self.status = f"{status} {headers.get('Description', '')}".strip()
        else:
            self.buffer.append(msg)
            self._owed -= 1
        self._arrived.set()

    async def next(self) -> list[Msg]:
        """What has arrived, waiting a moment if nothing has; asks for more when due."""
        loop = asyncio.get_running_loop()
        if self._owed <= 0 or loop.time() > self._deadline:
            self._owed = self._batch
            self._deadline = loop.time() + self._expires + 1.0
            request = {"batch": self._batch, "expires": int(self._expires * 1e9)}
            await self._nc.publish(self._subject, json.dumps(request).encode(), reply=self._inbox)
        if not self.buffer and self._owed > 0:
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                # In short slices, so a stopping loop is not held up by an idle request.
                wait = min(0.25, self._deadline - loop.time())
                await asyncio.wait_for(self._arrived.wait(), wait)
        msgs, self.buffer = self.buffer, []
        return msgs


@contextlib.asynccontextmanager
async def working_on(msgs: Sequence[Msg], every: float) -> AsyncIterator[None]:
    """Tell JetStream every `every` s that these messages are still being worked on, until the
    block ends: a slow handler keeps them, and a crashed one gives them back after the short
    ack wait instead of a long one sized for the slowest call."""

    async def keep() -> None:
        while True:
            await asyncio.sleep(every)
            for msg in msgs:
                if not msg.is_acked:
                    with contextlib.suppress(*TRANSIENT):
                        await msg.in_progress()

    keeper = asyncio.create_task(keep())
    try:
        yield
    finally:
        keeper.cancel()


async def per_order(
    deliveries: list[Delivery[T]], act: Callable[[Delivery[T]], Awaitable[None]]
) -> None:
    """`act` on each delivery: one order's facts one after the other (they build on each other),
    different orders side by side. Facts without an order id go together."""

    async def in_order(group: list[Delivery[T]]) -> None:
        for delivery in group:
            await act(delivery)

    groups: dict[str, list[Delivery[T]]] = {}
    for delivery in deliveries:
        groups.setdefault(str(getattr(delivery.value, "order_id", "")), []).append(delivery)
    await asyncio.gather(*(in_order(group) for group in groups.values()))
