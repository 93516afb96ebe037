"""The CRM as CSV files under DATA_DIR/crm, for a shop without Google credentials.

Same tabs and the same exactly-once rules as the Google Sheet: orders.csv is rewritten with the
order rows keyed by order number (columns a person added after ours are kept with their rows,
and a file made by an earlier version gets this version's columns where its own end); sales.csv
is only appended to, and a row whose key is already in it is never written again; daily.csv is
recomputed from the ledger. Every file is replaced atomically (a temporary file, then a rename),
so a crash mid-write leaves the old or the new.
"""

from __future__ import annotations

import asyncio
import csv
import io
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from services.crm_sync import core, pace
from services.crm_sync.sink import Misconfigured, Unavailable

ORDERS = "orders.csv"
SALES = "sales.csv"
DAILY = "daily.csv"
STOCK = "stock.csv"


class CsvSheet:
    def __init__(self, directory: Path) -> None:
        self.where = f"CSV files in {directory}"
        self._dir = directory
        self.orders: dict[str, core.OrderRow] = {}
        self.extra_header: list[str] = []  # a person's own columns after ours in orders.csv
        self.extra: dict[str, list[str]] = {}  # order id -> its cells in those columns
        self.ledger: list[core.SaleRow] = []
        self.keys: set[str] = set()
        self._loaded = False

    # the Sink ---------------------------------------------------------------------------------
    async def open(self) -> None:
        await _in_thread(self.load)
        self._loaded = True

    async def apply(self, plan: core.Plan) -> int:
        if not self._loaded:
            await self.open()
        new_sales = sum(sale.key not in self.keys for sale in plan.sales)
        await _in_thread(self.write, plan)
        return len(plan.orders) + new_sales

    async def write_stock(self, rows: Sequence[Sequence[core.Cell]]) -> None:
        if not self._loaded:
            await self.open()
        text_rows = [[core.text(cell) for cell in row] for row in rows]
        await _in_thread(_replace, self._dir / STOCK, core.STOCK_COLUMNS, text_rows)

    def quota(self) -> pace.Quota | None:
        return None  # files take every batch at once

    # the files ----------------------------------------------------------------------------------
    def load(self) -> None:
        """What is in the files now: the index of order rows and of ledger keys."""
        self._dir.mkdir(parents=True, exist_ok=True)
        self.orders, self.extra = {}, {}
        header, rows = _table(self._dir / ORDERS)
        ours = len(core.ORDER_COLUMNS)
        at = core.upgrade(header)
        if at is not None:  # made by an earlier version: our new columns go where its end
            header = [*header[:at], *core.ORDER_COLUMNS[at:], *header[at:]]
            rows = [[*row[:at], *[""] * (ours - at), *row[at:]] for row in rows]
        elif header and header[:ours] != list(core.ORDER_COLUMNS):
            raise ValueError(
                f"{ORDERS}: the header row does not start with {list(core.ORDER_COLUMNS)}; "
                "fix or remove it"
            )
        self.extra_header = header[ours:]
        for values in rows:
            row = core.order_row(list(values[:ours]))
            self.orders[row.order_id] = row
            self.extra[row.order_id] = list(values[ours:])
        if at is not None:
            self._write_orders(self.orders)
        self.ledger = [
            core.sale_row(list(values)) for values in _rows(self._dir / SALES, core.SALES_COLUMNS)
        ]
        self.keys = {sale.key for sale in self.ledger}

    def write(self, plan: core.Plan) -> None:
        """Write the plan; the index changes only once the files have (a failed write is
        tried again whole)."""
        new_sales = [sale for sale in plan.sales if sale.key not in self.keys]
        if new_sales:
            ledger = [*self.ledger, *new_sales]
            _replace(self._dir / SALES, core.SALES_COLUMNS, (s.values() for s in ledger))
            self.ledger = ledger
            self.keys.update(sale.key for sale in new_sales)
            _replace(self._dir / DAILY, core.DAILY_COLUMNS, core.daily(self.ledger))
        if plan.orders:
            orders = {**self.orders, **plan.orders}
            self._write_orders(orders)
            self.orders = orders

    def _write_orders(self, orders: dict[str, core.OrderRow]) -> None:
        rows = sorted(orders.values(), key=lambda r: (r.created, r.order_id))
        width = len(self.extra_header)
        _replace(
            self._dir / ORDERS,
            [*core.ORDER_COLUMNS, *self.extra_header],
            ([*r.values(), *(self.extra.get(r.order_id, []) + [""] * width)[:width]] for r in rows),
        )


async def _in_thread(call: Callable[..., None], *args: Any) -> None:
    try:
        await asyncio.to_thread(call, *args)
    except ValueError as exc:  # a header a person changed
        raise Misconfigured(str(exc)) from None
    except OSError as exc:  # a full disk, a read-only mount
        raise Unavailable(f"cannot write the CSV files: {exc}") from None


def _table(path: Path) -> tuple[list[str], list[list[str]]]:
    """A file's header row and its rows with a key (none if there is no file)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return [], []
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        return [], []
    return rows[0], [row for row in rows[1:] if row and row[0]]


def _rows(path: Path, header: Sequence[str]) -> list[list[str]]:
    got, rows = _table(path)
    if got and got != list(header):
        raise ValueError(f"{path.name}: the header row is not {list(header)}; fix or remove it")
    return rows


def _replace(path: Path, header: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    temporary = path.with_suffix(".tmp")
    with temporary.open("w", encoding="utf-8", newline="") as file:
        file.write(buffer.getvalue())
        file.flush()
        os.fsync(file.fileno())
    temporary.replace(path)
