"""A poison fact on the bot and on crm_sync, as real processes: the runner's one policy
(retried MAX_DELIVERIES times, then dead-lettered and told to the admin chat once) while the
other facts go on. Payments': tests/test_payments.py; the inventory's malformed input:
tests/test_inventory_service.py; the policy itself: tests/test_runner.py."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import nats.js.errors
import pytest
from nats.js import JetStreamContext

from libs import bus, subjects
from libs.contracts import DeadLettered, Reserved, ReservedLine
from shop.embedded_nats import free_port
from tests import crm_journeys
from tests.fakes.telegram import FakeTelegram, message_text
from tests.harness import ServiceProcess, wait_until

Start = Callable[..., ServiceProcess]


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as fake:
        yield fake


async def _bucket(js: JetStreamContext, name: str) -> bool:
    try:
        await js.key_value(name)
    except nats.js.errors.BucketNotFoundError:
        return False
    return True


async def _dead_letters(js: JetStreamContext) -> int:
    return int((await js.stream_info(subjects.DEADLETTER)).state.messages)


async def test_the_bot_sets_a_poison_fact_aside_and_tells_the_admin_chat_once(
    nats_url: str, js: JetStreamContext, services: Start, telegram: FakeTelegram
) -> None:
    admin = telegram.user("Админ")
    services(
        "bot",
        nats_url,
        bot_token=telegram.token,
        telegram_api_url=telegram.url,
        admin_chat_id=admin.id,
        admin_user_ids=str(admin.id),
        max_deliveries=2,
    )
    await wait_until(lambda: _bucket(js, "bot-orders"), what="the bot's buckets")
    views = await js.key_value("bot-orders")
    await views.put("poison", b"[not an order view")  # a view the bot cannot read
    now = datetime.now(UTC)
    reserved = Reserved(
        "poison", (ReservedLine("FEW", 1, 100),), 100, now + timedelta(hours=1), now
    )
    await bus.publish(js, subjects.inventory_fact("reserved", "poison"), reserved, "poison")

    told = await telegram.wait_message(admin.id, "отложил сообщение", timeout=30)
    assert "inventory.reserved.poison" in message_text(told)
    assert "after 2 deliveries" in message_text(told)
    assert await _dead_letters(js) == 1
    # Still serving: a customer is answered.
    await telegram.send_command(admin, "/start")
    await telegram.wait_message(admin.id, "Чайная лавка", after=told["message_id"])
    told_again = [m for m in telegram.sent(admin.id) if "отложил" in message_text(m)]
    assert len(told_again) == 1


def _rows(path: Path) -> dict[str, list[str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    return {row[0]: row for row in list(csv.reader(io.StringIO(text)))[1:] if row}


async def test_crm_sync_writes_the_others_and_sets_the_poison_fact_aside(
    nats_url: str, js: JetStreamContext, services: Start, tmp_path: Path
) -> None:
    """One fact of a batch that cannot be written (the order's kept state is unreadable) holds
    none of the others back: they are written, it is retried, then dead-lettered and told."""
    orders = tmp_path / "data" / "crm" / "orders.csv"
    services("crm_sync", nats_url, crm_http_port=free_port(), max_deliveries=2)
    await wait_until(lambda: _bucket(js, subjects.CRM_ORDERS_BUCKET), what="crm's buckets")
    states = await js.key_value(subjects.CRM_ORDERS_BUCKET)
    poison, fine = crm_journeys.order_id("p", 0), crm_journeys.order_id("p", 1)
    await states.put(poison, b"{broken")
    at = datetime.now(UTC).replace(microsecond=0)
    for number in (0, 1):
        for subject, fact in crm_journeys.journey("p", number, at)[:2]:  # placed, reserved
            await bus.publish(js, subject, fact, msg_id=subject)

    await wait_until(lambda: fine in _rows(orders), what="the other order's row")

    async def both_set_aside() -> bool:
        return await _dead_letters(js) == 2  # the poison order's placed and reserved

    await wait_until(both_set_aside, timeout=30, what="the poison facts dead-lettered")
    assert poison not in _rows(orders)
    alert = await js.get_last_msg(subjects.ALERTS, subjects.alert_dead_letter("crm_sync"))
    told = msgspec.json.decode(alert.data or b"", type=DeadLettered)
    assert told.service == "crm_sync" and poison in told.subject
    assert "after 2 deliveries" in told.reason
