"""Search by typing: words sent outside a form find the products on sale (services.bot.search),
answered as a page of buttons to their cards; nothing found gets a hint and the catalog."""

from __future__ import annotations

from aiogram import F, Router
from aiogram.filters import StateFilter
from aiogram.fsm.context import FSMContext
from aiogram.types import CallbackQuery, Message

from services.bot import callbacks as cb
from services.bot import keyboards as kb
from services.bot.handlers.shop import show
from services.bot.model import Store
from services.bot.search import search
from services.bot.texts import Texts

router = Router(name=__name__)
# Only a customer's own chat, only outside a form (a checkout answer is never a query), never a
# command (those are the fallback's "unknown command").
router.message.filter(F.chat.type == "private", StateFilter(None))

QUERY = "search"  # the conversation's data: the last search's words, for its pages
SHOWN_QUERY = 64  # characters of the query repeated in the answer


@router.message(F.text, ~F.text.startswith("/"))
async def find(message: Message, t: Texts, store: Store, state: FSMContext) -> None:
    text = message.text or ""
    items = search(await store.products(), text)
    query = text[:SHOWN_QUERY]
    if not items:
        await message.answer(t.t("search.nothing", query=query), reply_markup=kb.nothing_found(t))
        return
    await state.update_data({QUERY: text})
    await show(message, t.t("search.results", query=query, count=len(items)), kb.found(t, items, 0))


@router.callback_query(cb.SearchPage.filter())
async def results_page(
    query: CallbackQuery, callback_data: cb.SearchPage, t: Texts, store: Store, state: FSMContext
) -> None:
    text = str((await state.get_data()).get(QUERY) or "")
    items = search(await store.products(), text) if text else []
    if not items:  # searched for something else since, or sold out of sight
        await query.answer(t.t("input.toast.stale_button"))
        return
    shown = text[:SHOWN_QUERY]
    page = t.t("search.results", query=shown, count=len(items))
    await show(query, page, kb.found(t, items, callback_data.page))
