"""The bus: connecting to NATS and publishing facts (consuming them: libs.runner)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import msgspec
import nats
import nats.errors
import nats.js.errors
import tenacity
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

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


# A start-up step waiting for the bus tries again after at most this long.
START_RETRY_MAX_S = 5.0


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


async def attach(
    url: str, service: str, *, replicas: int | None = None, stop: asyncio.Event | None = None
) -> tuple[Client, JetStreamContext]:
    """A service's start: connected, its JetStream context, the streams declared (with
    `replicas` copies each, STREAM_REPLICAS: libs.subjects.declare_streams), waiting for
    JetStream for as long as it is away (`outlasting`)."""
    nc = await connect(url, name=service)
    js = nc.jetstream(timeout=10)
    try:
        await outlasting(
            lambda: subjects.declare_streams(js, replicas=replicas), "declare streams", stop
        )
    except BaseException:
        await nc.close()
        raise
    return nc, js


async def outlasting(
    call: Callable[[], Awaitable[T]], step: str, stop: asyncio.Event | None = None
) -> T:
    """`call()`, made again through bus outages until it is done: a start-up step (declaring,
    taking a bucket, loading) while a NATS cluster elects a leader (a node just died), or while
    JetStream is not up yet, gets no answer for a while, and that must not end the service.

    Each retry is logged once, naming the `step`; the waits grow, jittered, to at most
    START_RETRY_MAX_S. `stop` set (SIGTERM) while waiting raises shutdown.Stopped.
    """
    attempt = 0
    while True:
        try:
            return await call()
        except TRANSIENT as exc:
            attempt += 1
            # The exponent capped: 2.0**attempt overflows a float after ~1,000 tries (an hour).
            wait = random.uniform(0.5, 1.0) * min(START_RETRY_MAX_S, 0.1 * 2.0 ** min(attempt, 16))
            _log.warning(
                "start.waiting_for_bus",
                step=step,
                attempt=attempt,
                retry_in_s=round(wait, 2),
                error=_why(exc),
            )
        if stop is None:
            await asyncio.sleep(wait)
        else:
            await shutdown.sleep_or_stop(stop, wait)
            if stop.is_set():
                raise shutdown.Stopped(step)


def _why(exc: BaseException) -> str:
    """An error in a few words: nats-py's str() of a JetStream error is its empty fields."""
    if isinstance(exc, nats.js.errors.APIError):
        return f"{type(exc).__name__}: {exc.description}" if exc.description else type(exc).__name__
    return str(exc) or type(exc).__name__


def encode(fact: msgspec.Struct) -> bytes:
    return msgspec.json.encode(fact)


async def publish(
    js: JetStreamContext,
    subject: str,
    fact: msgspec.Struct,
    msg_id: str,
    timeout: float = 5.0,
    give_up_after: float = 60.0,
    expect_last: int | None = None,
) -> Any:
    """Publish a fact and wait for JetStream's ack, retrying through a NATS outage.

    `msg_id` (Nats-Msg-Id) makes the retries safe: the stream keeps the fact once.
    `expect_last`: the stream sequence of the subject's last message this fact was decided on
    (0: none); if another was kept since, JetStream refuses (nats.js.errors.APIError, err_code
    WRONG_LAST_SEQUENCE) and nothing is kept.
    """
    data = encode(fact)
    headers = {"Nats-Msg-Id": msg_id}
    if expect_last is not None:
        headers["Nats-Expected-Last-Subject-Sequence"] = str(expect_last)
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


WRONG_LAST_SEQUENCE = 10071  # JetStream's err_code: the expected last sequence was not the last


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
