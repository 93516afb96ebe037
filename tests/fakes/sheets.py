"""FakeSheets: Google Sheets API v4 and Google's OAuth token endpoint on a local server.

The real, unmodified ``gspread`` + ``google-auth`` talk to it over HTTP on 127.0.0.1:

* ``key_file(dir)`` writes a real service-account key (a fresh RSA key, ``token_uri`` pointing
  here). google-auth signs its JWT-bearer grant with it and ``POST /token`` checks the grant
  type, the RS256 signature against the key it handed out, ``iat``/``exp`` and ``scope``, then
  issues a random access token. An issuer it does not know (see ``delete_key``) gets
  ``400 {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}`` as Google
  answers for a deleted key. Every ``/v4/...`` request needs ``Authorization: Bearer <token it
  issued>`` or gets 401 (``revoke_tokens()`` forgets them all: google-auth then refreshes and
  retries by itself); a read-only scope may not write (403).
* Spreadsheets live in memory: ``create_spreadsheet()``. Each is shared with some service
  accounts (by default every account ``key_file`` makes); anyone else gets 403
  ``PERMISSION_DENIED`` and an unknown id 404 ``NOT_FOUND``, in Google's error body shape
  ``{"error": {"code", "message", "status"}}`` (which gspread's ``APIError`` reads).
* Served: ``GET /v4/spreadsheets/{id}``, ``POST {id}:batchUpdate`` (addSheet, deleteSheet,
  updateSheetProperties, updateSpreadsheetProperties, insertDimension, deleteDimension,
  appendDimension, updateCells (values and notes: ``note()``) and setDataValidation (rules kept,
  ``validation()``; not enforced on writes, as the API's own writes are not) are performed;
  formatting-only kinds in ``FORMATTING`` are accepted and only recorded in ``batch_updates``;
  anything else is 400; a batch is all-or-nothing), and under
  ``{id}/values``: ``GET /{range}``, ``GET :batchGet``, ``PUT /{range}``, ``POST :batchUpdate``
  (all-or-nothing), ``POST /{range}:append``, ``POST /{range}:clear``, ``POST :batchClear``.
* Ranges: ``Sheet!A1:M1``, ``Sheet!A:A``, ``Sheet!1:1``, ``Sheet!A2:D`` (open end),
  ``Sheet!A2``, ``'Quoted '' name'!A1:B2``, a bare sheet name (the whole sheet), or a bare
  ``A1:B2`` (the first sheet). An unknown sheet is 400 "Unable to parse range: ...". Reads and
  writes (update, batchUpdate) outside the grid are 400 "... exceeds grid limits ..." as at
  Google: the grid does NOT grow for them; ``append`` grows it (rows, and columns if needed).
  Writing more rows/columns than an explicit (non single-cell) range holds is 400 "Requested
  writing within range [...], but tried writing to row [N]" as at Google, and a cell of more
  than 50,000 characters is 400 "Your input contains more than the maximum of 50000
  characters in a single cell.".
* Values are stored as given (str, int, float, bool); ``null`` in written values leaves a cell
  unchanged and ``""`` empties it. ``RAW`` keeps values as they are; ``USER_ENTERED`` turns a
  string that reads as a number into a number (``"+7900"`` becomes ``7900``, as at Google),
  ``"TRUE"``/``"FALSE"`` into booleans and drops a leading apostrophe (``"'007"`` stays text
  ``"007"``). Formulas are stored as text, never evaluated. Reading with ``FORMATTED_VALUE``
  (the default) renders every value as text (``5``, ``2870.5``, ``TRUE``); ``UNFORMATTED_VALUE``
  and ``FORMULA`` return what is stored (integral floats as ints, as Google's JSON does). Each
  row's trailing empty cells and trailing empty rows are left out; ``values`` is omitted when
  nothing is left.
* ``append`` (simplified table detection): the new rows go right after the last row, at or
  below the range's first row, that has a non-empty cell in the range's columns (all columns
  from its first for a single-cell range or a bare sheet name), or at the range's first row
  if there is none; they start at the range's first column. ``INSERT_ROWS`` inserts rows there
  (shifting anything below down, growing ``rowCount``); ``OVERWRITE`` (Google's default, and
  gspread's when it passes none) writes in place, growing the grid only if needed.
* ``fail(mode, count=, seconds=, paths=)``: failure injection. Modes: ``"503"``, ``"500"``,
  ``"429"`` (Google's error bodies; 429 is the "Quota exceeded ... 'Write requests' ..." one,
  or "Read requests" for a read), ``"timeout"`` (held unanswered for ``hold_seconds`` or until
  ``clear_failures()``/``stop()``, then answered 503 if anyone still listens), ``"reset"`` (the
  connection is closed without an answer), and ``"apply_then_timeout"`` / ``"apply_then_reset"``
  (the request IS performed, then held / the connection closed: the write landed but the client
  never hears). Every mode but the ``apply_then_*`` ones acts before anything is performed.
  ``count`` limits a rule to the next N matching requests, ``seconds`` to a time window from
  now; with both, whichever runs out first; with neither, until ``clear_failures()``. ``paths``
  is an fnmatch pattern on ``"METHOD /path"``, the path URL-decoded and relative to ``url``
  (``"PUT /v4/spreadsheets/*"`` value updates, ``"POST *:append"`` appends, ``"GET *"`` reads);
  one starting with ``/`` means any method; ``""`` matches every ``/v4`` request. The token
  endpoint is failed only by a pattern that names it (``"POST /token"``); note google-auth
  itself retries a 500/503 from it (about 3 s of back-off) before raising. Rules are checked in
  the order added; the first live match applies.
* Quota model: with ``quota_per_minute = N`` a write request that makes more than N write
  requests (answered or not, this one included) within the trailing ``quota_window`` (60) s is
  answered 429 (``quota_rejections`` counts them). ``max_writes_in_any_minute`` is the most
  write requests that ever arrived within one trailing window, whether the quota is on or not.
* Records: ``calls`` (every request as a ``SheetsCall``: method, path, kind, status, account,
  applied), ``requests`` (the same as ``(method, path, status)``; status 0: held or cut off,
  so the client got no answer in time), ``count(kind, status=)``, ``writes`` (write requests
  performed, including ``apply_then_*`` ones), ``reads`` (read requests answered 200),
  ``batch_updates`` (every request of every performed spreadsheet batchUpdate, raw),
  ``tokens_issued``.
  Kinds: ``token``, ``get``, ``batchUpdate``, ``values.get``, ``values.batchGet``,
  ``values.update``, ``values.batchUpdate``, ``values.append``, ``values.clear``,
  ``values.batchClear``; the last six and ``batchUpdate`` are writes.
* What a person does in the browser: ``set_rows``, ``set_cell``, ``delete_row`` (rows below
  move up), ``insert_row``, ``add_sheet``, ``rename_sheet``, ``delete_sheet``, ``share``,
  ``unshare``, ``delete_spreadsheet``; and to look: ``rows``, ``cell``, ``sheet_titles``,
  ``sheet_properties``.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import random
import re
import secrets
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.fakes.faults import Faults

PREFIX = "/v4/spreadsheets/"
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
SCOPE = "https://www.googleapis.com/auth/spreadsheets"
WRITE_SCOPES = frozenset({SCOPE, "https://www.googleapis.com/auth/drive"})
READ_SCOPES = WRITE_SCOPES | {
    "https://www.googleapis.com/auth/spreadsheets.readonly",
    "https://www.googleapis.com/auth/drive.readonly",
    "https://www.googleapis.com/auth/drive.file",
}
MODES = ("503", "500", "429", "timeout", "reset", "apply_then_timeout", "apply_then_reset")
READ_KINDS = frozenset({"get", "values.get", "values.batchGet"})
WRITE_KINDS = frozenset(
    {
        "batchUpdate",
        "values.update",
        "values.batchUpdate",
        "values.append",
        "values.clear",
        "values.batchClear",
    }
)
FORMATTING = frozenset(
    {
        "repeatCell",
        "updateBorders",
        "updateDimensionProperties",
        "autoResizeDimensions",
        "setBasicFilter",
        "clearBasicFilter",
        "addProtectedRange",
        "updateProtectedRange",
        "deleteProtectedRange",
        "mergeCells",
        "unmergeCells",
        "addConditionalFormatRule",
        "deleteConditionalFormatRule",
        "setDataValidation",
        "addBanding",
        "deleteBanding",
    }
)
DEFAULT_ROWS = 1000
DEFAULT_COLUMNS = 26
QUOTA_MESSAGE = (
    "Quota exceeded for quota metric '{what} requests' and limit '{what} requests per minute "
    "per user' of service 'sheets.googleapis.com' for consumer 'project_number:123'."
)
CREDENTIALS_HINT = (
    "Expected OAuth 2 access token, login cookie or other valid authentication credential. "
    "See https://developers.google.com/identity/sign-in/web/devconsole-project."
)
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_REF = re.compile(r"([A-Z]*)(\d*)(?::([A-Z]*)(\d*))?")
_PLAIN_TITLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CELL_LIKE = re.compile(r"[A-Za-z]{1,3}\d+|[Rr]\d*[Cc]\d*")
_PRIVATE_KEYS: dict[str, rsa.RSAPrivateKey] = {}  # by email: one RSA key per process


class SheetsError(Exception):
    """An API error: answered as ``{"error": {"code", "message", "status"}}``."""

    def __init__(self, code: int, message: str, status: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status

    def response(self) -> web.Response:
        return _error(self.code, self.message, self.status)


MAX_CELL = 50_000  # characters in one cell, as at Google


def _invalid(message: str) -> SheetsError:
    return SheetsError(400, message, "INVALID_ARGUMENT")


@dataclass
class SheetsCall:
    method: str
    path: str  # URL-decoded, relative to ``url``, without the query
    kind: str  # see the module docstring; "" for an unknown route
    status: int  # 0: held (timeout modes) or cut off (reset modes)
    account: str | None  # the service account the bearer token was issued to
    applied: bool  # whether the request was performed
    at: float  # the event loop's time when it arrived


@dataclass
class _Account:
    email: str
    key_id: str
    client_id: str
    public_key: rsa.RSAPublicKey


@dataclass
class _Token:
    email: str
    scopes: frozenset[str]
    expires_at: float


@dataclass
class _Sheet:
    sheet_id: int
    title: str
    index: int = 0
    row_count: int = DEFAULT_ROWS
    column_count: int = DEFAULT_COLUMNS
    frozen_row_count: int = 0
    frozen_column_count: int = 0
    hidden: bool = False
    extra: dict[str, Any] = field(default_factory=dict)  # other properties, kept as given
    extra_grid: dict[str, Any] = field(default_factory=dict)
    cells: list[list[Any]] = field(default_factory=list)  # None: empty
    notes: dict[tuple[int, int], str] = field(default_factory=dict)  # (row, col) -> note
    # setDataValidation's rules as set, in order (a later one over the same cells wins; None
    # clears): (row0, col0, row1, col1) exclusive ends, the rule.
    validations: list[tuple[tuple[int, int, int, int], dict[str, Any] | None]] = field(
        default_factory=list
    )

    def get(self, row: int, col: int) -> Any:
        if row < len(self.cells) and col < len(self.cells[row]):
            return self.cells[row][col]
        return None

    def put(self, row: int, col: int, value: Any) -> None:
        if value is None and self.get(row, col) is None:
            return
        while len(self.cells) <= row:
            self.cells.append([])
        line = self.cells[row]
        while len(line) <= col:
            line.append(None)
        line[col] = value

    def trim(self) -> None:
        for line in self.cells:
            while line and line[-1] is None:
                line.pop()
        while self.cells and not self.cells[-1]:
            self.cells.pop()

    def truncate(self) -> None:
        del self.cells[self.row_count :]
        for line in self.cells:
            del line[self.column_count :]
        self.trim()

    def properties(self) -> dict[str, Any]:
        grid: dict[str, Any] = {"rowCount": self.row_count, "columnCount": self.column_count}
        if self.frozen_row_count:
            grid["frozenRowCount"] = self.frozen_row_count
        if self.frozen_column_count:
            grid["frozenColumnCount"] = self.frozen_column_count
        grid.update(self.extra_grid)
        props: dict[str, Any] = {
            "sheetId": self.sheet_id,
            "title": self.title,
            "index": self.index,
            "sheetType": "GRID",
            "gridProperties": grid,
        }
        if self.hidden:
            props["hidden"] = True
        props.update(self.extra)
        return props


@dataclass
class _Book:
    spreadsheet_id: str
    title: str
    sheets: list[_Sheet]
    shared: dict[str, str] | None  # email -> "writer" | "reader"; None: every account, writer
    locale: str = "ru_RU"
    time_zone: str = "Europe/Moscow"

    def renumber(self) -> None:
        for index, sheet in enumerate(self.sheets):
            sheet.index = index

    def by_title(self, title: str) -> _Sheet | None:
        for sheet in self.sheets:
            if sheet.title == title:
                return sheet
        folded = title.casefold()
        for sheet in self.sheets:
            if sheet.title.casefold() == folded:
                return sheet
        return None

    def by_id(self, sheet_id: Any) -> _Sheet | None:
        for sheet in self.sheets:
            if sheet.sheet_id == sheet_id:
                return sheet
        return None

    def role(self, email: str) -> str | None:
        if self.shared is None:
            return "writer"
        return self.shared.get(email)

    def metadata(self) -> dict[str, Any]:
        return {
            "spreadsheetId": self.spreadsheet_id,
            "properties": {
                "title": self.title,
                "locale": self.locale,
                "autoRecalc": "ON_CHANGE",
                "timeZone": self.time_zone,
            },
            "sheets": [{"properties": sheet.properties()} for sheet in self.sheets],
            "spreadsheetUrl": f"https://docs.google.com/spreadsheets/d/{self.spreadsheet_id}/edit",
        }


@dataclass
class _Range:
    sheet: _Sheet
    r0: int
    c0: int
    r1: int | None  # exclusive; None: to the grid's end
    c1: int | None
    single: bool  # one cell, e.g. "A2": an anchor when writing
    text: str  # as requested

    def bounds(self) -> tuple[int, int, int, int]:
        r1 = self.sheet.row_count if self.r1 is None else self.r1
        c1 = self.sheet.column_count if self.c1 is None else self.c1
        return self.r0, self.c0, r1, c1

    def check_grid(self) -> None:
        sheet = self.sheet
        if (
            self.r0 >= sheet.row_count
            or self.c0 >= sheet.column_count
            or (self.r1 is not None and self.r1 > sheet.row_count)
            or (self.c1 is not None and self.c1 > sheet.column_count)
        ):
            raise _grid_error(self.text, sheet)

    def a1(self) -> str:
        return _a1(self.sheet, *self.bounds())


@dataclass
class _Write:
    sheet: _Sheet
    r0: int
    c0: int
    matrix: list[list[Any]]

    @property
    def rows(self) -> int:
        return len(self.matrix)

    @property
    def columns(self) -> int:
        return max((len(row) for row in self.matrix), default=0)

    @property
    def cells(self) -> int:
        return sum(value is not None for row in self.matrix for value in row)

    def apply(self, option: str) -> None:
        for r, row in enumerate(self.matrix):
            for c, value in enumerate(row):
                if value is not None:
                    self.sheet.put(self.r0 + r, self.c0 + c, _entered(value, option))
        self.sheet.trim()

    def area(self) -> str:
        rows, columns = max(self.rows, 1), max(self.columns, 1)
        return _a1(self.sheet, self.r0, self.c0, self.r0 + rows, self.c0 + columns)

    def answer(self, spreadsheet_id: str) -> dict[str, Any]:
        answer: dict[str, Any] = {"spreadsheetId": spreadsheet_id, "updatedRange": self.area()}
        if self.matrix:
            answer.update(
                updatedRows=self.rows, updatedColumns=self.columns, updatedCells=self.cells
            )
        return answer


class FakeSheets:
    """Google Sheets API v4 for the real gspread + google-auth; see the module docstring.

    Point the service account key's ``token_uri`` here (``key_file`` does) and rewrite
    ``https://sheets.googleapis.com`` to ``url`` in gspread's HTTPClient."""

    project_id = "test-project"
    default_email = "crm@test-project.iam.gserviceaccount.com"

    def __init__(self, *, quota_per_minute: int | None = None) -> None:
        self.quota_per_minute = quota_per_minute
        self.quota_window = 60.0
        self.quota_rejections = 0
        self.max_writes_in_any_minute = 0
        self.hold_seconds = 60.0
        self.token_lifetime = 3600
        self.calls: list[SheetsCall] = []
        self.batch_updates: list[dict[str, Any]] = []
        self.tokens_issued = 0
        self._books: dict[str, _Book] = {}
        self._accounts: dict[str, _Account] = {}
        self._tokens: dict[str, _Token] = {}
        self._write_times: deque[float] = deque()
        self._faults = Faults(MODES, everything="/v4/")
        self._release = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._url = ""

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self._url = f"http://{host}:{port}"

    async def stop(self) -> None:
        self._release_held()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def url(self) -> str:
        """The root: gspread's ``https://sheets.googleapis.com`` is to be replaced by this."""
        return self._url

    @property
    def token_url(self) -> str:
        return f"{self._url}/token"

    # -- service accounts -----------------------------------------------------------------------

    def key_file(self, directory: Path, email: str = default_email) -> Path:
        """Write a service-account JSON key for `email` (a real RSA key) and return its path."""
        if not self._url:
            raise RuntimeError("start() the fake before writing a key file: it holds token_uri")
        key = _PRIVATE_KEYS.get(email)
        if key is None:
            key = _PRIVATE_KEYS[email] = rsa.generate_private_key(65537, 2048)
        account = self._accounts.get(email)
        if account is None:
            account = _Account(
                email=email,
                key_id=secrets.token_hex(20),
                client_id=str(random.randrange(10**20, 10**21)),
                public_key=key.public_key(),
            )
            self._accounts[email] = account
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        info = {
            "type": "service_account",
            "project_id": self.project_id,
            "private_key_id": account.key_id,
            "private_key": pem,
            "client_email": email,
            "client_id": account.client_id,
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": self.token_url,
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "client_x509_cert_url": "https://www.googleapis.com/robot/v1/metadata/x509/"
            + quote(email, safe=""),
            "universe_domain": "googleapis.com",
        }
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{self.project_id}-{account.key_id[:12]}.json"
        path.write_text(json.dumps(info, indent=2))
        return path

    def delete_key(self, email: str = default_email) -> None:
        """Delete the account's key: token requests signed with it are refused from now on."""
        self._accounts.pop(email, None)

    def revoke_tokens(self) -> None:
        """Forget every access token issued (the next API call is 401; google-auth refreshes)."""
        self._tokens.clear()

    # -- spreadsheets ---------------------------------------------------------------------------

    def create_spreadsheet(
        self, title: str = "CRM", share_with: str | Iterable[str] | None = None
    ) -> str:
        """A new spreadsheet with one empty sheet "Sheet1" (id 0); returns its id. `share_with`:
        None shares it (as writer) with every account of this fake, even ones made later;
        an email or emails, with just those (``()``: nobody)."""
        spreadsheet_id = secrets.token_urlsafe(33)
        shared = None
        if share_with is not None:
            emails = [share_with] if isinstance(share_with, str) else list(share_with)
            shared = dict.fromkeys(emails, "writer")
        self._books[spreadsheet_id] = _Book(
            spreadsheet_id, title, [_Sheet(sheet_id=0, title="Sheet1")], shared
        )
        return spreadsheet_id

    def delete_spreadsheet(self, spreadsheet_id: str) -> None:
        del self._books[spreadsheet_id]

    def share(self, spreadsheet_id: str, email: str, role: str = "writer") -> None:
        """Share with `email` as "writer" or "reader" (a reader's writes are 403)."""
        if role not in ("writer", "reader"):
            raise ValueError("role must be 'writer' or 'reader'")
        book = self._books[spreadsheet_id]
        if book.shared is None:
            book.shared = dict.fromkeys(self._accounts, "writer")
        book.shared[email] = role

    def unshare(self, spreadsheet_id: str, email: str) -> None:
        book = self._books[spreadsheet_id]
        if book.shared is None:
            book.shared = dict.fromkeys(self._accounts, "writer")
        book.shared.pop(email, None)

    def sheet_titles(self, spreadsheet_id: str) -> list[str]:
        return [sheet.title for sheet in self._books[spreadsheet_id].sheets]

    def sheet_properties(self, spreadsheet_id: str, title: str) -> dict[str, Any]:
        """As in the spreadsheet's metadata: sheetId, index, gridProperties, ..."""
        return self._sheet(spreadsheet_id, title).properties()

    def rows(self, spreadsheet_id: str, title: str) -> list[list[Any]]:
        """The stored values: empty cells as "", each row's trailing ones and trailing empty
        rows left out."""
        sheet = self._sheet(spreadsheet_id, title)
        sheet.trim()
        return [["" if value is None else value for value in line] for line in sheet.cells]

    def cell(self, spreadsheet_id: str, title: str, a1: str) -> Any:
        """The stored value of one cell ("B3"), None when empty."""
        row, col = _cell(a1)
        return self._sheet(spreadsheet_id, title).get(row, col)

    def note(self, spreadsheet_id: str, title: str, a1: str) -> str:
        """The note on one cell ("" when none), as updateCells set it."""
        return self._sheet(spreadsheet_id, title).notes.get(_cell(a1), "")

    def validation(self, spreadsheet_id: str, title: str, a1: str) -> dict[str, Any] | None:
        """The data validation rule over one cell (setDataValidation's last one covering it)."""
        row, col = _cell(a1)
        found = None
        for (r0, c0, r1, c1), rule in self._sheet(spreadsheet_id, title).validations:
            if r0 <= row < r1 and c0 <= col < c1:
                found = rule
        return found

    def set_cell(self, spreadsheet_id: str, title: str, a1: str, value: Any) -> None:
        """Type a value into a cell (stored as given; None or "" empties it); grows the grid."""
        sheet = self._sheet(spreadsheet_id, title)
        row, col = _cell(a1)
        sheet.row_count = max(sheet.row_count, row + 1)
        sheet.column_count = max(sheet.column_count, col + 1)
        sheet.put(row, col, None if value == "" else value)
        sheet.trim()

    def set_rows(
        self, spreadsheet_id: str, title: str, rows: Sequence[Sequence[Any]], start: str = "A1"
    ) -> None:
        """Replace the sheet's contents with `rows` (stored as given) from `start`."""
        sheet = self._sheet(spreadsheet_id, title)
        r0, c0 = _cell(start)
        sheet.cells = []
        for r, line in enumerate(rows):
            for c, value in enumerate(line):
                sheet.put(r0 + r, c0 + c, None if value == "" else value)
        sheet.trim()
        sheet.row_count = max(sheet.row_count, r0 + len(rows))
        sheet.column_count = max(sheet.column_count, c0 + max(map(len, rows), default=0))

    def delete_row(self, spreadsheet_id: str, title: str, row_number: int) -> None:
        """Delete row `row_number` (1-based) as a person would: the rows below move up."""
        sheet = self._sheet(spreadsheet_id, title)
        if not 1 <= row_number <= sheet.row_count:
            raise IndexError(f"no row {row_number} in {title!r}")
        if row_number <= len(sheet.cells):
            del sheet.cells[row_number - 1]
        sheet.row_count -= 1
        sheet.trim()

    def insert_row(
        self, spreadsheet_id: str, title: str, row_number: int, values: Sequence[Any] = ()
    ) -> None:
        """Insert a row before `row_number` (1-based): it and the rows below move down."""
        sheet = self._sheet(spreadsheet_id, title)
        if row_number - 1 < len(sheet.cells):
            sheet.cells.insert(row_number - 1, [])
        sheet.row_count += 1
        for c, value in enumerate(values):
            sheet.put(row_number - 1, c, None if value == "" else value)
        sheet.column_count = max(sheet.column_count, len(values))
        sheet.trim()

    def add_sheet(
        self,
        spreadsheet_id: str,
        title: str,
        rows: int = DEFAULT_ROWS,
        columns: int = DEFAULT_COLUMNS,
    ) -> int:
        """Add a sheet at the end; returns its sheetId."""
        book = self._books[spreadsheet_id]
        if book.by_title(title) is not None:
            raise ValueError(f"a sheet named {title!r} exists")
        sheet = _Sheet(_new_sheet_id(book), title, len(book.sheets), rows, columns)
        book.sheets.append(sheet)
        return sheet.sheet_id

    def rename_sheet(self, spreadsheet_id: str, title: str, new_title: str) -> None:
        self._sheet(spreadsheet_id, title).title = new_title

    def delete_sheet(self, spreadsheet_id: str, title: str) -> None:
        book = self._books[spreadsheet_id]
        book.sheets.remove(self._sheet(spreadsheet_id, title))
        book.renumber()

    def _sheet(self, spreadsheet_id: str, title: str) -> _Sheet:
        sheet = self._books[spreadsheet_id].by_title(title)
        if sheet is None:
            raise KeyError(f"no sheet {title!r} in {spreadsheet_id}")
        return sheet

    # -- records --------------------------------------------------------------------------------

    @property
    def requests(self) -> list[tuple[str, str, int]]:
        """Every request as (method, path, status); a new list each time."""
        return [(call.method, call.path, call.status) for call in self.calls]

    def count(self, kind: str, status: int | None = None) -> int:
        """How many requests of `kind` arrived (answered `status` if given)."""
        return sum(
            call.kind == kind and (status is None or call.status == status) for call in self.calls
        )

    @property
    def writes(self) -> int:
        """Write requests performed (answered 200, or performed and then held or cut off)."""
        return sum(call.kind in WRITE_KINDS and call.applied for call in self.calls)

    @property
    def reads(self) -> int:
        """Read requests answered 200."""
        return sum(call.kind in READ_KINDS and call.status == 200 for call in self.calls)

    def clear_log(self) -> None:
        self.calls.clear()
        self.batch_updates.clear()

    # -- failure injection ----------------------------------------------------------------------

    def fail(
        self,
        mode: str,
        *,
        count: int | None = None,
        seconds: float | None = None,
        paths: str = "",
    ) -> None:
        self._faults.add(mode, count, seconds, paths)

    def clear_failures(self) -> None:
        """Drop every rule and let go of held requests."""
        self._faults.clear()
        self._release_held()

    def _release_held(self) -> None:
        self._release.set()
        self._release = asyncio.Event()

    async def _hold(self) -> None:
        release = self._release
        try:
            await asyncio.wait_for(release.wait(), self.hold_seconds)
        except TimeoutError:
            pass

    # -- HTTP -----------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        method = request.method
        raw = request.raw_path.split("?", 1)[0]
        path = unquote(raw)
        route = _route(method, raw)
        kind = route[0] if route else ""
        call = SheetsCall(method, path, kind, 0, None, False, loop.time())
        self.calls.append(call)
        if kind in WRITE_KINDS:
            self._count_write(call.at)
        mode = self._faults.take(method, path)
        if mode == "timeout":
            await self._hold()
            return _injected("503", kind)  # whoever sent it has most likely given up
        if mode == "reset":
            return _cut(request)
        if mode is not None and not mode.startswith("apply_then_"):
            response = _injected(mode, kind)
            call.status = response.status
            return response
        if route is None:
            response = _error(404, f"Not found: {path}", "NOT_FOUND")
        elif kind == "token":
            response = await self._token(request)
        else:
            response = await self._api(request, call, route[1], route[2])
        call.applied = response.status == 200 and kind != "token"
        if mode == "apply_then_timeout":
            await self._hold()
            return response  # answered after all, if anyone still listens
        if mode == "apply_then_reset":
            return _cut(request)
        call.status = response.status
        return response

    def _count_write(self, now: float) -> None:
        times = self._write_times
        times.append(now)
        while times and times[0] <= now - self.quota_window:
            times.popleft()
        self.max_writes_in_any_minute = max(self.max_writes_in_any_minute, len(times))

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        grant_type = str(form.get("grant_type", ""))
        if grant_type != JWT_GRANT:
            return _oauth_error("unsupported_grant_type", f"Invalid grant_type: {grant_type}")
        parts = str(form.get("assertion", "")).split(".")
        try:
            if len(parts) != 3:
                raise ValueError("not three parts")
            header = json.loads(_b64decode(parts[0]))
            claims = json.loads(_b64decode(parts[1]))
            signature = _b64decode(parts[2])
            if not isinstance(header, dict) or not isinstance(claims, dict):
                raise ValueError("not JSON objects")
        except ValueError:
            return _oauth_error("invalid_request", "Invalid JWT: malformed assertion.")
        account = self._accounts.get(str(claims.get("iss")))
        bad_signature = _oauth_error("invalid_grant", "Invalid JWT Signature.")
        if account is None or header.get("alg") != "RS256":
            return bad_signature
        if header.get("kid") not in (None, account.key_id):
            return bad_signature
        try:
            account.public_key.verify(
                signature,
                f"{parts[0]}.{parts[1]}".encode(),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except InvalidSignature:
            return bad_signature
        now = time.time()
        iat, exp = claims.get("iat"), claims.get("exp")
        if (
            not isinstance(iat, int | float)
            or not isinstance(exp, int | float)
            or not iat - 300 <= now <= exp + 300
            or exp - iat > 3600
        ):
            return _oauth_error(
                "invalid_grant",
                "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable "
                "timeframe. Check your iat and exp values in the JWT claim.",
            )
        if claims.get("aud") not in (GOOGLE_TOKEN_URI, self.token_url):
            return _oauth_error("invalid_grant", "Invalid JWT: Failed audience check.")
        scopes = frozenset(str(claims.get("scope", "")).split())
        if not scopes:
            return _oauth_error(
                "invalid_scope", "Invalid OAuth scope or ID token audience provided."
            )
        token = "ya29.fake-" + secrets.token_urlsafe(32)
        expires_at = asyncio.get_running_loop().time() + self.token_lifetime
        self._tokens[token] = _Token(account.email, scopes, expires_at)
        self.tokens_issued += 1
        answer = {"access_token": token, "expires_in": self.token_lifetime, "token_type": "Bearer"}
        return web.json_response(answer)

    async def _api(
        self, request: web.Request, call: SheetsCall, spreadsheet_id: str, range_text: str
    ) -> web.Response:
        try:
            token = self._authenticate(request, call)
            quota = self.quota_per_minute
            if call.kind in WRITE_KINDS and quota is not None and len(self._write_times) > quota:
                self.quota_rejections += 1
                return _injected("429", call.kind)
            book = self._books.get(spreadsheet_id)
            if book is None:
                raise SheetsError(404, "Requested entity was not found.", "NOT_FOUND")
            role = book.role(token.email)
            if role is None or (call.kind in WRITE_KINDS and role != "writer"):
                raise SheetsError(403, "The caller does not have permission", "PERMISSION_DENIED")
            body: Any = {}
            if request.can_read_body:
                try:
                    body = await request.json()
                except ValueError:
                    raise _invalid("Invalid JSON payload received.") from None
            if body is None:
                body = {}
            if not isinstance(body, dict):
                raise _invalid("Invalid JSON payload received.")
            answer = self._perform(book, call.kind, request, body, range_text)
        except SheetsError as exc:
            return exc.response()
        return web.json_response(answer)

    def _authenticate(self, request: web.Request, call: SheetsCall) -> _Token:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            raise SheetsError(
                401,
                f"Request is missing required authentication credential. {CREDENTIALS_HINT}",
                "UNAUTHENTICATED",
            )
        token = self._tokens.get(header[len("Bearer ") :].strip())
        if token is None or token.expires_at <= asyncio.get_running_loop().time():
            raise SheetsError(
                401,
                f"Request had invalid authentication credentials. {CREDENTIALS_HINT}",
                "UNAUTHENTICATED",
            )
        call.account = token.email
        allowed = WRITE_SCOPES if call.kind in WRITE_KINDS else READ_SCOPES
        if not token.scopes & allowed:
            raise SheetsError(
                403, "Request had insufficient authentication scopes.", "PERMISSION_DENIED"
            )
        return token

    def _perform(
        self,
        book: _Book,
        kind: str,
        request: web.Request,
        body: dict[str, Any],
        range_text: str,
    ) -> dict[str, Any]:
        query = request.query
        sid = book.spreadsheet_id
        if kind == "get":
            return book.metadata()
        if kind == "batchUpdate":
            return self._batch_update(book, body)
        if kind == "values.get":
            rng = _parse_range(book, range_text)
            return _read(rng, _render_option(query.get("valueRenderOption")), _major(query))
        if kind == "values.batchGet":
            option = _render_option(query.get("valueRenderOption"))
            ranges = [_parse_range(book, text) for text in query.getall("ranges", [])]
            answer: dict[str, Any] = {"spreadsheetId": sid}
            if ranges:
                answer["valueRanges"] = [_read(rng, option, _major(query)) for rng in ranges]
            return answer
        if kind == "values.update":
            option = _input_option(query.get("valueInputOption"))
            rng = _parse_range(book, range_text)
            write = _plan_write(rng, body.get("values"), body.get("majorDimension"))
            write.apply(option)
            return _with_data(write.answer(sid), write, query)
        if kind == "values.batchUpdate":
            option = _input_option(body.get("valueInputOption"))
            data = body.get("data") or []
            if not isinstance(data, list):
                raise _invalid("Invalid value at 'data'")
            writes = [
                _plan_write(
                    _parse_range(book, str(item.get("range", ""))),
                    item.get("values"),
                    item.get("majorDimension"),
                )
                for item in data
            ]
            for write in writes:  # every range was valid: now all of them
                write.apply(option)
            flags = {
                key: str(body[key])
                for key in ("includeValuesInResponse", "responseValueRenderOption")
                if body.get(key) is not None
            }
            responses = [_with_data(write.answer(sid), write, flags) for write in writes]
            answer = {"spreadsheetId": sid}
            if writes:
                answer.update(
                    totalUpdatedRows=sum(w.rows for w in writes),
                    totalUpdatedColumns=sum(w.columns for w in writes),
                    totalUpdatedCells=sum(w.cells for w in writes),
                    totalUpdatedSheets=len({id(w.sheet) for w in writes}),
                    responses=responses,
                )
            return answer
        if kind == "values.append":
            return _append(book, range_text, body, query)
        if kind == "values.clear":
            rng = _parse_range(book, range_text)
            return {"spreadsheetId": sid, "clearedRange": _clear(rng)}
        if kind == "values.batchClear":
            ranges = [_parse_range(book, str(text)) for text in body.get("ranges") or []]
            for rng in ranges:
                rng.check_grid()
            return {"spreadsheetId": sid, "clearedRanges": [_clear(rng) for rng in ranges]}
        raise SheetsError(404, "Not found", "NOT_FOUND")

    def _batch_update(self, book: _Book, body: dict[str, Any]) -> dict[str, Any]:
        requests = body.get("requests")
        if not isinstance(requests, list) or not requests:
            raise _invalid("Must specify at least one request.")
        draft = copy.deepcopy(book)  # all or nothing: work on a copy, keep it only if all pass
        replies = [_apply_request(draft, n, request) for n, request in enumerate(requests)]
        book.title, book.locale, book.time_zone = draft.title, draft.locale, draft.time_zone
        book.sheets = draft.sheets
        self.batch_updates.extend(copy.deepcopy(requests))
        answer: dict[str, Any] = {"spreadsheetId": book.spreadsheet_id, "replies": replies}
        if body.get("includeSpreadsheetInResponse"):
            answer["updatedSpreadsheet"] = book.metadata()
        return answer


# -- batchUpdate requests ---------------------------------------------------------------------


def _apply_request(book: _Book, n: int, request: Any) -> dict[str, Any]:
    if not isinstance(request, dict) or len(request) != 1:
        raise _invalid(f"Invalid requests[{n}]: exactly one kind of request must be set.")
    ((kind, spec),) = request.items()
    where = f"Invalid requests[{n}].{kind}"
    if not isinstance(spec, dict):
        raise _invalid(f"{where}: the request must be an object.")
    if kind == "addSheet":
        return {"addSheet": {"properties": _add_sheet(book, where, spec.get("properties") or {})}}
    if kind == "deleteSheet":
        sheet = _grid(book, where, spec.get("sheetId"))
        if len(book.sheets) == 1:
            raise _invalid(f"{where}: You can't remove all the sheets in a document.")
        book.sheets.remove(sheet)
        book.renumber()
        return {}
    if kind == "updateSheetProperties":
        _update_sheet(book, where, spec.get("properties") or {}, str(spec.get("fields", "")))
        return {}
    if kind == "updateSpreadsheetProperties":
        props = spec.get("properties") or {}
        for name in _fields(str(spec.get("fields", "")), ("title", "locale", "timeZone")):
            if name == "title":
                book.title = str(props.get("title", ""))
            elif name == "locale":
                book.locale = str(props.get("locale", ""))
            elif name == "timeZone":
                book.time_zone = str(props.get("timeZone", ""))
        return {}
    if kind in ("insertDimension", "deleteDimension"):
        _dimension(book, where, kind, spec)
        return {}
    if kind == "appendDimension":
        sheet = _grid(book, where, spec.get("sheetId"))
        length = int(spec.get("length", 0))
        if length < 1:
            raise _invalid(f"{where}: length must be positive.")
        if spec.get("dimension") == "COLUMNS":
            sheet.column_count += length
        else:
            sheet.row_count += length
        return {}
    if kind == "setDataValidation":
        _set_validation(book, where, spec)
        return {}
    if kind == "updateCells":
        _update_cells(book, where, spec)
        return {}
    if kind in FORMATTING:
        for sheet_id in _sheet_ids(spec):
            _grid(book, where, sheet_id)
        if kind == "addProtectedRange":
            protected = {**(spec.get("protectedRange") or {})}
            protected.setdefault("protectedRangeId", random.randrange(10**8, 10**9))
            return {"addProtectedRange": {"protectedRange": protected}}
        if kind == "addBanding":
            banded = {**(spec.get("bandedRange") or {})}
            banded.setdefault("bandedRangeId", random.randrange(10**8, 10**9))
            return {"addBanding": {"bandedRange": banded}}
        return {}
    raise _invalid(
        f"Invalid JSON payload received. Unknown name \"{kind}\" at 'requests[{n}]': "
        "Cannot find field."
    )


def _add_sheet(book: _Book, where: str, props: dict[str, Any]) -> dict[str, Any]:
    title = props.get("title")
    if title is None:
        number = len(book.sheets) + 1
        while book.by_title(f"Sheet{number}") is not None:
            number += 1
        title = f"Sheet{number}"
    title = str(title)
    if not title.strip():
        raise _invalid(f"{where}: The sheet name cannot be empty.")
    if book.by_title(title) is not None:
        raise _invalid(
            f'{where}: A sheet with the name "{title}" already exists. Please enter another name.'
        )
    sheet_id = props.get("sheetId")
    if sheet_id is None:
        sheet_id = _new_sheet_id(book)
    elif book.by_id(sheet_id) is not None:
        raise _invalid(f"{where}: A sheet with the id {sheet_id} already exists.")
    grid = props.get("gridProperties") or {}
    sheet = _Sheet(
        sheet_id=int(sheet_id),
        title=title,
        row_count=int(grid.get("rowCount", DEFAULT_ROWS)),
        column_count=int(grid.get("columnCount", DEFAULT_COLUMNS)),
        frozen_row_count=int(grid.get("frozenRowCount", 0)),
        frozen_column_count=int(grid.get("frozenColumnCount", 0)),
        hidden=bool(props.get("hidden", False)),
    )
    known = {"rowCount", "columnCount", "frozenRowCount", "frozenColumnCount"}
    sheet.extra_grid = {k: v for k, v in grid.items() if k not in known}
    skip = {"sheetId", "title", "index", "sheetType", "gridProperties", "hidden"}
    sheet.extra = {k: v for k, v in props.items() if k not in skip}
    _check_sheet(where, sheet)
    index = int(props.get("index", len(book.sheets)))
    book.sheets.insert(max(0, min(index, len(book.sheets))), sheet)
    book.renumber()
    return sheet.properties()


def _update_sheet(book: _Book, where: str, props: dict[str, Any], fields: str) -> None:
    sheet = _grid(book, where, props.get("sheetId"))
    grid = props.get("gridProperties") or {}
    everything = ("title", "index", "hidden", "gridProperties")
    for name in _fields(fields, everything):
        if name == "title":
            title = str(props.get("title", ""))
            other = book.by_title(title)
            if not title.strip():
                raise _invalid(f"{where}: The sheet name cannot be empty.")
            if other is not None and other is not sheet:
                raise _invalid(
                    f'{where}: A sheet with the name "{title}" already exists. '
                    "Please enter another name."
                )
            sheet.title = title
        elif name == "index":
            book.sheets.remove(sheet)
            index = int(props.get("index", 0))
            book.sheets.insert(max(0, min(index, len(book.sheets))), sheet)
            book.renumber()
        elif name == "hidden":
            sheet.hidden = bool(props.get("hidden", False))
        elif name == "gridProperties":
            for key in grid:
                _set_grid(sheet, key, grid)
        elif name.startswith("gridProperties."):
            _set_grid(sheet, name.removeprefix("gridProperties."), grid)
        elif name == "sheetId":
            raise _invalid(f"{where}: sheetId cannot be changed.")
        else:
            sheet.extra[name] = props.get(name)
    _check_sheet(where, sheet)
    sheet.truncate()


def _set_grid(sheet: _Sheet, key: str, grid: dict[str, Any]) -> None:
    if key == "rowCount":
        sheet.row_count = int(grid.get(key, 0))
    elif key == "columnCount":
        sheet.column_count = int(grid.get(key, 0))
    elif key == "frozenRowCount":
        sheet.frozen_row_count = int(grid.get(key, 0))
    elif key == "frozenColumnCount":
        sheet.frozen_column_count = int(grid.get(key, 0))
    elif key in grid:
        sheet.extra_grid[key] = grid[key]
    else:
        sheet.extra_grid.pop(key, None)


def _check_sheet(where: str, sheet: _Sheet) -> None:
    if sheet.row_count < 1 or sheet.column_count < 1:
        raise _invalid(f"{where}: A sheet must have at least one row and one column.")
    if sheet.frozen_row_count >= sheet.row_count:
        raise _invalid(f"{where}: You can't freeze all visible rows on the sheet.")
    if sheet.frozen_column_count >= sheet.column_count:
        raise _invalid(f"{where}: You can't freeze all visible columns on the sheet.")


def _dimension(book: _Book, where: str, kind: str, spec: dict[str, Any]) -> None:
    span = spec.get("range") or {}
    sheet = _grid(book, where, span.get("sheetId"))
    start, end = int(span.get("startIndex", 0)), int(span.get("endIndex", 0))
    columns = span.get("dimension") == "COLUMNS"
    size = sheet.column_count if columns else sheet.row_count
    if not 0 <= start < end or (kind == "deleteDimension" and end > size) or start > size:
        raise _invalid(f"{where}: Invalid range [{start}, {end}) of {size}.")
    count = end - start
    if kind == "deleteDimension":
        if columns:
            for line in sheet.cells:
                del line[start:end]
            sheet.column_count -= count
        else:
            del sheet.cells[start:end]
            sheet.row_count -= count
        if sheet.row_count < 1 or sheet.column_count < 1:
            raise _invalid(f"{where}: You can't delete all the rows or columns on the sheet.")
    elif columns:
        for line in sheet.cells:
            if start < len(line):
                line[start:start] = [None] * count
        sheet.column_count += count
    else:
        if start < len(sheet.cells):
            sheet.cells[start:start] = [[] for _ in range(count)]
        sheet.row_count += count
    sheet.trim()


def _fields(mask: str, everything: Sequence[str]) -> list[str]:
    names = [name.strip().replace("/", ".") for name in mask.split(",") if name.strip()]
    if not names:
        raise _invalid("At least one field must be updated, but 'fields' is empty.")
    return list(everything) if "*" in names else names


def _grid_range(book: _Book, where: str, span: Any) -> tuple[_Sheet, int, int, int, int]:
    """A GridRange: its sheet and bounds (exclusive ends; open ones to the grid's end)."""
    if not isinstance(span, dict):
        raise _invalid(f"{where}.range: a GridRange is required.")
    sheet = _grid(book, where, span.get("sheetId"))
    r0, c0 = int(span.get("startRowIndex", 0)), int(span.get("startColumnIndex", 0))
    r1 = int(span.get("endRowIndex", sheet.row_count))
    c1 = int(span.get("endColumnIndex", sheet.column_count))
    if not (0 <= r0 < r1 <= sheet.row_count and 0 <= c0 < c1 <= sheet.column_count):
        raise _invalid(f"{where}.range: the range is outside the grid.")
    return sheet, r0, c0, r1, c1


_CONDITIONS = frozenset({"ONE_OF_LIST", "ONE_OF_RANGE", "NUMBER_GREATER", "BOOLEAN", "TEXT_EQ"})


def _set_validation(book: _Book, where: str, spec: dict[str, Any]) -> None:
    """setDataValidation as Google takes it: a rule needs a known condition type, and a list
    (ONE_OF_LIST) at least one value, each a userEnteredValue; no rule clears the range's."""
    sheet, r0, c0, r1, c1 = _grid_range(book, where, spec.get("range"))
    rule = spec.get("rule")
    if rule is not None:
        condition = rule.get("condition") if isinstance(rule, dict) else None
        if not isinstance(condition, dict) or condition.get("type") not in _CONDITIONS:
            raise _invalid(f"{where}.rule.condition: a condition type is required.")
        values = condition.get("values") or []
        if condition["type"] == "ONE_OF_LIST" and (
            not values or not all(isinstance(v, dict) and "userEnteredValue" in v for v in values)
        ):
            raise _invalid(
                f"{where}: Invalid ConditionValue.userEnteredValue: a list needs its values."
            )
    sheet.validations.append(((r0, c0, r1, c1), copy.deepcopy(rule)))


_VALUE_KINDS = ("stringValue", "numberValue", "boolValue", "formulaValue")


def _update_cells(book: _Book, where: str, spec: dict[str, Any]) -> None:
    """updateCells with `start` (a GridCoordinate) and `rows` of CellData; `fields` says which
    parts are written (userEnteredValue, note; "*" both): a part named but not given is
    cleared, as at Google."""
    fields = str(spec.get("fields", ""))
    if not fields:
        raise _invalid(f"{where}: At least one field must be updated.")
    names = {"userEnteredValue", "note"} if fields == "*" else set(fields.split(","))
    if not names <= {"userEnteredValue", "note", "userEnteredFormat", "effectiveValue"}:
        raise _invalid(f"{where}: Invalid field mask {fields!r}.")
    start = spec.get("start")
    if not isinstance(start, dict):
        raise _invalid(f"{where}: exactly one of start or range must be set.")
    sheet = _grid(book, where, start.get("sheetId"))
    r0, c0 = int(start.get("rowIndex", 0)), int(start.get("columnIndex", 0))
    for dr, line in enumerate(spec.get("rows") or []):
        for dc, given_cell in enumerate((line or {}).get("values") or []):
            row, col = r0 + dr, c0 + dc
            if row >= sheet.row_count or col >= sheet.column_count:
                raise _invalid(f"{where}: the cells are outside the grid.")
            data = given_cell or {}
            if "userEnteredValue" in names:
                given = data.get("userEnteredValue") or {}
                value = next((given[k] for k in _VALUE_KINDS if k in given), None)
                sheet.put(row, col, None if value == "" else value)
            if "note" in names:
                if data.get("note"):
                    sheet.notes[(row, col)] = str(data["note"])
                else:
                    sheet.notes.pop((row, col), None)
    sheet.trim()


def _grid(book: _Book, where: str, sheet_id: Any) -> _Sheet:
    sheet = book.by_id(sheet_id if sheet_id is not None else 0)
    if sheet is None:
        raise _invalid(f"{where}: No grid with id: {sheet_id}")
    return sheet


def _sheet_ids(spec: Any) -> list[Any]:
    found: list[Any] = []
    if isinstance(spec, dict):
        for key, value in spec.items():
            if key == "sheetId":
                found.append(value)
            else:
                found.extend(_sheet_ids(value))
    elif isinstance(spec, list):
        for item in spec:
            found.extend(_sheet_ids(item))
    return found


def _new_sheet_id(book: _Book) -> int:
    while True:
        sheet_id = random.randrange(1, 2**31 - 1)
        if book.by_id(sheet_id) is None:
            return sheet_id


# -- values -----------------------------------------------------------------------------------


def _route(method: str, raw: str) -> tuple[str, str, str] | None:
    """(kind, spreadsheet id, range) for a raw (still URL-quoted) path, None if not served."""
    if raw == "/token":
        return ("token", "", "") if method == "POST" else None
    if not raw.startswith(PREFIX):
        return None
    head, slash, tail = raw[len(PREFIX) :].partition("/")
    spreadsheet_id = unquote(head)
    if not slash:
        if method == "POST" and spreadsheet_id.endswith(":batchUpdate"):
            return "batchUpdate", spreadsheet_id.removesuffix(":batchUpdate"), ""
        return ("get", spreadsheet_id, "") if method == "GET" else None
    batch = {
        ("GET", "values:batchGet"): "values.batchGet",
        ("POST", "values:batchUpdate"): "values.batchUpdate",
        ("POST", "values:batchClear"): "values.batchClear",
    }
    if (method, tail) in batch:
        return batch[method, tail], spreadsheet_id, ""
    if not tail.startswith("values/"):
        return None
    rng = tail.removeprefix("values/")
    if method == "POST" and rng.endswith(":append"):
        return "values.append", spreadsheet_id, unquote(rng.removesuffix(":append"))
    if method == "POST" and rng.endswith(":clear"):
        return "values.clear", spreadsheet_id, unquote(rng.removesuffix(":clear"))
    if method in ("GET", "PUT"):
        kind = "values.get" if method == "GET" else "values.update"
        return kind, spreadsheet_id, unquote(rng)
    return None


def _parse_range(book: _Book, text: str) -> _Range:
    unparsable = _invalid(f"Unable to parse range: {text}")
    name: str | None
    ref: str | None
    if text.startswith("'"):
        i = 1
        while True:
            j = text.find("'", i)
            if j < 0:
                raise unparsable
            if text[j + 1 : j + 2] == "'":
                i = j + 2
                continue
            break
        name, rest = text[1:j].replace("''", "'"), text[j + 1 :]
        if rest and not rest.startswith("!"):
            raise unparsable
        ref = rest[1:] if rest else None
    elif "!" in text:
        name, _, ref = text.partition("!")
    elif book.by_title(text) is not None:
        name, ref = text, None
    else:
        name, ref = None, text
    sheet = book.sheets[0] if name is None else book.by_title(name)
    if sheet is None:
        raise unparsable
    if ref is None:
        return _Range(sheet, 0, 0, None, None, False, text)
    match = _REF.fullmatch(ref.upper())
    if match is None or ref == "":
        raise unparsable
    col0, row0, col1, row1 = match.groups()
    single = ":" not in ref
    if single and not (col0 and row0):
        raise unparsable
    if not single and (not (col0 or row0) or not (col1 or row1)):
        raise unparsable
    if "0" in (row0[:1], (row1 or "")[:1]):
        raise unparsable  # rows start at 1
    r0, c0 = int(row0) - 1 if row0 else 0, _column(col0) if col0 else 0
    if single:
        return _Range(sheet, r0, c0, r0 + 1, c0 + 1, True, text)
    r1 = int(row1) if row1 else None
    c1 = _column(col1) + 1 if col1 else None
    if r1 is not None and r1 <= r0:
        r0, r1 = r1 - 1, r0 + 1
    if c1 is not None and c1 <= c0:
        c0, c1 = c1 - 1, c0 + 1
    return _Range(sheet, r0, c0, r1, c1, False, text)


def _read(rng: _Range, option: str, major: str) -> dict[str, Any]:
    rng.check_grid()
    r0, c0, r1, c1 = rng.bounds()
    sheet = rng.sheet
    if major == "COLUMNS":
        last = min(r1, len(sheet.cells))
        matrix = [[sheet.get(r, c) for r in range(r0, last)] for c in range(c0, c1)]
    else:
        matrix = [
            [sheet.get(r, c) for c in range(c0, c1)] for r in range(r0, min(r1, len(sheet.cells)))
        ]
    values: list[list[Any]] = []
    for line in matrix:
        while line and line[-1] is None:
            line.pop()
        values.append(["" if value is None else _render(value, option) for value in line])
    while values and not values[-1]:
        values.pop()
    answer: dict[str, Any] = {"range": rng.a1(), "majorDimension": major}
    if values:
        answer["values"] = values
    return answer


def _plan_write(rng: _Range, values: Any, major: Any) -> _Write:
    write = _Write(rng.sheet, rng.r0, rng.c0, _matrix(values, major))
    sheet = rng.sheet
    if not rng.single:
        if rng.r1 is not None and rng.r0 + write.rows > rng.r1:
            raise _invalid(
                f"Requested writing within range [{rng.text}], but tried writing to row "
                f"[{rng.r1 + 1}]"
            )
        if rng.c1 is not None and rng.c0 + write.columns > rng.c1:
            raise _invalid(
                f"Requested writing within range [{rng.text}], but tried writing to column "
                f"[{_letters(rng.c1)}]"
            )
    if rng.r0 >= sheet.row_count or rng.c0 >= sheet.column_count:
        raise _grid_error(rng.text, sheet)
    if rng.r0 + write.rows > sheet.row_count or rng.c0 + write.columns > sheet.column_count:
        raise _grid_error(write.area(), sheet)
    return write


def _with_data(answer: dict[str, Any], write: _Write, flags: Any) -> dict[str, Any]:
    if str(flags.get("includeValuesInResponse", "")).lower() == "true" and write.matrix:
        option = _render_option(flags.get("responseValueRenderOption"))
        rows, columns = write.rows, max(write.columns, 1)
        area = _Range(
            write.sheet, write.r0, write.c0, write.r0 + rows, write.c0 + columns, False, ""
        )
        answer["updatedData"] = _read(area, option, "ROWS")
    return answer


def _append(book: _Book, range_text: str, body: dict[str, Any], query: Any) -> dict[str, Any]:
    option = _input_option(query.get("valueInputOption"))
    insert = query.get("insertDataOption") or "OVERWRITE"
    if insert not in ("OVERWRITE", "INSERT_ROWS"):
        raise _invalid(f"Invalid value at 'insert_data_option' (TYPE_ENUM), \"{insert}\"")
    rng = _parse_range(book, range_text)
    rng.check_grid()
    sheet = rng.sheet
    sheet.trim()
    c_end = rng.c1 if rng.c1 is not None and not rng.single else None
    filled = [
        r
        for r in range(rng.r0, len(sheet.cells))
        if any(
            value is not None
            for value in sheet.cells[r][rng.c0 : c_end if c_end is not None else None]
        )
    ]
    answer: dict[str, Any] = {"spreadsheetId": book.spreadsheet_id}
    if filled:
        first, last = filled[0], filled[-1]
        widest = max(
            len(sheet.cells[r]) if c_end is None else min(len(sheet.cells[r]), c_end)
            for r in filled
        )
        table = _a1(sheet, first, rng.c0, last + 1, max(widest, rng.c0 + 1))
        answer["tableRange"] = table
        target = last + 1
    else:
        target = rng.r0
    write = _Write(sheet, target, rng.c0, _matrix(body.get("values"), body.get("majorDimension")))
    if insert == "INSERT_ROWS":
        if target < len(sheet.cells):
            sheet.cells[target:target] = [[] for _ in range(write.rows)]
        sheet.row_count += write.rows
    sheet.row_count = max(sheet.row_count, target + write.rows)
    sheet.column_count = max(sheet.column_count, rng.c0 + write.columns)
    write.apply(option)
    answer["updates"] = _with_data(write.answer(book.spreadsheet_id), write, query)
    return answer


def _matrix(values: Any, major: Any) -> list[list[Any]]:
    """Written values as rows (transposed if given as columns)."""
    if values is None:
        values = []
    if not isinstance(values, list) or not all(isinstance(row, list) for row in values):
        raise _invalid("Invalid values: expected a list of lists.")
    if major == "COLUMNS":
        width = max((len(column) for column in values), default=0)
        return [[column[r] if r < len(column) else None for column in values] for r in range(width)]
    if major not in (None, "ROWS", "DIMENSION_UNSPECIFIED"):
        raise _invalid(f"Invalid value at 'major_dimension' (TYPE_ENUM), \"{major}\"")
    if any(isinstance(cell, str) and len(cell) > MAX_CELL for row in values for cell in row):
        raise _invalid(
            f"Your input contains more than the maximum of {MAX_CELL} characters in a single cell."
        )
    return values


def _clear(rng: _Range) -> str:
    rng.check_grid()
    r0, c0, r1, c1 = rng.bounds()
    sheet = rng.sheet
    for r in range(r0, min(r1, len(sheet.cells))):
        line = sheet.cells[r]
        for c in range(c0, min(c1, len(line))):
            line[c] = None
    sheet.trim()
    return rng.a1()


def _entered(value: Any, option: str) -> Any:
    """A written value as stored: "" empties the cell; USER_ENTERED parses text like Sheets."""
    if value == "" and isinstance(value, str):
        return None
    if option == "RAW" or not isinstance(value, str):
        return value
    if value.startswith("'"):
        return value[1:] or None
    text = value.strip()
    if _NUMBER.fullmatch(text):
        number = float(text)
        return int(number) if number.is_integer() and abs(number) < 2**53 else number
    if text.upper() in ("TRUE", "FALSE"):
        return text.upper() == "TRUE"
    return value


def _render(value: Any, option: str) -> Any:
    if isinstance(value, bool):
        return ("TRUE" if value else "FALSE") if option == "FORMATTED_VALUE" else value
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        value = int(value)
    if option == "FORMATTED_VALUE":
        return repr(value) if isinstance(value, float) else str(value)
    return value


def _render_option(value: str | None) -> str:
    option = value or "FORMATTED_VALUE"
    if option not in ("FORMATTED_VALUE", "UNFORMATTED_VALUE", "FORMULA"):
        raise _invalid(f"Invalid value at 'value_render_option' (TYPE_ENUM), \"{option}\"")
    return option


def _input_option(value: Any) -> str:
    if not value:
        raise _invalid("'valueInputOption' is required but not specified")
    if value not in ("RAW", "USER_ENTERED"):
        raise _invalid(f"Invalid value at 'value_input_option' (TYPE_ENUM), \"{value}\"")
    return str(value)


def _major(query: Any) -> str:
    major = query.get("majorDimension") or "ROWS"
    if major not in ("ROWS", "COLUMNS"):
        raise _invalid(f"Invalid value at 'major_dimension' (TYPE_ENUM), \"{major}\"")
    return str(major)


# -- A1 notation ------------------------------------------------------------------------------


def _letters(index: int) -> str:
    """0 -> "A", 26 -> "AA"."""
    letters = ""
    n = index + 1
    while n:
        n, rest = divmod(n - 1, 26)
        letters = chr(ord("A") + rest) + letters
    return letters


def _column(letters: str) -> int:
    n = 0
    for char in letters:
        n = n * 26 + ord(char) - ord("A") + 1
    return n - 1


def _cell(a1: str) -> tuple[int, int]:
    match = re.fullmatch(r"([A-Z]+)([1-9]\d*)", a1.upper())
    if match is None:
        raise ValueError(f"not a cell: {a1!r}")
    return int(match[2]) - 1, _column(match[1])


def _title_ref(title: str) -> str:
    if _PLAIN_TITLE.fullmatch(title) and not _CELL_LIKE.fullmatch(title):
        return title
    return "'" + title.replace("'", "''") + "'"


def _a1(sheet: _Sheet, r0: int, c0: int, r1: int, c1: int) -> str:
    start = f"{_letters(c0)}{r0 + 1}"
    if r1 - r0 <= 1 and c1 - c0 <= 1:
        return f"{_title_ref(sheet.title)}!{start}"
    return f"{_title_ref(sheet.title)}!{start}:{_letters(c1 - 1)}{r1}"


def _grid_error(text: str, sheet: _Sheet) -> SheetsError:
    return _invalid(
        f"Range ({text}) exceeds grid limits. Max rows: {sheet.row_count}, "
        f"max columns: {sheet.column_count}"
    )


# -- answers ----------------------------------------------------------------------------------


def _error(code: int, message: str, status: str) -> web.Response:
    body = {"error": {"code": code, "message": message, "status": status}}
    return web.json_response(body, status=code)


def _oauth_error(error: str, description: str) -> web.Response:
    return web.json_response({"error": error, "error_description": description}, status=400)


def _injected(mode: str, kind: str) -> web.Response:
    if kind == "token":
        errors = {"429": "rate_limit_exceeded", "500": "internal_failure"}
        body = {"error": errors.get(mode, "temporarily_unavailable"), "error_description": mode}
        return web.json_response(body, status=int(mode))
    if mode == "429":
        what = "Read" if kind in READ_KINDS else "Write"
        message = QUOTA_MESSAGE.format(what=what)
        details = [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "RATE_LIMIT_EXCEEDED",
                "domain": "googleapis.com",
                "metadata": {
                    "quota_metric": f"sheets.googleapis.com/{what.lower()}_requests",
                    "quota_limit": f"{what}RequestsPerMinutePerUser",
                    "service": "sheets.googleapis.com",
                    "consumer": "projects/123",
                },
            }
        ]
        error = {"code": 429, "message": message, "status": "RESOURCE_EXHAUSTED"}
        return web.json_response({"error": {**error, "details": details}}, status=429)
    if mode == "500":
        return _error(500, "Internal error encountered.", "INTERNAL")
    return _error(503, "The service is currently unavailable.", "UNAVAILABLE")


def _cut(request: web.Request) -> web.Response:
    """Close the connection without an answer (the client sees it dropped)."""
    transport = request.transport
    if transport is not None:
        transport.abort()
    return web.Response(status=500)


def _b64decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
