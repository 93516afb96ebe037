"""STREAM_REPLICAS: every stream, KV bucket and object store with that many copies, changed in
place on an existing deployment; a refusal is one clear line. On a real three-node cluster from
deploy/nats-cluster.conf, and on the single test server (which cannot keep three copies)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import msgspec
import nats.js.errors
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig

from libs import bus, settings, subjects
from libs.kv import Documents
from shop.embedded_nats import NatsCluster
from tests.harness import shop, wait_until


class Note(msgspec.Struct, frozen=True):
    text: str


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    nodes = NatsCluster(tmp_path_factory.mktemp("cluster"))
    nodes.start()
    yield nodes
    nodes.stop()


@pytest.fixture
async def cluster_js(cluster: NatsCluster) -> AsyncIterator[JetStreamContext]:
    nc: Client = await bus.connect(cluster.url, name="test-replicas")
    js = nc.jetstream(timeout=10)
    await wait_until(lambda: answers(js), 30, "the cluster's JetStream API")
    for name in await js.streams_info():
        await js.delete_stream(str(name.config.name))
    yield js
    await nc.close()


# Every stream the calls below make (a cluster's stream list can miss one mid-election; asked
# one by one, each answers).
NAMES = [
    *(str(config.name) for config in subjects.STREAMS),
    f"KV_{subjects.CATALOG_BUCKET}",
    f"KV_{subjects.STOCK_BUCKET}",
    f"OBJ_{subjects.SNAPSHOT_BUCKET}",
    "KV_t-notes",
]


async def answers(js: JetStreamContext) -> bool:
    try:
        await js.account_info()
    except (nats.js.errors.Error, *bus.TRANSIENT):
        return False
    return True


async def replicas_of(js: JetStreamContext) -> dict[str, int]:
    return {name: (await js.stream_info(name)).config.num_replicas or 1 for name in NAMES}


def test_stream_replicas_setting() -> None:
    assert settings.load({}).stream_replicas == 1
    assert settings.load({"STREAM_REPLICAS": "3"}).stream_replicas == 3
    with pytest.raises(settings.SettingsError, match="STREAM_REPLICAS"):
        settings.load({"STREAM_REPLICAS": "0"})


async def test_every_stream_bucket_and_store_gets_the_replicas_and_changes_in_place(
    cluster_js: JetStreamContext,
) -> None:
    js = cluster_js
    # A deployment from before: one copy of everything, with data in it.
    await subjects.declare_streams(js, replicas=1)
    _, stock, _ = await subjects.declare_buckets(js, replicas=1)
    docs = await Documents.open(js, "t-notes", Note, replicas=1)
    await stock.put("TEA", b"7")
    await docs.put("a", Note("kept"))
    ack = await js.publish("orders.placed.o1", b"{}")
    durable = ConsumerConfig(durable_name="t-reader", ack_policy=AckPolicy.EXPLICIT)
    await subjects.declare_consumer(js, subjects.ORDERS, durable)
    assert set((await replicas_of(js)).values()) == {1}

    # STREAM_REPLICAS=3 on the next start: the same calls the services make.
    await subjects.declare_streams(js, replicas=3)
    _, stock, snapshots = await subjects.declare_buckets(js, replicas=3)
    docs = await Documents.open(js, "t-notes", Note, replicas=3)
    assert await replicas_of(js) == dict.fromkeys(NAMES, 3)
    # Nothing lost on the way, and every copy serves.
    assert (await stock.get("TEA")).value == b"7"
    assert await docs.get("a") == Note("kept")
    assert (await js.get_msg(subjects.ORDERS, ack.seq)).subject == "orders.placed.o1"
    await snapshots.put("state", b"snapshot")
    info = await js.stream_info(subjects.INVENTORY)
    assert info.cluster is not None and info.cluster.leader
    assert len(info.cluster.replicas or []) == 2
    # A durable consumer (the services' kind: replicas as its stream's) follows its stream.
    reader = await js.consumer_info(subjects.ORDERS, "t-reader")
    assert reader.cluster is not None and len(reader.cluster.replicas or []) == 2

    # A tool that does not say (replicas None) leaves the count alone: no scaling down.
    await subjects.declare_streams(js)
    await subjects.declare_buckets(js)
    await Documents.open(js, "t-notes", Note)
    assert set((await replicas_of(js)).values()) == {3}

    # And back down when the operator asks for it.
    await subjects.declare_streams(js, replicas=1)
    assert (await js.stream_info(subjects.ORDERS)).config.num_replicas == 1


async def test_a_single_server_refuses_three_copies_with_a_clear_error(
    js: JetStreamContext,
) -> None:
    with pytest.raises(subjects.ReplicasRefused, match=r"ORDERS with 3 replica.*non-clustered"):
        await subjects.declare_streams(js, replicas=3)
    with pytest.raises(subjects.ReplicasRefused, match="KV_catalog with 3 replica"):
        await subjects.declare_buckets(js, replicas=3)


def test_a_service_told_three_copies_on_one_server_says_so_in_one_line(nats_url: str) -> None:
    names = {f.encode_name for f in msgspec.structs.fields(settings.Settings)}
    env = {k: v for k, v in os.environ.items() if k not in names}
    env |= {"NATS_URL": nats_url, "STREAM_REPLICAS": "3", "DATA_DIR": str(Path("/nonexistent"))}
    result = shop("run", "inventory", env=env)
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("shop: NATS refused stream ORDERS with 3 replica(s) (STREAM_REPLICAS)")


def test_cluster_nodes_sync_every_write(cluster: NatsCluster) -> None:
    """deploy/nats-cluster.conf with NATS_SYNC_INTERVAL=always, as the compose cluster runs it."""
    for node in cluster.nodes:
        jetstream = node.monitor("varz")["jetstream"]
        assert isinstance(jetstream, dict)
        assert jetstream["config"]["sync_always"] is True
        assert jetstream["meta"]["cluster_size"] == 3
