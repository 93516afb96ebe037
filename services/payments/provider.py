"""YooKassa through its official SDK: calls off the event loop, bounded by timeouts, retried.

The SDK is synchronous (requests) and sets no timeout of its own, so a hung connection would
hang a thread for ever; every call here gets a connect and read timeout. What is worth retrying
(network errors, timeouts, 5xx, 429, 202 "still processing") is retried with the same
Idempotence-Key, bounded, with jittered exponential backoff; a final 4xx raises PaymentRefused.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import requests
import tenacity
import yookassa
from requests.adapters import HTTPAdapter
from yookassa.client import ApiClient
from yookassa.domain.exceptions import (
    ApiError,
    InternalServerError,
    NotFoundError,
    ResponseProcessingError,
    TooManyRequestsError,
)

from libs import log

_log = log.get(__name__)
T = TypeVar("T")

CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 15.0


class PaymentRefused(Exception):
    """YooKassa said no for good (a 4xx other than 429): retrying the same request cannot help."""

    def __init__(self, code: str, description: str) -> None:
        super().__init__(f"{code}: {description}")
        self.code = code
        self.description = description


class PaymentNotFound(PaymentRefused):
    pass


class ProviderUnavailable(Exception):
    """YooKassa could not be reached or kept failing for the whole retry budget."""


class _TimeoutAdapter(HTTPAdapter):
    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: float | tuple[float | None, float | None] | None = None,
        verify: bool | str = True,
        cert: str | tuple[str, str] | None = None,
        proxies: dict[str, str] | None = None,
    ) -> requests.Response:
        timeout = timeout or (CONNECT_TIMEOUT, READ_TIMEOUT)
        return super().send(request, stream, timeout, verify, cert, proxies)


class _KeptSession(requests.Session):
    """The SDK closes its session after every request; keeping it keeps the connection alive."""

    def close(self) -> None:
        pass


_sessions = threading.local()


def _session(self: ApiClient) -> requests.Session:
    # One session per worker thread, kept (TLS handshakes are not free). The SDK's own session
    # retries 202 only over https and has no timeout; ours does neither retry (tenacity does,
    # with backoff and a budget) nor wait for ever.
    session: requests.Session | None = getattr(_sessions, "session", None)
    if session is None:
        session = _KeptSession()
        adapter = _TimeoutAdapter(max_retries=0)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        _sessions.session = session
    return session


ApiClient.get_session = _session


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, InternalServerError | TooManyRequestsError | ResponseProcessingError):
        return True
    if isinstance(exc, ApiError):
        return False
    # The SDK turns a network error into an AttributeError (it reads `.response` of None); the
    # cause is on the exception's context.
    return isinstance(exc, requests.RequestException) or isinstance(
        exc.__context__, requests.RequestException
    )


class YooKassa:
    """The calls the shop makes; each returns the API's object as a plain dict."""

    def __init__(
        self,
        shop_id: str,
        secret_key: str,
        api_url: str,
        retry_for: float = 60.0,
        max_wait: float = 5.0,
        threads: int = 32,
    ) -> None:
        yookassa.Configuration.configure(shop_id, secret_key, api_url=api_url.rstrip("/"))
        # The SDK blocks a thread per call; enough threads that a burst of notifications is not
        # queued behind a handful of them.
        self._threads = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="yookassa")
        self._retry_for = retry_for
        self._max_wait = max_wait

    async def create(self, params: dict[str, Any], key: str) -> dict[str, Any]:
        return await self._call("create", key, yookassa.Payment.create, params, key)

    async def get(self, payment_id: str) -> dict[str, Any]:
        return await self._call("get", payment_id, yookassa.Payment.find_one, payment_id)

    async def capture(self, payment_id: str, key: str) -> dict[str, Any]:
        return await self._call("capture", key, yookassa.Payment.capture, payment_id, None, key)

    async def cancel(self, payment_id: str, key: str) -> dict[str, Any]:
        return await self._call("cancel", key, yookassa.Payment.cancel, payment_id, key)

    async def refund(self, params: dict[str, Any], key: str) -> dict[str, Any]:
        return await self._call("refund", key, yookassa.Refund.create, params, key)

    async def receipt(self, params: dict[str, Any], key: str) -> dict[str, Any]:
        return await self._call("receipt", key, yookassa.Receipt.create, params, key)

    async def get_refund(self, refund_id: str) -> dict[str, Any]:
        return await self._call("get_refund", refund_id, yookassa.Refund.find_one, refund_id)

    async def _call(
        self, what: str, key: str, fn: Callable[..., Any], *args: Any
    ) -> dict[str, Any]:
        def log_retry(state: tenacity.RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            _log.warning(
                "yookassa.retry",
                call=what,
                key=key,
                attempt=state.attempt_number,
                error=_brief(error),
            )

        retrying = tenacity.AsyncRetrying(
            retry=tenacity.retry_if_exception(_transient),
            stop=tenacity.stop_after_delay(self._retry_for),
            wait=tenacity.wait_random_exponential(multiplier=0.2, max=self._max_wait),
            before_sleep=log_retry,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    loop = asyncio.get_running_loop()
                    result = await loop.run_in_executor(self._threads, lambda: fn(*args))
        except NotFoundError as exc:
            raise PaymentNotFound(*_code(exc)) from None
        except ApiError as exc:
            if _transient(exc):
                raise ProviderUnavailable(f"{what}: {_brief(exc)}") from None
            raise PaymentRefused(*_code(exc)) from None
        except (ValueError, TypeError) as exc:
            # The SDK checks a request before sending it (a receipt without a phone or an email,
            # say): what YooKassa would refuse with a 400, refused here.
            raise PaymentRefused("invalid_request", str(exc)) from None
        except Exception as exc:
            if _transient(exc):
                raise ProviderUnavailable(f"{what}: {_brief(exc)}") from None
            raise
        return dict(result)


def _code(exc: ApiError) -> tuple[str, str]:
    content = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
    return str(content.get("code", type(exc).__name__)), str(content.get("description", ""))


def _brief(exc: BaseException | None) -> str:
    if exc is None:
        return ""
    if isinstance(exc, ApiError):
        code, description = _code(exc)
        return f"{type(exc).__name__} {code} {description}".strip()
    cause = exc.__context__ if isinstance(exc, AttributeError) else exc
    return repr(cause)[:200]
