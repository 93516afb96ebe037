"""Facts into messages: the customer hears about their order, the admin chat about sales.

Each order fact is folded into the order's lifecycle state (libs.lifecycle) kept in the bot's
view; what to say is decided from the state before and after (services.bot.notices), so a fact
that changes nothing (a redelivery) tells nothing. A fact is acked only once its messages went
out or failed for good (the customer blocked the bot), and the view records it only after that,
so a restart or a 429 storm never loses a notification.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import nats.js.errors
from aiogram import Bot
from aiogram.exceptions import TelegramBadRequest, TelegramForbiddenError
from aiogram.types import InlineKeyboardMarkup

from libs import lifecycle, log, shutdown
from libs.contracts import AlertEvent, Committed, CrmBehind, CrmCaughtUp, DeadLettered, Rejected
from libs.lifecycle import Status
from libs.money import format_rub
from libs.settings import Settings
from services.bot import keyboards as kb
from services.bot.model import Awaiting, OrderView, Store
from services.bot.notices import Kind, Notice, notices
from services.bot.texts import Texts, for_language

_log = log.get(__name__)
# Failed for good: telling again would not help (the sender already waited out 429s and retried
# network errors), so the fact is acked.
UNDELIVERABLE = (TelegramForbiddenError, TelegramBadRequest)


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
                    await self._tell(after, notice, fact)
                    told.append(notice)
            said = {*after.said, *(notice.key for notice in told if notice.key)}
            recorded = msgspec.structs.replace(after, said=tuple(sorted(said)))
            try:
                await self._store.orders.replace(after.order_id, recorded, revision)
            except nats.js.errors.KeyWrongLastSequenceError:
                continue  # changed meanwhile (a reminder, another replica): fold again
            if _reminder_due(before) and not _reminder_due(after):
                await self._store.awaiting.delete(after.order_id)
            return

    async def _tell(self, view: OrderView, notice: Notice, fact: lifecycle.OrderFact) -> None:
        if notice.to == "admin":
            await self._tell_admin(view, notice)
            return
        order, t, number = view.state, for_language(view.language), view.order_id
        match notice.kind:
            case Kind.PAY:
                await self._pay(view, t)
            case Kind.REJECTED:
                await self._rejected(view, fact if isinstance(fact, Rejected) else None, t)
            case Kind.EXPIRED:
                await self._say(view, t.t("order.expired", number=number))
            case Kind.PAYMENT_CANCELED:
                reason = t.cancel_reason(order.payment_canceled)
                await self._say(view, t.t("order.payment_canceled", number=number, reason=reason))
            case Kind.PAYMENT_FAILED:
                await self._say(view, t.t("order.payment_failed", number=number))
            case Kind.CANCELLED:
                await self._say(view, t.t("order.cancelled", number=number))
            case Kind.PAID:
                paid = t.t(
                    "order.paid",
                    number=number,
                    lines=await self._lines(view, t),
                    total=format_rub(order.charge),
                )
                late = [t.t("order.paid_late")] if notice.late else []
                await self._say(view, t.lines([paid, *late], "\n\n"))
                await self._store.carts.delete(str(view.user_id))
            case Kind.STOCK_GONE:
                await self._say(view, t.t("order.stock_gone", number=number))
            case Kind.MONEY_BACK:
                await self._say(view, t.t("order.money_back", number=number))
            case Kind.REFUNDED:
                amount = format_rub(notice.refund.amount if notice.refund else 0)
                await self._say(view, t.t("order.refunded", number=number, amount=amount))

    async def _tell_admin(self, view: OrderView, notice: Notice) -> None:
        order, number = view.state, view.order_id
        match notice.kind:
            case Kind.PAID:
                c = view.contact
                t = for_language(None)
                extra = [t.t("admin.order_comment", comment=c.comment)] if c.comment else []
                late = [t.t("admin.paid_late")] if notice.late else []
                await self._admin(
                    "admin.new_order",
                    number=number,
                    customer=c.name,
                    phone=c.phone,
                    address=c.address,
                    lines=t.lines([await self._lines(view, t), *extra, *late]),
                    total=format_rub(order.charge),
                    payment_id=order.payment_id,
                )
            case Kind.PAYMENT_FAILED:
                reason = order.payment_failed or order.released
                await self._admin("admin.payment_failed", number=number, reason=reason)
            case Kind.STOCK_GONE:
                await self._admin("admin.stock_gone", number=number, payment_id=order.payment_id)
            case Kind.PAID_CANCELLED:
                reason = for_language(None).cancel_reason(order.payment_canceled)
                await self._admin("admin.paid_cancelled", number=number, reason=reason)
            case Kind.REFUNDED:
                await self._admin(
                    "admin.refund",
                    number=number,
                    amount=format_rub(notice.refund.amount if notice.refund else 0),
                    payment_id=order.payment_id,
                )

    # the shop's own alerts ------------------------------------------------------------------------
    async def on_alert(self, alert: AlertEvent) -> None:
        match alert:
            case CrmBehind():
                minutes = max(1, int((alert.at - alert.oldest_at).total_seconds() // 60))
                await self._admin(
                    "admin.crm_behind", backlog=alert.backlog, minutes=minutes, error=alert.error
                )
            case CrmCaughtUp():
                await self._admin("admin.crm_caught_up", since=alert.behind_since.strftime("%H:%M"))
            case DeadLettered():
                await self._admin(
                    "admin.dead_lettered",
                    service=alert.service,
                    subject=alert.subject,
                    stream=alert.stream,
                    sequence=alert.sequence,
                    reason=alert.reason,
                )

    async def _rejected(self, view: OrderView, fact: Rejected | None, t: Texts) -> None:
        options: list[tuple[str, str, int]] = []
        problems = []
        reason = fact.reason if fact is not None else ""
        for problem in fact.problems if fact is not None else ():
            item = await self._store.product(problem.sku)
            title = item.title if item else problem.sku
            if reason == "out_of_stock" and problem.available > 0:
                problems.append(
                    t.t(
                        "order.out_of_stock_line",
                        title=title,
                        available=problem.available,
                        requested=problem.requested,
                    )
                )
                reduce = t.t("order.button.reduce", title=title, left=problem.available)
                options.append((reduce, problem.sku, problem.available))
            elif reason == "out_of_stock":
                problems.append(t.t("order.sold_out_line", title=title))
            elif reason == "price_mismatch":
                problems.append(
                    t.t(
                        "order.price_changed_line",
                        title=title,
                        was=format_rub(problem.unit_price or 0),
                        now=format_rub(problem.catalog_price or 0),
                    )
                )
            else:
                problems.append(t.t("order.product_gone_line", title=title))
            options.append((t.t("order.button.remove", title=title), problem.sku, 0))
        if not problems:
            await self._edit_or_say(view, t.t("order.failed"), kb.fixes(t, []))
        else:
            hint = "order.price_changed_hint" if reason == "price_mismatch" else "order.fix_hint"
            text = t.lines([t.t("order.rejected"), *problems, "", t.t(hint)])
            await self._edit_or_say(view, text, kb.fixes(t, options))

    async def _pay(self, view: OrderView, t: Texts) -> None:
        """The order's "reserving..." message becomes the Pay button."""
        order = view.state
        left = (order.expires_at or datetime.now(UTC)) - datetime.now(UTC)
        text = t.t(
            "order.awaiting_payment_minutes",
            number=view.order_id,
            total=format_rub(order.charge),
            minutes=max(1, int(left.total_seconds() // 60)),
        )
        await self._edit_or_say(view, text, kb.pay(t, order.pay_url, order.charge))

    # reminders ------------------------------------------------------------------------------------
    async def remind(self, stop: asyncio.Event) -> None:
        """Shortly before a reservation ends, remind the customer with the Pay button again."""
        before = timedelta(seconds=self._settings.reminder_before)
        every = min(5.0, max(0.5, self._settings.reminder_before / 4))
        while not stop.is_set():
            now = datetime.now(UTC)
            for due in await self._store.awaiting.values():
                if not due.expires_at - before <= now < due.expires_at:
                    continue
                view = await self._store.orders.get(due.order_id)
                if view is None or not _reminder_due(view):
                    continue  # moved on meanwhile: its entry goes with its update
                t = for_language(view.language)
                minutes = max(1, int((due.expires_at - now).total_seconds() // 60))
                await self._say(
                    view,
                    t.t("order.reminder", number=view.order_id, minutes=minutes),
                    kb.pay(t, view.state.pay_url, view.state.charge),
                )
                await self._reminded(view.order_id)
            await shutdown.sleep_or_stop(stop, every)

    # helpers --------------------------------------------------------------------------------------
    async def _lines(self, view: OrderView, t: Texts) -> str:
        rows = []
        for line in view.lines:
            item = await self._store.product(line.sku)
            title = item.title if item else line.sku
            amount = format_rub(line.qty * line.unit_price)
            rows.append(t.t("cart.line", title=title, qty=line.qty, amount=amount))
        return t.lines(rows)

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

    async def _admin(self, key: str, **params: Any) -> None:
        chat_id = self._settings.admin_chat_id
        if chat_id is None:
            return
        text = for_language(None).t(key, **params)
        try:
            await self._bot.send_message(chat_id, text)
        except UNDELIVERABLE as exc:
            _log.warning("admin.undeliverable", reason=exc.message)

    async def _low_stock(self, fact: Committed) -> None:
        threshold = self._settings.low_stock_threshold
        for sku in dict.fromkeys(line.sku for line in fact.lines):
            level = await self._store.level(sku)
            item = await self._store.product(sku)
            if level is not None and item is not None and level.available <= threshold:
                await self._admin("admin.low_stock", title=item.title, available=level.available)

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
