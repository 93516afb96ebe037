"""How long the writer gathers facts before its next write to the sheet (pure: no I/O, no clock).

Google allows so many write requests a minute, and every batch costs a read and up to three
writes whether it carries one fact or a thousand. While the minute's quota is far from used,
the writer writes at once; as it fills, it waits longer after each write, so the next one
carries everything that arrived meanwhile. A burst thus costs a handful of writes instead of
using up the minute and then standing still until the window frees.
"""

from __future__ import annotations

from dataclasses import dataclass

# No fact is held for a gather once it is this old (stored on the bus this long ago): a fact is
# in the sheet within about this long, a backlog (after an outage, a restart) is written at
# once, and with three writes a batch the writer spends at most 18 writes a minute gathering,
# well under any quota, however long the flow lasts.
MAX_GATHER_S = 10.0
FREE_SHARE = 8  # the first 1/8 of the quota is spent at once (an idle shop's sale shows now)
FULL_BATCH = 3_000  # facts enough for one write: gathering more would only delay them


@dataclass(frozen=True, slots=True)
class Quota:
    """The sheet's write quota as the sink sees it now."""

    used: int  # write requests in the trailing window
    limit: int  # write requests allowed in any window
    window: float = 60.0  # seconds


def gather_for(quota: Quota | None, since_write: float, waiting: int, oldest: float) -> float:
    """Seconds still to gather before the next write; 0 means write now.

    `since_write`: seconds since the last write was confirmed; `waiting`: facts held for it;
    `oldest`: the age of the oldest of them. Past the free share, the writer keeps a spacing
    after each write of the time the quota's steady rate (`limit` per `window`) takes to earn
    back what the window holds, and holds no fact past MAX_GATHER_S of age. A sink without a
    quota (CSV files) is written at once.
    """
    if quota is None or waiting >= FULL_BATCH or quota.used * FREE_SHARE < quota.limit:
        return 0.0
    spacing = quota.used * quota.window / quota.limit
    return max(0.0, min(spacing - since_write, MAX_GATHER_S - oldest))
