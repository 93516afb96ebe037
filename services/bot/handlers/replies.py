"""What the desks' handlers share: sending a pure message (services.bot.messages) as a new
message or in place of the one a button was on, and the routers that keep a desk to admins."""

from __future__ import annotations

import contextlib

from aiogram import F, Router
from aiogram.exceptions import TelegramBadRequest
from aiogram.filters import Filter
from aiogram.types import CallbackQuery, InlineKeyboardMarkup, Message

from libs import log
from services.bot import keyboards as kb
from services.bot import messages
from services.bot.texts import Texts

_log = log.get(__name__)


async def send(where: Message, t: Texts, message: messages.Message) -> None:
    """The message, new, in the chat of `where`."""
    await where.answer(messages.render(t, message.text), reply_markup=kb.inline(t, message.buttons))


async def edit(query: CallbackQuery, t: Texts, message: messages.Message) -> None:
    """The message in place of the one the pressed button was on."""
    if not isinstance(query.message, Message):
        return
    markup = kb.inline(t, message.buttons) or InlineKeyboardMarkup(inline_keyboard=[])
    with contextlib.suppress(TelegramBadRequest):  # "not modified": shown already
        await query.message.edit_text(messages.render(t, message.text), reply_markup=markup)


def desk_routers(name: str, admins: frozenset[int], buttons: Filter) -> tuple[Router, Router]:
    """A desk's two routers: the outer one answers anyone else's press of the desk's `buttons`
    (a forwarded card, a forged callback) with "admins only" and nothing else; the inner one,
    included in it, takes only the admins' messages and presses. The desk registers its
    handlers on the inner one and includes the outer one in the dispatcher."""

    async def not_an_admin(query: CallbackQuery, t: Texts) -> None:
        _log.info("desk.not_an_admin", desk=name, user_id=query.from_user.id)
        await query.answer(t.t("desk.toast.admins_only"), show_alert=True)

    router = Router(name=name)
    router.callback_query.register(not_an_admin, buttons, ~F.from_user.id.in_(admins))
    admins_only = Router(name=f"{name}.admins")
    admins_only.message.filter(F.from_user.id.in_(admins))
    admins_only.callback_query.filter(F.from_user.id.in_(admins))
    router.include_router(admins_only)
    return router, admins_only
