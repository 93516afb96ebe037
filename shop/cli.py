"""The `shop` command: up, run SERVICE, catalog import FILE, status."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import signal
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NoReturn, TypeVar

import msgspec
import nats.errors
import nats.js.errors
from nats.js import JetStreamContext

from libs import bus, kv, log, settings, shutdown, subjects
from libs.contracts import (
    AdjustStock,
    AdminReply,
    AdminRequest,
    CatalogProduct,
    CrmStatus,
    StockLevel,
)
from libs.money import format_rub
from shop.supervisor import SERVICES, running_bus

T = TypeVar("T")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="shop", description="A Telegram shop on NATS JetStream.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("up", help="start NATS (unless NATS_URL is set) and every service")
    run = commands.add_parser("run", help="run one service in the foreground")
    run.add_argument("service", choices=sorted(SERVICES))
    catalog = commands.add_parser("catalog", help="manage the catalog")
    catalog_commands = catalog.add_subparsers(dest="catalog_command", required=True)
    importing = catalog_commands.add_parser("import", help="upsert categories, products, stock")
    importing.add_argument("file", type=Path)
    exporting = catalog_commands.add_parser(
        "export", help="write the current catalog, stock and delivery as a file import takes"
    )
    exporting.add_argument("file", type=Path)
    commands.add_parser("status", help="streams, consumer backlogs and stock")
    args = parser.parse_args(argv)

    config = settings.load_or_exit()
    name = args.service if args.command == "run" else "shop"
    log.configure(name, config)
    try:
        if args.command == "up":
            from shop.supervisor import up

            raise SystemExit(asyncio.run(up(config)))
        url = config.nats_url or running_bus(config.data_dir)
        if not url:
            fail(
                f"NATS_URL is not set and no `shop up` runs with DATA_DIR={config.data_dir}: "
                f"`shop {args.command}` needs the bus that `shop up` runs (start it, or set "
                "NATS_URL)"
            )
        if args.command == "run":
            # Stopped while still importing (before the service's own handlers): a clean stop.
            # `shop up` starts services with SIGTERM blocked, so one sent even earlier waits
            # for this handler.
            signal.signal(signal.SIGTERM, _stopped_early)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
            module = importlib.import_module(SERVICES[args.service])
            asyncio.run(module.serve(config))
        elif args.command == "catalog" and args.catalog_command == "export":
            asyncio.run(export_catalog(url, args.file))
        elif args.command == "catalog":
            asyncio.run(import_catalog(url, args.file))
        elif args.command == "status":
            asyncio.run(status(url))
    except (bus.BusUnreachable, subjects.ReplicasRefused) as exc:
        fail(str(exc))
    except shutdown.Stopped as exc:  # stopped while it waited for the bus to start
        log.get(__name__).info("service.stopped_starting", step=str(exc))
        raise SystemExit(0) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None


def _stopped_early(signum: int, frame: object) -> NoReturn:
    raise SystemExit(0)


def fail(message: str) -> NoReturn:
    print(f"shop: {message}", file=sys.stderr)
    raise SystemExit(1)


async def import_catalog(url: str, path: Path) -> None:
    from services.inventory import catalog

    try:
        commands = catalog.load(path)
    except catalog.CatalogError as exc:
        fail(str(exc))
    nc = await bus.connect(url, name="shop-cli")
    try:
        done_before = await _restocks_done_before(nc.jetstream(), commands)
        response = await nc.request(
            subjects.INVENTORY_ADMIN, bus.encode(AdminRequest(tuple(commands))), timeout=30
        )
    except nats.errors.NoRespondersError:
        fail("the inventory service is not running (nobody answers on admin.inventory)")
    except nats.errors.TimeoutError:
        fail("the inventory service did not answer in 30 s")
    finally:
        await nc.close()
    reply = msgspec.json.decode(response.data, type=AdminReply)
    print(f"{path}: {reply.changed} changed, {reply.unchanged} already up to date")
    for restock in done_before:
        print(
            f"  {restock.sku}: restock {restock.delta:+d} was applied before (this file's "
            f"restock_no); export the catalog again for a new restock"
        )
    for error in reply.errors:
        print(f"  refused: {error}", file=sys.stderr)
    if reply.errors:
        raise SystemExit(1)


async def _restocks_done_before(
    js: JetStreamContext, commands: Sequence[object]
) -> list[AdjustStock]:
    """The file's restocks whose number the product's level already counts: importing a file
    twice applies its restocks once, and an edit to an old export is not applied silently."""
    restocks = [c for c in commands if isinstance(c, AdjustStock)]
    if not restocks:
        return []
    try:
        stock = await _documents(js, subjects.STOCK_BUCKET, StockLevel)
    except nats.js.errors.BucketNotFoundError:
        return []
    done = []
    for restock in restocks:
        level = await stock.get(restock.sku)
        n = int(restock.adjustment_id.rpartition("-")[2])
        if level is not None and level.file_restocks >= n:
            done.append(restock)
    return done


async def export_catalog(url: str, path: Path) -> None:
    """The catalog read model (categories, products, stock on hand, delivery) as a catalog
    file: edit it and `shop catalog import` it back."""
    from libs.catalog_view import CatalogView
    from services.inventory import catalog

    nc = await bus.connect(url, name="shop-cli")
    try:
        view = await CatalogView.open(nc, nc.jetstream())
        try:
            levels = {level.sku: level for level, _ in view.levels()}
            text = catalog.dump(
                view.categories(), view.products(hidden=True), levels, view.delivery()
            )
            count = len(view.products(hidden=True))
        finally:
            await view.close()
    finally:
        await nc.close()
    await asyncio.to_thread(path.write_text, text, encoding="utf-8")
    print(f"{path}: {count} products written")


async def status(url: str) -> None:
    nc = await bus.connect(url, name="shop-cli")
    js = nc.jetstream()
    try:
        print(f"{'stream':<12} {'messages':>9} {'bytes':>11} {'last seq':>9}")
        for name in (subjects.ORDERS, subjects.INVENTORY, subjects.PAYMENTS, subjects.DEADLETTER):
            try:
                info = await js.stream_info(name)
            except nats.js.errors.NotFoundError:
                print(f"{name:<12} {'(not created yet)':>31}")
                continue
            s = info.state
            print(f"{name:<12} {s.messages:>9} {s.bytes:>11} {s.last_seq:>9}")
            for consumer in await js.consumers_info(name):
                if consumer.config.durable_name:
                    print(
                        f"  consumer {consumer.name}: {consumer.num_pending} waiting, "
                        f"{consumer.num_ack_pending} in flight, "
                        f"{consumer.num_redelivered} redelivered"
                    )
        print()
        await _print_crm(js)
        print()
        await _print_stock(js)
    finally:
        await nc.close()


async def _print_crm(js: JetStreamContext) -> None:
    """crm_sync's own report: where it writes, the backlog and its age, the last error."""
    try:
        report = await _documents(js, subjects.CRM_BUCKET, CrmStatus)
    except nats.js.errors.BucketNotFoundError:
        status = None
    else:
        status = await report.get(subjects.CRM_STATUS_KEY)
    if status is None:
        print("crm: no report yet (crm_sync has not started)")
        return
    now = datetime.now(UTC)
    age = f", the oldest waiting {_ago(now - status.oldest_at)}" if status.oldest_at else ""
    print(f"crm: {status.sink}: {status.backlog} facts not yet written{age}")
    written = _ago(now - status.last_write_at) + " ago" if status.last_write_at else "never"
    print(f"  last write {written}; {status.written} facts written since start")
    if status.error:
        print(f"  failing: {status.error}")
    if status.behind_since:
        print(f"  admins alerted: behind since {status.behind_since:%Y-%m-%d %H:%M} UTC")
    if now - status.at > timedelta(seconds=30):
        print(f"  (this report is {_ago(now - status.at)} old: is crm_sync running?)")


def _ago(delta: timedelta) -> str:
    seconds = max(0, int(delta.total_seconds()))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"


async def _print_stock(js: JetStreamContext) -> None:
    try:
        stock = await _documents(js, subjects.STOCK_BUCKET, StockLevel)
        catalog = await _documents(js, subjects.CATALOG_BUCKET, CatalogProduct)
        skus = sorted(await kv.keys(js, subjects.STOCK_BUCKET))
    except nats.js.errors.BucketNotFoundError:
        skus = []
    if not skus:
        print("stock: nothing yet (the inventory has not started)")
        return
    print(
        f"{'sku':<20} {'title':<32} {'price':>12} {'on hand':>8} {'reserved':>9} {'available':>10}"
    )
    for sku in skus:
        level = await stock.get(sku)
        if level is None:
            continue  # gone since listed
        product = await catalog.get(f"product.{sku}")
        title, price = (product.title[:32], format_rub(product.price)) if product else ("?", "?")
        print(
            f"{sku:<20} {title:<32} {price:>12} {level.on_hand:>8} {level.reserved:>9} "
            f"{level.available:>10}"
        )


async def _documents(js: JetStreamContext, bucket: str, kind: type[T]) -> kv.Documents[T]:
    """An existing bucket, read only (BucketNotFoundError if there is none yet)."""
    return kv.Documents(js, bucket, await js.key_value(bucket), kind)


if __name__ == "__main__":
    main()
