"""Facts into messages: the customer hears about their order, the admin chat about sales.

Each order fact is folded into the order's lifecycle state (libs.lifecycle) kept in the bot's
view; what to say is decided from the state before and after (services.bot.notices), so a fact
that changes nothing (a redelivery) tells nothing; what each notice says, with which buttons, is
services.bot.messages': this shell reads, sends and records. A fact is acked only once its
messages went out or failed for good (the customer blocked the bot), and the view records it
only after that, so a restart or a 429 storm never loses a notification.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import nats.errors
import nats.js.errors
from aiogram import Bot
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
)
from aiogram.types import InlineKeyboardMarkup

from libs import bus, lifecycle, log, shutdown
from libs.contracts import AlertEvent, Committed, CrmBehind, CrmCaughtUp, DeadLettered, Rejected
from libs.kv import Mirror
from libs.lifecycle import Status
from libs.settings import Settings
from services.bot import back_in_stock, desk, messages
from services.bot import keyboards as kb
from services.bot.model import Awaiting, OrderView, Store
from services.bot.notices import Kind, Notice, notices
from services.bot.texts import for_language

_log = log.get(__name__)
# The notices that put the order's card in the admin chat (and empty the customer's cart).
CARDS = frozenset({Kind.PAID, Kind.ON_RECEIPT})
# Failed for good: telling again would not help (the sender already waited out 429s and retried
# network errors), so the fact is acked.
UNDELIVERABLE = (TelegramForbiddenError, TelegramBadRequest)
# What the sender already retried (a bounded number of times) before giving up.
OUTAGES = (TelegramNetworkError, TelegramServerError, TelegramRetryAfter)
RECHECK_S = 30.0  # a look at the waiting customers at least this often, changes or not


class Notifier:
    def __init__(self, bot: Bot, store: Store, settings: Settings) -> None:
        self._bot = bot
        self._store = store
        self._settings = settings
        # One order's facts from the inventory and the payments consumers, one at a time here
        # (replicas are kept apart by compare-and-set on the view).
        self._turns: dict[str, _Turn] = {}

    # the customer and the admin chat --------------------------------------------------------------
    async def on_fact(self, fact: Any) -> None:
        if isinstance(fact, CrmBehind | CrmCaughtUp | DeadLettered):
            await self.on_alert(fact)
            return
        if not isinstance(fact, lifecycle.OrderFact):
            return  # the catalog's and the stock's facts: about no order
        async with self._turn(fact.order_id):
            await self._take(fact)

    async def _take(self, fact: lifecycle.OrderFact) -> None:
        """Fold the fact into the order's view; tell what changed, then record it."""
        told: list[Notice] = []
        low_stock_checked = False
        card_id = 0  # the admin card sent for this fact (a paid order's notice)
        while True:
            found = await self._store.orders.get_with_revision(fact.order_id)
            if found is None:  # not an order placed through this bot (an admin's, a test's)
                if isinstance(fact, Committed):
                    await self._low_stock(fact)
                return
            before, revision = found
            after = before.with_fact(fact)
            if after == before:
                return  # told already: a redelivery, or a fact that adds nothing
            if isinstance(fact, Committed) and not low_stock_checked:
                await self._low_stock(fact)
                low_stock_checked = True
            expires_at = after.state.expires_at
            if _reminder_due(after) and not _reminder_due(before) and expires_at is not None:
                # Listed before the view says so: a crash in between never loses a reminder.
                await self._store.awaiting.put(after.order_id, Awaiting(after.order_id, expires_at))
            for notice in notices(before.state, after.state, before.said):
                if notice not in told:  # told before a replica changed the view under us
                    sent = await self._tell(after, notice, fact)
                    if notice.to == "admin" and notice.kind in CARDS and sent:
                        card_id = sent
                    told.append(notice)
            if not card_id and after.admin_message_id:
                await self._edit_card(before, after)
            await self._list_open(before, after)
            said = {*after.said, *(notice.key for notice in told if notice.key)}
            recorded = msgspec.structs.replace(
                after, said=tuple(sorted(said)), admin_message_id=card_id or after.admin_message_id
            )
            try:
                await self._store.orders.replace(after.order_id, recorded, revision)
            except nats.js.errors.KeyWrongLastSequenceError:
                continue  # changed meanwhile (a reminder, another replica): fold again
            if _reminder_due(before) and not _reminder_due(after):
                await self._store.awaiting.delete(after.order_id)
            return

    async def _edit_card(self, before: OrderView, after: OrderView) -> None:
        """The order's card in the admin chat, edited in place when what it shows changed
        (whichever desk took the step)."""
        chat_id = self._settings.admin_chat_id
        if chat_id is None:
            return
        titles = await self._store.titles(line.sku for line in after.lines)
        names = await self._store.names(entry.by for entry in after.state.fulfilment)
        card = desk.card(after.state, titles, names)
        if card == desk.card(before.state, titles, names):
            return
        t = for_language(None)
        try:
            await self._bot.edit_message_text(
                text=messages.render(t, card.text),
                chat_id=chat_id,
                message_id=after.admin_message_id,
                reply_markup=kb.inline(t, card.buttons),
            )
        except UNDELIVERABLE as exc:
            if "not modified" not in exc.message:  # gone, or too old to edit: told by /order
                _log.info("admin.card_not_edited", order_id=after.order_id, reason=exc.message)

    async def _list_open(self, before: OrderView, after: OrderView) -> None:
        """Keep /orders' list of the open orders (listed before the view says so)."""
        if desk.is_open(after.state):
            if not desk.is_open(before.state) or before.status != after.status:
                await self._store.open_orders.put(after.order_id, desk.open_entry(after.state))
        elif desk.is_open(before.state):
            await self._store.open_orders.delete(after.order_id)

    async def _tell(self, view: OrderView, notice: Notice, fact: lifecycle.OrderFact) -> int | None:
        """Send the notice; the admin chat's message id (None: not sent there)."""
        titles = await self._titles(view, fact) if notice.kind in messages.NAMING else {}
        rejected = fact if isinstance(fact, Rejected) else None
        message = messages.for_notice(notice, view.state, titles, datetime.now(UTC), rejected)
        if message is None:
            return None
        if notice.to == "admin":
            return await self._admin(message)
        t = for_language(view.language)
        text, markup = messages.render(t, message.text), kb.inline(t, message.buttons)
        if message.edit and markup is not None:
            await self._edit_or_say(view, text, markup)
        else:
            await self._say(view, text, markup)
        if notice.kind in CARDS:  # the order is the customer's: the cart is done with
            await self._store.carts.delete(str(view.user_id))
        return None

    async def _titles(self, view: OrderView, fact: lifecycle.OrderFact) -> dict[str, str]:
        """The titles of the products a message names (a product gone: named by its sku)."""
        skus = [line.sku for line in view.lines]
        if isinstance(fact, Rejected):
            skus += [problem.sku for problem in fact.problems]
        return await self._store.titles(skus)

    # the shop's own alerts ------------------------------------------------------------------------
    async def on_alert(self, alert: AlertEvent) -> None:
        await self._admin(messages.alert(alert))

    async def run(self, stop: asyncio.Event) -> None:
        """The notifier's own rounds, until stopped: payment reminders, back-in-stock notices."""
        async with asyncio.TaskGroup() as rounds:
            rounds.create_task(self.remind(stop))
            rounds.create_task(self.tell_back_in_stock(stop))

    # reminders ------------------------------------------------------------------------------------
    async def remind(self, stop: asyncio.Event) -> None:
        """Shortly before a reservation ends, remind the customer with the Pay button again."""
        before = timedelta(seconds=self._settings.reminder_before)
        every = min(5.0, max(0.5, self._settings.reminder_before / 4))
        while not stop.is_set():
            try:
                await self._remind_due(before)
            except (*bus.TRANSIENT, nats.errors.Error) as exc:
                # The bus is away (a NATS election): the next turn reminds; the bot goes on.
                _log.warning("reminders.failed", error=repr(exc))
            await shutdown.sleep_or_stop(stop, every)

    async def _remind_due(self, before: timedelta) -> None:
        now = datetime.now(UTC)
        for due in await self._store.awaiting.values():
            if not due.expires_at - before <= now < due.expires_at:
                continue
            view = await self._store.orders.get(due.order_id)
            if view is None or not _reminder_due(view):
                continue  # moved on meanwhile: its entry goes with its update
            t = for_language(view.language)
            message = messages.reminder(view.state, due.expires_at, now)
            text, markup = messages.render(t, message.text), kb.inline(t, message.buttons)
            await self._say(view, text, markup)
            await self._reminded(view.order_id)

    # back in stock -------------------------------------------------------------------------------
    async def tell_back_in_stock(self, stop: asyncio.Event) -> None:
        """Tell the customers waiting for a product once it can be bought again, whatever made
        it so (a restock, a count, a reservation released, the shop showing it again): the stock
        and catalog read models are watched, not one kind of fact. Each look is in memory; a
        look runs on every change of the stock, the catalog or the waiting list, and every
        RECHECK_S anyway."""
        store = self._store
        mirrors: tuple[Mirror[Any], ...] = (
            store.catalog.stock,
            store.catalog.catalog,
            store.watching,
        )
        while not stop.is_set():
            seen = [mirror.version for mirror in mirrors]
            try:
                await self._back_in_stock()
            except (*bus.TRANSIENT, nats.errors.Error) as exc:
                _log.warning("back_in_stock.failed", error=repr(exc))  # the next look tells
            pairs = zip(mirrors, seen, strict=True)
            waits = [asyncio.ensure_future(mirror.changed(v)) for mirror, v in pairs]
            waits.append(asyncio.ensure_future(stop.wait()))
            try:
                await asyncio.wait(waits, timeout=RECHECK_S, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiting in waits:
                    waiting.cancel()

    async def _back_in_stock(self) -> None:
        """Claim, then tell: the waiting customer's key is deleted at the revision seen, and
        only the replica whose delete succeeded sends. So two replicas looking at once, or a bot
        restarted after telling (its next look finds no key), tell each customer once. The price
        is at most once: a send that fails after the claim (Telegram out past the sender's
        retries, the bot killed in between) is not made again; a second "back in stock" would be
        worse than none, and the customer still sees the card's stock. A customer who asked
        again since the look (a new revision) keeps their key and is told by the next look."""
        store, catalog = self._store, self._store.catalog
        watching = [(key, held.value, held.revision) for key, held in store.watching.items()]

        def on_sale(sku: str) -> bool:
            item = catalog.product(sku)
            return item is not None and item.visible

        for due in back_in_stock.due(watching, catalog.available, on_sale):
            if not await store.watchers.claim(due.key, due.revision):
                continue  # told by another replica, or asked again meanwhile (the next look)
            item = catalog.product(due.sku)
            if item is None:
                continue
            t = for_language(due.watcher.language or None)
            text = t.t("catalog.back_in_stock", title=item.title)
            try:
                await self._bot.send_message(
                    due.watcher.chat_id, text, reply_markup=kb.back_in_stock(t, item)
                )
            except (*UNDELIVERABLE, *OUTAGES) as exc:
                _log.warning("back_in_stock.not_told", sku=due.sku, reason=repr(exc))
                continue
            _log.info("back_in_stock.told", sku=due.sku, chat_id=due.watcher.chat_id)

    # helpers --------------------------------------------------------------------------------------
    async def _say(
        self, view: OrderView, text: str, markup: InlineKeyboardMarkup | None = None
    ) -> None:
        try:
            await self._bot.send_message(view.chat_id, text, reply_markup=markup)
        except UNDELIVERABLE as exc:
            _log.info("notification.undeliverable", order_id=view.order_id, reason=exc.message)

    async def _edit_or_say(self, view: OrderView, text: str, markup: InlineKeyboardMarkup) -> None:
        """Turn the order's "reserving..." message into the answer; a new message if it is gone."""
        if view.message_id:
            try:
                await self._bot.edit_message_text(
                    text=text, chat_id=view.chat_id, message_id=view.message_id, reply_markup=markup
                )
                return
            except TelegramBadRequest as exc:
                if "not modified" in exc.message:
                    return  # told already (a redelivered fact)
            except TelegramForbiddenError:
                return
        await self._say(view, text, markup)

    async def _admin(self, message: messages.Message) -> int | None:
        """To the admin chat, in the shop's language; the message's id (None: not sent)."""
        chat_id = self._settings.admin_chat_id
        if chat_id is None:
            return None
        t = for_language(None)
        text, markup = messages.render(t, message.text), kb.inline(t, message.buttons)
        try:
            sent = await self._bot.send_message(chat_id, text, reply_markup=markup)
        except UNDELIVERABLE as exc:
            _log.warning("admin.undeliverable", reason=exc.message)
            return None
        return sent.message_id

    async def _low_stock(self, fact: Committed) -> None:
        threshold = self._settings.low_stock_threshold
        for sku in dict.fromkeys(line.sku for line in fact.lines):
            level = await self._store.level(sku)
            item = await self._store.product(sku)
            if level is None or item is None:
                continue
            message = messages.low_stock(item.title, level.available, threshold)
            if message is not None:
                await self._admin(message)

    async def _reminded(self, order_id: str) -> None:
        def change(current: OrderView | None) -> OrderView:
            assert current is not None
            return msgspec.structs.replace(current, reminded=True)

        await self._store.orders.update(order_id, change)
        await self._store.awaiting.delete(order_id)  # no reminder is due for it any more

    @contextlib.asynccontextmanager
    async def _turn(self, order_id: str) -> AsyncIterator[None]:
        turn = self._turns.setdefault(order_id, _Turn())
        turn.waiting += 1
        try:
            async with turn.lock:
                yield
        finally:
            turn.waiting -= 1
            if not turn.waiting:
                del self._turns[order_id]


class _Turn:
    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.waiting = 0


def _reminder_due(view: OrderView) -> bool:
    return view.state.status == Status.AWAITING_PAYMENT and not view.reminded
