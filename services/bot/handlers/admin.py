"""Admin commands, only for ADMIN_USER_IDS; to anyone else they are unknown commands."""

from __future__ import annotations

from aiogram import Router
from aiogram.filters import Command
from aiogram.types import Message

from services.bot.model import Store
from services.bot.texts import Texts


def router_for(admins: frozenset[int]) -> Router:
    router = Router(name=__name__)
    router.message.filter(
        lambda message: message.from_user is not None and message.from_user.id in admins
    )

    @router.message(Command("stock"))
    async def stock(message: Message, t: Texts, store: Store) -> None:
        rows = []
        for item in await store.products(hidden=True):
            level = await store.level(item.sku)
            if level is not None:
                rows.append(
                    t.t(
                        "admin.stock_row",
                        sku=item.sku,
                        title=item.title,
                        on_hand=level.on_hand,
                        reserved=level.reserved,
                        available=level.available,
                    )
                )
        if not rows:
            await message.answer(t.t("admin.stock_empty"))
            return
        await message.answer(t.lines([t.t("admin.stock_title"), *rows]))

    return router
