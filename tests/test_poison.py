"""A poison fact on the bot and on crm_sync, as real processes: the runner's one policy
(retried MAX_DELIVERIES times, then dead-lettered and told to the admin chat once) while the
other facts go on. Payments': tests/test_payments.py; the inventory's malformed input:
tests/test_inventory_service.py; the policy itself: tests/test_runner.py."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import nats.js.errors
from nats.js import JetStreamContext

from libs import bus, subjects
from libs.contracts import (
    Contact,
    DeadLettered,
    OrderLine,
    OrderPlaced,
    Rejected,
)
from services.bot.model import OrderView
from shop.embedded_nats import free_port
from tests.fakes.sheets import FakeSheets
from tests.fakes.telegram import FakeTelegram, message_text
from tests.harness import ServiceProcess, wait_until

Start = Callable[..., ServiceProcess]


async def _bucket(js: JetStreamContext, name: str) -> bool:
    try:
        await js.key_value(name)
    except nats.js.errors.BucketNotFoundError:
        return False
    return True


async def _dead_letters(js: JetStreamContext) -> int:
    return int((await js.stream_info(subjects.DEADLETTER)).state.messages)


async def test_the_bot_sets_aside_a_fact_it_cannot_tell_and_tells_the_admin_chat_once(
    nats_url: str, js: JetStreamContext, services: Start, telegram: FakeTelegram
) -> None:
    """Telegram answers what is sent to one customer with something no client can read: the
    fact about her order is retried, then dead-lettered, and the admin chat is told once; the
    bot goes on serving."""
    admin, vera = telegram.user("Админ"), telegram.user("Вера")
    services(
        "bot",
        nats_url,
        bot_token=telegram.token,
        telegram_api_url=telegram.url,
        admin_chat_id=admin.id,
        admin_user_ids=str(admin.id),
        max_deliveries=2,
    )
    await wait_until(lambda: _bucket(js, subjects.BOT_ORDERS_BUCKET), what="the bot's buckets")
    now = datetime.now(UTC)
    view = OrderView(
        order_id="poison",
        user_id=vera.id,
        chat_id=vera.id,
        language="ru",
        lines=(OrderLine("FEW", 1, 100),),
        total=100,
        placed_at=now,
    )
    await (await js.key_value(subjects.BOT_ORDERS_BUCKET)).put("poison", msgspec.json.encode(view))
    telegram.garble(vera)
    rejected = Rejected("poison", "out_of_stock", (), now)
    await bus.publish(js, subjects.inventory_fact("rejected", "poison"), rejected, "poison")

    told = await telegram.wait_message(admin.id, "отложил сообщение", timeout=30)
    assert "inventory.rejected.poison" in message_text(told)
    assert "after 2 deliveries" in message_text(told)
    assert await _dead_letters(js) == 1
    await telegram.send_command(admin, "/start")  # still serving
    await telegram.wait_message(admin.id, "Чайная лавка", after=told["message_id"])
    assert len([m for m in telegram.sent(admin.id) if "отложил" in message_text(m)]) == 1


async def test_crm_sync_writes_the_others_and_sets_aside_a_fact_the_sheet_refuses(
    nats_url: str, js: JetStreamContext, services: Start, tmp_path: Path
) -> None:
    """One fact of a batch the sheet will never take (a comment over Google's 50,000 characters
    in a cell) holds none of the others back: they are written, it is retried, then
    dead-lettered and told."""
    fake = FakeSheets()
    await fake.start()
    try:
        spreadsheet = fake.create_spreadsheet("CRM")
        services(
            "crm_sync",
            nats_url,
            google_service_account_file=fake.key_file(tmp_path),
            sheets_spreadsheet_id=spreadsheet,
            sheets_api_url=fake.url,
            crm_http_port=free_port(),
            max_deliveries=2,
        )
        at = datetime.now(UTC)
        for order_id, comment in (("poison", "x" * 60_000), ("fine", "позвонить")):
            contact = Contact("Анна", "+79123456789", "Москва", comment=comment)
            placed = OrderPlaced(order_id, 1, (OrderLine("TEA", 1, 100),), 100, at, contact)
            await bus.publish(js, subjects.order_placed(order_id), placed, order_id)

        def orders() -> list[str]:
            if "Orders" not in fake.sheet_titles(spreadsheet):
                return []
            return [str(row[0]) for row in fake.rows(spreadsheet, "Orders")[1:] if row]

        await wait_until(lambda: "fine" in orders(), timeout=30, what="the other order's row")

        async def set_aside() -> bool:
            return await _dead_letters(js) == 1

        await wait_until(set_aside, timeout=30, what="the refused fact dead-lettered")
        assert "poison" not in orders()
        alert = await js.get_last_msg(subjects.ALERTS, subjects.alert_dead_letter("crm_sync"))
        told = msgspec.json.decode(alert.data or b"", type=DeadLettered)
        assert told.subject == "orders.placed.poison"
        assert "50000 characters" in told.reason and "after 2 deliveries" in told.reason
    finally:
        await fake.stop()
