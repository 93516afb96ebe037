"""The Google Sheets fake driven by the real, unmodified gspread + google-auth."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import gspread
import pytest
import requests
from google.auth.exceptions import RefreshError
from google.oauth2.service_account import Credentials
from gspread.exceptions import APIError, SpreadsheetNotFound
from gspread.http_client import ParamsType
from gspread.utils import ValueInputOption, ValueRenderOption

from tests.fakes.sheets import QUOTA_MESSAGE, FakeSheets

SCOPES = ["https://www.googleapis.com/auth/spreadsheets"]
GOOGLE = "https://sheets.googleapis.com"
UNFORMATTED = ValueRenderOption.unformatted
T = TypeVar("T")


def http_client_for(base: str) -> type[gspread.HTTPClient]:
    """gspread's HTTPClient, sending what it would send to Google to `base` instead."""

    class AtFake(gspread.HTTPClient):
        def request(self, method: str, endpoint: str, *args: Any, **kwargs: Any) -> Any:
            return super().request(method, endpoint.replace(GOOGLE, base, 1), *args, **kwargs)

    return AtFake


def connect(fake: FakeSheets, key: Path, timeout: float = 5.0) -> gspread.Client:
    creds = Credentials.from_service_account_file(  # type: ignore[no-untyped-call]
        str(key), scopes=SCOPES
    )
    client = gspread.Client(auth=creds, http_client=http_client_for(fake.url))
    client.set_timeout(timeout)
    return client


async def gs(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a (blocking) gspread call off the event loop the fake serves on. Mind properties
    that fetch, such as ``Spreadsheet.sheet1``: they too must not run on the loop."""
    return await asyncio.to_thread(fn, *args, **kwargs)


async def sheet1(client: gspread.Client, sid: str) -> gspread.Worksheet:
    return await gs(lambda: client.open_by_key(sid).sheet1)


@pytest.fixture
async def fake() -> AsyncIterator[FakeSheets]:
    fake = FakeSheets()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
def key(fake: FakeSheets, tmp_path: Path) -> Path:
    return fake.key_file(tmp_path / "keys")


@pytest.fixture
def client(fake: FakeSheets, key: Path) -> gspread.Client:
    return connect(fake, key)


async def test_round_trip(fake: FakeSheets, client: gspread.Client) -> None:
    sid = fake.create_spreadsheet("CRM")
    header = ["id", "date", "name", "phone", "sum", "status", "g", "h", "i", "j", "k", "l", "m"]

    def work() -> tuple[gspread.Spreadsheet, Any, Any, Any]:
        sh = client.open_by_key(sid)
        ws = sh.add_worksheet("Orders", rows=20, cols=13)
        ws.freeze(rows=1)
        ws.format("A1:M1", {"textFormat": {"bold": True}})
        ws.update([header], "A1:M1")
        batch = ws.batch_update(
            [
                {"range": "A2:C2", "values": [["o-1", "2024-05-01", "Ann"]]},
                {"range": "E2", "values": [[2870.5]]},
            ]
        )
        appended = ws.append_rows([["o-2", "2024-05-02", "Bob", "+7900", 100]])
        got = ws.batch_get(["A1:C1", "E:E"])
        return sh, batch, appended, got

    sh, batch, appended, got = await gs(work)
    assert (sh.title, sh.locale, sh.timezone) == ("CRM", "ru_RU", "Europe/Moscow")
    assert fake.sheet_titles(sid) == ["Sheet1", "Orders"]
    grid = fake.sheet_properties(sid, "Orders")["gridProperties"]
    assert grid == {"rowCount": 20, "columnCount": 13, "frozenRowCount": 1}
    assert batch["totalUpdatedCells"] == 4 and len(batch["responses"]) == 2
    assert batch["responses"][1]["updatedRange"] == "Orders!E2"
    assert appended["tableRange"] == "Orders!A1:M2"
    assert appended["updates"]["updatedRange"] == "Orders!A3:E3"
    assert appended["updates"]["updatedCells"] == 5
    assert got[0] == [["id", "date", "name"]]
    assert got[0].range == "Orders!A1:C1"
    assert got[1] == [["sum"], ["2870.5"], ["100"]]
    assert got[1].range == "Orders!E1:E20"
    assert fake.rows(sid, "Orders") == [
        header,
        ["o-1", "2024-05-01", "Ann", "", 2870.5],
        ["o-2", "2024-05-02", "Bob", "+7900", 100],  # append_rows is RAW by default
    ]
    assert any("repeatCell" in request for request in fake.batch_updates)
    assert fake.count("token") == 1 and fake.tokens_issued == 1
    assert {call.account for call in fake.calls if call.kind != "token"} == {fake.default_email}
    assert fake.writes == 6  # addSheet, freeze, format, update, batch update, append
    assert fake.reads == fake.count("get") + fake.count("values.batchGet")


async def test_values_as_entered_and_rendered(fake: FakeSheets, client: gspread.Client) -> None:
    sid = fake.create_spreadsheet()
    row = ["2870.5", "+79001234567", "'007", "TRUE", "text", "=A1*2", 5, 2.0, True]

    def work() -> tuple[Any, Any, Any]:
        ws = client.open_by_key(sid).sheet1
        ws.update([row], "A1", value_input_option=ValueInputOption.user_entered)
        ws.update([row], "A2", value_input_option=ValueInputOption.raw)
        ws.update([[None, "", "x"]], "A2")  # null leaves a cell alone, "" empties it
        return ws.get("A1:I2"), ws.get("A1:I2", value_render_option=UNFORMATTED), ws.get("Z9")

    formatted, unformatted, nothing = await gs(work)
    assert unformatted == [
        [2870.5, 79001234567, "007", True, "text", "=A1*2", 5, 2, True],
        ["2870.5", "", "x", "TRUE", "text", "=A1*2", 5, 2, True],
    ]
    assert formatted == [
        ["2870.5", "79001234567", "007", "TRUE", "text", "=A1*2", "5", "2", "TRUE"],
        ["2870.5", "", "x", "TRUE", "text", "=A1*2", "5", "2", "TRUE"],
    ]
    assert nothing == [[]]  # gspread's stand-in for the omitted "values"
    assert fake.rows(sid, "Sheet1")[1][:3] == ["2870.5", "", "x"]


async def test_ranges(fake: FakeSheets, client: gspread.Client) -> None:
    sid = fake.create_spreadsheet()
    fake.add_sheet(sid, "It's a sheet", rows=5, columns=4)
    fake.set_rows(sid, "Sheet1", [["a", "b", "c"], ["d"], [], ["g", "", "i"]])

    def get(rng: str) -> Any:
        return client.open_by_key(sid).values_get(rng)

    assert await gs(get, "Sheet1!A:A") == {
        "range": "Sheet1!A1:A1000",
        "majorDimension": "ROWS",
        "values": [["a"], ["d"], [], ["g"]],
    }
    assert (await gs(get, "Sheet1!1:1"))["values"] == [["a", "b", "c"]]
    assert (await gs(get, "Sheet1!1:1"))["range"] == "Sheet1!A1:Z1"
    assert (await gs(get, "Sheet1!B2:D"))["values"] == [[], [], ["", "i"]]
    assert (await gs(get, "Sheet1!C4"))["values"] == [["i"]]
    assert await gs(get, "Sheet1!C3") == {"range": "Sheet1!C3", "majorDimension": "ROWS"}
    assert (await gs(get, "Sheet1"))["range"] == "Sheet1!A1:Z1000"
    assert (await gs(get, "A1:B1"))["values"] == [["a", "b"]]  # no sheet: the first one
    sh = await gs(client.open_by_key, sid)
    columns = await gs(sh.values_get, "Sheet1!A1:C2", {"majorDimension": "COLUMNS"})
    assert columns["values"] == [["a", "d"], ["b"], ["c"]]
    quoted = "'It''s a sheet'!A1:B2"
    written = await gs(sh.values_update, quoted, {"valueInputOption": "RAW"}, {"values": [[1, 2]]})
    assert written["updatedRange"] == "'It''s a sheet'!A1:B1"
    assert (await gs(get, quoted))["values"] == [["1", "2"]]
    assert fake.rows(sid, "It's a sheet") == [[1, 2]]
    with pytest.raises(APIError) as unknown:
        await gs(get, "Nope!A1")
    assert unknown.value.code == 400 and unknown.value.error["status"] == "INVALID_ARGUMENT"
    assert unknown.value.error["message"] == "Unable to parse range: Nope!A1"
    with pytest.raises(APIError) as beyond:
        await gs(get, "'It''s a sheet'!A1:A6")
    assert "exceeds grid limits. Max rows: 5, max columns: 4" in beyond.value.error["message"]
    with pytest.raises(APIError) as too_big:
        await gs(
            sh.values_update,
            "'It''s a sheet'!A5",
            {"valueInputOption": "RAW"},
            {"values": [[1], [2]]},
        )
    assert "exceeds grid limits" in too_big.value.error["message"]
    with pytest.raises(APIError) as too_wide:
        await gs(
            sh.values_update, "Sheet1!A1:B1", {"valueInputOption": "RAW"}, {"values": [[1, 2, 3]]}
        )
    assert "but tried writing to column [C]" in too_wide.value.error["message"]
    assert fake.rows(sid, "It's a sheet") == [[1, 2]] and fake.rows(sid, "Sheet1")[0] == [
        "a",
        "b",
        "c",
    ]


async def test_append_goes_after_the_last_row(fake: FakeSheets, client: gspread.Client) -> None:
    sid = fake.create_spreadsheet()
    fake.add_sheet(sid, "Sales", rows=4, columns=3)
    fake.set_rows(sid, "Sales", [["id", "sum"], ["1", 10], ["2", 20], ["3", 30]])
    fake.delete_row(sid, "Sales", 3)  # a person deletes "2": "3" moves up, rowCount 3

    def append(values: list[list[Any]], **params: str) -> Any:
        sh = client.open_by_key(sid)
        query: ParamsType = {"valueInputOption": "USER_ENTERED", **params}
        return sh.values_append("Sales!A1:B1", query, {"values": values})

    first = await gs(append, [["4", "40"]])
    assert first["tableRange"] == "Sales!A1:B3"
    assert first["updates"]["updatedRange"] == "Sales!A4:B4"
    assert fake.sheet_properties(sid, "Sales")["gridProperties"]["rowCount"] == 4
    fake.set_cell(sid, "Sales", "C7", "note")  # outside the range's columns: no effect on append
    second = await gs(append, [["5", "50"], ["6", "60"]], insertDataOption="INSERT_ROWS")
    assert second["updates"]["updatedRange"] == "Sales!A5:B6"
    assert fake.rows(sid, "Sales") == [
        ["id", "sum"],
        ["1", 10],
        ["3", 30],
        [4, 40],  # USER_ENTERED: numbers
        [5, 50],
        [6, 60],
        [],
        [],
        ["", "", "note"],  # inserted rows pushed it down
    ]
    assert fake.sheet_properties(sid, "Sales")["gridProperties"]["rowCount"] == 9
    assert fake.cell(sid, "Sales", "B6") == 60 and fake.cell(sid, "Sales", "B7") is None


async def test_batch_update_requests(fake: FakeSheets, client: gspread.Client) -> None:
    sid = fake.create_spreadsheet()
    sh = await gs(client.open_by_key, sid)
    ws = await gs(sh.add_worksheet, "Orders", 10, 5)
    with pytest.raises(APIError) as duplicate:
        await gs(sh.add_worksheet, "orders", 10, 5)
    assert duplicate.value.code == 400
    assert 'A sheet with the name "orders" already exists' in duplicate.value.error["message"]
    batch = {
        "requests": [
            {"addSheet": {"properties": {"title": "Never"}}},
            {"deleteRange": {"range": {"sheetId": ws.id}, "shiftDimension": "ROWS"}},
        ]
    }
    with pytest.raises(APIError) as unknown:
        await gs(sh.batch_update, batch)
    assert unknown.value.code == 400 and "deleteRange" in unknown.value.error["message"]
    assert fake.sheet_titles(sid) == ["Sheet1", "Orders"]  # all or nothing
    formatting: list[dict[str, Any]] = [
        {
            "updateDimensionProperties": {
                "range": {"sheetId": ws.id, "dimension": "COLUMNS", "startIndex": 0},
                "properties": {"pixelSize": 120},
                "fields": "pixelSize",
            }
        },
        {"setBasicFilter": {"filter": {"range": {"sheetId": ws.id}}}},
        {
            "addProtectedRange": {
                "protectedRange": {"range": {"sheetId": ws.id}, "warningOnly": True}
            }
        },
        {
            "updateSheetProperties": {
                "properties": {
                    "sheetId": ws.id,
                    "title": "Заказы",
                    "gridProperties": {"frozenRowCount": 2},
                },
                "fields": "title,gridProperties.frozenRowCount",
            }
        },
    ]
    answer = await gs(sh.batch_update, {"requests": formatting})
    assert answer["replies"][:2] == [{}, {}]
    assert answer["replies"][2]["addProtectedRange"]["protectedRange"]["protectedRangeId"] > 0
    assert fake.batch_updates[-4:] == formatting
    assert fake.sheet_titles(sid) == ["Sheet1", "Заказы"]
    assert fake.sheet_properties(sid, "Заказы")["gridProperties"]["frozenRowCount"] == 2
    await gs(lambda: sh.del_worksheet(sh.sheet1))
    assert fake.sheet_titles(sid) == ["Заказы"]
    assert (await gs(sh.worksheets))[0].index == 0
    with pytest.raises(APIError) as last:
        await gs(sh.del_worksheet_by_id, ws.id)
    assert "You can't remove all the sheets" in last.value.error["message"]


async def test_a_dropdown_and_a_note(fake: FakeSheets, client: gspread.Client) -> None:
    sid = fake.create_spreadsheet()
    sh = await gs(client.open_by_key, sid)
    ws = await gs(sh.add_worksheet, "Orders", 10, 5)
    column = {"sheetId": ws.id, "startRowIndex": 1, "startColumnIndex": 2, "endColumnIndex": 3}
    rule = {
        "condition": {"type": "ONE_OF_LIST", "values": [{"userEnteredValue": "packed"}]},
        "strict": False,
        "showCustomUi": True,
    }
    await gs(
        sh.batch_update, {"requests": [{"setDataValidation": {"range": column, "rule": rule}}]}
    )
    assert fake.validation(sid, "Orders", "C5") == rule
    assert (
        fake.validation(sid, "Orders", "C1") is None
        and fake.validation(sid, "Orders", "D5") is None
    )
    empty = {"setDataValidation": {"range": column, "rule": {"condition": {"type": "ONE_OF_LIST"}}}}
    with pytest.raises(APIError) as bad:
        await gs(sh.batch_update, {"requests": [empty]})
    assert bad.value.code == 400
    cells = {
        "updateCells": {
            "start": {"sheetId": ws.id, "rowIndex": 2, "columnIndex": 2},
            "rows": [{"values": [{"userEnteredValue": {"stringValue": "packed"}, "note": "why"}]}],
            "fields": "userEnteredValue,note",
        }
    }
    await gs(sh.batch_update, {"requests": [cells]})
    assert fake.cell(sid, "Orders", "C3") == "packed" and fake.note(sid, "Orders", "C3") == "why"
    cells["updateCells"]["rows"] = [{"values": [{}]}]
    cells["updateCells"]["fields"] = "note"
    await gs(sh.batch_update, {"requests": [cells]})
    assert fake.cell(sid, "Orders", "C3") == "packed" and fake.note(sid, "Orders", "C3") == ""
    del cells["updateCells"]["fields"]
    with pytest.raises(APIError):
        await gs(sh.batch_update, {"requests": [cells]})


async def test_values_batch_update_is_all_or_nothing(
    fake: FakeSheets, client: gspread.Client
) -> None:
    sid = fake.create_spreadsheet()
    ws = await sheet1(client, sid)
    with pytest.raises(APIError) as refused:
        await gs(
            ws.batch_update,
            [{"range": "A1", "values": [["x"]]}, {"range": "Nope!A1", "values": [["y"]]}],
        )
    assert refused.value.code == 400
    assert fake.rows(sid, "Sheet1") == []
    assert fake.count("values.batchUpdate", status=400) == 1 and fake.writes == 0
    await gs(ws.batch_clear, ["A1"])
    assert fake.writes == 1


async def test_access(fake: FakeSheets, key: Path, tmp_path: Path) -> None:
    other = "other@test-project.iam.gserviceaccount.com"
    mine = fake.create_spreadsheet()
    theirs = fake.create_spreadsheet(share_with=other)
    readable = fake.create_spreadsheet(share_with=())
    fake.share(readable, fake.default_email, role="reader")
    client = connect(fake, key)
    assert (await gs(client.open_by_key, mine)).id == mine
    with pytest.raises(PermissionError) as denied:
        await gs(client.open_by_key, theirs)
    cause = denied.value.__cause__
    assert isinstance(cause, APIError) and cause.code == 403
    assert cause.error == {
        "code": 403,
        "message": "The caller does not have permission",
        "status": "PERMISSION_DENIED",
    }
    with pytest.raises(SpreadsheetNotFound):
        await gs(client.open_by_key, "no-such-spreadsheet")
    ws = await sheet1(client, readable)
    assert await gs(ws.get_all_values) == [[]]  # gspread's empty sheet
    with pytest.raises(APIError) as read_only:
        await gs(ws.update, [["x"]], "A1")
    assert read_only.value.code == 403
    assert (
        await gs(connect(fake, fake.key_file(tmp_path, other)).open_by_key, theirs)
    ).id == theirs

    fake.revoke_tokens()  # a 401: google-auth fetches a new token and retries on its own
    assert (await gs(client.open_by_key, mine)).id == mine
    assert fake.tokens_issued == 3 and fake.count("get", status=401) == 1
    fake.delete_key()
    fake.revoke_tokens()
    with pytest.raises(RefreshError) as refresh:
        await gs(client.open_by_key, mine)
    assert "invalid_grant: Invalid JWT Signature." in str(refresh.value)


async def test_raw_http_checks(fake: FakeSheets) -> None:
    sid = fake.create_spreadsheet()
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{fake.url}/v4/spreadsheets/{sid}") as response:
            assert response.status == 401
            error = (await response.json())["error"]
            assert error["status"] == "UNAUTHENTICATED" and error["code"] == 401
        headers = {"Authorization": "Bearer made-up"}
        async with session.get(f"{fake.url}/v4/spreadsheets/{sid}", headers=headers) as response:
            assert response.status == 401
        form = {"grant_type": "client_credentials"}
        async with session.post(fake.token_url, data=form) as response:
            assert response.status == 400
            assert (await response.json())["error"] == "unsupported_grant_type"
        form = {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": "a.b.c"}
        async with session.post(fake.token_url, data=form) as response:
            assert response.status == 400
    assert fake.count("get", status=401) == 2 and fake.count("token", status=400) == 2


@pytest.mark.parametrize(
    ("mode", "status"),
    [("503", "UNAVAILABLE"), ("500", "INTERNAL"), ("429", "RESOURCE_EXHAUSTED")],
)
async def test_injected_errors_perform_nothing(
    fake: FakeSheets, client: gspread.Client, mode: str, status: str
) -> None:
    sid = fake.create_spreadsheet()
    ws = await sheet1(client, sid)
    fake.fail(mode, count=2, paths="POST *:append")
    for _ in range(2):
        with pytest.raises(APIError) as failed:
            await gs(ws.append_row, ["x"])
        assert failed.value.code == int(mode) and failed.value.error["status"] == status
        assert failed.value.response.status_code == int(mode)
    if mode == "429":
        assert failed.value.error["message"] == QUOTA_MESSAGE.format(what="Write")
    if mode == "503":
        assert failed.value.error["message"] == "The service is currently unavailable."
    assert fake.rows(sid, "Sheet1") == [] and fake.writes == 0
    await gs(ws.append_row, ["x"])
    assert fake.rows(sid, "Sheet1") == [["x"]] and fake.writes == 1
    assert [status for _, _, status in fake.requests[-3:]] == [int(mode), int(mode), 200]


async def test_failure_filter_and_window(fake: FakeSheets, client: gspread.Client) -> None:
    sid = fake.create_spreadsheet()
    sh = await gs(client.open_by_key, sid)
    ws = await sheet1(client, sid)
    fake.fail("503", seconds=60, paths="PUT /v4/spreadsheets/*")
    with pytest.raises(APIError):
        await gs(ws.update, [["x"]], "A1")
    await gs(ws.append_row, ["y"])  # not a PUT
    fake.clear_failures()
    await gs(ws.update, [["x"]], "A1")
    assert fake.rows(sid, "Sheet1") == [["x"]]
    fake.fail("500", seconds=0.2)
    with pytest.raises(APIError):
        await gs(sh.fetch_sheet_metadata)
    await asyncio.sleep(0.25)
    assert (await gs(sh.fetch_sheet_metadata))["spreadsheetId"] == sid


async def test_timeout_performs_nothing(fake: FakeSheets, key: Path) -> None:
    sid = fake.create_spreadsheet()
    client = connect(fake, key, timeout=0.5)
    ws = await sheet1(client, sid)
    fake.hold_seconds = 5
    fake.fail("timeout", count=1, paths="POST *:append")
    with pytest.raises(requests.exceptions.ReadTimeout):
        await gs(ws.append_row, ["x"])
    assert fake.rows(sid, "Sheet1") == [] and fake.requests[-1][2] == 0
    fake.clear_failures()  # lets the held request go
    await gs(ws.append_row, ["x"])
    assert fake.rows(sid, "Sheet1") == [["x"]]


async def test_apply_then_timeout_lands_the_write(fake: FakeSheets, key: Path) -> None:
    sid = fake.create_spreadsheet()
    client = connect(fake, key, timeout=0.5)
    ws = await sheet1(client, sid)
    fake.hold_seconds = 5
    fake.fail("apply_then_timeout", count=1)
    with pytest.raises(requests.exceptions.Timeout):
        await gs(ws.append_row, ["order-1", 100])
    assert fake.rows(sid, "Sheet1") == [["order-1", 100]]  # the client never heard
    assert fake.writes == 1 and fake.calls[-1].applied and fake.calls[-1].status == 0
    fake.clear_failures()


@pytest.mark.parametrize(("mode", "stored"), [("reset", []), ("apply_then_reset", [["x"]])])
async def test_reset(
    fake: FakeSheets, client: gspread.Client, mode: str, stored: list[list[str]]
) -> None:
    sid = fake.create_spreadsheet()
    ws = await sheet1(client, sid)
    fake.fail(mode, count=1)
    with pytest.raises(requests.exceptions.ConnectionError):
        await gs(ws.append_row, ["x"])
    assert fake.rows(sid, "Sheet1") == stored
    assert (await gs(ws.get_all_values)) == (stored or [[]])


async def test_quota(fake: FakeSheets, client: gspread.Client) -> None:
    sid = fake.create_spreadsheet()
    ws = await sheet1(client, sid)
    fake.quota_per_minute = 3
    for n in range(3):
        await gs(ws.update, [[n]], f"A{n + 1}")
    with pytest.raises(APIError) as limited:
        await gs(ws.update, [["late"]], "A4")
    assert limited.value.code == 429
    assert limited.value.error["message"] == QUOTA_MESSAGE.format(what="Write")
    assert await gs(ws.get_all_values) == [["0"], ["1"], ["2"]]  # reads are not limited
    assert fake.quota_rejections == 1 and fake.max_writes_in_any_minute == 4
    fake.quota_window = 0.2  # so the test need not wait a minute
    await asyncio.sleep(0.25)
    await gs(ws.update, [["late"]], "A4")
    assert fake.rows(sid, "Sheet1")[-1] == ["late"] and fake.writes == 4
