"""crm_sync: the facts on the bus into the shop's spreadsheet, each row once, through any outage.

Three durable consumers (orders, inventory, payments) hand their batches to one writer, which
reads the lifecycle states of the orders a batch touches (KV `crm-orders`), folds the batch into
them, keeps the new states, writes the rows they say in as few writes as it can, and acks only
once all that is done (a redelivery after a crash in between gives the same rows). It paces its
writes to the sheet's quota (`pace`): at once while the quota is far from used, gathering more
facts per write as it fills, the consumers fetching on meanwhile. While the sheet cannot be
written the batch is held and retried with backoff, the consumers take nothing more, and the
backlog waits in JetStream; the admins hear when the oldest unwritten fact is older than
CRM_ALERT_AFTER, and again when the sheet has caught up. Backlog and last error are reported to
KV `crm` (for `shop status`) and on GET /healthz.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import socket
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, cast

import msgspec
import nats.errors
import nats.js.errors
import tenacity
from nats.aio.client import Client
from nats.js import JetStreamContext

from libs import bus, health, lifecycle, log, metrics, shutdown, subjects
from libs.catalog_view import CatalogView
from libs.contracts import CrmBehind, CrmCaughtUp, CrmStatus
from libs.delivery import titles as delivery_titles
from libs.kv import Documents
from libs.lease import Holder, Lease
from libs.runner import Consumer, Delivery, Runner, backoff
from libs.settings import Settings
from services.crm_sync import catalog_tab, core, pace
from services.crm_sync.catalog_sync import CatalogSync
from services.crm_sync.csv_sheet import CsvSheet
from services.crm_sync.orders_desk import OrdersDesk
from services.crm_sync.sheets import GoogleSheet
from services.crm_sync.sink import Misconfigured, Sink, Unavailable

T = TypeVar("T")
_log = log.get(__name__)
SERVICE = "crm_sync"
LINGER_S = 0.05  # a batch waits this long for the other streams' facts of the same moment
# Facts held for the sheet are kept ours by a heartbeat every third of this; a crashed writer's
# facts go to the next one after it.
ACK_WAIT_S = 15.0
REPORT_EVERY_S = 2.0
LEASE_S = 20.0  # a writer that has not renewed for this long is replaced by a standby
WRITER_KEY = "writer"  # the lease's key in its bucket, as earlier versions wrote it
REMIND_EVERY_S = 300.0  # a failure that goes on is logged again this often
BACKLOG = metrics.Gauge(
    "shop_crm_backlog",
    "Facts not yet in the sheet: on the bus for crm_sync's consumers, or held by the writer",
    registry=metrics.REGISTRY,
)
OLDEST_AGE = metrics.Gauge(
    "shop_crm_oldest_fact_age_seconds",
    "How long the oldest fact not yet in the sheet has waited (0: none waits)",
    registry=metrics.REGISTRY,
)
CONSUMERS = (
    (subjects.ORDERS, subjects.CRM_ORDERS_CONSUMER, subjects.ORDER_FACTS_FOR_CRM),
    (subjects.INVENTORY, subjects.CRM_INVENTORY_CONSUMER, subjects.INVENTORY_FACTS_FOR_CRM),
    (subjects.PAYMENTS, subjects.CRM_PAYMENTS_CONSUMER, subjects.PAYMENT_FACTS_FOR_CRM),
)


def consumers(writer: Writer) -> list[Consumer[core.Fact]]:
    """One consumer per stream, every batch handed to the one writer (which acks)."""
    return [
        Consumer[core.Fact](
            stream=stream,
            durable=durable,
            subjects=filters,
            kind=core.Fact,
            handle_batch=writer.submit,
            batch=1000,
            ack_wait=ACK_WAIT_S,
        )
        for stream, durable, filters in CONSUMERS
    ]


def sink_for(settings: Settings) -> Sink:
    if settings.google_service_account_file and settings.sheets_spreadsheet_id:
        return GoogleSheet(
            settings.google_service_account_file,
            settings.sheets_spreadsheet_id,
            settings.sheets_api_url,
            settings.sheets_writes_per_minute,
            float(settings.sheets_timeout),
        )
    return CsvSheet(settings.data_dir / "crm")


def fact_id(delivery: Delivery[Any]) -> str:
    """Stable across redeliveries and restarts: the fact's place in its stream."""
    meta = delivery.msg.metadata
    return f"{meta.stream.lower()}:{meta.sequence.stream}"


class Titles:
    """Product titles from the catalog read model (in memory), for readable rows, and the
    delivery methods' (by `delivery.as_sku`); a title once seen is kept for a product or a
    method no longer in the catalog."""

    def __init__(self, catalog: CatalogView) -> None:
        self._catalog = catalog
        self._known: dict[str, str] = {}

    def of(self, skus: Iterable[str]) -> dict[str, str]:
        self._known.update(self._catalog.titles(skus))
        self._known.update(delivery_titles(self._catalog.delivery().methods))
        return self._known


class OrderStates:
    """Each order's lifecycle state, which its row is derived from: what the facts folded so far
    said, kept in KV (the sheet's row cannot hold it), so a later fact, after a restart or in
    another batch, folds onto all of it."""

    def __init__(self, documents: Documents[lifecycle.Order]) -> None:
        self._documents = documents

    async def read(self, order_ids: Iterable[str]) -> dict[str, lifecycle.Order]:
        """The kept states of these orders (those that have one), read side by side."""
        wanted = sorted(set(order_ids))
        found = await self._together("read", [self._documents.get(key) for key in wanted])
        return {key: state for key, state in zip(wanted, found, strict=True) if state is not None}

    async def keep(self, states: Mapping[str, lifecycle.Order]) -> None:
        puts = [self._documents.put(key, state) for key, state in states.items()]
        await self._together("write", puts)

    @staticmethod
    async def _together(what: str, calls: Sequence[Awaitable[T]]) -> list[T]:
        """All the calls at once; a bus failure is the batch's (tried again whole)."""
        results = await asyncio.gather(*calls, return_exceptions=True)
        for result in results:
            if isinstance(result, (*bus.TRANSIENT, nats.errors.Error)):
                raise Unavailable(
                    f"cannot {what} the orders' states in KV {subjects.CRM_ORDERS_BUCKET}: "
                    f"{str(result) or type(result).__name__}"
                )
            if isinstance(result, BaseException):
                raise result
        return cast(list[T], results)


def _skus(batch: Iterable[tuple[str, core.Fact]], states: Iterable[lifecycle.Order]) -> set[str]:
    """The products the batch's rows name: in its facts and in the orders' kept states."""
    facts = (getattr(fact, "lines", ()) for _, fact in batch)
    return {line.sku for lines in (*facts, *(s.lines for s in states)) for line in lines}


@dataclass
class _Held:
    deliveries: list[Delivery[core.Fact]]
    # True: written, False: given back (stopping), None: let go while gathering (the consumer
    # fetches on; the writer acks these itself).
    done: asyncio.Future[bool | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    failed: dict[int, Exception] = field(default_factory=dict)  # index -> why it cannot be written

    @property
    def let_go(self) -> bool:
        return self.done.done() and self.done.result() is None

    def first_seen(self) -> bool:
        """No fact of it delivered before: one that failed is handed to the runner's policy."""
        return all((d.msg.metadata.num_delivered or 1) == 1 for d in self.deliveries)

    async def settle(self, written: bool) -> None:
        """Ack what was written, give the rest back."""
        for index, delivery in enumerate(self.deliveries):
            with contextlib.suppress(*bus.TRANSIENT):
                if index in self.failed:
                    delay = backoff(delivery.msg.metadata.num_delivered or 1)
                    await delivery.msg.nak(delay=delay)  # back first seen: then the policy's
                elif written:
                    await delivery.msg.ack()
                else:
                    await delivery.msg.nak()


class Writer:
    """The one writer: batches from every consumer, written together, acked when confirmed."""

    def __init__(
        self, sink: Sink, titles: Titles, states: OrderStates, pacing: bool = True
    ) -> None:
        self._sink = sink
        self._titles = titles
        self._states = states
        self._pacing = pacing
        self._waiting: list[_Held] = []
        self._writing: list[_Held] = []
        self._arrived = asyncio.Event()
        self._wrote_at = -math.inf  # when the last batch was confirmed (the loop's clock)
        self.written = 0
        self.last_write_at: datetime | None = None
        self.error = ""
        self._said = ("", 0.0)  # the failure last logged, and when

    async def submit(self, deliveries: list[Delivery[core.Fact]]) -> None:
        """A consumer's batch; returns once written (acked) or given back (stopping). Facts the
        writer could not handle are left to the runner's policy (raised)."""
        held = _Held(deliveries)
        self._waiting.append(held)
        self._arrived.set()
        written = await held.done
        if written is None:
            return  # let go while the writer gathers: it acks them once written
        for index, delivery in enumerate(deliveries):
            if index not in held.failed:
                with contextlib.suppress(*bus.TRANSIENT):
                    await (delivery.msg.ack() if written else delivery.msg.nak())
        if held.failed:
            raise next(iter(held.failed.values()))

    def oldest(self) -> datetime | None:
        """When the oldest fact not yet in the sheet was stored on the bus."""
        times = [
            d.msg.metadata.timestamp
            for held in (*self._writing, *self._waiting)
            for d in held.deliveries
        ]
        return min(times) if times else None

    def held(self) -> int:
        return sum(len(h.deliveries) for h in (*self._writing, *self._waiting))

    async def keep_ours(self, stop: asyncio.Event) -> None:
        """While facts wait for the sheet, tell JetStream they are being worked on, so they are
        not redelivered meanwhile."""
        while not stop.is_set():
            await shutdown.sleep_or_stop(stop, ACK_WAIT_S / 3)
            for held in (*self._writing, *self._waiting):
                for delivery in held.deliveries:
                    try:
                        await delivery.msg.in_progress()
                    except bus.TRANSIENT:
                        pass  # NATS is away: redelivered at worst, and the sheet takes it once
                    except Exception as exc:
                        _log.warning("crm.in_progress_failed", error=repr(exc))

    async def run(self, stop: asyncio.Event) -> None:
        try:
            # The tabs are made (or checked) at start, not at the first sale.
            if not await self._until_done(stop, self._sink.open):
                return
            while not stop.is_set():
                await _wait_or_stop(stop, self._arrived.wait())
                if stop.is_set():
                    break
                await asyncio.sleep(LINGER_S)
                if self._pacing and not await self._gather(stop):
                    break
                self._arrived.clear()
                self._writing, self._waiting = self._waiting, []
                written = await self._write(stop)
                self._wrote_at = asyncio.get_running_loop().time()
                for held in self._writing:
                    if held.let_go:
                        await held.settle(written)
                    else:
                        held.done.set_result(written)
                self._writing = []
        finally:
            for held in (*self._writing, *self._waiting):
                if not held.done.done():
                    held.done.set_result(False)
                elif held.let_go:
                    await held.settle(False)

    async def _gather(self, stop: asyncio.Event) -> bool:
        """Wait as long as the pace says (False: stopped meanwhile). Meanwhile the consumers
        are let go to fetch what comes, so the next write carries it; nothing of it is acked
        before it is written."""
        loop = asyncio.get_running_loop()
        while True:
            waiting = sum(len(held.deliveries) for held in self._waiting)
            since = loop.time() - self._wrote_at
            oldest = self.oldest()
            age = (datetime.now(UTC) - oldest).total_seconds() if oldest else 0.0
            wait = pace.gather_for(self._sink.quota(), since, waiting, age)
            if wait <= 0:
                return True
            for held in self._waiting:
                if not held.done.done() and held.first_seen():
                    held.done.set_result(None)
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                if not await _wait_or_stop(stop, asyncio.wait_for(self._arrived.wait(), wait)):
                    return False

    async def _write(self, stop: asyncio.Event) -> bool:
        deliveries = [d for held in self._writing for d in held.deliveries]
        batch = [(fact_id(d), d.value) for d in deliveries]
        try:
            written = await self._until_done(stop, lambda: self.apply(batch))
        except Exception:
            _log.exception("crm.batch_failed", facts=len(batch))
            return await self._one_by_one(stop)
        if written:
            self.written += len(batch)
            self.last_write_at = datetime.now(UTC)
        return written

    async def _one_by_one(self, stop: asyncio.Event) -> bool:
        """The batch again, a fact at a time: the ones that fail are marked for the runner's
        policy (retried, then dead-lettered), the others written."""
        for held in self._writing:
            for index, delivery in enumerate(held.deliveries):
                one = [(fact_id(delivery), delivery.value)]
                try:
                    if not await self._until_done(stop, functools.partial(self.apply, one)):
                        return False
                except Exception as exc:
                    held.failed[index] = exc
                    continue
                self.written += 1
                self.last_write_at = datetime.now(UTC)
        return True

    async def apply(self, batch: list[tuple[str, core.Fact]]) -> None:
        """The orders' kept states, the batch folded in, the new states kept, then their rows
        written: tried again whole if any step fails (the fold is idempotent, the rows keyed).
        The states go first: a process killed after the sheet took the rows but before it kept
        the states would leave the next one folding later facts onto nothing (a row written
        without what OrderPlaced said), while a state kept ahead of its rows is rewritten in
        full when the unacked batch comes back."""
        states = await self._states.read(fact.order_id for _, fact in batch)
        titles = self._titles.of(_skus(batch, states.values()))
        plan = core.plan(batch, states, titles)
        await self._states.keep(plan.states)
        await self._sink.apply(plan)

    async def _until_done(self, stop: asyncio.Event, call: Callable[[], Awaitable[Any]]) -> bool:
        """`call` until it works (True) or the service stops (False): retried with jittered
        exponential backoff capped at 30 s, each new failure logged once."""
        retrying = tenacity.AsyncRetrying(
            retry=tenacity.retry_if_exception_type((Unavailable, Misconfigured)),
            wait=tenacity.wait_random_exponential(multiplier=0.5, max=30.0),
            stop=lambda _: stop.is_set(),
            sleep=lambda seconds: shutdown.sleep_or_stop(stop, seconds),
            before_sleep=self._failed,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    if not await _wait_or_stop(stop, call()):
                        return False
        except (Unavailable, Misconfigured):
            return False  # stopping; what was held goes back, for whoever writes next
        if self.error:
            _log.info("crm.writing_again", sheet=self._sink.where, after=self.error)
            self.error, self._said = "", ("", 0.0)
        return True

    def _failed(self, state: tenacity.RetryCallState) -> None:
        assert state.outcome is not None
        self.error = str(state.outcome.exception())
        now = asyncio.get_running_loop().time()
        said, when = self._said
        if self.error != said or now - when > REMIND_EVERY_S:
            self._said = (self.error, now)
            _log.error(
                "crm.write_failed",
                sheet=self._sink.where,
                error=self.error,
                waiting=self.held(),
                retry_in=round(state.upcoming_sleep, 1),
            )


class Reporter:
    """Backlog, age and last error: to KV for `shop status`, to /healthz, and the admin alerts."""

    def __init__(
        self,
        js: JetStreamContext,
        writer: Writer,
        sink: Sink,
        documents: Documents[CrmStatus],
        alert_after: float,
    ) -> None:
        self._js = js
        self._writer = writer
        self._sink = sink
        self._documents = documents
        self._alert_after = timedelta(seconds=alert_after)
        self.status = CrmStatus(sink=sink.where, at=datetime.now(UTC))

    async def run(self, stop: asyncio.Event) -> None:
        # Read right after the writer's lease is taken, maybe during an election (a NATS node
        # just died): a timeout here ended crm_sync in cluster chaos runs; it waits instead.
        try:
            previous = await bus.outlasting(
                lambda: self._documents.get(subjects.CRM_STATUS_KEY), "the last crm status", stop
            )
        except shutdown.Stopped:
            return
        behind_since = previous.behind_since if previous else None
        while not stop.is_set():
            try:
                behind_since = await self._report(behind_since)
            except (*bus.TRANSIENT, nats.errors.Error) as exc:
                _log.warning("crm.report_failed", error=repr(exc))
            except Exception:  # the report is a side show: it must never end the service
                _log.exception("crm.report_failed")
            await shutdown.sleep_or_stop(stop, REPORT_EVERY_S)

    async def _report(self, behind_since: datetime | None) -> datetime | None:
        backlog = 0
        for stream, name, _ in CONSUMERS:
            info = await self._js.consumer_info(stream, name)
            backlog += info.num_pending + info.num_ack_pending
        now = datetime.now(UTC)
        oldest = self._writer.oldest()
        if oldest is None and backlog:
            oldest = self.status.oldest_at or now  # on the bus, not fetched yet
        if behind_since is None and oldest is not None and now - oldest > self._alert_after:
            behind_since = oldest
            alert = CrmBehind(backlog, oldest, self._writer.error, now)
            await bus.publish(
                self._js, subjects.ALERT_CRM_BEHIND, alert, f"crm-behind:{oldest.isoformat()}"
            )
            _log.error("crm.behind", backlog=backlog, oldest=oldest.isoformat())
        elif behind_since is not None and backlog == 0 and self._writer.held() == 0:
            done = CrmCaughtUp(behind_since, now)
            msg_id = f"crm-caught-up:{behind_since.isoformat()}"
            await bus.publish(self._js, subjects.ALERT_CRM_CAUGHT_UP, done, msg_id)
            _log.info("crm.caught_up", behind_since=behind_since.isoformat())
            behind_since = None
        self.status = CrmStatus(
            sink=self._sink.where,
            backlog=backlog,
            oldest_at=oldest if backlog or self._writer.held() else None,
            written=self._writer.written,
            last_write_at=self._writer.last_write_at,
            error=self._writer.error,
            behind_since=behind_since,
            at=now,
        )
        await self._documents.put(subjects.CRM_STATUS_KEY, self.status)
        return behind_since


async def stock_tab(
    view: CatalogView, titles: Titles, sink: Sink, every: float, stop: asyncio.Event
) -> None:
    """The Stock tab from the inventory's read model (in memory): at most once every `every`
    seconds, and only when something changed."""
    written: int | None = None  # the stock's version in the tab
    said = ""
    while not stop.is_set():
        version = view.stock.version
        if version == written or (written is None and not len(view.stock)):
            await _wait_or_stop(stop, view.stock.changed(version))
            continue
        levels = view.levels()
        names = titles.of(level.sku for level, _ in levels)
        rows: list[list[core.Cell]] = [
            [
                lv.sku,
                names.get(lv.sku, lv.sku),
                lv.on_hand,
                lv.reserved,
                lv.available,
                core.stamp(at),
            ]
            for lv, at in levels
        ]
        try:
            await sink.write_stock(rows)
            written, said = version, ""
        except (Unavailable, Misconfigured) as exc:
            if str(exc) != said:  # each new problem once; orders' writes say it too
                said = str(exc)
                _log.warning("crm.stock_later", sheet=sink.where, error=said)
        except Exception:  # the tab is a side show: it must never end the service
            _log.exception("crm.stock_failed", sheet=sink.where)
        await shutdown.sleep_or_stop(stop, every)


def health_check(
    nc: Client, runner: Runner, reporter: Reporter, writership: Holder
) -> health.Check:
    """Connected, consuming, and not behind (the admins were alerted: a fact has waited longer
    than CRM_ALERT_AFTER); the backlog, its age and the sink's last error alongside."""

    async def check() -> health.Report:
        status = reporter.status
        body = health.basics(nc, runner)
        body.update(msgspec.to_builtins(status))
        body["role"] = "writer" if writership.holding else "standby"
        body["oldest_age_s"] = round(_age(status.oldest_at), 1)
        body["ok"] = body["ok"] and status.behind_since is None
        return body

    BACKLOG.set_function(lambda: reporter.status.backlog)
    OLDEST_AGE.set_function(lambda: _age(reporter.status.oldest_at))
    return check


def _age(at: datetime | None) -> float:
    return (datetime.now(UTC) - at).total_seconds() if at else 0.0


async def serve(settings: Settings) -> None:
    assert settings.nats_url, "shop run/up sets NATS_URL"
    stop = shutdown.on_signals()
    replicas = settings.stream_replicas
    nc, js = await bus.attach(settings.nats_url, SERVICE, replicas=replicas, stop=stop)
    # Every step waits out a bus outage (a NATS election, JetStream not up yet); SIGTERM ends it.
    view = await CatalogView.open(nc, js, replicas=replicas, stop=stop)
    documents = await Documents.open(
        js, subjects.CRM_BUCKET, CrmStatus, replicas=replicas, stop=stop
    )
    me = f"{socket.gethostname()}:{settings.data_dir.resolve()}"
    writership = Holder(
        await Documents.open(js, subjects.CRM_WRITER_BUCKET, Lease, replicas=replicas, stop=stop),
        "crm writer",
        me,
        LEASE_S,
        key=WRITER_KEY,
    )
    sink = sink_for(settings)
    titles = Titles(view)
    states = OrderStates(
        await Documents.open(
            js, subjects.CRM_ORDERS_BUCKET, lifecycle.Order, replicas=replicas, stop=stop
        )
    )
    catalog = None
    if isinstance(sink, GoogleSheet):  # the CSV files have no Catalog tab: `shop catalog` does it
        kept = await Documents.open(
            js, subjects.CRM_CATALOG_BUCKET, catalog_tab.Synced, replicas=replicas, stop=stop
        )
        catalog = CatalogSync(nc, js, view, sink, kept, OrdersDesk(js, states))
    writer = Writer(sink, titles, states, settings.sheets_pacing)
    reporter = Reporter(js, writer, sink, documents, settings.crm_alert_after)
    consuming = Runner(nc, js, SERVICE, max_deliveries=settings.max_deliveries, stop=stop)
    check = health_check(nc, consuming, reporter, writership)
    runner = await health.serve(settings.crm_http_host, settings.crm_http_port, check)
    _log.info(
        "crm.started", sheet=sink.where, listen=f"{settings.crm_http_host}:{settings.crm_http_port}"
    )
    try:
        if not await writership.take(stop):
            return
        _log.info("crm.writing", sheet=sink.where)
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(writership.keep(stop))
            tasks.create_task(writer.run(stop))
            tasks.create_task(writer.keep_ours(stop))
            tasks.create_task(reporter.run(stop))
            tasks.create_task(stock_tab(view, titles, sink, settings.crm_stock_every, stop))
            tasks.create_task(consuming.run(consumers(writer)))
            if catalog is not None:
                tasks.create_task(catalog.run(settings.catalog_sync_every, stop))
    finally:
        await health.close(runner)
        await view.close()
        await nc.drain()
    _log.info("crm.stopped")


async def _wait_or_stop(stop: asyncio.Event, work: Awaitable[Any]) -> bool:
    """Await `work`: True once it is done (its exception raised), False if `stop` came first
    (the work is then cancelled)."""
    task = asyncio.ensure_future(work)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([task, stopping], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return False
    task.result()
    return True
