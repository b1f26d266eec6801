"""Bad export and report requests get clear errors before any database work; any text made a
cell is safe for a spreadsheet (hypothesis)."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.errors import InvalidCommand
from domain.reporting import MAX_PERIOD_DAYS, RequestSalesExport, RequestSalesReport
from jobs.exports import export_path
from jobs.reports import money
from jobs.sales_rows import MAX_CELL_CHARS, cell_text

D = date(2026, 11, 1)


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (
            {"period_from": D, "period_to": D - timedelta(days=1)},
            "starts (2026-11-01) after it ends",
        ),
        ({"period_from": D, "period_to": D + timedelta(days=MAX_PERIOD_DAYS)}, "at most 366"),
        ({"period_from": date(1999, 12, 31), "period_to": D}, "before 2000-01-01"),
        ({"format": "ods"}, "format: Input should be 'csv' or 'xlsx'"),
        ({"tenant_id": " t-1"}, "tenant_id: Value error, an id starts or ends with a space"),
        ({"tenant_id": "t\x00"}, "tenant_id: Value error, an id contains"),
        ({"period_from": "2026-02-30"}, "period_from: Input should be a valid date"),
        ({"extra": 1}, "extra: Extra inputs are not permitted"),
    ],
)
def test_a_bad_export_request_is_refused_saying_why(data: dict[str, object], says: str) -> None:
    request = {"tenant_id": "t-1", "format": "csv", "period_from": D, "period_to": D, **data}
    with pytest.raises(InvalidCommand, match="RequestSalesExport refused") as refused:
        RequestSalesExport.parse(request)
    assert says in str(refused.value)


def test_a_report_request_is_bounded_the_same_way() -> None:
    with pytest.raises(InvalidCommand, match="at most 366"):
        RequestSalesReport.parse(
            {"tenant_id": "t-1", "period_from": D, "period_to": D + timedelta(days=400)}
        )
    ok = RequestSalesReport.parse({"tenant_id": "t-1", "period_from": D, "period_to": D})
    assert isinstance(ok, RequestSalesReport)


@given(st.text(max_size=300), st.integers(min_value=0, max_value=40_000))
def test_a_cell_never_starts_a_formula_nor_holds_a_control_character(
    text: str, padding: int
) -> None:
    cell = cell_text(text + "x" * padding)
    assert not cell.startswith(("=", "+", "-", "@", "\t", "\r"))
    assert not any(ord(ch) < 32 and ch not in "\t\n\r" for ch in cell)
    assert "\x7f" not in cell
    assert len(cell) <= MAX_CELL_CHARS


@given(st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs")), max_size=100))
def test_safe_text_is_kept_as_it_is(text: str) -> None:
    if text.isprintable() and not text.startswith(("=", "+", "-", "@")):
        assert cell_text(text) == text


@given(st.text(min_size=1, max_size=64))
def test_an_export_file_stays_in_its_tenant_folder_whatever_its_id(export_id: str) -> None:
    path = export_path("t-1", export_id, (D, D), "csv")
    folder, name = path.split("/", 1)
    assert folder == "t-1" and "/" not in name and ".." not in name and "\x00" not in name


def test_money_shows_cents_exactly() -> None:
    assert [money(c) for c in (0, 5, 12345, -5, 10**18)] == [
        "0.00",
        "0.05",
        "123.45",
        "-0.05",
        "10,000,000,000,000,000.00",
    ]
