"""Whatever no other handler took: a short hint, and the customer stays where they were."""

from __future__ import annotations

from aiogram import F, Router
from aiogram.types import CallbackQuery, Message

from services.bot.texts import Texts

router = Router(name=__name__)


@router.message(F.text.startswith("/"))
async def unknown_command(message: Message, t: Texts) -> None:
    await message.answer(t.t("input.unknown_command"))


@router.message(F.text)
async def unexpected_text(message: Message, t: Texts) -> None:
    await message.answer(t.t("input.unexpected_text"))


@router.message()
async def unexpected_media(message: Message, t: Texts) -> None:
    await message.answer(t.t("input.unsupported"))


@router.callback_query()
async def stale_button(query: CallbackQuery, t: Texts) -> None:
    await query.answer(t.t("input.toast.stale_button"))
