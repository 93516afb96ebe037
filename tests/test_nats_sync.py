"""Durable on one node: the embedded nats-server writes every message to disk before its ack
unless NATS_SYNC_INTERVAL relaxes it; the running server itself says which (/varz)."""

from __future__ import annotations

from pathlib import Path

import pytest

from libs import settings
from shop.embedded_nats import EmbeddedNats, free_port
from shop.supervisor import embedded_nats


def jetstream_config(server: EmbeddedNats) -> dict[str, object]:
    jetstream = server.monitor("varz")["jetstream"]
    assert isinstance(jetstream, dict)
    config = jetstream["config"]
    assert isinstance(config, dict)
    return config


def test_the_setting() -> None:
    assert settings.load({}).nats_sync_interval == "always"
    assert settings.load({"NATS_SYNC_INTERVAL": "120s"}).nats_sync_interval == "120s"
    assert settings.load({"NATS_SYNC_INTERVAL": "500ms"}).nats_sync_interval == "500ms"
    # "2m" would reach nats-server as two million seconds (its parser reads m as mega).
    for wrong in ("2m", "sometimes", "0s"):
        with pytest.raises(settings.SettingsError, match="NATS_SYNC_INTERVAL"):
            settings.load({"NATS_SYNC_INTERVAL": wrong})


@pytest.mark.parametrize(
    ("environ", "sync_always", "interval_ns"),
    [
        ({}, True, None),  # the default: every write synced
        ({"NATS_SYNC_INTERVAL": "120s"}, False, 120 * 10**9),
        ({"NATS_SYNC_INTERVAL": "250ms"}, False, 250 * 10**6),
    ],
)
def test_shop_up_runs_nats_with_the_chosen_sync(
    tmp_path: Path, environ: dict[str, str], sync_always: bool, interval_ns: int | None
) -> None:
    chosen = settings.load({"DATA_DIR": str(tmp_path), **environ})
    server = embedded_nats(chosen)  # what `shop up` starts
    server.port, server.http_port = free_port(), free_port()
    server.start()
    try:
        config = jetstream_config(server)
        assert bool(config.get("sync_always")) is sync_always
        if interval_ns is not None:
            assert config["sync_interval"] == interval_ns
    finally:
        server.stop()
