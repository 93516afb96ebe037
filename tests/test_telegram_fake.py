"""The Telegram fake driven by the real, unmodified aiogram: polling, webhooks, errors, limits."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiogram import Bot, Dispatcher, F, Router
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramConflictError,
    TelegramForbiddenError,
    TelegramRetryAfter,
)
from aiogram.filters import Command, CommandStart
from aiogram.methods import SendMessage
from aiogram.types import (
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputMediaPhoto,
    KeyboardButton,
    Message,
    ReplyKeyboardMarkup,
    ReplyKeyboardRemove,
)
from aiogram.utils.keyboard import InlineKeyboardBuilder
from aiogram.webhook.aiohttp_server import SimpleRequestHandler
from aiohttp import web

from tests.fakes.telegram import FakeTelegram


def make_bot(fake: FakeTelegram) -> Bot:
    return Bot(fake.token, session=AiohttpSession(api=TelegramAPIServer.from_base(fake.url)))


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as fake:
        yield fake


@pytest.fixture
async def bot(fake: FakeTelegram) -> AsyncIterator[Bot]:
    bot = make_bot(fake)
    yield bot
    await bot.session.close()


@dataclass
class Seen:
    contacts: list[tuple[int, int | None, str]] = field(default_factory=list)


def shop_router(seen: Seen) -> Router:
    router = Router()

    @router.message(CommandStart())
    async def start(message: Message) -> None:
        keyboard = InlineKeyboardBuilder()
        keyboard.button(text="🛍 Каталог", callback_data="catalog")
        keyboard.button(text="🛒 Корзина", callback_data="cart")
        keyboard.button(text="Сайт", url="https://shop.example")
        keyboard.adjust(2)
        await message.answer(
            "Добро пожаловать в <b>магазин</b>!",
            parse_mode="HTML",
            reply_markup=keyboard.as_markup(),
        )

    @router.callback_query(F.data == "catalog")
    async def catalog(query: CallbackQuery) -> None:
        assert isinstance(query.message, Message)
        back = InlineKeyboardMarkup(
            inline_keyboard=[[InlineKeyboardButton(text="Назад", callback_data="back")]]
        )
        await query.message.edit_text("Каталог: чай, кофе", reply_markup=back)
        await query.answer("Каталог открыт")

    @router.message(Command("phone"))
    async def phone(message: Message) -> None:
        share = KeyboardButton(text="Поделиться номером", request_contact=True)
        keyboard = ReplyKeyboardMarkup(keyboard=[[share]], resize_keyboard=True)
        await message.answer("Нужен ваш номер", reply_markup=keyboard)

    @router.message(F.contact)
    async def contact(message: Message) -> None:
        assert message.contact is not None and message.from_user is not None
        sender, owner = message.from_user.id, message.contact.user_id
        seen.contacts.append((sender, owner, message.contact.phone_number))
        text = "Спасибо!" if owner == sender else "Это не ваш номер"
        await message.answer(text, reply_markup=ReplyKeyboardRemove())

    return router


@pytest.fixture
async def polling(fake: FakeTelegram, bot: Bot) -> AsyncIterator[Seen]:
    seen = Seen()
    dp = Dispatcher()
    dp.include_router(shop_router(seen))
    task = asyncio.create_task(dp.start_polling(bot, handle_signals=False, polling_timeout=5))
    await fake.wait_for(lambda: fake.calls_to("getUpdates"), what="the bot to poll")
    yield seen
    await dp.stop_polling()
    await task


async def test_get_me_token_and_unknown_methods(fake: FakeTelegram, bot: Bot) -> None:
    me = await bot.get_me()
    assert (me.id, me.username, me.is_bot) == (fake.bot_id, fake.bot_username, True)
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{fake.url}/botnonsense/getMe") as response:
            assert response.status == 401
            assert await response.json() == {
                "ok": False,
                "error_code": 401,
                "description": "Unauthorized",
            }
        async with http.post(f"{fake.url}/bot{fake.token}/sendInvoiceX") as response:
            assert response.status == 404
            body = await response.json()
            assert body["description"] == "Not Found: method not found"
        # JSON bodies and query strings work too, method names are case-insensitive
        async with http.post(f"{fake.url}/bot{fake.token}/getme", json={}) as response:
            assert (await response.json())["result"]["id"] == fake.bot_id
        url = f"{fake.url}/bot{fake.token}/getMyCommands?language_code=ru"
        async with http.get(url) as response:
            assert await response.json() == {"ok": True, "result": []}
    assert [call.status for call in fake.calls] == [200, 401, 404, 200, 200]
    assert fake.calls[0].method == "getMe" and fake.calls[0].at <= time.monotonic()


async def test_start_tap_edit_and_toast(fake: FakeTelegram, polling: Seen) -> None:
    anna = fake.user("Анна")
    command = await fake.send_command(anna, "/start")
    hello = await fake.wait_message(anna.id, "магазин", after=command["message_id"])
    assert hello["text"] == "Добро пожаловать в магазин!"
    assert hello["entities"] == [{"type": "bold", "offset": 19, "length": 7}]
    assert hello["from"]["id"] == fake.bot_id and hello["chat"]["type"] == "private"
    assert hello["message_id"] == command["message_id"] + 1
    assert [[b["text"] for b in row] for row in fake.buttons(anna.id)] == [
        ["🛍 Каталог", "🛒 Корзина"],
        ["Сайт"],
    ]
    with pytest.raises(AssertionError, match="url button"):
        await fake.tap(anna, "Сайт")

    query = await fake.tap(anna, "Каталог")  # a part of the text is enough
    assert query["data"] == "catalog" and query["message"]["message_id"] == hello["message_id"]
    assert await fake.wait_answer(query["id"]) == {"text": "Каталог открыт", "show_alert": False}
    edited = await fake.wait_message(anna.id, "Каталог:")
    assert edited["message_id"] == hello["message_id"] and "edit_date" in edited
    assert [m["text"] for m in fake.sent(anna.id)] == ["Каталог: чай, кофе"]
    assert fake.buttons(anna.id) == [[{"text": "Назад", "callback_data": "back"}]]
    edit = fake.calls_to("editMessageText")[0]
    assert edit.params["chat_id"] == anna.id
    assert edit.params["reply_markup"] == {
        "inline_keyboard": [[{"text": "Назад", "callback_data": "back"}]]
    }
    with pytest.raises(AssertionError, match="Назад"):
        await fake.tap(anna, "Оплатить")
    assert [m["text"] for m in fake.history(anna.id)] == ["/start", "Каталог: чай, кофе"]


async def test_contact_reaches_the_handler(fake: FakeTelegram, polling: Seen) -> None:
    boris = fake.user("Борис", phone="79001112233")
    await fake.send_command(boris, "/phone")
    await fake.wait_message(boris.id, "Нужен ваш номер")
    keyboard = fake.reply_keyboard(boris.id)
    assert keyboard is not None
    assert keyboard["keyboard"] == [[{"text": "Поделиться номером", "request_contact": True}]]
    assert "reply_markup" not in fake.last(boris.id)  # only inline keyboards are in messages
    await fake.press(boris, "Поделиться номером")
    await fake.wait_message(boris.id, "Спасибо!")
    assert fake.reply_keyboard(boris.id) is None
    await fake.send_contact(boris, "79990000000", user_id=42)
    await fake.wait_message(boris.id, "не ваш")
    assert polling.contacts == [
        (boris.id, boris.id, "79001112233"),
        (boris.id, 42, "79990000000"),
    ]


async def test_flood_and_rate_limits(fake: FakeTelegram, bot: Bot) -> None:
    one, two = fake.user("One"), fake.user("Two")
    fake.flood(30, retry_after=3)
    with pytest.raises(TelegramRetryAfter) as flooded:
        await bot.send_message(one.id, "привет")
    assert flooded.value.retry_after == 3
    assert "Too Many Requests: retry after 3" in flooded.value.message
    assert (await bot.get_me()).id == fake.bot_id  # only the named methods are flooded
    assert fake.throttled == 1 and fake.sent(one.id) == []

    fake.clear_limits()
    fake.limit_per_chat(per_second=1.0, burst=3)
    for n in range(3):
        await bot.send_message(one.id, f"#{n}")
    with pytest.raises(TelegramRetryAfter) as limited:
        await bot.send_message(one.id, "#3")
    assert limited.value.retry_after == 1
    await bot.send_message(two.id, "another chat has its own bucket")

    fake.clear_limits()
    fake.limit_global(per_second=1.0)
    await bot.send_message(one.id, "the one a second")
    with pytest.raises(TelegramRetryAfter):
        await bot.send_message(two.id, "one too many")
    assert fake.throttled == 3
    assert [call.status for call in fake.calls_to("sendMessage")].count(429) == 3


async def test_blocked_and_unknown_chats(fake: FakeTelegram, bot: Bot) -> None:
    user = fake.user()
    fake.block(user.id)
    with pytest.raises(TelegramForbiddenError, match="bot was blocked by the user"):
        await bot.send_message(user.id, "привет")
    with pytest.raises(TelegramForbiddenError):
        await bot.send_chat_action(user.id, "typing")
    with pytest.raises(TelegramBadRequest, match="chat not found"):
        await bot.send_message(123456, "кому?")
    await fake.send_command(user, "/start")  # writing to the bot again unblocks it
    assert await bot.send_chat_action(user.id, "typing")
    kinds = [next(k for k in u if k != "update_id") for u in fake.updates]
    assert kinds == ["my_chat_member", "my_chat_member", "message"]
    chat = await bot.get_chat(user.id)
    assert (chat.id, chat.type, chat.first_name) == (user.id, "private", user.first_name)


async def test_edit_and_send_errors(fake: FakeTelegram, bot: Bot) -> None:
    user = fake.user()
    keyboard = InlineKeyboardMarkup(
        inline_keyboard=[[InlineKeyboardButton(text="Оформить", callback_data="checkout")]]
    )
    sent = await bot.send_message(user.id, "Корзина: 1 товар", reply_markup=keyboard)
    with pytest.raises(TelegramBadRequest, match="message is not modified"):
        await bot.edit_message_text(
            "Корзина: 1 товар\n", chat_id=user.id, message_id=sent.message_id, reply_markup=keyboard
        )
    # a new text without reply_markup drops the keyboard, as in Telegram
    await bot.edit_message_text("Корзина пуста", chat_id=user.id, message_id=sent.message_id)
    assert fake.buttons(user.id) == [] and fake.last(user.id)["text"] == "Корзина пуста"
    with pytest.raises(TelegramBadRequest, match="message to edit not found"):
        await bot.edit_message_text("?", chat_id=user.id, message_id=999)
    with pytest.raises(TelegramBadRequest, match="message to edit not found"):
        await bot.edit_message_reply_markup(chat_id=user.id, message_id=999)
    assert await bot.delete_message(user.id, sent.message_id)
    assert fake.sent(user.id) == [] and fake.is_deleted(user.id, sent.message_id)
    with pytest.raises(TelegramBadRequest, match="message to delete not found"):
        await bot.delete_message(user.id, sent.message_id)
    with pytest.raises(TelegramBadRequest, match="message is too long"):
        await bot.send_message(user.id, "я" * 4097)
    with pytest.raises(TelegramBadRequest, match="can't parse entities"):
        await bot.send_message(user.id, "<b>Итого: 100 < 200", parse_mode="HTML")
    with pytest.raises(TelegramBadRequest, match="reserved"):
        await bot.send_message(user.id, "Итого: 1.5 кг", parse_mode="MarkdownV2")
    with pytest.raises(TelegramBadRequest, match="BUTTON_DATA_INVALID"):
        too_long = InlineKeyboardButton(text="x", callback_data="d" * 65)
        await bot.send_message(
            user.id, "x", reply_markup=InlineKeyboardMarkup(inline_keyboard=[[too_long]])
        )
    with pytest.raises(TelegramBadRequest, match="query ID is invalid"):
        await bot.answer_callback_query("no-such-query")


async def test_formatting_photos_and_files(fake: FakeTelegram, bot: Bot) -> None:
    user = fake.user()
    html = await bot.send_message(user.id, "🛒 <b>Итого</b> &lt;100&gt; ₽", parse_mode="HTML")
    assert html.text == "🛒 Итого <100> ₽"
    assert html.entities is not None and (html.entities[0].offset, html.entities[0].length) == (
        3,
        5,
    )
    md = await bot.send_message(user.id, r"*Чай* \- 100\.00 ₽", parse_mode="MarkdownV2")
    assert md.text == "Чай - 100.00 ₽"
    assert fake.last(user.id)["entities"] == [{"type": "bold", "offset": 0, "length": 3}]

    url = "https://shop.example/tea.jpg"
    photo = await bot.send_photo(user.id, url, caption="<i>Чай</i>", parse_mode="HTML")
    assert photo.photo is not None and photo.caption == "Чай"
    file_id = photo.photo[-1].file_id
    assert fake.photo_sources[file_id] == url
    again = await bot.send_photo(user.id, file_id)
    assert again.photo is not None and again.photo[-1].file_id == file_id
    with pytest.raises(TelegramBadRequest, match="wrong file identifier"):
        await bot.send_photo(user.id, "no-such-file")
    await bot.edit_message_caption(chat_id=user.id, message_id=photo.message_id, caption="Зелёный")
    assert fake.message(user.id, photo.message_id)["caption"] == "Зелёный"
    with pytest.raises(TelegramBadRequest, match="no text in the message"):
        await bot.edit_message_text("x", chat_id=user.id, message_id=photo.message_id)
    # editMessageMedia: a photo for a photo (the same one: not modified), a photo added to a
    # text message; never text back (that is a delete and a new message)
    other = "https://shop.example/green.jpg"
    edited = await bot.edit_message_media(
        InputMediaPhoto(media=other, caption="<b>Зелёный</b>", parse_mode="HTML"),
        chat_id=user.id,
        message_id=photo.message_id,
    )
    assert isinstance(edited, Message) and edited.caption == "Зелёный" and edited.photo
    assert fake.photo_sources[edited.photo[-1].file_id] == other
    with pytest.raises(TelegramBadRequest, match="message is not modified"):
        same = InputMediaPhoto(media=edited.photo[-1].file_id, caption="<b>Зелёный</b>")
        await bot.edit_message_media(
            same.model_copy(update={"parse_mode": "HTML"}),
            chat_id=user.id,
            message_id=photo.message_id,
        )
    text = await bot.send_message(user.id, "Каталог")
    added = await bot.edit_message_media(
        InputMediaPhoto(media=file_id, caption="Чай"), chat_id=user.id, message_id=text.message_id
    )
    assert isinstance(added, Message) and added.photo and added.text is None
    with pytest.raises(TelegramBadRequest, match="no text in the message"):
        await bot.edit_message_text("Каталог", chat_id=user.id, message_id=text.message_id)
    with pytest.raises(TelegramBadRequest, match="wrong file identifier"):
        await bot.edit_message_media(
            InputMediaPhoto(media="no-such-file"), chat_id=user.id, message_id=text.message_id
        )
    with pytest.raises(TelegramBadRequest, match="message caption is too long"):
        await bot.edit_message_media(
            InputMediaPhoto(media=file_id, caption="я" * 1025),
            chat_id=user.id,
            message_id=text.message_id,
        )
    downloaded = await bot.download(file_id)
    assert downloaded is not None and downloaded.read()

    await fake.send_photo(user, caption="мой чек")
    await fake.send_sticker(user)
    sticker_update = fake.updates[-1]["message"]
    assert sticker_update["sticker"]["emoji"] == "👍"
    assert [u.message.content_type for u in await bot.get_updates() if u.message] == [
        "photo",
        "sticker",
    ]


async def test_long_polling(fake: FakeTelegram, bot: Bot) -> None:
    user = fake.user()
    poll = asyncio.create_task(bot.get_updates(timeout=5))
    await fake.wait_for(lambda: fake.calls_to("getUpdates"), what="the poll")
    started = time.monotonic()
    first = await fake.send_text(user, "первое")
    updates = await poll
    assert time.monotonic() - started < 2
    assert [u.message.text for u in updates if u.message] == ["первое"]
    assert updates[0].message is not None
    assert updates[0].message.message_id == first["message_id"]
    # not confirmed yet: given again; then confirmed by the offset
    assert [u.update_id for u in await bot.get_updates()] == [updates[0].update_id]
    await fake.send_text(user, "второе")
    await fake.send_text(user, "третье")
    after = await bot.get_updates(offset=updates[0].update_id + 1, limit=1)
    assert [u.message.text for u in after if u.message] == ["второе"]
    third = await bot.get_updates(offset=after[0].update_id + 1)
    assert [u.message.text for u in third if u.message] == ["третье"]
    offset = third[0].update_id + 1
    # a second poller terminates the first one, as Telegram does
    older = asyncio.create_task(bot.get_updates(offset=offset, timeout=5))
    await fake.wait_for(lambda: len(fake.calls_to("getUpdates")) == 5, what="the older poll")
    assert await bot.get_updates(offset=offset) == []
    with pytest.raises(TelegramConflictError, match="terminated by other getUpdates"):
        await older
    # updates of types the bot did not ask for are dropped
    await fake.send_text(user, "не нужно")
    assert await bot.get_updates(offset=offset, allowed_updates=["poll"]) == []
    assert fake.dropped[-1]["message"]["text"] == "не нужно"


class Receiver:
    """A webhook endpoint on a free local port keeping what it is sent."""

    def __init__(self, answer: dict[str, Any] | None = None) -> None:
        self.answer = answer or {}
        self.bodies: list[dict[str, Any]] = []
        self.secrets: list[str | None] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        async def hook(request: web.Request) -> web.Response:
            self.secrets.append(request.headers.get("X-Telegram-Bot-Api-Secret-Token"))
            self.bodies.append(await request.json())
            return web.json_response(self.answer)

        app = web.Application()
        app.router.add_post("/hook", hook)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}/hook"

    async def stop(self) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


async def test_webhook_delivery(fake: FakeTelegram, bot: Bot) -> None:
    user = fake.user()
    receiver = Receiver()
    await receiver.start()
    try:
        assert await bot.set_webhook(receiver.url, secret_token="s3cret-token")
        info = await bot.get_webhook_info()
        assert (info.url, info.pending_update_count) == (receiver.url, 0)
        with pytest.raises(TelegramConflictError, match="webhook is active"):
            await bot.get_updates()
        sent = await fake.send_text(user, "привет")
        await fake.wait_for(lambda: receiver.bodies, what="the webhook POST")
        assert receiver.secrets == ["s3cret-token"]
        assert receiver.bodies[0]["message"]["text"] == "привет"
        assert receiver.bodies[0]["message"]["message_id"] == sent["message_id"]
        assert fake.webhook_deliveries == [(receiver.bodies[0]["update_id"], 200)]
        # a method in the webhook's answer is executed
        receiver.answer = {"method": "sendMessage", "chat_id": user.id, "text": "ответ"}
        await fake.send_text(user, "ещё")
        reply = await fake.wait_message(user.id, "ответ")
        assert reply["chat"]["id"] == user.id
        assert fake.calls_to("sendMessage")[0].via == "webhook reply"
        assert await bot.delete_webhook()
        assert await bot.get_updates() == []
    finally:
        await receiver.stop()


async def test_webhook_with_aiogram_handler(fake: FakeTelegram, bot: Bot) -> None:
    user = fake.user()
    dp = Dispatcher()

    @dp.message(F.text)
    async def echo(message: Message) -> SendMessage:
        return message.answer(f"эхо: {message.text}")  # answered in the webhook response

    app = web.Application()
    SimpleRequestHandler(dp, bot, secret_token="right", handle_in_background=False).register(
        app, path="/tg"
    )
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    try:
        await bot.set_webhook(f"http://{host}:{port}/tg", secret_token="wrong")
        await fake.send_text(user, "раз")
        await fake.wait_for(lambda: fake.webhook_deliveries, what="a delivery attempt")
        assert fake.webhook_deliveries[0][1] == 401
        info = await bot.get_webhook_info()
        assert info.pending_update_count == 1 and info.last_error_message
        await bot.set_webhook(f"http://{host}:{port}/tg", secret_token="right")
        reply = await fake.wait_message(user.id, "эхо: раз")
        assert fake.calls_to("sendMessage")[-1].via == "webhook reply"
        assert reply["text"] == "эхо: раз"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    ("mode", "source", "text", "entities"),
    [
        (
            "HTML",
            '<b><i>Чай</i></b> <a href="https://x.y/?a=1&amp;b=2">тут</a>',
            "Чай тут",
            [
                {"type": "bold", "offset": 0, "length": 3},
                {"type": "italic", "offset": 0, "length": 3},
                {"type": "text_link", "offset": 4, "length": 3, "url": "https://x.y/?a=1&b=2"},
            ],
        ),
        (
            "HTML",
            '<pre><code class="language-python">x = 1</code></pre>',
            "x = 1",
            [{"type": "pre", "offset": 0, "length": 5, "language": "python"}],
        ),
        (
            "MarkdownV2",
            r"__подчёркнуто__ ||спойлер|| [ссылка](https://x.y/a\)b)",
            "подчёркнуто спойлер ссылка",
            [
                {"type": "underline", "offset": 0, "length": 11},
                {"type": "spoiler", "offset": 12, "length": 7},
                {"type": "text_link", "offset": 20, "length": 6, "url": "https://x.y/a)b"},
            ],
        ),
        ("Markdown", "*жирный* `код`", "жирный код", None),
    ],
)
async def test_parse_modes(
    fake: FakeTelegram,
    bot: Bot,
    mode: str,
    source: str,
    text: str,
    entities: list[dict[str, Any]] | None,
) -> None:
    user = fake.user()
    await bot.send_message(user.id, f"  {source}\n", parse_mode=mode)  # trimmed, as Telegram does
    message = fake.last(user.id)
    assert message["text"] == text
    if entities is not None:
        assert message["entities"] == entities
