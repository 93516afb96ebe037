"""The CRM as CSV files under DATA_DIR/crm, for a shop without Google credentials.

Same tabs and the same exactly-once rules as the Google Sheet: orders.csv is rewritten with the
order rows keyed by order number; sales.csv is only appended to, and a row whose key is already
in it is never written again; daily.csv is recomputed from the ledger. Every file is replaced
atomically (a temporary file, then a rename), so a crash mid-write leaves the old or the new.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from services.crm_sync import core

ORDERS = "orders.csv"
SALES = "sales.csv"
DAILY = "daily.csv"
STOCK = "stock.csv"


class CsvSheet:
    def __init__(self, directory: Path) -> None:
        self._dir = directory
        self._dir.mkdir(parents=True, exist_ok=True)
        self.orders: dict[str, core.OrderRow] = {}
        self.ledger: list[core.SaleRow] = []
        self.keys: set[str] = set()

    def load(self) -> None:
        """What is in the files now: the index of order rows and of ledger keys."""
        self.orders = {}
        for values in _rows(self._dir / ORDERS, core.ORDER_COLUMNS):
            row = _order_row(values)
            self.orders[row.order_id] = row
        self.ledger = [_sale_row(values) for values in _rows(self._dir / SALES, core.SALES_COLUMNS)]
        self.keys = {sale.key for sale in self.ledger}

    def write(self, plan: core.Plan) -> None:
        new_sales = [sale for sale in plan.sales if sale.key not in self.keys]
        if new_sales:
            self.ledger.extend(new_sales)
            self.keys.update(sale.key for sale in new_sales)
            _replace(self._dir / SALES, core.SALES_COLUMNS, (s.values() for s in self.ledger))
            _replace(self._dir / DAILY, core.DAILY_COLUMNS, core.daily(self.ledger))
        if plan.orders:
            self.orders.update(plan.orders)
            rows = sorted(self.orders.values(), key=lambda r: (r.created, r.order_id))
            _replace(self._dir / ORDERS, core.ORDER_COLUMNS, (r.values() for r in rows))

    def write_stock(self, rows: Iterable[Sequence[str]]) -> None:
        _replace(self._dir / STOCK, ("SKU", "Title", "On hand", "Reserved", "Available"), rows)


def _rows(path: Path, header: Sequence[str]) -> list[list[str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        return []
    if rows[0] != list(header):
        raise ValueError(f"{path.name}: the header row is not {list(header)}; fix or remove it")
    return [row for row in rows[1:] if row and row[0]]


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


def _kopecks(value: str) -> int:
    whole, _, part = value.lstrip("-").partition(".")
    amount = int(whole or 0) * 100 + int((part + "00")[:2])
    return -amount if value.startswith("-") else amount


def _order_row(values: list[str]) -> core.OrderRow:
    values = (values + [""] * len(core.ORDER_COLUMNS))[: len(core.ORDER_COLUMNS)]
    return core.OrderRow(
        order_id=values[0],
        created=values[1],
        status=values[2] if values[2] in core.RANK else "placed",
        customer=values[3],
        telegram_user=values[4],
        phone=values[5],
        address=values[6],
        comment=values[7],
        items=values[8],
        total=_kopecks(values[9] or "0"),
        payment_id=values[10],
        paid_at=values[11],
        updated=values[12],
    )


def _sale_row(values: list[str]) -> core.SaleRow:
    values = (values + [""] * len(core.SALES_COLUMNS))[: len(core.SALES_COLUMNS)]
    return core.SaleRow(
        key=values[0],
        order_id=values[1],
        at=values[2],
        sku=values[3],
        title=values[4],
        qty=int(values[5] or 0),
        unit_price=_kopecks(values[6] or "0"),
        amount=_kopecks(values[7] or "0"),
    )
