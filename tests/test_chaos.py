"""The short chaos run, in `make test`: 45 s of SIGKILLs while customers race for scarce stock.

Every process of the shop is real and killed at random (see tests/chaos.py for what is checked).
Each run draws a new seed and prints it first; `CHAOS_SEED=N` replays that seed's schedule. The
long run is `make chaos` (10 minutes; `make chaos CHAOS_SECONDS=120` for less).
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from tests import chaos

SECONDS = 45.0  # of chaos; start, settling and the checks add about 15 s


@pytest.mark.timeout(200)  # the settle deadline is 60 s: a stuck shop fails there, not here
async def test_chaos(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    chosen = os.environ.get("CHAOS_SEED", "").strip()
    seed = int(chosen) if chosen else random.SystemRandom().randrange(1_000_000)
    with capsys.disabled():  # shown in `make test`'s output, passing or not
        print(f"\nchaos seed {seed} (CHAOS_SEED={seed} replays it)")
    summary = await chaos.run(seed, SECONDS, tmp_path)
    report = summary.report(
        f"CHAOS_SEED={seed} .venv/bin/pytest tests/test_chaos.py, or "
        f".venv/bin/python -m tests.chaos --seed {seed} --seconds {SECONDS:g}"
    )
    with capsys.disabled():
        print("\n".join(summary.lines()))
    assert summary.ok, report
