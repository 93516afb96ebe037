"""The bus: connecting to NATS, publishing facts, and the durable pull-consumer loop."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import msgspec
import nats
import nats.errors
import nats.js.errors
import tenacity
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from libs import log, shutdown, subjects
from libs.settings import redact_url

T = TypeVar("T")

_log = log.get(__name__)

# What a broken connection or a busy server looks like from nats-py; a loop backs off on these.
TRANSIENT = (
    nats.errors.TimeoutError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.NoServersError,
    nats.errors.StaleConnectionError,
    nats.errors.OutboundBufferLimitError,
    nats.js.errors.ServiceUnavailableError,
    nats.js.errors.NoStreamResponseError,
    nats.errors.NoRespondersError,
    asyncio.TimeoutError,
    ConnectionError,
    OSError,
)


class BusUnreachable(Exception):
    """NATS could not be reached at start; the message says where we looked."""


async def connect(url: str, name: str, give_up_after: float = 10.0) -> Client:
    """Connect (giving up after `give_up_after` s with a clear error), then reconnect forever:
    a running service outlives a NATS restart."""
    connected = False
    client: list[Client] = []

    async def on_disconnect() -> None:
        if connected and not (client[0].is_closed or client[0].is_draining):
            _log.warning("nats.disconnected")

    async def on_reconnect() -> None:
        _log.info("nats.reconnected")

    async def on_error(exc: Exception) -> None:
        if connected:  # before that, the one error that matters is raised below
            _log.warning("nats.error", error=str(exc) or type(exc).__name__)

    try:
        nc = await asyncio.wait_for(
            nats.connect(
                servers=url.split(","),
                name=name,
                connect_timeout=2,
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                disconnected_cb=on_disconnect,
                reconnected_cb=on_reconnect,
                error_cb=on_error,
                pending_size=64 * 1024 * 1024,
            ),
            timeout=give_up_after,
        )
    except TRANSIENT as exc:
        reason = str(exc) or type(exc).__name__
        raise BusUnreachable(
            f"cannot reach NATS at {redact_url(url)} (gave up after {give_up_after:g} s: {reason})"
        ) from None
    connected = True
    client.append(nc)
    return nc


async def attach(url: str, service: str) -> tuple[Client, JetStreamContext]:
    """A service's start: connected, its JetStream context, the streams declared."""
    nc = await connect(url, name=service)
    js = nc.jetstream(timeout=10)
    await subjects.declare_streams(js)
    return nc, js


def encode(fact: msgspec.Struct) -> bytes:
    return msgspec.json.encode(fact)


async def publish(
    js: JetStreamContext,
    subject: str,
    fact: msgspec.Struct,
    msg_id: str,
    timeout: float = 5.0,
    give_up_after: float = 60.0,
) -> Any:
    """Publish a fact and wait for JetStream's ack, retrying through a NATS outage.

    `msg_id` (Nats-Msg-Id) makes the retries safe: the stream keeps the fact once.
    """
    data = encode(fact)
    headers = {"Nats-Msg-Id": msg_id}
    retrying = tenacity.AsyncRetrying(
        retry=tenacity.retry_if_exception_type(TRANSIENT),
        wait=tenacity.wait_random_exponential(multiplier=0.1, max=3.0),
        stop=tenacity.stop_after_delay(give_up_after),
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            return await js.publish(subject, data, timeout=timeout, headers=headers)
    raise AssertionError("unreachable")  # pragma: no cover


class PublishRefused(Exception):
    """JetStream answered a publish with an error (a wrong expected sequence, say)."""

    def __init__(self, code: int, err_code: int, description: str) -> None:
        super().__init__(f"{code}/{err_code}: {description}")
        self.err_code = err_code


class _PubAck(msgspec.Struct):
    seq: int = 0
    error: dict[str, Any] | None = None


_decode_ack = msgspec.json.Decoder(_PubAck).decode


class PipelinedPublisher:
    """Many JetStream publishes sent back to back, their acks awaited together.

    nats-py's `publish_async` leaves a future pending forever when JetStream answers with an
    error, so this keeps its own reply inbox: one subscription, one future per message.
    """

    def __init__(self, nc: Client) -> None:
        self._nc = nc
        self._prefix = ""
        self._next = 0
        self._futures: dict[str, asyncio.Future[int]] = {}

    async def publish(
        self, messages: Sequence[tuple[str, bytes, dict[str, str] | None]], timeout: float
    ) -> list[int | BaseException]:
        """Each message's stream sequence, or the exception that stopped it."""
        if not self._prefix:
            self._prefix = self._nc.new_inbox()
            await self._nc.subscribe(f"{self._prefix}.*", cb=self._on_ack)
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[int]] = []
        try:
            for subject, data, headers in messages:
                self._next += 1
                token = str(self._next)
                future: asyncio.Future[int] = loop.create_future()
                self._futures[token] = future
                futures.append(future)
                await self._nc.publish(
                    subject, data, reply=f"{self._prefix}.{token}", headers=headers
                )
            done, _ = await asyncio.wait(futures, timeout=timeout)
        except TRANSIENT as exc:
            done = set()
            for future in futures:
                if not future.done():
                    future.set_exception(exc)
        results: list[int | BaseException] = []
        for future in futures:
            if future in done or future.done():
                error = future.exception()
                results.append(future.result() if error is None else error)
            else:
                future.cancel()
                results.append(TimeoutError())
        for token in [t for t, f in self._futures.items() if f.done()]:
            del self._futures[token]
        return results

    async def publish_atomic(
        self,
        messages: Sequence[tuple[str, bytes]],
        timeout: float,
        expect: dict[str, str] | None = None,
    ) -> int:
        """All the messages or none (JetStream atomic batch, server 2.12+, at most 1,000).

        The stream must allow atomic publish. `expect` are the batch's conditions, headers of
        its first message (`Nats-Expected-Last-Sequence`, say). Returns the last message's
        sequence; raises PublishRefused (a condition not met, say) or a transient error, in
        which case nothing of the batch is stored.
        """
        if not self._prefix:
            self._prefix = self._nc.new_inbox()
            await self._nc.subscribe(f"{self._prefix}.*", cb=self._on_ack)
        self._next += 1
        token = str(self._next)
        batch_id = f"{self._prefix.rsplit('.', 1)[1]}-{token}"  # unique per connection
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._futures[token] = future
        last = len(messages)
        try:
            for number, (subject, data) in enumerate(messages, 1):
                headers = {"Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(number)}
                if number == 1 and expect:
                    headers.update(expect)
                if number == last:
                    headers["Nats-Batch-Commit"] = "1"
                await self._nc.publish(
                    subject,
                    data,
                    reply=f"{self._prefix}.{token}" if number == last else "",
                    headers=headers,
                )
            return await asyncio.wait_for(future, timeout)
        finally:
            self._futures.pop(token, None)

    async def _on_ack(self, msg: Msg) -> None:
        future = self._futures.pop(msg.subject.rsplit(".", 1)[1], None)
        if future is None or future.done():
            return
        if msg.headers and msg.headers.get("Status") == "503":
            future.set_exception(nats.errors.NoRespondersError())
            return
        try:
            ack = _decode_ack(msg.data)
        except msgspec.DecodeError as exc:
            future.set_exception(exc)
            return
        if ack.error is not None:
            future.set_exception(
                PublishRefused(
                    int(ack.error.get("code", 0)),
                    int(ack.error.get("err_code", 0)),
                    str(ack.error.get("description", "")),
                )
            )
        else:
            future.set_result(ack.seq)


@dataclass(slots=True)
class Delivery(Generic[T]):
    """A decoded message and the JetStream message to ack once it has been acted upon."""

    value: T
    msg: Msg


async def dead_letter(js: JetStreamContext, service: str, msg: Msg, reason: str) -> None:
    """Keep an unusable message, with why, where an operator can see it; never block on it."""
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


def durable(
    name: str, filter_subjects: Sequence[str], max_ack_pending: int = 5_000, ack_wait: float = 10.0
) -> ConsumerConfig:
    """A durable pull consumer with explicit acks; what a crashed instance held comes back
    after `ack_wait`, and `max_ack_pending` bounds what one instance holds at once."""
    return ConsumerConfig(
        durable_name=name,
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=ack_wait,
        max_deliver=-1,
        max_ack_pending=max_ack_pending,
        filter_subjects=list(filter_subjects),
    )


class _Puller:
    """Pull requests answered into one inbox by callback.

    nats-py's `fetch` awaits each message of a batch on its own (a timer and a task apiece);
    here the messages land in a buffer as they arrive and the loop takes them all at once.
    One request is outstanding at a time; it ends when its batch is delivered, or with a
    status (408 expired, 404 nothing pending, 409 ...), or when it is overdue (a NATS restart
    forgets requests).
    """

    def __init__(self, nc: Client, stream: str, durable: str, batch: int, expires: float) -> None:
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
        self._sub = await self._nc.subscribe(self._inbox, cb=self._on_msg)

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()

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


async def consume(
    js: JetStreamContext,
    *,
    service: str,
    stream: str,
    config: ConsumerConfig,
    decode: Callable[[bytes], T],
    handle: Callable[[list[Delivery[T]]], Awaitable[None]],
    stop: asyncio.Event,
    batch: int = 1000,
    idle_timeout: float = 1.0,
) -> None:
    """Take batches from a durable pull consumer until `stop` is set.

    `handle` owns acking: it acks each delivery once its effect is durable. Messages that do
    not decode are dead-lettered and acked here, so they never block the stream.
    """
    await subjects.declare_consumer(js, stream, config)
    assert config.durable_name is not None
    puller = _Puller(js._nc, stream, config.durable_name, batch, idle_timeout)
    await puller.start()
    backoff = 0.1
    try:
        while not stop.is_set():
            try:
                msgs = await puller.next()
            except TRANSIENT as exc:
                _log.warning("consumer.pull_failed", consumer=config.durable_name, error=repr(exc))
                await shutdown.sleep_or_stop(stop, backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if puller.status[:3] not in ("", "404", "408"):
                # 409 and the like: the consumer was deleted or is overloaded; back off.
                _log.warning("consumer.status", consumer=config.durable_name, status=puller.status)
                puller.status = ""
                await shutdown.sleep_or_stop(stop, backoff)
                backoff = min(backoff * 2, 5.0)
                with contextlib.suppress(*TRANSIENT, nats.js.errors.Error):
                    await subjects.declare_consumer(js, stream, config)
                continue
            backoff = 0.1
            good: list[Delivery[T]] = []
            for msg in msgs:
                try:
                    good.append(Delivery(decode(msg.data), msg))
                except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
                    try:
                        await dead_letter(js, service, msg, str(exc))
                        await msg.ack()
                    except TRANSIENT as err:
                        # Not acked: it comes back and is dead-lettered then.
                        _log.warning("dead_letter.failed", error=repr(err))
            if good:
                await handle(good)
    finally:
        await puller.stop()


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
