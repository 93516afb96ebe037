"""The Orders tab's shell: the owner's Fulfilment edits (read in the Catalog tab's sync round,
by the writer-lease holder) taken as steps on the bus like the admin chat's, once; a refused
one's cells put back with the reason in the cell's note."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Protocol

import msgspec
from nats.js import JetStreamContext

from libs import fulfilment, lifecycle, log
from services.crm_sync import orders_tab
from services.crm_sync.orders_tab import Refusal, Seen

_log = log.get(__name__)
# A refusal take() gives that is no answer to the owner: the step is the order's already (a
# kill between the publish and this sync; the row is rewritten once the fact reaches the
# writer), or other desks kept acting meanwhile (tried again next sync).
_NOT_REFUSED = frozenset({"already", "busy"})


class States(Protocol):
    """The orders' lifecycle states kept in KV crm-orders (main.OrderStates)."""

    async def read(self, order_ids: Iterable[str]) -> dict[str, lifecycle.Order]: ...


class OrdersDesk:
    def __init__(self, js: JetStreamContext, states: States) -> None:
        self._js = js
        self._states = states
        # Each order's three cells last found asking nothing: not read from KV again until
        # they change (the first sync after a start looks at every row once).
        self._settled: dict[str, tuple[str, str, str]] = {}

    async def sync(
        self, rows: list[Seen], written: Mapping[str, str]
    ) -> tuple[list[tuple[int, dict[int, str], str]], list[int]]:
        """The steps the rows ask taken; the cells to put back (with their notes) and the rows
        whose step was taken, for the sheet to write."""
        cells = {row.order_id: (row.fulfilment, row.carrier, row.tracking) for row in rows}
        asking = [
            row
            for row in rows
            if row.fulfilment and self._settled.get(row.order_id) != cells[row.order_id]
        ]
        if not asking:
            return [], []
        states = await self._states.read([row.order_id for row in asking])
        now = datetime.now(UTC)
        put_back: list[tuple[int, dict[int, str], str]] = []
        taken: list[int] = []
        for row in asking:
            order: lifecycle.Order | None = states.get(row.order_id)
            if order is None:
                continue  # its facts not folded yet: looked at again next sync
            answer = orders_tab.edit(row, written.get(row.order_id), order, now)
            if answer is None:
                self._settled[row.order_id] = cells[row.order_id]
                continue
            if isinstance(answer, Refusal):
                reason = answer.reason
            else:
                done = await fulfilment.take(
                    self._js,
                    order,
                    answer.step,
                    fulfilment.BY_SHEET,
                    now,
                    carrier=answer.carrier,
                    tracking=answer.tracking,
                )
                if not isinstance(done, fulfilment.Refused):
                    _log.info(
                        "orders_tab.step_taken",
                        order_id=row.order_id,
                        step=answer.step,
                        carrier=answer.carrier,
                        tracking=answer.tracking,
                    )
                    taken.append(row.number)
                    continue
                if done.reason in _NOT_REFUSED:
                    continue
                reason = done.reason
            # Put back to what the order is on the bus, which may be ahead of the kept state.
            _, last = await fulfilment.latest(self._js, row.order_id)
            if last is not None and len(last.history) > len(order.fulfilment):
                order = msgspec.structs.replace(order, fulfilment=last.history)
            _log.info(
                "orders_tab.step_refused",
                order_id=row.order_id,
                asked=row.fulfilment,
                reason=reason,
            )
            put_back.append(
                (
                    row.number,
                    orders_tab.put_back(order),
                    orders_tab.note(reason, row.fulfilment, now),
                )
            )
        return put_back, taken
