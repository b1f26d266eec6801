"""Writing export files: CSV and XLSX from chunks of rows, atomically, in constant memory.

A file is written under a temporary name beside its target, flushed and fsync'ed, then
renamed over the target (and the folder fsync'ed): a reader, or the download URL, sees the
whole file or none, and a retried job simply writes the same target again. A failed write
leaves no temporary file behind.

CSV goes through `csv.writer` (UTF-8 with a BOM, so that spreadsheets read it as UTF-8).
XLSX goes through XlsxWriter with `constant_memory`: each row is flushed to disk when the
next one starts, so memory stays flat however many rows; an XLSX sheet holds at most
SHEET_ROWS rows, so a longer export continues on sheets `orders 2`, `orders 3`... Numbers
beyond what a spreadsheet holds exactly (15 digits) are written as text, not rounded.
"""

from __future__ import annotations

import csv
import hashlib
import os
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["SHEET_ROWS", "WrittenFile", "atomic_target", "digest", "write_csv", "write_xlsx"]

Cell = str | int
# Excel's 1,048,576 rows less the header row.
SHEET_ROWS = 1_048_575
EXACT_NUMBER = 10**15


@dataclass(frozen=True, slots=True)
class WrittenFile:
    rows: int
    bytes: int
    sha256: str


@contextmanager
def atomic_target(target: Path) -> Iterator[Path]:
    """A temporary path to write; on success it replaces `target`, durably."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.part")
    try:
        yield temporary
        with temporary.open("rb+") as written:
            os.fsync(written.fileno())
        temporary.replace(target)
    finally:
        temporary.unlink(missing_ok=True)
    folder = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def digest(path: Path) -> tuple[int, str]:
    """Size and SHA-256 of a file, read in 1 MiB blocks."""
    sha, size = hashlib.sha256(), 0
    with path.open("rb") as source:
        while block := source.read(1 << 20):
            sha.update(block)
            size += len(block)
    return size, sha.hexdigest()


def write_csv(
    target: Path, header: Sequence[str], chunks: Iterable[Sequence[Sequence[Cell]]]
) -> WrittenFile:
    rows = 0
    with (
        atomic_target(target) as temporary,
        temporary.open("w", newline="", encoding="utf-8-sig") as sink,
    ):
        writer = csv.writer(sink)
        writer.writerow(header)
        for chunk in chunks:
            writer.writerows(chunk)
            rows += len(chunk)
    return WrittenFile(rows, *digest(target))


def write_xlsx(
    target: Path, header: Sequence[str], chunks: Iterable[Sequence[Sequence[Cell]]]
) -> WrittenFile:
    rows = 0
    with atomic_target(target) as temporary:
        # XlsxWriter's own temporary files (one per sheet) go beside the export, not to /tmp.
        options = {"constant_memory": True, "tmpdir": str(target.parent)}
        import xlsxwriter  # loaded when an XLSX is written, not with the job catalog

        workbook = xlsxwriter.Workbook(str(temporary), options)
        try:
            sheet, row, sheets = None, SHEET_ROWS, 0
            for chunk in chunks:
                for values in chunk:
                    if row >= SHEET_ROWS:
                        sheet = workbook.add_worksheet(_sheet_name(sheets))
                        sheets += 1
                        sheet.write_row(0, 0, header)
                        row = 0
                    row += 1
                    _write_row(sheet, row, values)
                rows += len(chunk)
            if sheet is None:
                workbook.add_worksheet(_sheet_name(0)).write_row(0, 0, header)
        finally:
            workbook.close()
    return WrittenFile(rows, *digest(target))


def _sheet_name(index: int) -> str:
    return "orders" if index == 0 else f"orders {index + 1}"


def _write_row(sheet: Any, row: int, values: Sequence[Cell]) -> None:
    # write_string / write_number, never write(): write() would read "=..." as a formula.
    for column, value in enumerate(values):
        if isinstance(value, int) and -EXACT_NUMBER < value < EXACT_NUMBER:
            sheet.write_number(row, column, value)
        else:
            sheet.write_string(row, column, str(value))
