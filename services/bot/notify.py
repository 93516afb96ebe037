"""Facts into messages: the customer hears about their order, the admin chat about sales.

Facts are acked only once the message went out or failed for good (the customer blocked the
bot), so a restart or a 429 storm never loses a notification; each fact is told once per order
status change, so a redelivery does not repeat it.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from aiogram import Bot
from aiogram.exceptions import TelegramBadRequest, TelegramForbiddenError
from aiogram.types import InlineKeyboardMarkup

from libs import bus, log, shutdown
from libs.contracts import (
    CommitFailed,
    Committed,
    CrmBehind,
    CrmCaughtUp,
    PaymentCanceled,
    PaymentFailed,
    PaymentPending,
    PaymentRefunded,
    PaymentSucceeded,
    Rejected,
    Released,
    Reserved,
)
from libs.money import format_rub
from libs.settings import Settings
from services.bot import keyboards as kb
from services.bot.model import Awaiting, OrderView, Store
from services.bot.texts import Texts, for_language

_log = log.get(__name__)
# Failed for good: telling again would not help (the sender already waited out 429s and retried
# network errors), so the fact is acked.
UNDELIVERABLE = (TelegramForbiddenError, TelegramBadRequest)
FINAL = frozenset({"paid", "cancelled", "expired", "refunded"})


class Notifier:
    def __init__(self, bot: Bot, store: Store, settings: Settings) -> None:
        self._bot = bot
        self._store = store
        self._settings = settings

    # the customer ---------------------------------------------------------------------------------
    async def on_fact(self, fact: Any) -> None:
        if isinstance(fact, CrmBehind | CrmCaughtUp):
            await self.on_alert(fact)
            return
        order_id = getattr(fact, "order_id", None)
        view = await self._store.orders.get(order_id) if order_id else None
        if isinstance(fact, Committed):
            await self._low_stock([line.sku for line in fact.lines])
        if view is None:
            return  # not an order placed through this bot (an admin's, a test's)
        t = for_language(view.language)
        match fact:
            case Reserved():
                await self._status(view, "reserved")
            case Rejected():
                await self._rejected(view, fact, t)
            case PaymentPending():
                await self._pending(view, fact, t)
            case PaymentSucceeded():
                await self._paid(view, fact, t)
            case PaymentCanceled() | PaymentFailed():
                await self._cancelled(view, fact, t)
            case Released(reason="expired"):
                if view.status not in FINAL:
                    await self._say(view, t.t("order.expired", number=view.order_id))
                    await self._status(view, "expired")
            case PaymentRefunded():
                await self._say(
                    view,
                    t.t("order.refunded", number=view.order_id, amount=format_rub(fact.amount)),
                )
                await self._admin(
                    "admin.refund",
                    number=view.order_id,
                    amount=format_rub(fact.amount),
                    payment_id=fact.payment_id,
                )
                await self._status(view, "refunded")
            case CommitFailed():
                # Paid after the hold ended and the stock is gone: payments gives the money back.
                if view.status not in FINAL:
                    await self._say(view, t.t("order.stock_gone", number=view.order_id))
                    await self._status(view, "cancelled")

    # the shop's own alerts ------------------------------------------------------------------------
    async def on_alert(self, alert: CrmBehind | CrmCaughtUp) -> None:
        match alert:
            case CrmBehind():
                minutes = max(1, int((alert.at - alert.oldest_at).total_seconds() // 60))
                await self._admin(
                    "admin.crm_behind", backlog=alert.backlog, minutes=minutes, error=alert.error
                )
            case CrmCaughtUp():
                await self._admin("admin.crm_caught_up", since=alert.behind_since.strftime("%H:%M"))

    async def _rejected(self, view: OrderView, fact: Rejected, t: Texts) -> None:
        if view.status in FINAL or view.status == "cancelled":
            return
        options: list[tuple[str, str, int]] = []
        problems = []
        for problem in fact.problems:
            item = await self._store.product(problem.sku)
            title = item.title if item else problem.sku
            if fact.reason == "out_of_stock" and problem.available > 0:
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
            elif fact.reason == "out_of_stock":
                problems.append(t.t("order.sold_out_line", title=title))
            elif fact.reason == "price_mismatch":
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
            hint = (
                "order.price_changed_hint" if fact.reason == "price_mismatch" else "order.fix_hint"
            )
            text = t.lines([t.t("order.rejected"), *problems, "", t.t(hint)])
            await self._edit_or_say(view, text, kb.fixes(t, options))
        await self._status(view, "cancelled")

    async def _pending(self, view: OrderView, fact: PaymentPending, t: Texts) -> None:
        if view.status in FINAL or view.pay_url:
            return
        minutes = max(1, int((fact.expires_at - datetime.now(UTC)).total_seconds() // 60))
        text = t.t(
            "order.awaiting_payment_minutes",
            number=view.order_id,
            total=format_rub(fact.amount),
            minutes=minutes,
        )
        await self._edit_or_say(view, text, kb.pay(t, fact.confirmation_url, fact.amount))
        await self._update(
            view.order_id,
            status="awaiting_payment",
            pay_url=fact.confirmation_url,
            expires_at=fact.expires_at,
        )

    async def _paid(self, view: OrderView, fact: PaymentSucceeded, t: Texts) -> None:
        if view.status != "paid":
            lines = await self._lines(view, t)
            await self._say(
                view,
                t.t("order.paid", number=view.order_id, lines=lines, total=format_rub(view.total)),
            )
            # Recorded as soon as the customer is told: "My orders" must not say otherwise.
            view = await self._update(view.order_id, status="paid")
            await self._store.carts.delete(str(view.user_id))
        if view.announced:
            return
        c = view.contact
        admin_t = for_language(None)
        extra = [admin_t.t("admin.order_comment", comment=c.comment)] if c.comment else []
        await self._admin(
            "admin.new_order",
            number=view.order_id,
            customer=c.name,
            phone=c.phone,
            address=c.address,
            lines=admin_t.lines([await self._lines(view, admin_t), *extra]),
            total=format_rub(view.total),
            payment_id=fact.payment_id,
        )
        await self._update(view.order_id, announced=True)

    async def _cancelled(
        self, view: OrderView, fact: PaymentCanceled | PaymentFailed, t: Texts
    ) -> None:
        if view.status in FINAL:
            return
        if isinstance(fact, PaymentFailed):
            await self._say(view, t.t("order.payment_failed", number=view.order_id))
            await self._admin("admin.payment_failed", number=view.order_id, reason=fact.reason)
        else:
            reason = t.cancel_reason(fact.reason)
            await self._say(
                view, t.t("order.payment_canceled", number=view.order_id, reason=reason)
            )
        await self._status(view, "cancelled")

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
                    kb.pay(t, view.pay_url, view.total),
                )
                await self._update(view.order_id, reminded=True)
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

    async def _low_stock(self, skus: list[str]) -> None:
        threshold = self._settings.low_stock_threshold
        for sku in skus:
            level = await self._store.level(sku)
            item = await self._store.product(sku)
            if level is not None and item is not None and level.available <= threshold:
                await self._admin("admin.low_stock", title=item.title, available=level.available)

    async def _status(self, view: OrderView, status: str) -> None:
        await self._update(view.order_id, status=status)

    async def _update(self, order_id: str, **changes: Any) -> OrderView:
        expires_at = changes.get("expires_at")
        if changes.get("status") == "awaiting_payment" and expires_at is not None:
            # Listed before the view says so: a crash in between never loses a reminder.
            await self._store.awaiting.put(order_id, Awaiting(order_id, expires_at))
        listed = False

        def change(current: OrderView | None) -> OrderView:
            nonlocal listed
            assert current is not None
            listed = _reminder_due(current)
            return msgspec.structs.replace(current, **changes)

        view = await self._store.orders.update(order_id, change)
        if listed and not _reminder_due(view):
            await self._store.awaiting.delete(order_id)
        return view


def _reminder_due(view: OrderView) -> bool:
    return view.status == "awaiting_payment" and not view.reminded


async def handle(notifier: Notifier, deliveries: list[bus.Delivery[Any]]) -> None:
    """One order's facts in order, orders side by side; acked once told (or untellable)."""

    async def tell(delivery: bus.Delivery[Any]) -> None:
        try:
            await notifier.on_fact(delivery.value)
        except Exception as exc:  # told later: the fact comes back
            _log.warning("notification.retry_later", subject=delivery.msg.subject, error=repr(exc))
            with contextlib.suppress(*bus.TRANSIENT):
                await delivery.msg.nak(delay=5)
            return
        with contextlib.suppress(*bus.TRANSIENT):
            await delivery.msg.ack()

    await bus.per_order(deliveries, tell)
