"""The bus: connecting to NATS, publishing facts, and the durable pull-consumer loop."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import msgspec
import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from libs import log, subjects
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


async def connect(url: str, name: str, connect_timeout: float = 5.0) -> Client:
    """Connect, then keep reconnecting forever: a service outlives a NATS restart."""

    async def on_disconnect() -> None:
        _log.warning("nats.disconnected")

    async def on_reconnect() -> None:
        _log.info("nats.reconnected")

    async def on_error(exc: Exception) -> None:
        _log.warning("nats.error", error=str(exc) or type(exc).__name__)

    try:
        return await nats.connect(
            servers=url.split(","),
            name=name,
            connect_timeout=connect_timeout,
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            disconnected_cb=on_disconnect,
            reconnected_cb=on_reconnect,
            error_cb=on_error,
            pending_size=64 * 1024 * 1024,
        )
    except (nats.errors.NoServersError, OSError, asyncio.TimeoutError) as exc:
        raise BusUnreachable(f"cannot reach NATS at {redact_url(url)}: {exc}") from None


def encode(fact: msgspec.Struct) -> bytes:
    return msgspec.json.encode(fact)


async def publish(
    js: JetStreamContext, subject: str, fact: msgspec.Struct, msg_id: str, timeout: float = 5.0
) -> Any:
    """Publish a fact and wait for JetStream's ack; `msg_id` makes a retried publish count once."""
    return await js.publish(
        subject, encode(fact), timeout=timeout, headers={"Nats-Msg-Id": msg_id}
    )


@dataclass(frozen=True, slots=True)
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


def durable(name: str, filter_subjects: Sequence[str], max_ack_pending: int = 20_000) -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=name,
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=30.0,
        max_deliver=-1,
        max_ack_pending=max_ack_pending,
        filter_subjects=list(filter_subjects),
    )


async def consume(
    js: JetStreamContext,
    *,
    service: str,
    stream: str,
    config: ConsumerConfig,
    decode: Callable[[bytes], T],
    handle: Callable[[list[Delivery[T]]], Awaitable[None]],
    stop: asyncio.Event,
    batch: int = 500,
    idle_timeout: float = 1.0,
) -> None:
    """Fetch in batches from a durable pull consumer until `stop` is set.

    `handle` owns acking: it acks each delivery once its effect is durable. Messages that do
    not decode are dead-lettered and acked here, so they never block the stream.
    """
    await subjects.declare_consumer(js, stream, config)
    assert config.durable_name is not None
    sub = await js.pull_subscribe_bind(durable=config.durable_name, stream=stream)
    backoff = 0.1
    while not stop.is_set():
        try:
            msgs = await sub.fetch(batch, timeout=idle_timeout)
        except (nats.errors.TimeoutError, asyncio.TimeoutError):
            continue
        except TRANSIENT as exc:
            _log.warning("consumer.fetch_failed", consumer=config.durable_name, error=repr(exc))
            await _sleep_or_stop(stop, backoff)
            backoff = min(backoff * 2, 5.0)
            continue
        backoff = 0.1
        good: list[Delivery[T]] = []
        for msg in msgs:
            if msg.headers and msg.headers.get("Status"):
                continue  # a flow-control status from the server, not a message
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
    await sub.unsubscribe()


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except asyncio.TimeoutError:
        pass
