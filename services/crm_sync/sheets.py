"""The Google Sheet, written through gspread with a service account.

Every batch is one read and at most three writes: the keys in column A of Orders and Sales are
read first (so rows a person deleted, moved or sorted are found where they are now, and a write
that landed without an answer is not made twice), then the new ledger rows are appended, the new
order rows appended, and the changed order rows and the Daily tab written in one values batch
update. The Catalog tab the owner edits is read whole, with the Orders tab's Fulfilment, Carrier
and Tracking cells (one request), and written back cell by cell in one values batch update
(catalog_sync); an Orders edit refused is put back with its note in one batch update. A
client-side quota keeps requests under Google's per-minute limit.
"""

from __future__ import annotations

import asyncio
import collections
import functools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import google.auth.exceptions
import gspread
import requests
from google.oauth2 import service_account

from libs import fulfilment, log
from services.crm_sync import catalog_tab, core, orders_tab, pace
from services.crm_sync.sink import Misconfigured, Refused, Unavailable

T = TypeVar("T")
_log = log.get(__name__)

GOOGLE = "https://sheets.googleapis.com"
SCOPES = ["https://www.googleapis.com/auth/spreadsheets"]
ORDERS, SALES, DAILY, STOCK = "Orders", "Sales", "Daily", "Stock"
CATALOG = "Catalog"
TABS: dict[str, tuple[str, ...]] = {
    ORDERS: core.ORDER_COLUMNS,
    SALES: core.SALES_COLUMNS,
    DAILY: core.DAILY_COLUMNS,
    STOCK: core.STOCK_COLUMNS,
    CATALOG: catalog_tab.CATALOG_COLUMNS,
}
# Columns shown as money, as whole numbers (0-based), per tab.
MONEY = {ORDERS: (9,), SALES: (6, 7), DAILY: (3,), CATALOG: (catalog_tab.PRICE,)}
WHOLE = {
    SALES: (5,),
    DAILY: (1, 2),
    STOCK: (2, 3, 4),
    CATALOG: (catalog_tab.WEIGHT, catalog_tab.ON_HAND, catalog_tab.AVAILABLE),
}
UNFORMATTED = {"valueRenderOption": "UNFORMATTED_VALUE"}
RAW = {"valueInputOption": "RAW"}
APPEND = {"valueInputOption": "RAW", "insertDataOption": "INSERT_ROWS"}


class TabGone(Misconfigured):
    """A range named a tab the spreadsheet no longer has: renamed or deleted by a person."""


class Quota:
    """At most `per_minute` requests in any 60 s (a sliding window, so no burst can exceed it)."""

    def __init__(self, per_minute: int, window: float = 60.0) -> None:
        self._limit = per_minute
        self._window = window
        self._times: collections.deque[float] = collections.deque()

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def window(self) -> float:
        return self._window

    def used(self) -> int:
        """Requests made in the trailing window."""
        self._forget(asyncio.get_running_loop().time())
        return len(self._times)

    def _forget(self, now: float) -> None:
        while self._times and now - self._times[0] >= self._window:
            self._times.popleft()

    async def acquire(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            self._forget(now)
            if len(self._times) < self._limit:
                self._times.append(now)
                return
            await asyncio.sleep(self._window - (now - self._times[0]))


def column(index: int) -> str:
    """0 -> A, 25 -> Z, 26 -> AA."""
    name = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        name = chr(65 + rest) + name
    return name


def _last(tab: str) -> str:
    return column(len(TABS[tab]) - 1)


class GoogleSheet:
    def __init__(
        self,
        key_file: Path,
        spreadsheet_id: str,
        api_url: str = GOOGLE,
        per_minute: int = 50,
        timeout: float = 30.0,
    ) -> None:
        self.where = f"Google Sheet {spreadsheet_id}"
        self._key_file = key_file
        self._id = spreadsheet_id
        self._api_url = api_url.rstrip("/")
        self._timeout = timeout
        self._reads = Quota(per_minute)
        self._writes = Quota(per_minute)
        self._lock = asyncio.Lock()  # one request at a time: the client is not shared by threads
        self._http: gspread.HTTPClient | None = None
        self._email = ""
        self._is_open = False
        self._orders: dict[str, core.OrderRow] = {}
        self._ledger: dict[str, core.SaleRow] = {}
        self._stock_rows = 0
        self._sheet_ids: dict[str, int] = {}
        self._warned: set[str] = set()
        self.reads = 0
        self.writes = 0

    # the two operations -------------------------------------------------------------------------
    async def open(self) -> None:
        async with self._lock:
            self._is_open = False
            http = await self._connect()
            meta = await self._read(http.fetch_sheet_metadata, self._id)
            titles = [s["properties"]["title"] for s in meta.get("sheets", [])]
            missing = [tab for tab in TABS if tab not in titles]
            if missing:
                await self._refuse_renamed(http, missing, [t for t in titles if t not in TABS])
                await self._write(http.batch_update, self._id, {"requests": _new_tabs(missing)})
                _log.info("crm.tabs_created", tabs=missing, sheet=self.where)
            self._sheet_ids = {
                s["properties"]["title"]: s["properties"]["sheetId"] for s in meta.get("sheets", [])
            }
            self._sheet_ids.update({tab: 1000 + list(TABS).index(tab) for tab in missing})
            tabs = list(TABS)
            found = await self._read(
                http.values_batch_get,
                self._id,
                [f"{tab}!A1:{_last(tab)}1" for tab in tabs]
                + [f"{ORDERS}!A2:{_last(ORDERS)}", f"{SALES}!A2:{_last(SALES)}"],
                dict(UNFORMATTED),
            )
            ranges = [r.get("values", []) for r in found["valueRanges"]]
            headers: list[dict[str, Any]] = []
            order_rows = ranges[len(tabs)]
            for tab, got in zip(tabs, ranges, strict=False):
                if not got or not any(got[0]):
                    headers.append({"range": f"{tab}!A1", "values": [list(TABS[tab])]})
                    continue
                at = core.upgrade([core.text(c) for c in got[0]]) if tab == ORDERS else None
                if at is not None:
                    await self._upgrade_orders(http, meta, at)
                    order_rows = [cells[:at] for cells in order_rows]  # read before the move
                else:
                    _check_header(tab, got[0])
            if headers:
                await self._write(http.values_batch_update, self._id, {**RAW, "data": headers})
            # The dropdowns, set at every start: a tab made or upgraded by any version gets them,
            # and a person who removed one gets it back (one request).
            dropdowns = _dropdowns(self._sheet_ids[ORDERS])
            await self._write(http.batch_update, self._id, {"requests": dropdowns})
            self._orders = {}
            for cells in order_rows:
                if cells and core.text(cells[0]):
                    row = core.order_row(cells)
                    self._orders.setdefault(row.order_id, row)
            self._ledger = {}
            for cells in ranges[len(tabs) + 1]:
                if cells and core.text(cells[0]):
                    sale = core.sale_row(cells)
                    self._ledger.setdefault(sale.key, sale)
            self._is_open = True
            _log.info(
                "crm.sheet_opened",
                sheet=self.where,
                orders=len(self._orders),
                sales=len(self._ledger),
            )

    async def _upgrade_orders(
        self, http: gspread.HTTPClient, meta: Mapping[str, Any], at: int
    ) -> None:
        """An Orders tab made by an earlier version: this version's new columns inserted where
        its own end (a person's columns beyond them move right, every cell kept), named."""
        (sheet_id,) = [
            s["properties"]["sheetId"]
            for s in meta.get("sheets", [])
            if s["properties"]["title"] == ORDERS
        ]
        added = list(TABS[ORDERS][at:])
        insert = {
            "insertDimension": {
                "range": {
                    "sheetId": sheet_id,
                    "dimension": "COLUMNS",
                    "startIndex": at,
                    "endIndex": at + len(added),
                },
                "inheritFromBefore": True,
            }
        }
        await self._write(http.batch_update, self._id, {"requests": [insert]})
        header = {"range": f"{ORDERS}!{column(at)}1", "values": [added]}
        await self._write(http.values_batch_update, self._id, {**RAW, "data": [header]})
        _log.info("crm.orders_tab_upgraded", columns=added, after=TABS[ORDERS][at - 1])

    async def apply(self, plan: core.Plan) -> int:
        return await self._opened(self._apply, plan)

    def quota(self) -> pace.Quota:
        return pace.Quota(self._writes.used(), self._writes.limit, self._writes.window)

    async def write_stock(self, rows: Sequence[Sequence[core.Cell]]) -> None:
        await self._opened(self._write_stock, rows)

    async def write_catalog(
        self,
        cells: Mapping[tuple[int, int], catalog_tab.Cell],
        appended: Sequence[Sequence[catalog_tab.Cell]],
    ) -> None:
        """Cells by (row number, 0-based column) in one values batch update, and new rows
        appended after the last (one more request, only when there are some)."""
        await self._opened(self._write_catalog, cells, appended)

    async def read_desks(
        self,
    ) -> tuple[list[list[catalog_tab.Cell]], list[orders_tab.Seen], dict[str, str]]:
        """The Catalog tab's rows, the Orders tab's edited cells and what this service last
        wrote in each order's Fulfilment cell (as the read saw it: taken with it), in one read
        request."""
        return await self._opened(self._read_desks)

    async def write_orders_back(
        self, put_back: Sequence[tuple[int, Mapping[int, str], str]], taken: Sequence[int]
    ) -> None:
        """Refused rows' cells put back with the reason as the Fulfilment cell's note, and the
        notes of rows whose step was taken cleared (one batch update)."""
        await self._opened(self._write_orders_back, put_back, taken)

    async def _opened(self, call: Callable[..., Awaitable[T]], *args: Any) -> T:
        """`call` on the opened spreadsheet, one request at a time."""
        try:
            return await self._open_and(call, *args)
        except TabGone:
            # Renamed or deleted since we looked: opening again says which tab was renamed to
            # what (one clear line), or makes a deleted one anew.
            return await self._open_and(call, *args)

    async def _open_and(self, call: Callable[..., Awaitable[T]], *args: Any) -> T:
        if not self._is_open:
            await self.open()
        async with self._lock:
            try:
                return await call(*args)
            except Misconfigured:
                self._is_open = False  # a renamed tab, a lost share: look again from the start
                raise

    # a batch ------------------------------------------------------------------------------------
    async def _write_stock(self, rows: Sequence[Sequence[core.Cell]]) -> None:
        http = self._client()
        values = [list(r) for r in rows]
        blank = [[""] * len(core.STOCK_COLUMNS)] * max(0, self._stock_rows - len(values))
        if not values and not blank:
            return
        data = [{"range": f"{STOCK}!A2", "values": values + blank}]
        await self._write(http.values_batch_update, self._id, {**RAW, "data": data})
        self._stock_rows = len(values)

    async def _read_desks(
        self,
    ) -> tuple[list[list[catalog_tab.Cell]], list[orders_tab.Seen], dict[str, str]]:
        http = self._client()
        first, last = column(orders_tab.FULFILMENT), column(orders_tab.TRACKING)
        found = await self._read(
            http.values_batch_get,
            self._id,
            [
                f"{CATALOG}!A1:{_last(CATALOG)}",
                f"{ORDERS}!A1:{_last(ORDERS)}1",
                f"{ORDERS}!A2:A",
                f"{ORDERS}!{first}2:{last}",
            ],
            dict(UNFORMATTED),
        )
        ranges = [r.get("values", []) for r in found["valueRanges"]]
        _check_header(CATALOG, ranges[0][0] if ranges[0] else [])
        _check_header(ORDERS, ranges[1][0] if ranges[1] else [])
        ids, edited = ranges[2], ranges[3]
        seen = []
        for index, id_cells in enumerate(ids):
            cells = edited[index] if index < len(edited) else []
            row = [*id_cells[:1], *[""] * (orders_tab.FULFILMENT - 1), *cells]
            got = orders_tab.seen(index + 2, row)
            if got.order_id:
                seen.append(got)
        written = {key: row.fulfilment for key, row in self._orders.items()}
        return ranges[0][1:], seen, written

    async def _write_orders_back(
        self, put_back: Sequence[tuple[int, Mapping[int, str], str]], taken: Sequence[int]
    ) -> None:
        sheet_id = self._sheet_ids[ORDERS]
        requests_: list[dict[str, Any]] = []
        for number, cells, note in put_back:
            values: list[dict[str, Any]] = [
                {"userEnteredValue": {"stringValue": cells[col]}}
                for col in range(orders_tab.FULFILMENT, orders_tab.TRACKING + 1)
            ]
            values[0]["note"] = note
            start = {
                "sheetId": sheet_id,
                "rowIndex": number - 1,
                "columnIndex": orders_tab.FULFILMENT,
            }
            requests_.append(
                {
                    "updateCells": {
                        "start": start,
                        "rows": [{"values": values}],
                        "fields": "userEnteredValue,note",
                    }
                }
            )
        for number in taken:
            start = {
                "sheetId": sheet_id,
                "rowIndex": number - 1,
                "columnIndex": orders_tab.FULFILMENT,
            }
            requests_.append(
                {"updateCells": {"start": start, "rows": [{"values": [{}]}], "fields": "note"}}
            )
        if requests_:
            await self._write(self._client().batch_update, self._id, {"requests": requests_})

    async def _write_catalog(
        self,
        cells: Mapping[tuple[int, int], catalog_tab.Cell],
        appended: Sequence[Sequence[catalog_tab.Cell]],
    ) -> None:
        http = self._client()
        if cells:
            data = [
                {"range": f"{CATALOG}!{column(col)}{number}", "values": [[value]]}
                for (number, col), value in sorted(cells.items())
            ]
            await self._write(http.values_batch_update, self._id, {**RAW, "data": data})
        if appended:
            body = {"values": [list(row) for row in appended]}
            await self._write(http.values_append, self._id, f"{CATALOG}!A1", dict(APPEND), body)

    async def _apply(self, planned: core.Plan) -> int:
        http = self._client()
        # Where every order row and ledger key is now (a person may have moved or deleted rows,
        # and a write whose answer was lost may have landed).
        found = await self._read(
            http.values_batch_get,
            self._id,
            [
                f"{ORDERS}!A1:{_last(ORDERS)}1",
                f"{SALES}!A1:{_last(SALES)}1",
                f"{ORDERS}!A2:A",
                f"{SALES}!A2:A",
            ],
            dict(UNFORMATTED),
        )
        ranges = [r.get("values", []) for r in found["valueRanges"]]
        _check_header(ORDERS, ranges[0][0] if ranges[0] else [])
        _check_header(SALES, ranges[1][0] if ranges[1] else [])
        rows = self._index(ranges[2], "order")
        in_sheet = set(self._index(ranges[3], "ledger row"))

        new_sales = [sale for sale in planned.sales if sale.key not in in_sheet]
        new_orders = [row for key, row in planned.orders.items() if key not in rows]
        changed = [(rows[key], row) for key, row in planned.orders.items() if key in rows]
        for row in new_orders:
            if row.order_id in self._orders:
                _log.warning(
                    "crm.row_missing",
                    order=row.order_id,
                    why="its row is gone from the Orders tab (deleted, or its number edited); "
                    "written again as a new row",
                )

        if new_sales:
            body = {"values": [sale.cells() for sale in new_sales]}
            await self._write(http.values_append, self._id, f"{SALES}!A1", dict(APPEND), body)
        if new_orders:
            body = {"values": [row.cells() for row in new_orders]}
            await self._write(http.values_append, self._id, f"{ORDERS}!A1", dict(APPEND), body)
        data: list[dict[str, Any]] = [
            {"range": f"{ORDERS}!A{number}:{_last(ORDERS)}{number}", "values": [row.cells()]}
            for number, row in changed
            if self._orders.get(row.order_id) != row
        ]
        ledger = {**self._ledger, **{sale.key: sale for sale in planned.sales}}
        if new_sales:
            kept = in_sheet | {sale.key for sale in new_sales}
            days = core.daily_cells(s for k, s in ledger.items() if k in kept)
            data.append({"range": f"{DAILY}!A2", "values": days})
        if data:
            await self._write(http.values_batch_update, self._id, {**RAW, "data": data})
        self._orders.update(planned.orders)
        self._ledger = ledger
        return len(new_sales) + len(new_orders) + len(data)

    def _index(self, cells: list[list[core.Cell]], what: str) -> dict[str, int]:
        """Key -> row number; a key seen twice keeps its first row (and is said once)."""
        index: dict[str, int] = {}
        for number, row in enumerate(cells, start=2):
            key = core.text(row[0]).strip() if row else ""
            if not key:
                continue
            if key in index:
                if f"{what}:{key}" not in self._warned:
                    self._warned.add(f"{what}:{key}")
                    _log.warning(
                        "crm.duplicate_key",
                        what=what,
                        key=key,
                        rows=[index[key], number],
                        why="the same key is in two rows (copied by a person?); "
                        "the first is kept up to date",
                    )
                continue
            index[key] = number
        return index

    # the API ------------------------------------------------------------------------------------
    async def _connect(self) -> gspread.HTTPClient:
        if self._http is not None:
            return self._http
        try:
            credentials = service_account.Credentials.from_service_account_file(  # type: ignore[no-untyped-call]
                str(self._key_file), scopes=SCOPES
            )
        except (OSError, ValueError) as exc:
            raise Misconfigured(
                f"GOOGLE_SERVICE_ACCOUNT_FILE {self._key_file}: cannot use it as a service "
                f"account key ({exc}); download a JSON key for the service account"
            ) from None
        self._email = credentials.service_account_email
        client = gspread.Client(credentials, http_client=_rooted(self._api_url))
        client.set_timeout(self._timeout)
        self._http = client.http_client
        return self._http

    def _client(self) -> gspread.HTTPClient:
        assert self._http is not None, "open() first"
        return self._http

    async def _read(self, call: Callable[..., T], *args: Any) -> T:
        await self._reads.acquire()
        self.reads += 1
        return await self._call(call, *args)

    async def _write(self, call: Callable[..., T], *args: Any) -> T:
        await self._writes.acquire()
        self.writes += 1
        return await self._call(call, *args)

    async def _call(self, call: Callable[..., T], *args: Any) -> T:
        try:
            return await asyncio.to_thread(functools.partial(call, *args))
        except gspread.exceptions.APIError as exc:
            raise self._explain(exc) from None
        except (requests.RequestException, google.auth.exceptions.TransportError) as exc:
            raise Unavailable(f"Google Sheets did not answer: {type(exc).__name__}") from None
        except google.auth.exceptions.RefreshError as exc:
            if getattr(exc, "retryable", False):
                raise Unavailable(f"Google sign-in failed for now: {exc}") from None
            raise Misconfigured(
                f"Google refused the service account key in {self._key_file} ({exc}); "
                "is the key deleted or the account disabled?"
            ) from None

    def _explain(self, exc: gspread.exceptions.APIError) -> Exception:
        status = exc.response.status_code
        message = str(exc.error.get("message", "")) or exc.response.reason
        if status == 429 or status >= 500:
            return Unavailable(f"Google Sheets answered {status}: {message}")
        if status == 403:
            return Misconfigured(
                f"the service account {self._email} may not open spreadsheet {self._id}: "
                f"share the spreadsheet with {self._email} as an Editor ({message})"
            )
        if status == 404:
            return Misconfigured(
                f"spreadsheet {self._id} was not found: check SHEETS_SPREADSHEET_ID ({message})"
            )
        if status == 400 and "parse range" in message:
            return TabGone(
                f"a tab of the spreadsheet is gone or was renamed ({message}); "
                f"the service writes to the tabs {', '.join(TABS)}"
            )
        if status == 400:
            return Refused(f"Google Sheets refused the values: {message}")
        return Misconfigured(f"Google Sheets refused a request: {status} {message}")

    async def _refuse_renamed(
        self, http: gspread.HTTPClient, missing: list[str], others: list[str]
    ) -> None:
        """A missing tab whose header row is found under another name was renamed by a person:
        say so rather than start a second, empty one."""
        if not others:
            return
        quoted = ["'" + title.replace("'", "''") + "'!1:1" for title in others]
        found = await self._read(http.values_batch_get, self._id, quoted, dict(UNFORMATTED))
        for title, got in zip(others, found["valueRanges"], strict=False):
            first = [core.text(c) for c in (got.get("values") or [[]])[0]]
            for tab in missing:
                if first[: len(TABS[tab])] == list(TABS[tab]):
                    raise Misconfigured(
                        f"the {tab} tab was renamed to {title!r}: rename it back to {tab!r} "
                        "(the service writes to tabs by name)"
                    )


def _check_header(tab: str, got: Sequence[core.Cell]) -> None:
    have = [core.text(c).strip() for c in got][: len(TABS[tab])]
    if have != list(TABS[tab]):
        raise Misconfigured(
            f"the header row of the {tab} tab is {have}, not {list(TABS[tab])}: a person changed "
            "it; put it back (columns are matched by position), or rename the tab to keep it and "
            "a fresh one is made"
        )


def _new_tabs(tabs: list[str]) -> list[dict[str, Any]]:
    """Requests that add the tabs, header row frozen and bold, money and counts formatted."""
    requests_: list[dict[str, Any]] = []
    for tab in tabs:
        sheet_id = 1000 + list(TABS).index(tab)
        requests_.append(
            {
                "addSheet": {
                    "properties": {
                        "sheetId": sheet_id,
                        "title": tab,
                        "gridProperties": {
                            "rowCount": 5000 if tab in (DAILY, STOCK, CATALOG) else 1000,
                            "columnCount": len(TABS[tab]),
                            "frozenRowCount": 1,
                        },
                    }
                }
            }
        )
        requests_.append(_format(sheet_id, 0, 1, None, {"textFormat": {"bold": True}}))
        for index in MONEY.get(tab, ()):
            pattern = {"numberFormat": {"type": "NUMBER", "pattern": "#,##0.00"}}
            requests_.append(_format(sheet_id, 1, None, index, pattern))
        for index in WHOLE.get(tab, ()):
            pattern = {"numberFormat": {"type": "NUMBER", "pattern": "0"}}
            requests_.append(_format(sheet_id, 1, None, index, pattern))
    return requests_


def _dropdowns(sheet_id: int) -> list[dict[str, Any]]:
    """The Orders tab's Fulfilment and Carrier columns as dropdowns (not strict: the service's
    own words, "cancelled by the customer", stay without a warning box in the way)."""

    def one_of(col: int, words: Sequence[str]) -> dict[str, Any]:
        span = {
            "sheetId": sheet_id,
            "startRowIndex": 1,
            "startColumnIndex": col,
            "endColumnIndex": col + 1,
        }
        condition = {"type": "ONE_OF_LIST", "values": [{"userEnteredValue": w} for w in words]}
        rule = {"condition": condition, "strict": False, "showCustomUi": True}
        return {"setDataValidation": {"range": span, "rule": rule}}

    carriers = list(fulfilment.CARRIER_TITLES.values())
    return [
        one_of(orders_tab.FULFILMENT, list(orders_tab.CHOICES)),
        one_of(orders_tab.CARRIER, carriers),
    ]


def _format(
    sheet_id: int, start_row: int, end_row: int | None, col: int | None, fmt: dict[str, Any]
) -> dict[str, Any]:
    grid: dict[str, Any] = {"sheetId": sheet_id, "startRowIndex": start_row}
    if end_row is not None:
        grid["endRowIndex"] = end_row
    if col is not None:
        grid["startColumnIndex"], grid["endColumnIndex"] = col, col + 1
    fields = "userEnteredFormat(" + ",".join(fmt) + ")"
    return {"repeatCell": {"range": grid, "cell": {"userEnteredFormat": fmt}, "fields": fields}}


def _rooted(api_url: str) -> type[gspread.HTTPClient]:
    """gspread's HTTP client, its requests sent to `api_url` instead of Google's (a compatible
    endpoint, a test double); unchanged for Google's own."""

    class Rooted(gspread.HTTPClient):
        def request(self, method: str, endpoint: str, *args: Any, **kwargs: Any) -> Any:
            if api_url != GOOGLE and endpoint.startswith(GOOGLE):
                endpoint = api_url + endpoint[len(GOOGLE) :]
            return super().request(method, endpoint, *args, **kwargs)

    return Rooted
