"""The short chaos runs, in `make test`: 45 s of SIGKILLs while customers race for scarce stock,
on one nats-server; then 30 s on a three-node NATS cluster whose leaders are killed.

Every process of the shop is real and killed at random (see tests/chaos.py for what is checked).
Each run draws a new seed and prints it first; `CHAOS_SEED=N` replays that seed's schedule. The
long runs are `make chaos` and `make cluster` (10 minutes; `CHAOS_SECONDS=120` for less).
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from tests import chaos

SECONDS = 45.0  # of chaos; start, settling and the checks add about 15 s
CLUSTER_SECONDS = 30.0  # six kills at least: each leader role and three services


def seed_for_run(capsys: pytest.CaptureFixture[str], what: str) -> int:
    chosen = os.environ.get("CHAOS_SEED", "").strip()
    seed = int(chosen) if chosen else random.SystemRandom().randrange(1_000_000)
    with capsys.disabled():  # shown in `make test`'s output, passing or not
        print(f"\n{what} seed {seed} (CHAOS_SEED={seed} replays it)")
    return seed


@pytest.mark.timeout(200)  # the settle deadline is 60 s: a stuck shop fails there, not here
async def test_chaos(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    seed = seed_for_run(capsys, "chaos")
    summary = await chaos.run(seed, SECONDS, tmp_path)
    report = summary.report(
        f"CHAOS_SEED={seed} .venv/bin/pytest tests/test_chaos.py, or "
        f".venv/bin/python -m tests.chaos --seed {seed} --seconds {SECONDS:g}"
    )
    with capsys.disabled():
        print("\n".join(summary.lines()))
    assert summary.ok, report


@pytest.mark.timeout(200)
async def test_cluster_chaos(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Three nats-servers from deploy/nats-cluster.conf, R3 streams, two inventories; the leader
    of INVENTORY, of ORDERS and the meta leader are each killed and restarted, services too."""
    seed = seed_for_run(capsys, "cluster chaos")
    summary = await chaos.run(seed, CLUSTER_SECONDS, tmp_path, cluster=True)
    report = summary.report(
        f"CHAOS_SEED={seed} .venv/bin/pytest tests/test_chaos.py -k cluster, or "
        f".venv/bin/python -m tests.chaos --cluster --seed {seed} --seconds {CLUSTER_SECONDS:g}"
    )
    with capsys.disabled():
        print("\n".join(summary.lines()))
    assert summary.ok, report
    assert all(summary.kills[role] for role in chaos.LEADERS), report
