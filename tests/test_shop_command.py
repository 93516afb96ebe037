"""The `shop` command as an operator runs it: up, down, a crash, import, status, bad settings."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml
from nats.aio.client import Client
from nats.js import JetStreamContext

from libs import bus, subjects
from libs.contracts import AdjustStock, AdminCommand, AdminReply, AdminRequest, CatalogProduct
from shop.embedded_nats import free_port
from tests.harness import ROOT, ServiceProcess, inventory_ready, shop, stock_level, wait_until

Start = Callable[..., ServiceProcess]


def _env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "NATS_URL"}
    return {**env, "LOG_FORMAT": "json", **settings}


def _descendants(pid: int) -> set[int]:
    """Every process below `pid`, read from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _events(log_path: Path, name: str) -> list[dict[str, object]]:
    events = []
    for line in log_path.read_text(errors="replace").splitlines():
        if line.startswith("{") and f'"{name}"' in line:
            event = json.loads(line)
            if event.get("event") == name:
                events.append(event)
    return events


@pytest.fixture
def shop_up(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    port = free_port()
    log_path = tmp_path / "shop-up.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "shop", "up"],
            env=_env(
                DATA_DIR=str(tmp_path / "data"),
                EMBEDDED_NATS_PORT=str(port),
                PAYMENTS_HTTP_PORT=str(free_port()),
                CRM_HTTP_PORT=str(free_port()),
            ),
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    yield process, f"nats://127.0.0.1:{port}", log_path
    if process.poll() is None:
        for pid in _descendants(process.pid):
            os.kill(pid, signal.SIGKILL)
        process.kill()
        process.wait()


async def test_shop_up_starts_everything_and_stops_cleanly(
    shop_up: tuple[subprocess.Popen[bytes], str, Path], tmp_path: Path
) -> None:
    process, url, log_path = shop_up
    data = tmp_path / "data"
    await wait_until(lambda: bool(_events(log_path, "service.started")), what="services started")
    nc = await bus.connect(url, name="test")
    js = nc.jetstream()
    # Ready: the demo catalog was imported on first start and the read models are written.
    await wait_until(lambda: inventory_ready(js, "TEA-SENCHA-100"), timeout=30, what="ready")
    level = await stock_level(js, "TEA-SENCHA-100")
    assert level is not None and level.on_hand == 25
    await nc.close()
    # A second terminal with the same DATA_DIR and nothing else set finds the bus.
    status = shop("status", env=_env(DATA_DIR=str(data)))
    assert status.returncode == 0, status.stderr
    assert "INVENTORY" in status.stdout and "TEA-SENCHA-100" in status.stdout

    children = _descendants(process.pid)
    assert len(children) >= 3, "nats-server and each service run as processes of their own"
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0
    assert not [pid for pid in children if _alive(pid)], "something was left running"
    stopped = _events(log_path, "service.stopped")
    assert sorted(str(e["name"]) for e in stopped) == ["crm_sync", "inventory", "payments"]
    assert all(e["code"] == 0 for e in stopped), stopped
    assert _events(log_path, "nats.stopped")
    gone = shop("status", env=_env(DATA_DIR=str(data)))
    assert gone.returncode == 1 and "no `shop up` runs with DATA_DIR" in gone.stderr


def test_shop_up_in_a_terminal_says_what_runs_and_where(tmp_path: Path) -> None:
    """Its stdout a terminal: a few lines once the inventory answers (the logs go to stderr)."""
    payments_port = free_port()
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "shop", "up"],
        env=_env(
            DATA_DIR=str(tmp_path / "data"),
            EMBEDDED_NATS_PORT=str(free_port()),
            PAYMENTS_HTTP_PORT=str(payments_port),
            CRM_HTTP_PORT=str(free_port()),
        ),
        cwd=ROOT,
        stdout=follower,
        stderr=subprocess.DEVNULL,
    )
    os.close(follower)
    said = b""
    try:
        deadline = time.monotonic() + 90
        while b"status " not in said and time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 1.0)
            if ready:
                said += os.read(leader, 4096)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
        os.close(leader)
    text = said.decode()
    assert "The shop is up" in text, text
    assert f"sandbox checkout at http://127.0.0.1:{payments_port}/sandbox/" in text
    assert "BOT_TOKEN is not set" in text and f"CSV files in {tmp_path / 'data' / 'crm'}" in text
    assert "inventory, payments, crm_sync" in text and "not answered" not in text


async def test_shop_up_stopped_while_its_services_start_stops_them_cleanly(
    shop_up: tuple[subprocess.Popen[bytes], str, Path],
) -> None:
    # Ctrl-C right after `shop up`: the services are still starting Python. Each is a clean
    # stop, not a death by SIGTERM before it could set its handler.
    process, _, log_path = shop_up
    await wait_until(
        lambda: len(_events(log_path, "service.started")) == 3, what="services spawned"
    )
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0
    stopped = _events(log_path, "service.stopped")
    assert sorted(str(e["name"]) for e in stopped) == ["crm_sync", "inventory", "payments"]
    assert all(e["code"] == 0 for e in stopped), stopped


async def test_shop_up_restarts_a_service_that_dies(
    shop_up: tuple[subprocess.Popen[bytes], str, Path],
) -> None:
    process, _, log_path = shop_up
    await wait_until(
        lambda: len(_events(log_path, "service.started")) == 3, what="services started"
    )
    (first,) = [e for e in _events(log_path, "service.started") if e["name"] == "inventory"]
    os.kill(int(str(first["pid"])), signal.SIGKILL)
    await wait_until(lambda: len(_events(log_path, "service.started")) == 4, what="a restart")
    (died,) = _events(log_path, "service.died")
    assert died["name"] == "inventory" and died["code"] == -signal.SIGKILL
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0


async def test_catalog_import_and_status(
    nats_url: str, js: JetStreamContext, services: Start, catalog_file: Path, tmp_path: Path
) -> None:
    services("inventory", nats_url, catalog_file=catalog_file)
    await wait_until(lambda: inventory_ready(js), what="inventory ready")
    env = _env(NATS_URL=nats_url)
    updated = tmp_path / "updated.yaml"
    updated.write_text(
        catalog_file.read_text().replace("price: 990, stock: 50", "price: 1090, stock: 60")
        + "      - {sku: NEW, title: Brand new, price: 12.5, stock: 3, photo: https://x.test/n.jpg}\n"
    )
    result = shop("catalog", "import", str(updated), env=env)
    assert result.returncode == 0, result.stderr
    # FEW's price and count changed, NEW was created and counted: four changes.
    assert "4 changed" in result.stdout
    catalog = await js.key_value("catalog")
    entry = await catalog.get("product.FEW")
    assert entry.value is not None
    assert msgspec.json.decode(entry.value, type=CatalogProduct).price == 109000
    await wait_until(lambda: _on_hand(js, "NEW", 3), what="NEW in stock")

    again = shop("catalog", "import", str(updated), env=env)
    assert again.returncode == 0 and "0 changed" in again.stdout

    status = shop("status", env=env)
    assert status.returncode == 0, status.stderr
    assert "INVENTORY" in status.stdout and "ORDERS" in status.stdout
    row = next(line for line in status.stdout.splitlines() if line.startswith("FEW "))
    assert row.split()[-3:] == ["60", "0", "60"]  # on hand, reserved, available

    broken = tmp_path / "broken.yaml"
    broken.write_text("categories:\n  - id: x\n    title: X\n    products:\n      - {sku: A}\n")
    result = shop("catalog", "import", str(broken), env=env)
    assert result.returncode == 1
    assert str(broken) in result.stderr and "title" in result.stderr


async def _on_hand(js: JetStreamContext, sku: str, expected: int) -> bool:
    level = await stock_level(js, sku)
    return level is not None and level.on_hand == expected


def test_a_malformed_setting_stops_with_one_line_naming_it() -> None:
    result = shop("run", "inventory", env=_env(NATS_URL="nats://x:1", RESERVATION_TTL="soon"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "shop: invalid setting RESERVATION_TTL: Expected `int`, got `str` (got 'soon')"
    ]


def test_unreachable_nats_is_one_clear_line() -> None:
    url = f"nats://user:secret@127.0.0.1:{free_port()}"
    result = shop("run", "inventory", env=_env(NATS_URL=url))
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("shop: cannot reach NATS at nats://***@127.0.0.1:")
    assert "secret" not in result.stderr


def test_catalog_import_without_inventory_says_so(nats_url: str, catalog_file: Path) -> None:
    result = shop("catalog", "import", str(catalog_file), env=_env(NATS_URL=nats_url))
    assert result.returncode == 1
    assert "inventory service is not running" in result.stderr


async def test_catalog_export_is_a_file_import_takes_back_unchanged(
    nats_url: str, js: JetStreamContext, services: Start, catalog_file: Path, tmp_path: Path
) -> None:
    services("inventory", nats_url, catalog_file=catalog_file)
    await wait_until(lambda: inventory_ready(js), what="inventory ready")
    env = _env(NATS_URL=nats_url)
    exported = tmp_path / "exported.yaml"
    result = shop("catalog", "export", str(exported), env=env)
    assert result.returncode == 0, result.stderr
    assert "3 products written" in result.stdout
    text = exported.read_text(encoding="utf-8")
    assert "sku: FEW" in text and "on_hand_at_export: 50" in text and "price: 25.5" in text
    again = shop("catalog", "import", str(exported), env=env)
    assert again.returncode == 0 and "0 changed" in again.stdout, again.stdout + again.stderr


async def test_a_restock_typed_into_an_export_is_applied_once_and_a_sale_is_not_undone(
    nats_url: str,
    nc: Client,
    js: JetStreamContext,
    services: Start,
    catalog_file: Path,
    tmp_path: Path,
) -> None:
    services("inventory", nats_url, catalog_file=catalog_file)
    await wait_until(lambda: inventory_ready(js), what="inventory ready")
    env = _env(NATS_URL=nats_url)
    exported = tmp_path / "exported.yaml"
    assert shop("catalog", "export", str(exported), env=env).returncode == 0
    # A sale after the export: on hand 50 -> 49; importing the file must not count it back.
    await _admin(nc, AdjustStock("sold-1", "FEW", -1, "write_off"))
    await wait_until(lambda: _on_hand(js, "FEW", 49), what="the sale")

    edited = tmp_path / "edited.yaml"
    _edit(exported, edited, "FEW", restock=10)
    first = shop("catalog", "import", str(edited), env=env)
    assert first.returncode == 0 and "1 changed" in first.stdout, first.stdout + first.stderr
    await wait_until(lambda: _on_hand(js, "FEW", 59), what="the restock applied")

    # The same file again: the same id, applied once, and the owner is told why.
    again = shop("catalog", "import", str(edited), env=env)
    assert again.returncode == 0 and "0 changed" in again.stdout, again.stdout + again.stderr
    assert "FEW: restock +10 was applied before" in again.stdout
    assert await _on_hand(js, "FEW", 59)

    # A new export knows the restock (restock_no: 1); a write-off typed into it applies.
    assert shop("catalog", "export", str(exported), env=env).returncode == 0
    few = _product(exported, "FEW")
    assert few["restock_no"] == 1 and few["on_hand_at_export"] == 59 and "stock" not in few
    _edit(exported, edited, "FEW", restock=-2)
    second = shop("catalog", "import", str(edited), env=env)
    assert second.returncode == 0 and "1 changed" in second.stdout, second.stdout + second.stderr
    await wait_until(lambda: _on_hand(js, "FEW", 57), what="the write-off applied")

    # A hand-written file still counts with `stock:`, and refuses a count beside a restock.
    both = tmp_path / "both.yaml"
    _edit(catalog_file, both, "FEW", restock=1)
    refused = shop("catalog", "import", str(both), env=env)
    assert refused.returncode == 1 and "stock (a count) and restock" in refused.stderr


def _product(path: Path, sku: str) -> dict[str, Any]:
    catalog = yaml.safe_load(path.read_text(encoding="utf-8"))
    products = [p for c in catalog["categories"] for p in c["products"]]
    return next(p for p in products if p["sku"] == sku)


def _edit(source: Path, target: Path, sku: str, **changes: Any) -> None:
    """`source` with the product's fields changed, written to `target`, as an owner edits."""
    catalog = yaml.safe_load(source.read_text(encoding="utf-8"))
    for category in catalog["categories"]:
        for product in category["products"]:
            if product["sku"] == sku:
                product.update(changes)
    target.write_text(yaml.safe_dump(catalog, allow_unicode=True), encoding="utf-8")


async def _admin(nc: Client, command: AdminCommand) -> None:
    response = await nc.request(
        subjects.INVENTORY_ADMIN, bus.encode(AdminRequest((command,))), timeout=10
    )
    assert msgspec.json.decode(response.data, type=AdminReply).errors == ()
