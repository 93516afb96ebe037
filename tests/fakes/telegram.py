"""FakeTelegram: the Telegram Bot API on a local server, for the real, unmodified aiogram ``Bot``.

Point aiogram at it with ``AiohttpSession(api=TelegramAPIServer.from_base(fake.url))`` (the bot
service: ``TELEGRAM_API_URL=fake.url``). Requests are ``POST {url}/bot{token}/{method}``; any
token shaped like ``123:abc`` is accepted (others get 401), method names are case-insensitive,
unknown ones get 404. Parameters may come as a query string, a form (aiogram sends
``application/x-www-form-urlencoded`` unless it uploads a file, then multipart, with complex
fields such as ``reply_markup`` as JSON text) or a JSON body. Answers are ``{"ok": true,
"result": ...}`` or ``{"ok": false, "error_code": N, "description": ..., "parameters": ...}``.

What the fake keeps, for tests to read:

* ``messages[chat_id][message_id]``: every message of every (private) chat as the user sees it
  now, the user's and the bot's, one message_id sequence per chat; edits are applied in place,
  deleted ones are kept but flagged (``is_deleted``). ``sent(chat_id)``/``last(chat_id)``: the
  bot's live messages; ``buttons()``, ``reply_keyboard()``, ``wait_message()``.
* ``calls``: every request (``Call``: method, decoded params, monotonic ``at``, HTTP status
  answered, 0 while unanswered or if the client went away), ``callback_answers`` (toasts),
  ``updates`` (all injected), ``webhook_deliveries``, ``throttled`` (429s answered).

Simulated users (``user()``/``User``) send text, commands, contacts, stickers, photos, tap
inline buttons, press reply-keyboard buttons; the updates are queued for ``getUpdates`` (long
polling honours offset/limit/timeout/allowed_updates; a second concurrent poll terminates the
first with 409, as Telegram does) or, while a webhook is set, POSTed to it in order with the
``X-Telegram-Bot-Api-Secret-Token`` header, retried with backoff until answered 2xx; a method in
the webhook's answer (JSON or aiogram's multipart) is executed like a request.

Faithful where bots trip: ``parse_mode`` HTML/MarkdownV2/Markdown is parsed into text + entities
(bad markup: 400 "can't parse entities"), text is trimmed, editing to the same content is 400
"message is not modified", editing text without ``reply_markup`` drops the inline keyboard,
callback_data over 64 bytes is 400 BUTTON_DATA_INVALID, unknown chats are 400 "chat not found"
(``strict_chats``), blocked users 403, over-long text 400. Rate limits on demand: ``flood()``
(a window of 429s) and token buckets (``limit_per_chat()``, ``limit_global()``).
"""

from __future__ import annotations

import asyncio
import copy
import html
import itertools
import json
import math
import re
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
from aiohttp import web

JSON = dict[str, Any]
T = TypeVar("T")

TOKEN_RE = re.compile(r"^\d+:[\w-]+$")
SENDING = (
    "sendMessage",
    "sendPhoto",
    "editMessageText",
    "editMessageCaption",
    "editMessageMedia",
    "editMessageReplyMarkup",
)
TEXT_LIMIT = 4096
CAPTION_LIMIT = 1024
CALLBACK_DATA_LIMIT = 64
NOT_MODIFIED = (
    "message is not modified: specified new message content and reply markup are exactly the "
    "same as a current content and reply markup of the message"
)
# what Telegram sends when allowed_updates was never given (or given as [])
DEFAULT_ALLOWED = frozenset(
    {
        "message",
        "edited_message",
        "channel_post",
        "edited_channel_post",
        "business_connection",
        "business_message",
        "edited_business_message",
        "deleted_business_messages",
        "inline_query",
        "chosen_inline_result",
        "callback_query",
        "shipping_query",
        "pre_checkout_query",
        "purchased_paid_media",
        "poll",
        "poll_answer",
        "my_chat_member",
        "chat_join_request",
        "chat_boost",
        "removed_chat_boost",
    }
)
CHAT_ACTIONS = frozenset(
    {
        "typing",
        "upload_photo",
        "record_video",
        "upload_video",
        "record_voice",
        "upload_voice",
        "upload_document",
        "choose_sticker",
        "find_location",
        "record_video_note",
        "upload_video_note",
    }
)
INLINE_ACTIONS = (
    "url",
    "callback_data",
    "web_app",
    "login_url",
    "switch_inline_query",
    "switch_inline_query_current_chat",
    "switch_inline_query_chosen_chat",
    "copy_text",
    "callback_game",
    "pay",
)
# form fields always kept as strings (everything else is tried as JSON: numbers, booleans, markup)
_TEXT_FIELDS = frozenset(
    {
        "text",
        "caption",
        "url",
        "secret_token",
        "callback_query_id",
        "inline_message_id",
        "parse_mode",
        "action",
        "language_code",
        "photo",
        "file_id",
        "ip_address",
        "business_connection_id",
        "message_effect_id",
        "description",
        "short_description",
        "name",
    }
)
_PHOTO_SIZES = ((90, 67), (320, 240), (800, 600))


class ApiError(Exception):
    """An error answer of the Bot API."""

    def __init__(self, code: int, description: str, retry_after: int | None = None) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.retry_after = retry_after

    def body(self) -> JSON:
        body: JSON = {"ok": False, "error_code": self.code, "description": self.description}
        if self.retry_after is not None:
            body["parameters"] = {"retry_after": self.retry_after}
        return body


def _bad(description: str) -> ApiError:
    return ApiError(400, f"Bad Request: {description}")


@dataclass(frozen=True)
class User:
    """A simulated Telegram user; their private chat with the bot has the same id."""

    id: int
    first_name: str = "Test"
    last_name: str | None = None
    username: str | None = None
    language_code: str | None = "ru"
    phone: str | None = None

    @property
    def phone_number(self) -> str:
        """What sharing their contact sends: ``phone`` or one made up from the id."""
        return self.phone or f"7900{self.id % 10_000_000:07d}"

    def as_dict(self) -> JSON:
        user: JSON = {"id": self.id, "is_bot": False, "first_name": self.first_name}
        if self.last_name:
            user["last_name"] = self.last_name
        if self.username:
            user["username"] = self.username
        if self.language_code:
            user["language_code"] = self.language_code
        return user

    def chat(self) -> JSON:
        chat: JSON = {"id": self.id, "type": "private", "first_name": self.first_name}
        if self.last_name:
            chat["last_name"] = self.last_name
        if self.username:
            chat["username"] = self.username
        return chat


@dataclass
class Call:
    """One Bot API request as the fake saw it."""

    method: str
    params: JSON
    at: float
    status: int = 0  # HTTP status answered; 0: not (yet) answered
    result: Any = None
    description: str | None = None  # of an error answer
    via: str = "http"  # or "webhook reply": a method returned in a webhook's answer

    @property
    def ok(self) -> bool:
        return self.status == 200


@dataclass(frozen=True)
class Upload:
    """A file uploaded with a request (multipart)."""

    filename: str
    data: bytes
    content_type: str


@dataclass
class _Flood:
    until: float
    retry_after: int
    methods: frozenset[str]
    chat_id: int | None


@dataclass
class _Bucket:
    rate: float
    burst: float
    tokens: float
    stamp: float

    def wait(self, now: float) -> float:
        """Seconds until a token is there (0: now), after refilling."""
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate


@dataclass
class _Limit:
    per_second: float
    burst: float
    methods: frozenset[str]
    buckets: dict[int | None, _Bucket] = field(default_factory=dict)

    def bucket(self, key: int | None, now: float) -> _Bucket:
        bucket = self.buckets.get(key)
        if bucket is None:
            bucket = self.buckets[key] = _Bucket(self.per_second, self.burst, self.burst, now)
        return bucket


@dataclass
class _Webhook:
    url: str
    secret_token: str | None
    max_connections: int
    ip_address: str | None
    last_error_date: int | None = None
    last_error_message: str | None = None


Method = Callable[[JSON], Coroutine[Any, Any, Any]]


class FakeTelegram:
    """The Bot API for one bot (``bot_id``, ``bot_username``), on ``url`` once started."""

    def __init__(
        self,
        *,
        bot_id: int = 7000001,
        bot_username: str = "shop_test_bot",
        bot_name: str = "Shop Test Bot",
        strict_chats: bool = True,
    ) -> None:
        self.bot_id = bot_id
        self.bot_username = bot_username
        self.bot_name = bot_name
        self.strict_chats = strict_chats  # sending to a chat no user has opened: 400
        self.webhook_timeout = 10.0
        self.calls: list[Call] = []
        self.updates: list[JSON] = []  # every update injected, in order
        self.dropped: list[JSON] = []  # updates of types the bot did not ask for
        self.messages: dict[int, dict[int, JSON]] = {}
        self.callback_answers: dict[str, JSON] = {}
        self.webhook_deliveries: list[tuple[int, int]] = []  # (update_id, status; 0: no answer)
        self.my_commands: dict[tuple[str, str], list[JSON]] = {}  # (scope JSON, language)
        self.files: dict[str, JSON] = {}  # file_id -> File
        self.photo_sources: dict[str, str] = {}  # largest size's file_id -> URL or upload name
        self.users: dict[int, User] = {}
        self.blocked: set[int] = set()
        self.throttled = 0
        self._chats: dict[int, JSON] = {}
        self._next_message_id: dict[int, int] = {}
        self._deleted: dict[int, set[int]] = {}
        self._reply_keyboards: dict[int, JSON | None] = {}
        self._queue: list[JSON] = []
        self._allowed: list[str] | None = None
        self._queries: set[str] = set()
        self._photos: dict[str, list[JSON]] = {}  # any size's file_id -> the sizes
        self._file_data: dict[str, bytes] = {}  # file_path -> content
        self._floods: list[_Flood] = []
        self._garbled: set[int] = set()
        self._per_chat: _Limit | None = None
        self._global: _Limit | None = None
        self._webhook: _Webhook | None = None
        self._worker: asyncio.Task[None] | None = None
        self._poller = 0
        self._ids = itertools.count(1001)  # update ids
        self._user_ids = itertools.count(100_000_001)
        self._query_ids = itertools.count(1)
        self._file_ids = itertools.count(1)
        self._changed = asyncio.Event()
        self._closing = False
        self._client: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self._url = ""
        self._methods: dict[str, tuple[str, Method]] = {}
        for name in dir(self):
            if name.startswith("_m_"):
                api_name = name[3:]
                self._methods[api_name.lower()] = (api_name, getattr(self, name))

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/bot{token}/{method}", self._api)
        app.router.add_get("/file/bot{token}/{path:.+}", self._download)
        app.router.add_route("*", "/{tail:.*}", self._nowhere)
        self._runner = web.AppRunner(
            app, access_log=None, shutdown_timeout=1.0, handler_cancellation=True
        )
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        host, port = self._runner.addresses[0][:2]
        self._url = f"http://{host}:{port}"
        self._client = aiohttp.ClientSession()
        self._closing = False

    async def stop(self) -> None:
        self._closing = True
        self._pulse()
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
            self._worker = None
        if self._client is not None:
            await self._client.close()
            self._client = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeTelegram:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        """The base URL: ``TelegramAPIServer.from_base(url)``, the bot's TELEGRAM_API_URL."""
        return self._url

    @property
    def token(self) -> str:
        """A token for this bot (any ``digits:word`` token is accepted)."""
        return f"{self.bot_id}:AAF-fake-telegram-token"

    @property
    def bot_user(self) -> JSON:
        return {
            "id": self.bot_id,
            "is_bot": True,
            "first_name": self.bot_name,
            "username": self.bot_username,
        }

    @property
    def webhook_url(self) -> str | None:
        return None if self._webhook is None else self._webhook.url

    # -- rate limits --------------------------------------------------------------------------

    def flood(
        self,
        seconds: float,
        retry_after: int = 1,
        methods: Iterable[str] = SENDING,
        *,
        chat_id: int | None = None,
    ) -> None:
        """For `seconds` from now, `methods` (to `chat_id` only, if given) answer 429."""
        until = asyncio.get_running_loop().time() + seconds
        names = frozenset(m.lower() for m in methods)
        self._floods.append(_Flood(until, retry_after, names, chat_id))

    def limit_per_chat(
        self, per_second: float = 1.0, burst: int = 3, methods: Iterable[str] = SENDING
    ) -> None:
        """A token bucket per chat: over it, 429 with the seconds until the next token."""
        self._per_chat = _Limit(per_second, burst, frozenset(m.lower() for m in methods))

    def limit_global(
        self,
        per_second: float = 30.0,
        burst: int | None = None,
        methods: Iterable[str] = SENDING,
    ) -> None:
        """One token bucket for the whole bot (burst: one second's worth unless given)."""
        size = burst if burst is not None else max(1, int(per_second))
        self._global = _Limit(per_second, size, frozenset(m.lower() for m in methods))

    def clear_limits(self) -> None:
        self._floods.clear()
        self._per_chat = None
        self._global = None

    def garble(self, chat_id: int | User) -> None:
        """From now on, what is sent to this chat is answered 200 with a result no client can
        read (a broken proxy, a changed API): not an outage, and never going away by itself."""
        self._garbled.add(self._known(chat_id))

    def _throttle(self, method: str, params: JSON) -> int | None:
        now = asyncio.get_running_loop().time()
        chat_id = _as_int(params.get("chat_id"))
        self._floods = [flood for flood in self._floods if now < flood.until]
        for flood in self._floods:
            if method in flood.methods and flood.chat_id in (None, chat_id):
                return flood.retry_after
        buckets: list[_Bucket] = []
        if self._global is not None and method in self._global.methods:
            buckets.append(self._global.bucket(None, now))
        per_chat = self._per_chat
        if per_chat is not None and method in per_chat.methods and chat_id is not None:
            buckets.append(per_chat.bucket(chat_id, now))
        wait = max((bucket.wait(now) for bucket in buckets), default=0.0)
        if wait > 0:
            return max(1, math.ceil(wait))
        for bucket in buckets:
            bucket.tokens -= 1
        return None

    # -- HTTP ---------------------------------------------------------------------------------

    async def _api(self, request: web.Request) -> web.Response:
        token, name = request.match_info["token"], request.match_info["method"]
        try:
            params = await _read_params(request)
        except (ValueError, aiohttp.ClientError):
            params = {}
        call = self._record(name, params)
        if TOKEN_RE.match(token):
            status, body = await self._execute(name, params)
        else:
            status, body = 401, ApiError(401, "Unauthorized").body()
        self._finish(call, status, body)
        return web.json_response(body, status=status)

    async def _download(self, request: web.Request) -> web.Response:
        data = self._file_data.get(request.match_info["path"])
        if data is None or not TOKEN_RE.match(request.match_info["token"]):
            return web.json_response(ApiError(404, "Not Found").body(), status=404)
        return web.Response(body=data, content_type="application/octet-stream")

    async def _nowhere(self, request: web.Request) -> web.Response:
        return web.json_response(ApiError(404, "Not Found").body(), status=404)

    def _record(self, method: str, params: JSON, via: str = "http") -> Call:
        call = Call(method, params, time.monotonic(), via=via)
        self.calls.append(call)
        self._pulse()
        return call

    def _finish(self, call: Call, status: int, body: JSON) -> None:
        call.status = status
        call.result = body.get("result")
        call.description = body.get("description")
        self._pulse()

    async def _execute(self, name: str, params: JSON) -> tuple[int, JSON]:
        entry = self._methods.get(name.lower())
        if entry is None:
            return 404, ApiError(404, "Not Found: method not found").body()
        api_name, method = entry
        retry_after = self._throttle(api_name.lower(), params)
        if retry_after is not None:
            self.throttled += 1
            error = ApiError(429, f"Too Many Requests: retry after {retry_after}", retry_after)
            return 429, error.body()
        if _as_int(params.get("chat_id")) in self._garbled and api_name in SENDING:
            return 200, {"ok": True, "result": "garbled"}
        try:
            result = await method(params)
        except ApiError as exc:
            return exc.code, exc.body()
        return 200, {"ok": True, "result": result}

    # -- waiting ------------------------------------------------------------------------------

    def _pulse(self) -> None:
        """Wake everyone waiting for something to change."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_for(
        self, predicate: Callable[[], T | None], timeout: float = 10.0, what: str = ""
    ) -> T:
        """Wait until `predicate()` is truthy and return it; re-checked on every request,
        answer and update (and every 0.1 s for conditions outside the fake)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            changed = self._changed
            result = predicate()
            if result:
                return result
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
            try:
                await asyncio.wait_for(changed.wait(), min(remaining, 0.1))
            except TimeoutError:
                pass

    async def wait_message(
        self,
        chat_id: int,
        predicate: str | Callable[[JSON], bool] | None = None,
        timeout: float = 10.0,
        *,
        after: int = 0,
    ) -> JSON:
        """The first live message of the bot in the chat (message_id > `after`) that matches:
        a string is looked for in its text or caption; edits count."""

        def matches(message: JSON) -> bool:
            if predicate is None:
                return True
            if isinstance(predicate, str):
                return predicate in message_text(message)
            return predicate(message)

        def find() -> JSON | None:
            for message in self.sent(chat_id):
                if message["message_id"] > after and matches(message):
                    return message
            return None

        what = f"a message to {chat_id} matching {predicate!r} after #{after}"
        return await self.wait_for(find, timeout, what)

    async def wait_answer(self, query_id: str, timeout: float = 10.0) -> JSON:
        """The bot's answerCallbackQuery for the query (its text, show_alert, url)."""
        return await self.wait_for(
            lambda: self.callback_answers.get(query_id),
            timeout,
            f"an answer to callback query {query_id}",
        )

    # -- reading the state --------------------------------------------------------------------

    def calls_to(self, method: str) -> list[Call]:
        return [call for call in self.calls if call.method.lower() == method.lower()]

    def is_deleted(self, chat_id: int, message_id: int) -> bool:
        return message_id in self._deleted.get(chat_id, set())

    def history(self, chat_id: int) -> list[JSON]:
        """Every live message of the chat, both sides, oldest first, as they are now."""
        chat = self.messages.get(chat_id, {})
        return [
            copy.deepcopy(message)
            for message_id, message in sorted(chat.items())
            if not self.is_deleted(chat_id, message_id)
        ]

    def sent(self, chat_id: int) -> list[JSON]:
        """The bot's live messages to the chat, oldest first, as they are now (edits applied)."""
        return [m for m in self.history(chat_id) if m["from"]["id"] == self.bot_id]

    def last(self, chat_id: int) -> JSON:
        sent = self.sent(chat_id)
        if not sent:
            raise AssertionError(f"the bot has sent nothing (live) to chat {chat_id}")
        return sent[-1]

    def message(self, chat_id: int, message_id: int) -> JSON:
        """A message as it is now (deleted ones too: see is_deleted)."""
        try:
            return copy.deepcopy(self.messages[chat_id][message_id])
        except KeyError:
            raise AssertionError(f"no message {message_id} in chat {chat_id}") from None

    def buttons(self, chat_id: int, message_id: int | None = None) -> list[list[JSON]]:
        """The inline keyboard of the bot's latest live message (or of the given one)."""
        message = self.message(chat_id, message_id) if message_id else self._latest(chat_id)
        if message is None:
            return []
        return list(message.get("reply_markup", {}).get("inline_keyboard", []))

    def reply_keyboard(self, chat_id: int) -> JSON | None:
        """The reply keyboard the user has now (the markup sent), None if none or removed."""
        return copy.deepcopy(self._reply_keyboards.get(chat_id))

    def commands(self, scope: JSON | None = None, language_code: str = "") -> list[JSON]:
        return list(self.my_commands.get((_scope_key(scope), language_code), []))

    def _latest(self, chat_id: int) -> JSON | None:
        sent = self.sent(chat_id)
        return sent[-1] if sent else None

    # -- users --------------------------------------------------------------------------------

    def user(
        self,
        first_name: str = "Test",
        *,
        id: int | None = None,
        last_name: str | None = None,
        username: str | None = None,
        language_code: str | None = "ru",
        phone: str | None = None,
    ) -> User:
        """A new user with a private chat the bot may write to."""
        user = User(
            id if id is not None else next(self._user_ids),
            first_name,
            last_name,
            username,
            language_code,
            phone,
        )
        self._register(user)
        return user

    def _register(self, user: User) -> None:
        self.users[user.id] = user
        self._chats[user.id] = user.chat()

    def _known(self, chat_id: int | User) -> int:
        if isinstance(chat_id, User):
            self._register(chat_id)
            return chat_id.id
        if chat_id not in self._chats:
            self._register(User(chat_id))
        return chat_id

    def block(self, chat_id: int | User) -> None:
        """The user blocks the bot: sending to them is 403; a my_chat_member update says so."""
        chat = self._known(chat_id)
        if chat not in self.blocked:
            self.blocked.add(chat)
            self._inject("my_chat_member", self._membership(chat, "member", "kicked"))

    def unblock(self, chat_id: int | User) -> None:
        chat = self._known(chat_id)
        if chat in self.blocked:
            self.blocked.discard(chat)
            self._inject("my_chat_member", self._membership(chat, "kicked", "member"))

    def _membership(self, chat_id: int, old: str, new: str) -> JSON:
        def member(status: str) -> JSON:
            state: JSON = {"status": status, "user": self.bot_user}
            if status == "kicked":
                state["until_date"] = 0
            return state

        return {
            "chat": copy.deepcopy(self._chats[chat_id]),
            "from": self.users[chat_id].as_dict(),
            "date": int(time.time()),
            "old_chat_member": member(old),
            "new_chat_member": member(new),
        }

    async def send_text(self, user: User, text: str) -> JSON:
        """The user sends text (a leading /command gets its bot_command entity); the message."""
        content: JSON = {"text": text}
        command = re.match(r"/[A-Za-z0-9_]+(@\w+)?", text)
        if command:
            content["entities"] = [
                {"type": "bot_command", "offset": 0, "length": _u16(command.group())}
            ]
        return self._from_user(user, content)

    async def send_command(self, user: User, command: str) -> JSON:
        """``/start`` or ``/start payload``: as sent by the client."""
        if not command.startswith("/"):
            raise ValueError(f"a command starts with '/': {command!r}")
        return await self.send_text(user, command)

    async def send_contact(
        self,
        user: User,
        phone: str | None = None,
        user_id: int | None = None,
        *,
        first_name: str | None = None,
    ) -> JSON:
        """A contact message: the user's own by default; another ``user_id`` is someone else's
        contact (``user_id=0``: a contact with no Telegram account)."""
        contact: JSON = {
            "phone_number": phone or user.phone_number,
            "first_name": first_name or user.first_name,
        }
        if user_id is None:
            contact["user_id"] = user.id
            if user.last_name:
                contact["last_name"] = user.last_name
        elif user_id:
            contact["user_id"] = user_id
        return self._from_user(user, {"contact": contact})

    async def send_sticker(self, user: User, emoji: str = "👍") -> JSON:
        n = next(self._file_ids)
        sticker = {
            "file_id": f"CAACAgIAAxkBAAI{n:08d}",
            "file_unique_id": f"AgAD{n:08d}",
            "type": "regular",
            "width": 512,
            "height": 512,
            "is_animated": False,
            "is_video": False,
            "emoji": emoji,
            "file_size": 20480,
        }
        return self._from_user(user, {"sticker": sticker})

    async def send_photo(self, user: User, caption: str | None = None) -> JSON:
        content: JSON = {"photo": self._new_photo(None, f"user {user.id}")}
        if caption:
            content["caption"] = caption
        return self._from_user(user, content)

    async def press(self, user: User, text: str) -> JSON:
        """The user presses a button of their reply keyboard (request_contact: their contact)."""
        keyboard = self._reply_keyboards.get(user.id)
        rows: list[list[JSON]] = keyboard["keyboard"] if keyboard else []
        for row in rows:
            for button in row:
                if button["text"] == text:
                    if button.get("request_contact"):
                        return await self.send_contact(user)
                    return await self.send_text(user, text)
        visible = [[button["text"] for button in row] for row in rows]
        raise AssertionError(f"no reply button {text!r} for {user.id}; the keyboard: {visible}")

    async def tap(
        self,
        user: User,
        text_or_data: str,
        message_id: int | None = None,
        *,
        chat: int | None = None,
    ) -> JSON:
        """The user taps an inline button (found by text, exact or contained, or callback_data)
        of the bot's latest message that has one (or of the given message); the callback query.
        `chat`: a message in another chat the user is in (a group: the admin chat)."""
        message, button = self.find_button(
            user.id if chat is None else chat, text_or_data, message_id
        )
        if "callback_data" not in button:
            kind = next((key for key in INLINE_ACTIONS if key in button), "?")
            raise AssertionError(
                f"button {button['text']!r} is a {kind} button, tapping it sends the bot nothing"
                f": {button}"
            )
        return self._callback(user, message, button["callback_data"])

    async def tap_data(self, user: User, data: str, message_id: int | None = None) -> JSON:
        """A callback query with any data (forged, stale) on a message of the bot's."""
        if message_id is None:
            message = self._latest(user.id)
            if message is None:
                raise AssertionError(f"the bot has sent nothing (live) to chat {user.id}")
        else:
            message = self.message(user.id, message_id)
            if self.is_deleted(user.id, message_id):
                raise AssertionError(f"message {message_id} in chat {user.id} is deleted")
        return self._callback(user, message, data)

    def find_button(
        self, chat_id: int, text_or_data: str, message_id: int | None = None
    ) -> tuple[JSON, JSON]:
        """(message, button): see tap(). AssertionError listing what is visible if none."""
        if message_id is not None:
            candidates = [self.message(chat_id, message_id)]
        else:
            candidates = [m for m in reversed(self.sent(chat_id)) if m.get("reply_markup")]
        wanted = text_or_data.casefold()
        for message in candidates:
            buttons = [b for row in _inline_rows(message) for b in row]
            exact = [b for b in buttons if text_or_data in (b.get("text"), b.get("callback_data"))]
            if exact:
                return message, exact[0]
            near = [b for b in buttons if wanted in str(b.get("text", "")).casefold()]
            if len(near) > 1:
                texts = [b["text"] for b in near]
                raise AssertionError(
                    f"{text_or_data!r} matches several buttons of message "
                    f"{message['message_id']}: {texts}"
                )
            if near:
                return message, near[0]
        shown = [
            f"#{m['message_id']} {message_text(m)[:40]!r}: "
            f"{[[b.get('text') for b in row] for row in _inline_rows(m)]}"
            for m in candidates[:3]
        ]
        raise AssertionError(
            f"no inline button {text_or_data!r} in chat {chat_id}; visible: "
            + ("; ".join(shown) or "no inline keyboards")
        )

    def _from_user(self, user: User, content: JSON) -> JSON:
        self._register(user)
        if user.id in self.blocked:  # writing to the bot again (Restart) unblocks it
            self.unblock(user.id)
        message = self._new_message(user.id, user.as_dict(), content)
        self._inject("message", copy.deepcopy(message))
        return copy.deepcopy(message)

    def _callback(self, user: User, message: JSON, data: str) -> JSON:
        self._register(user)
        query_id = f"{self.bot_id}{next(self._query_ids):09d}"
        self._queries.add(query_id)
        query = {
            "id": query_id,
            "from": user.as_dict(),
            "message": copy.deepcopy(message),
            "chat_instance": str(abs(hash((self.bot_id, user.id))) % 10**18),
            "data": data,
        }
        self._inject("callback_query", query)
        return copy.deepcopy(query)

    def _inject(self, kind: str, payload: JSON) -> JSON:
        update = {"update_id": next(self._ids), kind: payload}
        self.updates.append(update)
        self._queue.append(update)
        self._pulse()
        return update

    def _deliverable(self) -> list[JSON]:
        """The queued updates the bot asked for (the others are dropped, as Telegram does)."""
        allowed = set(self._allowed) if self._allowed else DEFAULT_ALLOWED
        keep: list[JSON] = []
        for update in self._queue:
            kind = next(key for key in update if key != "update_id")
            (keep if kind in allowed else self.dropped).append(update)
        self._queue = keep
        return keep

    # -- messages -----------------------------------------------------------------------------

    def _new_message(self, chat_id: int, sender: JSON, content: JSON) -> JSON:
        message_id = self._next_message_id.get(chat_id, 0) + 1
        self._next_message_id[chat_id] = message_id
        chat = self._chats.get(chat_id) or {"id": chat_id, "type": "private", "first_name": "?"}
        message: JSON = {
            "message_id": message_id,
            "from": sender,
            "chat": copy.deepcopy(chat),
            "date": int(time.time()),
            **content,
        }
        self.messages.setdefault(chat_id, {})[message_id] = message
        return message

    def _chat_id(self, params: JSON) -> int:
        value = params.get("chat_id")
        if value is None or value == "":
            raise _bad("chat_id is empty")
        chat_id = _as_int(value)
        if chat_id is None or (self.strict_chats and chat_id not in self._chats):
            raise _bad("chat not found")
        return chat_id

    def _writable(self, params: JSON) -> int:
        chat_id = self._chat_id(params)
        if chat_id in self.blocked:
            raise ApiError(403, "Forbidden: bot was blocked by the user")
        return chat_id

    def _text(
        self, params: JSON, key: str, entities_key: str, limit: int, too_long: str
    ) -> tuple[str, list[JSON]]:
        raw = params.get(key)
        if raw is None or raw == "":
            return "", []
        text = str(raw)
        entities = params.get(entities_key)
        mode = params.get("parse_mode")
        if isinstance(entities, list):
            parsed = _sorted_entities([e for e in entities if isinstance(e, dict)])
        elif mode:
            parser = _PARSERS.get(str(mode).lower())
            if parser is None:
                raise _bad("unsupported parse_mode")
            try:
                text, parsed = parser(text)
            except _ParseError as exc:
                raise _bad(f"can't parse entities: {exc}") from None
        else:
            parsed = []
        text, parsed = _trim(text, parsed)
        if len(text) > limit:
            raise _bad(too_long)
        return text, parsed

    def _markup(self, params: JSON, *, inline_only: bool) -> tuple[JSON | None, JSON | None, bool]:
        """(inline markup for the message, reply keyboard, whether the reply keyboard changes)."""
        markup = params.get("reply_markup")
        if markup is None or markup == "":
            return None, None, False
        if not isinstance(markup, dict):
            raise _bad("can't parse reply keyboard markup JSON object")
        if "inline_keyboard" in markup:
            rows = markup["inline_keyboard"]
            if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
                raise _bad("can't parse inline keyboard button: InlineKeyboardButton expected")
            for row in rows:
                for button in row:
                    _check_inline_button(button)
            rows = [row for row in rows if row]
            return ({"inline_keyboard": rows} if rows else None), None, False
        if inline_only:
            raise _bad("inline keyboard expected")
        if "keyboard" in markup:
            keyboard = copy.deepcopy(markup)
            keyboard["keyboard"] = [
                [b if isinstance(b, dict) else {"text": str(b)} for b in row]
                for row in markup["keyboard"]
            ]
            return None, keyboard, True
        if markup.get("remove_keyboard"):
            return None, None, True
        return None, None, False  # force_reply

    def _reply_to(self, chat_id: int, params: JSON) -> JSON | None:
        reply = params.get("reply_parameters")
        options = reply if isinstance(reply, dict) else params
        key = "message_id" if isinstance(reply, dict) else "reply_to_message_id"
        message_id = _as_int(options.get(key))
        if message_id is None:
            return None
        target = self.messages.get(chat_id, {}).get(message_id)
        if target is None or self.is_deleted(chat_id, message_id):
            if options.get("allow_sending_without_reply") is True:
                return None
            raise _bad("message to be replied not found")
        replied = copy.deepcopy(target)
        replied.pop("reply_to_message", None)
        return replied

    def _send(self, chat_id: int, params: JSON, content: JSON) -> JSON:
        inline, keyboard, keyboard_changes = self._markup(params, inline_only=False)
        replied = self._reply_to(chat_id, params)
        if inline:
            content["reply_markup"] = inline
        if replied:
            content["reply_to_message"] = replied
        if params.get("protect_content") is True:
            content["has_protected_content"] = True
        message = self._new_message(chat_id, self.bot_user, content)
        if keyboard_changes:
            self._reply_keyboards[chat_id] = keyboard
        return copy.deepcopy(message)

    def _editable(self, params: JSON) -> JSON:
        if params.get("inline_message_id"):
            raise _bad("message to edit not found")
        chat_id = self._chat_id(params)
        message_id = _as_int(params.get("message_id"))
        if message_id is None:
            raise _bad("message identifier is not specified")
        message = self.messages.get(chat_id, {}).get(message_id)
        if message is None or self.is_deleted(chat_id, message_id):
            raise _bad("message to edit not found")
        if message["from"]["id"] != self.bot_id:
            raise _bad("message can't be edited")
        return message

    def _edit(self, message: JSON, changes: JSON) -> JSON:
        if all(message.get(key) == value for key, value in changes.items()):
            raise _bad(NOT_MODIFIED)
        for key, value in changes.items():
            if value is None:
                message.pop(key, None)
            else:
                message[key] = value
        message["edit_date"] = int(time.time())
        return copy.deepcopy(message)

    def _new_photo(self, data: bytes | None, source: str) -> list[JSON]:
        n = next(self._file_ids)
        sizes: list[JSON] = []
        for i, (width, height) in enumerate(_PHOTO_SIZES):
            file_id = f"AgACAgIAAxkBAAI{n:07d}{i}"
            path = f"photos/file_{n}_{i}.jpg"
            content = data if data is not None and i == len(_PHOTO_SIZES) - 1 else None
            content = content or f"fake photo {n} {width}x{height}".encode()
            size: JSON = {
                "file_id": file_id,
                "file_unique_id": f"AQAD{n:07d}{i}",
                "file_size": len(content),
                "width": width,
                "height": height,
            }
            sizes.append(size)
            self.files[file_id] = {**_without(size, "width", "height"), "file_path": path}
            self._file_data[path] = content
        for size in sizes:
            self._photos[size["file_id"]] = sizes
        self.photo_sources[sizes[-1]["file_id"]] = source
        return copy.deepcopy(sizes)

    # -- the Bot API methods ------------------------------------------------------------------

    async def _m_getMe(self, params: JSON) -> JSON:
        return {
            **self.bot_user,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }

    async def _m_getUpdates(self, params: JSON) -> list[JSON]:
        if self._webhook is not None:
            raise ApiError(
                409,
                "Conflict: can't use getUpdates method while webhook is active; "
                "use deleteWebhook to delete the webhook first",
            )
        self._poller += 1
        me = self._poller
        self._pulse()  # an older poll still waiting is terminated
        offset = _as_int(params.get("offset"))
        limit = min(100, max(1, _as_int(params.get("limit")) or 100))
        timeout = params.get("timeout")
        timeout = max(0.0, float(timeout)) if isinstance(timeout, int | float) else 0.0
        allowed = params.get("allowed_updates")
        if isinstance(allowed, list):
            self._allowed = [str(kind) for kind in allowed]
        if offset is not None:
            if offset < 0:
                self._queue = self._queue[offset:]
            else:
                self._queue = [u for u in self._queue if u["update_id"] >= offset]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            changed = self._changed
            if self._poller != me:
                raise ApiError(
                    409,
                    "Conflict: terminated by other getUpdates request; "
                    "make sure that only one bot instance is running",
                )
            pending = self._deliverable()
            remaining = deadline - loop.time()
            if pending or remaining <= 0 or self._closing or self._webhook is not None:
                return copy.deepcopy(pending[:limit])
            try:
                await asyncio.wait_for(changed.wait(), remaining)
            except TimeoutError:
                pass

    async def _m_setWebhook(self, params: JSON) -> bool:
        url = str(params.get("url") or "")
        if url and not re.match(r"^https?://", url):
            raise _bad("bad webhook: An HTTPS URL must be provided for webhook")
        secret = params.get("secret_token")
        if secret is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", str(secret)):
            raise _bad("secret token contains unallowed characters")
        if params.get("drop_pending_updates") is True:
            self._queue.clear()
        allowed = params.get("allowed_updates")
        if isinstance(allowed, list):
            self._allowed = [str(kind) for kind in allowed]
        if not url:
            self._webhook = None
        else:
            self._webhook = _Webhook(
                url,
                None if secret is None else str(secret),
                _as_int(params.get("max_connections")) or 40,
                params.get("ip_address"),
            )
            if self._worker is None or self._worker.done():
                self._worker = asyncio.create_task(self._deliver())
        self._pulse()
        return True

    async def _m_deleteWebhook(self, params: JSON) -> bool:
        if params.get("drop_pending_updates") is True:
            self._queue.clear()
        self._webhook = None
        self._pulse()
        return True

    async def _m_getWebhookInfo(self, params: JSON) -> JSON:
        hook = self._webhook
        info: JSON = {
            "url": hook.url if hook else "",
            "has_custom_certificate": False,
            "pending_update_count": len(self._deliverable()),
        }
        if hook is not None:
            info["max_connections"] = hook.max_connections
            if hook.ip_address:
                info["ip_address"] = hook.ip_address
            if hook.last_error_date is not None:
                info["last_error_date"] = hook.last_error_date
                info["last_error_message"] = hook.last_error_message
        if self._allowed:
            info["allowed_updates"] = list(self._allowed)
        return info

    async def _m_setMyCommands(self, params: JSON) -> bool:
        commands = params.get("commands")
        if not isinstance(commands, list):
            raise _bad("parameter commands is required")
        for command in commands:
            if not isinstance(command, dict) or not re.fullmatch(
                r"[a-z0-9_]{1,32}", str(command.get("command", ""))
            ):
                raise _bad("BOT_COMMAND_INVALID")
            if not 1 <= len(str(command.get("description", ""))) <= 256:
                raise _bad("command description must be non-empty")
        key = (_scope_key(params.get("scope")), str(params.get("language_code") or ""))
        self.my_commands[key] = [
            {"command": c["command"], "description": c["description"]} for c in commands
        ]
        return True

    async def _m_getMyCommands(self, params: JSON) -> list[JSON]:
        key = (_scope_key(params.get("scope")), str(params.get("language_code") or ""))
        return copy.deepcopy(self.my_commands.get(key, []))

    async def _m_deleteMyCommands(self, params: JSON) -> bool:
        key = (_scope_key(params.get("scope")), str(params.get("language_code") or ""))
        self.my_commands.pop(key, None)
        return True

    async def _m_sendMessage(self, params: JSON) -> JSON:
        chat_id = self._writable(params)
        text, entities = self._text(params, "text", "entities", TEXT_LIMIT, "message is too long")
        if not text:
            raise _bad("message text is empty")
        content: JSON = {"text": text}
        if entities:
            content["entities"] = entities
        return self._send(chat_id, params, content)

    def _photo(self, photo: Any) -> list[JSON]:
        """A photo given as an upload, an http(s) URL (a new photo each time, as Telegram
        downloads it again) or a known file_id: its sizes."""
        if isinstance(photo, Upload):
            return self._new_photo(photo.data, photo.filename)
        if not photo:
            raise _bad("there is no photo in the request")
        if re.match(r"^https?://", str(photo)):
            return self._new_photo(None, str(photo))
        if str(photo) in self._photos:
            return copy.deepcopy(self._photos[str(photo)])
        raise _bad("wrong file identifier/HTTP URL specified")

    async def _m_sendPhoto(self, params: JSON) -> JSON:
        chat_id = self._writable(params)
        sizes = self._photo(params.get("photo"))
        caption, entities = self._text(
            params, "caption", "caption_entities", CAPTION_LIMIT, "message caption is too long"
        )
        content: JSON = {"photo": sizes}
        if caption:
            content["caption"] = caption
        if entities:
            content["caption_entities"] = entities
        if params.get("has_spoiler") is True:
            content["has_media_spoiler"] = True
        return self._send(chat_id, params, content)

    async def _m_editMessageText(self, params: JSON) -> JSON:
        message = self._editable(params)
        if "text" not in message:
            raise _bad("there is no text in the message to edit")
        text, entities = self._text(params, "text", "entities", TEXT_LIMIT, "MESSAGE_TOO_LONG")
        if not text:
            raise _bad("message text is empty")
        inline, _, _ = self._markup(params, inline_only=True)
        changes = {"text": text, "entities": entities or None, "reply_markup": inline}
        return self._edit(message, changes)

    async def _m_editMessageCaption(self, params: JSON) -> JSON:
        message = self._editable(params)
        if "text" in message:
            raise _bad("there is no caption in the message to edit")
        caption, entities = self._text(
            params, "caption", "caption_entities", CAPTION_LIMIT, "message caption is too long"
        )
        inline, _, _ = self._markup(params, inline_only=True)
        changes = {
            "caption": caption or None,
            "caption_entities": entities or None,
            "reply_markup": inline,
        }
        return self._edit(message, changes)

    async def _m_editMessageMedia(self, params: JSON) -> JSON:
        """A photo in place of the message's (or added to a text message, which then becomes a
        photo with the media's caption, as Telegram does since Bot API 7.x); a photo message
        cannot become text again (editMessageText: "there is no text in the message to edit").
        Only photos: the shop sends nothing else."""
        message = self._editable(params)
        media = params.get("media")
        if not isinstance(media, dict) or not media.get("media"):
            raise _bad("can't parse InputMedia: Media is not specified")
        if media.get("type") != "photo":
            raise _bad("can't parse InputMedia: unsupported media type")
        source = media["media"]
        if isinstance(source, str) and source.startswith("attach://"):
            source = params.get(source[len("attach://") :])
            if not isinstance(source, Upload):
                raise _bad("can't parse InputMedia: attached file not found")
        caption, entities = self._text(
            media, "caption", "caption_entities", CAPTION_LIMIT, "message caption is too long"
        )
        inline, _, _ = self._markup(params, inline_only=True)
        same = (
            isinstance(source, str)
            and "photo" in message
            and source in {size["file_id"] for size in message["photo"]}
        )
        sizes = message["photo"] if same else self._photo(source)
        changes = {
            "text": None,
            "entities": None,
            "link_preview_options": None,
            "photo": sizes,
            "caption": caption or None,
            "caption_entities": entities or None,
            "reply_markup": inline,
        }
        return self._edit(message, changes)

    async def _m_editMessageReplyMarkup(self, params: JSON) -> JSON:
        message = self._editable(params)
        inline, _, _ = self._markup(params, inline_only=True)
        return self._edit(message, {"reply_markup": inline})

    async def _m_deleteMessage(self, params: JSON) -> bool:
        chat_id = self._chat_id(params)
        message_id = _as_int(params.get("message_id"))
        if message_id is None:
            raise _bad("message identifier is not specified")
        if message_id not in self.messages.get(chat_id, {}) or self.is_deleted(chat_id, message_id):
            raise _bad("message to delete not found")
        self._deleted.setdefault(chat_id, set()).add(message_id)
        return True

    async def _m_answerCallbackQuery(self, params: JSON) -> bool:
        query_id = str(params.get("callback_query_id") or "")
        if query_id not in self._queries or query_id in self.callback_answers:
            raise _bad("query is too old and response timeout expired or query ID is invalid")
        answer: JSON = {"text": params.get("text"), "show_alert": params.get("show_alert") is True}
        for key in ("url", "cache_time"):
            if params.get(key) is not None:
                answer[key] = params[key]
        self.callback_answers[query_id] = answer
        return True

    async def _m_sendChatAction(self, params: JSON) -> bool:
        self._writable(params)
        if params.get("action") not in CHAT_ACTIONS:
            raise _bad("wrong parameter action in request")
        return True

    async def _m_getChat(self, params: JSON) -> JSON:
        chat_id = _as_int(params.get("chat_id"))
        chat = self._chats.get(chat_id) if chat_id is not None else None
        if chat is None:
            raise _bad("chat not found")
        return {
            **copy.deepcopy(chat),
            "accent_color_id": 0,
            "max_reaction_count": 11,
            "accepted_gift_types": {
                "unlimited_gifts": True,
                "limited_gifts": True,
                "unique_gifts": True,
                "premium_subscription": True,
                "gifts_from_channels": True,
            },
        }

    async def _m_getFile(self, params: JSON) -> JSON:
        file = self.files.get(str(params.get("file_id") or ""))
        if file is None:
            raise _bad("invalid file_id")
        return dict(file)

    # -- webhook ------------------------------------------------------------------------------

    async def _deliver(self) -> None:
        """POST queued updates to the webhook one at a time, in order, retrying until 2xx."""
        delay = 0.05
        while not self._closing and self._webhook is not None:
            hook = self._webhook
            changed = self._changed
            pending = self._deliverable()
            if not pending:
                await changed.wait()
                continue
            update = pending[0]
            status, reply = await self._post(hook, update)
            self.webhook_deliveries.append((update["update_id"], status))
            if 200 <= status < 300:
                delay = 0.05
                if update in self._queue:
                    self._queue.remove(update)
                self._pulse()
                if reply is not None:
                    call = self._record(reply[0], reply[1], via="webhook reply")
                    self._finish(call, *await self._execute(*reply))
            else:
                hook.last_error_date = int(time.time())
                self._pulse()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    async def _post(self, hook: _Webhook, update: JSON) -> tuple[int, tuple[str, JSON] | None]:
        assert self._client is not None
        headers = {"Content-Type": "application/json"}
        if hook.secret_token:
            headers["X-Telegram-Bot-Api-Secret-Token"] = hook.secret_token
        try:
            async with self._client.post(
                hook.url,
                data=json.dumps(update),
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.webhook_timeout),
            ) as response:
                if not 200 <= response.status < 300:
                    hook.last_error_message = (
                        f"Wrong response from the webhook: {response.status} {response.reason}"
                    )
                    return response.status, None
                return response.status, await _webhook_reply(response)
        except TimeoutError:
            hook.last_error_message = "Read timeout expired"
        except aiohttp.ClientError as exc:
            hook.last_error_message = f"Connection failed: {exc}"
        return 0, None


# -- request decoding ---------------------------------------------------------------------------


async def _read_params(request: web.Request) -> JSON:
    params = _decode(request.query)
    if not request.body_exists:
        return params
    if request.content_type == "application/json":
        body = await request.json()
        if isinstance(body, dict):
            params.update(body)
        return params
    form = await request.post()
    fields: dict[str, str] = {}
    uploads: dict[str, Upload] = {}
    for key, value in form.items():
        if isinstance(value, web.FileField):
            uploads[key] = Upload(value.filename, value.file.read(), value.content_type)
        else:
            fields[key] = str(value)
    params.update(_decode(fields, uploads))
    return params


def _decode(fields: Mapping[str, str], uploads: Mapping[str, Upload] | None = None) -> JSON:
    """Form fields to values: JSON where it parses (numbers, booleans, markup), except text;
    ``attach://name`` to the uploaded file; uploads not attached by name stay as fields."""
    uploads = uploads or {}
    attached: set[str] = set()
    params: JSON = {}
    for key, value in fields.items():
        if value.startswith("attach://") and value[9:] in uploads:
            params[key] = uploads[value[9:]]
            attached.add(value[9:])
        elif key in _TEXT_FIELDS:
            params[key] = value
        else:
            try:
                params[key] = json.loads(value)
            except ValueError:
                params[key] = value
    for key, upload in uploads.items():
        if key not in attached:
            params[key] = upload
    return params


async def _webhook_reply(response: aiohttp.ClientResponse) -> tuple[str, JSON] | None:
    """A method call in the webhook's answer: JSON ``{"method": ...}`` or multipart form."""
    if response.content_type == "application/json":
        try:
            body = await response.json()
        except ValueError:
            return None
        if isinstance(body, dict) and body.get("method"):
            rest = {key: value for key, value in body.items() if key != "method"}
            return str(body["method"]), rest
        return None
    if response.content_type != "multipart/form-data":
        return None
    fields: dict[str, str] = {}
    uploads: dict[str, Upload] = {}
    reader = aiohttp.MultipartReader(response.headers, response.content)
    while True:
        part = await reader.next()
        if part is None:
            break
        if not isinstance(part, aiohttp.BodyPartReader) or part.name is None:
            continue
        if part.filename:
            uploads[part.name] = Upload(
                part.filename, bytes(await part.read()), part.headers.get("Content-Type", "")
            )
        else:
            fields[part.name] = await part.text()
    method = fields.pop("method", "")
    return (method, _decode(fields, uploads)) if method else None


# -- helpers ------------------------------------------------------------------------------------


def message_text(message: Mapping[str, Any]) -> str:
    """A message's text or caption ('' if neither)."""
    return str(message.get("text") or message.get("caption") or "")


def _inline_rows(message: Mapping[str, Any]) -> list[list[JSON]]:
    rows: list[list[JSON]] = message.get("reply_markup", {}).get("inline_keyboard", [])
    return rows


def _check_inline_button(button: Any) -> None:
    if not isinstance(button, dict) or not button.get("text"):
        raise _bad(
            "can't parse inline keyboard button: Text buttons are unallowed in the inline keyboard"
        )
    actions = [key for key in INLINE_ACTIONS if key in button]
    if len(actions) != 1:
        raise _bad(
            "can't parse inline keyboard button: Text buttons are unallowed in the inline keyboard"
        )
    if "callback_data" in button:
        data = button["callback_data"]
        if not isinstance(data, str) or not 1 <= len(data.encode()) <= CALLBACK_DATA_LIMIT:
            raise _bad("BUTTON_DATA_INVALID")
    if "url" in button and not re.match(r"^(https?|tg)://\S+$", str(button["url"])):
        raise _bad("BUTTON_URL_INVALID")


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value):
        return int(value)
    return None


def _scope_key(scope: Any) -> str:
    if not isinstance(scope, dict) or scope.get("type") in (None, "default"):
        return '{"type": "default"}'
    return json.dumps(scope, sort_keys=True)


def _without(mapping: Mapping[str, Any], *keys: str) -> JSON:
    return {key: value for key, value in mapping.items() if key not in keys}


def _u16(text: str) -> int:
    """Length in UTF-16 code units: what entity offsets and lengths count."""
    return len(text.encode("utf-16-le")) // 2


def _sorted_entities(entities: list[JSON]) -> list[JSON]:
    return sorted(entities, key=lambda e: (e.get("offset", 0), -e.get("length", 0), e["type"]))


def _trim(text: str, entities: list[JSON]) -> tuple[str, list[JSON]]:
    """Telegram strips leading and trailing whitespace; entities follow."""
    stripped = text.strip()
    if stripped == text:
        return text, entities
    lead = _u16(text[: len(text) - len(text.lstrip())])
    size = _u16(stripped)
    kept: list[JSON] = []
    for entity in entities:
        start = max(0, entity["offset"] - lead)
        end = min(size, entity["offset"] + entity["length"] - lead)
        if end > start:
            kept.append({**entity, "offset": start, "length": end - start})
    return stripped, kept


# -- parse_mode -----------------------------------------------------------------------------------


class _ParseError(Exception):
    pass


class _Builder:
    def __init__(self) -> None:
        self.parts: list[str] = []
        self.pos = 0  # UTF-16 units so far
        self.entities: list[JSON] = []

    def add(self, text: str) -> None:
        self.parts.append(text)
        self.pos += _u16(text)

    def entity(self, kind: str, start: int, **extra: Any) -> None:
        if self.pos > start:
            entity: JSON = {"type": kind, "offset": start, "length": self.pos - start}
            entity.update({key: value for key, value in extra.items() if value is not None})
            self.entities.append(entity)

    def result(self) -> tuple[str, list[JSON]]:
        return "".join(self.parts), _sorted_entities(self.entities)


def _byte(source: str, index: int) -> int:
    return len(source[:index].encode())


_HTML_TAGS = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "tg-spoiler": "spoiler",
    "span": "spoiler",
    "code": "code",
    "pre": "pre",
    "a": "text_link",
    "blockquote": "blockquote",
    "tg-emoji": "custom_emoji",
}
_TAG = re.compile(
    r"<(/?)([a-zA-Z][a-zA-Z0-9-]*)((?:\s+[a-zA-Z_:][-\w:.]*"
    r"(?:\s*=\s*(?:\"[^\"]*\"|'[^']*'|[^\s\"'>]+))?)*)\s*>"
)
_ATTR = re.compile(r"([a-zA-Z_:][-\w:.]*)(?:\s*=\s*(\"[^\"]*\"|'[^']*'|[^\s\"'>]+))?")
_HTML_ENTITY = re.compile(r"&(#[0-9]+|#[xX][0-9a-fA-F]+|lt|gt|amp|quot);")


def _parse_html(source: str) -> tuple[str, list[JSON]]:
    out = _Builder()
    stack: list[tuple[str, int, str | None, JSON]] = []  # tag, start, entity type, extra
    i = 0
    while i < len(source):
        char = source[i]
        if char == "&":
            entity = _HTML_ENTITY.match(source, i)
            if entity:
                out.add(html.unescape(entity.group()))
                i = entity.end()
                continue
            out.add(char)
            i += 1
            continue
        if char != "<":
            out.add(char)
            i += 1
            continue
        tag = _TAG.match(source, i)
        if tag is None:
            raise _ParseError(f"Unsupported start tag at byte offset {_byte(source, i)}")
        closing, name = tag.group(1) == "/", tag.group(2).lower()
        if closing:
            if not stack:
                raise _ParseError(f"Unexpected end tag at byte offset {_byte(source, i)}")
            if stack[-1][0] != name:
                raise _ParseError(
                    f"Unmatched end tag at byte offset {_byte(source, i)}, expected "
                    f'"</{stack[-1][0]}>", found "</{name}>"'
                )
            _, start, closed, fields = stack.pop()
            if closed is not None:
                out.entity(closed, start, **fields)
        else:
            if name not in _HTML_TAGS:
                raise _ParseError(
                    f'Unsupported start tag "{name}" at byte offset {_byte(source, i)}'
                )
            attrs = {
                key.lower(): html.unescape(value.strip("\"'")) if value else ""
                for key, value in _ATTR.findall(tag.group(3))
            }
            kind: str | None = _HTML_TAGS[name]
            extra: JSON = {}
            if name == "span" and attrs.get("class") != "tg-spoiler":
                raise _ParseError(f'Unsupported start tag "span" at byte offset {_byte(source, i)}')
            if name == "a":
                href = attrs.get("href", "")
                user = re.fullmatch(r"tg://user\?id=(\d+)", href)
                if user:
                    kind, extra = "text_mention", {"user": {"id": int(user.group(1))}}
                elif href:
                    extra = {"url": href}
                else:
                    kind = None
            elif name == "blockquote" and "expandable" in attrs:
                kind = "expandable_blockquote"
            elif name == "tg-emoji":
                extra = {"custom_emoji_id": attrs.get("emoji-id")}
            elif name == "code" and stack and stack[-1][0] == "pre":
                language = attrs.get("class", "")
                if language.startswith("language-"):
                    stack[-1][3]["language"] = language[len("language-") :]
                    kind = None
            stack.append((name, out.pos, kind, extra))
        i = tag.end()
    if stack:
        raise _ParseError(f'Can\'t find end tag corresponding to start tag "{stack[-1][0]}"')
    return out.result()


_MD2_RESERVED = frozenset("_*[]()~`>#+-=|{}.!")
_MD2_NAMES = {
    "*": ("bold", "Bold"),
    "_": ("italic", "Italic"),
    "__": ("underline", "Underline"),
    "~": ("strikethrough", "Strikethrough"),
    "||": ("spoiler", "Spoiler"),
    "[": ("text_link", "TextUrl"),
}


def _code_end(source: str, start: int, fence: str) -> int:
    """Index of the closing fence, skipping backslash escapes; -1 if none."""
    i = start
    while i < len(source):
        if source[i] == "\\":
            i += 2
            continue
        if source.startswith(fence, i):
            return i
        i += 1
    return -1


def _unescape_code(text: str) -> str:
    return re.sub(r"\\([\\`])", r"\1", text)


def _pre(out: _Builder, body: str) -> None:
    language = None
    if "\n" in body:
        first, rest = body.split("\n", 1)
        if not first.strip() or re.fullmatch(r"[\w+#.-]+", first):
            language, body = first or None, rest
    start = out.pos
    out.add(body)
    out.entity("pre", start, language=language)


def _parse_markdown_v2(source: str) -> tuple[str, list[JSON]]:
    out = _Builder()
    stack: list[tuple[str, int, int]] = []  # marker, start, byte offset
    quote: int | None = None
    line_start = True
    i = 0
    while i < len(source):
        char = source[i]
        if line_start and char == ">":
            if quote is None:
                quote = out.pos
            line_start = False
            i += 1
            continue
        line_start = False
        if char == "\\" and i + 1 < len(source) and 0 < ord(source[i + 1]) < 127:
            out.add(source[i + 1])
            i += 2
            continue
        if char == "\n":
            if quote is not None and not source.startswith(">", i + 1):
                out.entity("blockquote", quote)
                quote = None
            out.add(char)
            line_start = True
            i += 1
            continue
        if char == "`":
            fence = "```" if source.startswith("```", i) else "`"
            end = _code_end(source, i + len(fence), fence)
            if end < 0:
                name = "Pre" if fence == "```" else "Code"
                raise _ParseError(
                    f"Can't find end of {name} entity at byte offset {_byte(source, i)}"
                )
            body = _unescape_code(source[i + len(fence) : end])
            if fence == "```":
                _pre(out, body)
            else:
                start = out.pos
                out.add(body)
                out.entity("code", start)
            i = end + len(fence)
            continue
        if char == "[":
            stack.append(("[", out.pos, _byte(source, i)))
            i += 1
            continue
        if char == "]" and stack and stack[-1][0] == "[":
            if not source.startswith("(", i + 1):
                raise _ParseError(f"Can't find end of a URL at byte offset {_byte(source, i)}")
            end = _code_end(source, i + 2, ")")
            if end < 0:
                raise _ParseError(f"Can't find end of a URL at byte offset {_byte(source, i)}")
            url = re.sub(r"\\([\\)])", r"\1", source[i + 2 : end])
            _, start, _ = stack.pop()
            out.entity("text_link", start, url=url)
            i = end + 1
            continue
        marker = next((m for m in ("||", "__") if source.startswith(m, i)), None)
        if marker is None and char in "*_~":
            marker = char
        if marker is not None:
            if any(open_marker == marker for open_marker, _, _ in stack):
                top, start, offset = stack[-1]
                if top != marker:
                    raise _ParseError(
                        f"Can't find end of {_MD2_NAMES[top][1]} entity at byte offset {offset}"
                    )
                stack.pop()
                out.entity(_MD2_NAMES[marker][0], start)
            else:
                stack.append((marker, out.pos, _byte(source, i)))
            i += len(marker)
            continue
        if char in _MD2_RESERVED:
            raise _ParseError(
                f"Character '{char}' is reserved and must be escaped with the preceding '\\'"
            )
        out.add(char)
        i += 1
    if quote is not None:
        out.entity("blockquote", quote)
    if stack:
        marker, _, offset = stack[-1]
        raise _ParseError(
            f"Can't find end of {_MD2_NAMES[marker][1]} entity at byte offset {offset}"
        )
    return out.result()


def _parse_markdown(source: str) -> tuple[str, list[JSON]]:
    """The legacy Markdown: *bold*, _italic_, `code`, ```pre```, [text](url); no nesting."""
    out = _Builder()
    i = 0
    while i < len(source):
        char = source[i]
        if char == "\\" and i + 1 < len(source) and source[i + 1] in "_*`[":
            out.add(source[i + 1])
            i += 2
            continue
        fence = "```" if source.startswith("```", i) else char
        if fence in ("*", "_", "`", "```"):
            end = source.find(fence, i + len(fence))
            if end < 0:
                raise _ParseError(
                    f"Can't find end of the entity starting at byte offset {_byte(source, i)}"
                )
            body = source[i + len(fence) : end]
            if fence == "```":
                _pre(out, body)
            else:
                start = out.pos
                out.add(body)
                out.entity({"*": "bold", "_": "italic", "`": "code"}[fence], start)
            i = end + len(fence)
            continue
        if char == "[":
            link = re.compile(r"\[([^\]]*)\]\(([^)]*)\)").match(source, i)
            if link is None:
                raise _ParseError(
                    f"Can't find end of the entity starting at byte offset {_byte(source, i)}"
                )
            start = out.pos
            out.add(link.group(1))
            out.entity("text_link", start, url=link.group(2))
            i = link.end()
            continue
        out.add(char)
        i += 1
    return out.result()


_PARSERS: dict[str, Callable[[str], tuple[str, list[JSON]]]] = {
    "html": _parse_html,
    "markdownv2": _parse_markdown_v2,
    "markdown": _parse_markdown,
}
