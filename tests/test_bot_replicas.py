"""Two bot replicas polling one token: one polls (Telegram would answer the other 409
Conflict), the other stands by and takes over within seconds of a kill -9; every message is
answered, once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from nats.js import JetStreamContext

from services.bot.main import POLLER_LEASE_S
from tests.fakes.telegram import FakeTelegram, message_text
from tests.harness import ServiceProcess, http_get, inventory_ready, wait_until

Start = Callable[..., ServiceProcess]


async def test_one_poller_at_a_time_and_a_standby_takes_over_after_a_kill(
    nats_url: str,
    js: JetStreamContext,
    services: Start,
    catalog_file: Path,
    telegram: FakeTelegram,
) -> None:
    services("inventory", nats_url, catalog_file=catalog_file)
    settings = {"bot_token": telegram.token, "telegram_api_url": telegram.url}
    first, second = (services("bot", nats_url, **settings) for _ in range(2))
    await wait_until(lambda: inventory_ready(js), what="inventory ready")

    def polling() -> list[ServiceProcess]:
        return [bot for bot in (first, second) if bot.alive() and "bot.polling" in bot.log()]

    def greetings(chat_id: int) -> int:
        said = [message_text(m) for m in telegram.sent(chat_id)]
        return sum("Здравствуйте" in text or "С возвращением" in text for text in said)

    await wait_until(lambda: len(polling()) == 1, what="one of them polling")
    await wait_until(
        lambda: all("lease.standby" in b.log() for b in (first, second) if b not in polling()),
        what="the other standing by",
    )
    anna = telegram.user("Анна")
    await telegram.send_command(anna, "/start")
    await wait_until(lambda: greetings(anna.id) == 1, what="Анна greeted")

    (poller,) = polling()
    standby = second if poller is first else first

    async def healthy_as(bot: ServiceProcess, role: str) -> bool:
        status, body = await http_get(int(bot.env["BOT_HTTP_PORT"]), "/healthz")
        return status == 200 and f'"poller": "{role}"' in body

    await wait_until(lambda: healthy_as(poller, "polling"), what="/healthz: polling")
    await wait_until(lambda: healthy_as(standby, "standby"), what="/healthz: standby")
    poller.kill()
    boris = telegram.user("Борис")
    await telegram.send_command(boris, "/start")  # sent while nobody polls: waits in Telegram
    await wait_until(
        lambda: "bot.polling" in standby.log(),
        timeout=POLLER_LEASE_S * 3,
        what="the standby polling",
    )
    await wait_until(lambda: greetings(boris.id) == 1, what="Борис greeted by the standby")
    await telegram.send_command(anna, "/start")
    await wait_until(lambda: greetings(anna.id) == 2, what="Анна greeted again")
    conflicts = [c for c in telegram.calls_to("getUpdates") if c.status == 409]
    assert conflicts == [], "never two pollers at once"
    assert (greetings(anna.id), greetings(boris.id)) == (2, 1), "each message answered once"
