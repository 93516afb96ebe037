"""One active instance of a role per bus (crm_sync's sheet writer, the bot's Telegram poller):
the holder renews its lease in a KV bucket by compare-and-set; a standby takes it over once it
has run out (the holder died or lost the bus)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import msgspec
import nats.errors
import nats.js.errors

from libs import bus, log, shutdown
from libs.kv import Documents

_log = log.get(__name__)


class Lease(msgspec.Struct, frozen=True):
    """Who holds the role and until when."""

    holder: str
    until: datetime


class Holder:
    """This instance's claim on a role: `take` waits until it holds it, `keep` renews it and
    stops the instance (sets `stop`) if another took it over meanwhile."""

    KEY = "holder"

    def __init__(
        self, documents: Documents[Lease], role: str, me: str, ttl: float, key: str = KEY
    ) -> None:
        self._documents = documents
        self._role = role  # for the logs: "crm writer", "bot poller"
        self._me = me  # the same after a restart in place, so a crashed holder resumes at once
        self._ttl = timedelta(seconds=ttl)
        self._key = key
        self.holding = False  # the role was ours at the last look (for /healthz)

    async def take(self, stop: asyncio.Event) -> bool:
        """Wait until this instance holds the role (True) or is stopped (False)."""
        said = False
        while not stop.is_set():
            try:
                if await self._renew():
                    return True
            except (*bus.TRANSIENT, nats.errors.Error) as exc:
                # The bus is away (an election): asked again; this says so, not "standby".
                _log.warning("lease.not_taken", role=self._role, error=repr(exc))
            else:
                if not said:
                    _log.info("lease.standby", role=self._role, why="another instance holds it")
                    said = True
            await shutdown.sleep_or_stop(stop, self._ttl.total_seconds() / 4)
        return False

    async def keep(self, stop: asyncio.Event) -> None:
        """Renew until stopped; a lease lost (another took over) stops this instance."""
        while not stop.is_set():
            await shutdown.sleep_or_stop(stop, self._ttl.total_seconds() / 4)
            try:
                mine = await self._renew()
            except (*bus.TRANSIENT, nats.errors.Error) as exc:
                _log.warning("lease.not_renewed", role=self._role, error=repr(exc))
                continue
            except Exception:  # renewed on the next turn; a lease lost meanwhile is seen then
                _log.exception("lease.not_renewed", role=self._role)
                continue
            if not mine and not stop.is_set():
                _log.error("lease.lost", role=self._role, why="another instance took over")
                stop.set()

    async def _renew(self) -> bool:
        found = await self._documents.get_with_revision(self._key)
        now = datetime.now(UTC)
        lease = Lease(self._me, now + self._ttl)
        try:
            if found is None:
                await self._documents.create_new(self._key, lease)
            elif found[0].holder == self._me or found[0].until < now:
                await self._documents.replace(self._key, lease, found[1])
            else:
                self.holding = False
                return False
        except nats.js.errors.KeyWrongLastSequenceError:
            self.holding = False
            return False  # another instance was first
        self.holding = True
        return True
