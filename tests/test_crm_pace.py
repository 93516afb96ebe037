"""crm_sync's pace: how long the writer gathers before its next write, given the quota used.

The last test plays a burst against the pace on a simulated clock (no I/O): 100 paid orders in
10 s, three write requests a batch, each write taking a moment.
"""

from __future__ import annotations

from collections import deque

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.crm_sync.pace import FULL_BATCH, MAX_GATHER_S, Quota, gather_for


def test_a_sheet_without_a_quota_is_written_at_once() -> None:
    assert gather_for(None, since_write=0.0, waiting=1, oldest=0.0) == 0.0


@pytest.mark.parametrize("used", [0, 1, 3, 6])
def test_far_from_the_quota_it_writes_at_once(used: int) -> None:
    assert gather_for(Quota(used, 50), since_write=0.0, waiting=1, oldest=0.0) == 0.0


def test_as_the_quota_fills_it_gathers_longer() -> None:
    waits = [
        gather_for(Quota(used, 50), since_write=0.0, waiting=5, oldest=0.0) for used in range(7, 50)
    ]
    assert waits == sorted(waits) and waits[0] > 0
    assert gather_for(Quota(10, 50), since_write=0.0, waiting=5, oldest=0.0) == pytest.approx(
        12.0 * 10 / 12
    )
    assert gather_for(Quota(49, 50), since_write=0.0, waiting=5, oldest=0.0) == MAX_GATHER_S


def test_the_time_since_the_last_write_counts() -> None:
    quota = Quota(7, 50)  # a spacing of 8.4 s after each write
    assert gather_for(quota, since_write=0.0, waiting=5, oldest=0.0) == pytest.approx(8.4)
    assert gather_for(quota, since_write=5.0, waiting=5, oldest=0.0) == pytest.approx(3.4)
    assert gather_for(quota, since_write=9.0, waiting=5, oldest=0.0) == 0.0


def test_no_fact_is_held_past_the_bound_of_age() -> None:
    quota = Quota(40, 50)  # a spacing of 48 s after each write
    assert gather_for(quota, since_write=0.0, waiting=5, oldest=0.0) == MAX_GATHER_S
    assert gather_for(quota, since_write=0.0, waiting=5, oldest=4.0) == MAX_GATHER_S - 4.0
    assert gather_for(quota, since_write=0.0, waiting=5, oldest=MAX_GATHER_S) == 0.0


def test_a_backlog_is_written_at_once() -> None:
    """Facts stored long ago (an outage, a restart): gathering would only make them later."""
    assert gather_for(Quota(20, 50), since_write=0.0, waiting=700, oldest=120.0) == 0.0


def test_a_full_batch_is_written_at_once() -> None:
    assert gather_for(Quota(40, 50), since_write=0.0, waiting=FULL_BATCH, oldest=0.0) == 0.0
    assert gather_for(Quota(40, 50), since_write=0.0, waiting=FULL_BATCH - 1, oldest=0.0) > 0


@given(
    used=st.integers(0, 300),
    limit=st.integers(1, 300),
    since=st.floats(0, 1e6),
    waiting=st.integers(0, 10 * FULL_BATCH),
    oldest=st.floats(0, 1e6),
)
def test_never_longer_than_the_bound(
    used: int, limit: int, since: float, waiting: int, oldest: float
) -> None:
    wait = gather_for(Quota(used, limit), since, waiting, oldest)
    assert 0.0 <= wait <= max(0.0, MAX_GATHER_S - oldest)


def _burst(
    orders: int, seconds: float, limit: int = 50, paced: bool = True
) -> tuple[int, float, int]:
    """(write requests, seconds from the last order to the sheet complete, most writes in any
    minute) for `orders` arriving evenly over `seconds`, each order's facts at once."""
    write_time, per_batch, window = 0.3, 3, 60.0
    arrivals = [n * seconds / (orders - 1) for n in range(orders)]
    writes: deque[float] = deque([-1.0, -1.0])  # the tabs made at start
    now, wrote_at, written, requests, most = 0.0, -1e9, 0, 0, 0
    while written < orders:
        if arrivals[written] > now:
            now = arrivals[written]
            continue
        while writes and now - writes[0] >= window:
            writes.popleft()
        waiting = sum(1 for at in arrivals[written:] if at <= now) * 5
        quota = Quota(len(writes), limit, window)
        wait = gather_for(quota, now - wrote_at, waiting, now - arrivals[written])
        if paced and wait > 0:
            now += wait
            continue
        if len(writes) + per_batch > limit:  # the client-side quota would hold the write
            now = writes[0] + window
            continue
        written = sum(1 for at in arrivals if at <= now)
        writes.extend([now] * per_batch)
        requests += per_batch
        most = max(most, len(writes))
        now += write_time
        wrote_at = now
    return requests, now - arrivals[-1], most


@pytest.mark.parametrize("seconds", [1.0, 5.0, 10.0, 15.0])
def test_a_burst_of_100_paid_orders_takes_a_handful_of_writes(seconds: float) -> None:
    requests, late, most = _burst(100, seconds)
    assert requests <= 15 and late <= 15.0 and most < 50


def test_unpaced_the_same_burst_uses_up_the_quota_and_stands_still() -> None:
    requests, late, most = _burst(100, 10.0, paced=False)
    assert most == 50 and late > 40.0 and requests > 15
