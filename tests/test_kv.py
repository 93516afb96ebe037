"""Listing a KV bucket (libs.kv.keys/entries) and mirroring one (libs.kv.Mirror) on the real
nats-server."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import nats.errors
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType

from libs import bus, kv
from shop.embedded_nats import EmbeddedNats
from tests.harness import wait_until


async def _bucket(js: JetStreamContext, name: str, history: int = 1) -> object:
    return await js.create_key_value(KeyValueConfig(bucket=name, history=history))


async def test_keys_are_the_live_ones_with_their_latest_values(js: JetStreamContext) -> None:
    bucket = await _bucket(js, "t-live", history=5)
    assert await kv.keys(js, "t-live") == []
    await bucket.put("product.a", b"1")  # type: ignore[attr-defined]
    await bucket.put("product.b", b"1")  # type: ignore[attr-defined]
    await bucket.put("category.x", b"c")  # type: ignore[attr-defined]
    await bucket.put("product.a", b"2")  # type: ignore[attr-defined]
    await bucket.put("product.gone", b"1")  # type: ignore[attr-defined]
    await bucket.delete("product.gone")  # type: ignore[attr-defined]
    await bucket.put("product.purged", b"1")  # type: ignore[attr-defined]
    await bucket.purge("product.purged")  # type: ignore[attr-defined]

    assert sorted(await kv.keys(js, "t-live")) == ["category.x", "product.a", "product.b"]
    assert sorted(await kv.entries(js, "t-live", "product.>")) == [
        ("product.a", b"2"),
        ("product.b", b"1"),
    ]
    assert await kv.keys(js, "t-live", "nothing.>") == []
    consumers = await js.consumers_info("KV_t-live")
    assert consumers == [], "each listing removes its consumer"


async def test_more_keys_than_one_fetch(js: JetStreamContext) -> None:
    bucket = await _bucket(js, "t-many")
    for n in range(2_345):
        await bucket.put(f"k{n}", b"v")  # type: ignore[attr-defined]
    assert sorted(await kv.keys(js, "t-many")) == sorted(f"k{n}" for n in range(2_345))


@pytest.fixture
def busy_cpus() -> Iterator[None]:
    """Every core busy with something else, as on a loaded CI machine."""
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(3)]
    yield
    for burner in burners:
        burner.kill()
        burner.wait()


async def test_1500_listings_in_a_row_on_a_loaded_machine_all_right(
    js: JetStreamContext, busy_cpus: None
) -> None:
    # nats-py's own KeyValue.keys() got both wrong: about 2 in 500 said "no keys" (a watcher race,
    # nats.py#842), and each left a consumer behind for 5 minutes, so from the 1,001st on the
    # server refused ("maximum consumers limit reached"). The bot listed the catalog per tap then.
    bucket = await _bucket(js, "t-load")
    for n in range(12):
        await bucket.put(f"product.p{n}", b"x" * 200)  # type: ignore[attr-defined]
    wrong = 0
    for _ in range(1_500):
        wrong += len(await kv.keys(js, "t-load")) != 12
    assert wrong == 0


class Doc(msgspec.Struct):
    n: int


async def test_documents_values_in_one_pass(js: JetStreamContext) -> None:
    docs = await kv.Documents.open(js, "t-docs", Doc)
    await docs.put("a", Doc(1))
    await docs.put("b", Doc(2))
    await docs.put("c", Doc(3))
    await docs.delete("c")
    bucket = await js.key_value("t-docs")
    await bucket.put("unreadable", b"{not json")
    assert sorted(d.n for d in await docs.values()) == [1, 2]


# Mirror: a bucket in memory, kept current by a watch of its own -------------------------------


async def _consumers(js: JetStreamContext, bucket: str) -> list[str]:
    return [str(info.name) for info in await js.consumers_info(f"KV_{bucket}")]


async def test_mirror_is_filled_at_open_and_sees_puts_deletes_and_purges(
    nc: Client, js: JetStreamContext
) -> None:
    bucket: Any = await _bucket(js, "t-mirror", history=5)
    await bucket.put("a", b'{"n": 1}')
    await bucket.put("b", b'{"n": 2}')
    await bucket.put("a", b'{"n": 11}')
    await bucket.put("gone", b'{"n": 3}')
    await bucket.delete("gone")
    await bucket.put("purged", b'{"n": 4}')
    await bucket.purge("purged")
    await bucket.put("unreadable", b"{not json")

    mirror = await kv.Mirror.open(nc, js, "t-mirror", kv.decoder(Doc))
    try:
        # Loaded whole before open returns: no waiting here.
        assert {key: held.value for key, held in mirror.items()} == {"a": Doc(11), "b": Doc(2)}
        assert mirror.get("gone") is None and mirror.get("unreadable") is None
        held = mirror.held("a")
        assert held is not None and held.revision == 3
        assert mirror.loads == 1

        version = mirror.version
        await bucket.put("c", b'{"n": 5}')
        assert await asyncio.wait_for(mirror.changed(version), 10) > version
        await bucket.put("b", b'{"n": 22}')
        await bucket.delete("a")
        await bucket.put("d", b'{"n": 6}')
        await bucket.purge("d")
        await wait_until(
            lambda: {key: h.value for key, h in mirror.items()} == {"b": Doc(22), "c": Doc(5)},
            what="the changes mirrored",
        )
        assert [key for key, _ in mirror.items("c")] == ["c"]
        assert len(await _consumers(js, "t-mirror")) == 1, "one watch, reads ask nothing"
        assert mirror.loads == 1
    finally:
        await mirror.close()
    assert await _consumers(js, "t-mirror") == [], "closed: its consumer removed"


async def test_mirror_of_an_empty_bucket_opens_and_fills(nc: Client, js: JetStreamContext) -> None:
    bucket: Any = await _bucket(js, "t-mirror-empty")
    mirror = await asyncio.wait_for(kv.Mirror.open(nc, js, "t-mirror-empty", kv.decoder(Doc)), 10)
    try:
        assert len(mirror) == 0
        await bucket.put("x", b'{"n": 1}')
        await wait_until(lambda: mirror.get("x") == Doc(1), what="the first key")
    finally:
        await mirror.close()


async def test_mirror_many_keys_at_open(nc: Client, js: JetStreamContext) -> None:
    bucket: Any = await _bucket(js, "t-mirror-many")
    await asyncio.gather(*(bucket.put(f"k{n}", b'{"n": %d}' % n) for n in range(3_000)))
    mirror = await kv.Mirror.open(nc, js, "t-mirror-many", kv.decoder(Doc))
    try:
        assert len(mirror) == 3_000
        assert mirror.get("k2999") == Doc(2999)
    finally:
        await mirror.close()


async def test_mirror_reloads_when_its_watch_is_lost(nc: Client, js: JetStreamContext) -> None:
    bucket: Any = await _bucket(js, "t-mirror-lost")
    await bucket.put("stays", b'{"n": 1}')
    await bucket.put("goes", b'{"n": 2}')
    mirror = await kv.Mirror.open(nc, js, "t-mirror-lost", kv.decoder(Doc), heartbeat=0.5)
    try:
        (consumer,) = await _consumers(js, "t-mirror-lost")
        await js.delete_consumer("KV_t-mirror-lost", consumer)  # the watch gone under it
        await bucket.delete("goes")  # while nobody watches: only a reload can see it
        await bucket.put("new", b'{"n": 3}')
        await wait_until(
            lambda: {key: h.value for key, h in mirror.items()} == {"stays": Doc(1), "new": Doc(3)},
            what="the bucket reloaded",
        )
        assert mirror.loads == 2
        await bucket.put("later", b'{"n": 4}')
        await wait_until(lambda: mirror.get("later") == Doc(4), what="the new watch's changes")
    finally:
        await mirror.close()


@pytest.mark.parametrize("how", ["stop", "kill"])
async def test_mirror_outlives_a_nats_restart(tmp_path: Path, how: str) -> None:
    server = EmbeddedNats(tmp_path / "own-nats")
    server.start()
    try:
        client = await bus.connect(server.url, name="test")
        js = client.jetstream(timeout=5)
        bucket: Any = await js.create_key_value(
            KeyValueConfig(bucket="t-restart", history=1, storage=StorageType.FILE)
        )
        await bucket.put("before", b'{"n": 1}')
        await bucket.put("deleted", b'{"n": 2}')
        mirror = await kv.Mirror.open(client, js, "t-restart", kv.decoder(Doc), heartbeat=0.5)
        try:
            server.stop() if how == "stop" else server.kill()
            server.start()
            await wait_until(lambda: client.is_connected, what="the client reconnected")

            async def written() -> bool:
                try:
                    await bucket.put("after", b'{"n": 3}')
                    await bucket.delete("deleted")
                except (*bus.TRANSIENT, nats.errors.Error):
                    return False  # JetStream still starting
                return True

            await wait_until(written, what="writes after the restart")
            await wait_until(
                lambda: (
                    {key: h.value for key, h in mirror.items()}
                    == {"before": Doc(1), "after": Doc(3)}
                ),
                timeout=30,
                what="the writes after the restart mirrored",
            )
            await bucket.put("later", b'{"n": 4}')
            await wait_until(lambda: mirror.get("later") == Doc(4), what="later writes mirrored")
            assert mirror.loads >= 2, "the watch was lost with the server and loaded again"
        finally:
            await mirror.close()
            await client.close()
    finally:
        server.stop()
