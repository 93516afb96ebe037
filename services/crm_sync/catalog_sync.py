"""The Catalog tab's shell: every CATALOG_SYNC_EVERY seconds the tab is read (one request, with
the Orders tab's Fulfilment, Carrier and Tracking cells: orders_desk takes their edits), its
changes sent to the inventory (admin.inventory), and Result, On hand, Available and the cells
the catalog changed written back (one values batch update, one append for products new to the
tab); what the tab and the catalog agreed on is kept in KV `crm-catalog`, per SKU, only once
the sheet has it. Run by the writer-lease holder only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

import msgspec
import nats.errors
from nats.aio.client import Client
from nats.js import JetStreamContext

from libs import bus, log, shutdown, subjects
from libs.catalog_view import CatalogView
from libs.contracts import AdminCommand, AdminReply, AdminRequest
from libs.kv import Documents, entries
from services.crm_sync import catalog_tab
from services.crm_sync.orders_desk import OrdersDesk
from services.crm_sync.sheets import GoogleSheet
from services.crm_sync.sink import Misconfigured, Unavailable

_log = log.get(__name__)
REQUEST_TIMEOUT_S = 30.0
CHUNK = 200  # commands per request: a whole catalog pasted at once stays under NATS' max payload
CAUGHT_UP_S = 10.0  # how long a sync waits for the catalog read model to show the last one's


class CatalogSync:
    def __init__(
        self,
        nc: Client,
        js: JetStreamContext,
        view: CatalogView,
        sheet: GoogleSheet,
        kept: Documents[catalog_tab.Synced],
        orders: OrdersDesk | None = None,
    ) -> None:
        self._nc = nc
        self._js = js
        self._view = view
        self._sheet = sheet
        self._kept = kept
        self._orders = orders
        self._synced: dict[str, catalog_tab.Synced] | None = None
        # What the last sync set, not yet seen in the read model: the next one waits for it,
        # or it would take the read model's older values for changes made in Telegram.
        self._expected: dict[str, catalog_tab.Fields] = {}
        self.syncs = 0

    async def run(self, every: float, stop: asyncio.Event) -> None:
        said = ""
        while not stop.is_set():
            try:
                await self.sync_once()
                said = ""
            except (Unavailable, Misconfigured, *bus.TRANSIENT, nats.errors.Error) as exc:
                if str(exc) != said:  # each new problem once
                    said = str(exc)
                    _log.warning("catalog.sync_later", error=said or type(exc).__name__)
            except Exception:  # the tab is a desk beside the sales: it never ends the service
                _log.exception("catalog.sync_failed")
            await shutdown.sleep_or_stop(stop, every)

    async def sync_once(self) -> None:
        synced = await self._load()
        # The Orders tab's edited cells come in the same read (one request for both desks).
        rows, order_rows, written_orders = await self._sheet.read_desks()
        await self._caught_up()
        catalog = catalog_tab.Catalog(
            self._view.products(hidden=True),
            self._view.categories(),
            (level for level, _ in self._view.levels()),
        )
        sync = catalog_tab.Sync(rows, catalog, synced)
        commands = sync.commands()
        outcomes = await self._send(commands) if commands else []
        written = sync.settle(outcomes, datetime.now(UTC))
        await self._sheet.write_catalog(written.cells, written.appended)
        # Kept only now: kept before the write, a lost write would make the sheet's old value
        # look like the owner's edit, and undo the catalog's change.
        changed = {sku: s for sku, s in written.synced.items() if synced.get(sku) != s}
        await asyncio.gather(*(self._kept.put(sku, s) for sku, s in changed.items()))
        synced.update(changed)
        for row in sync.rows:
            if row.wanted is not None and row.commands:
                self._expected[row.sku] = row.wanted
        if self._orders is not None:
            put_back, taken = await self._orders.sync(order_rows, written_orders)
            if put_back or taken:
                await self._sheet.write_orders_back(put_back, taken)
        self.syncs += 1
        if commands or written.cells or written.appended:
            _log.info(
                "catalog.synced",
                commands=len(commands),
                applied=written.applied,
                refused=written.refused,
                cells=len(written.cells),
                appended=len(written.appended),
            )

    async def _load(self) -> dict[str, catalog_tab.Synced]:
        if self._synced is None:
            decode = msgspec.json.Decoder(catalog_tab.Synced).decode
            loaded = {}
            for key, raw in await entries(self._js, subjects.CRM_CATALOG_BUCKET):
                try:
                    loaded[key] = decode(raw)
                except (msgspec.DecodeError, msgspec.ValidationError):
                    continue  # unreadable: the catalog's values are taken as agreed
            self._synced = loaded
        return self._synced

    async def _caught_up(self) -> None:
        loop = asyncio.get_running_loop()
        until = loop.time() + CAUGHT_UP_S
        while self._expected:
            for sku, fields in list(self._expected.items()):
                product = self._view.product(sku)
                if product is not None and catalog_tab.fields_of(product) == fields:
                    del self._expected[sku]
            left = until - loop.time()
            if not self._expected:
                return
            if left <= 0:
                # Changed again since (in Telegram, say): the next sync goes by what it sees.
                late, self._expected = sorted(self._expected), {}
                raise Unavailable(
                    f"the catalog read model does not show the last sync's changes yet "
                    f"({', '.join(late[:5])}); the sync is skipped once"
                )
            version = self._view.catalog.version
            try:
                await asyncio.wait_for(self._view.catalog.changed(version), left)
            except TimeoutError:
                continue

    async def _send(self, commands: Sequence[AdminCommand]) -> list[str]:
        """Each command's outcome ("" done), the inventory asked in order, a chunk at a time."""
        outcomes: list[str] = []
        for start in range(0, len(commands), CHUNK):
            chunk = tuple(commands[start : start + CHUNK])
            try:
                response = await self._nc.request(
                    subjects.INVENTORY_ADMIN,
                    bus.encode(AdminRequest(chunk)),
                    timeout=REQUEST_TIMEOUT_S,
                )
            except nats.errors.NoRespondersError:
                raise Unavailable(
                    "the inventory is not running (nobody on admin.inventory)"
                ) from None
            except nats.errors.TimeoutError:
                raise Unavailable("the inventory did not answer the catalog's commands") from None
            reply = msgspec.json.decode(response.data, type=AdminReply)
            if len(reply.outcomes) == len(chunk):
                outcomes += reply.outcomes
            else:  # an inventory older than per-command outcomes: all or nothing
                outcomes += ["; ".join(reply.errors)] * len(chunk)
        return outcomes
