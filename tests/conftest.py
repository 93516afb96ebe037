"""Fixtures: a real nats-server per session, a clean bus per test, services killed at the end."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext

from libs import bus, subjects
from shop.embedded_nats import EmbeddedNats, free_port
from tests.fakes.telegram import FakeTelegram
from tests.fakes.yookassa import FakeYooKassa
from tests.harness import CATALOG, Facts, ServiceProcess, reset_bus


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedNats]:
    server = EmbeddedNats(tmp_path_factory.mktemp("nats"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def nats_url(nats_server: EmbeddedNats) -> str:
    await reset_bus(nats_server.url, nats_server.store_dir)
    return nats_server.url


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Client]:
    client = await bus.connect(nats_url, name="test")
    js = client.jetstream()
    await subjects.declare_streams(js)
    yield client
    await client.close()


@pytest.fixture
def js(nc: Client) -> JetStreamContext:
    return nc.jetstream(timeout=10)


@pytest.fixture
def catalog_file(tmp_path: Path) -> Path:
    path = tmp_path / "catalog.yaml"
    path.write_text(CATALOG)
    return path


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Callable[..., ServiceProcess]]:
    """Start services; every one still running at the end of the test is killed."""
    started: list[ServiceProcess] = []

    def start(name: str, nats_url: str, **settings: Any) -> ServiceProcess:
        env = {
            **os.environ,
            "NATS_URL": nats_url,
            "DATA_DIR": str(tmp_path / "data"),
            "LOG_FORMAT": "json",
            # Listeners a test does not ask for on ports of their own: tests run side by side.
            "INVENTORY_HTTP_PORT": str(free_port()),
            "BOT_HTTP_PORT": str(free_port()),
            **{key.upper(): str(value) for key, value in settings.items()},
        }
        service = ServiceProcess(name, env, tmp_path / f"{name}-{len(started)}.log").start()
        started.append(service)
        return service

    yield start
    for service in started:
        if service.alive():
            service.kill()


@pytest.fixture
async def facts(js: JetStreamContext) -> Facts:
    collected = Facts()
    await collected.start(js)
    return collected


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as fake:
        yield fake


@pytest.fixture
async def yookassa() -> AsyncIterator[FakeYooKassa]:
    fake = FakeYooKassa()
    await fake.start()
    yield fake
    await fake.stop()
