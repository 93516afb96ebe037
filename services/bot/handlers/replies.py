"""Sending a pure message (services.bot.messages) from a handler: as a new message, or in place
of the one a button was on. The desks' handlers share these."""

from __future__ import annotations

import contextlib

from aiogram.exceptions import TelegramBadRequest
from aiogram.types import CallbackQuery, InlineKeyboardMarkup, Message

from services.bot import keyboards as kb
from services.bot import messages
from services.bot.texts import Texts


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
