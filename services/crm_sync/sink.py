"""What crm_sync writes to: the Google Sheet or, without credentials, CSV files.

Both keep the same rules (order rows keyed by order number, ledger rows by fact) and fail the
same three ways: `Unavailable` (try again soon: an outage, a timeout, a quota answer),
`Misconfigured` (a person has to act: a key file, a share, a renamed tab; its message says what)
and `Refused` (the sheet does not take what a fact says: that fact goes to the runner's policy,
the others are written).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from services.crm_sync import core, pace


class Unavailable(Exception):
    """The sheet cannot be written now; nothing was lost, the batch is tried again."""


class Misconfigured(Exception):
    """The sheet cannot be written until someone fixes what the message says."""


class Refused(Exception):
    """The sheet refused the values written (a cell over Google's limit, say): trying the same
    again will not help."""


class Sink(Protocol):
    where: str  # for people: "Google Sheet <id>", "CSV files in data/crm"

    async def open(self) -> None:
        """Create what is missing (tabs, headers) and load the index of what is there."""

    async def apply(self, plan: core.Plan) -> int:
        """Write a batch's rows: its orders' rows in place, its ledger rows not already there;
        returns how many rows were written. Returns only once the sheet has confirmed; raises
        Unavailable, Misconfigured or Refused."""

    async def write_stock(self, rows: Sequence[Sequence[core.Cell]]) -> None:
        """Replace the Stock tab's rows."""

    def quota(self) -> pace.Quota | None:
        """The write requests made in the quota's window and allowed in it; None where writes
        are not counted (files on disk)."""
