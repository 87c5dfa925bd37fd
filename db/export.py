"""CSV and JSONL export of inspections (and reading them back, typed, for checks and imports).

CSV: one row per inspection, ``EXPORT_COLUMNS``; dict columns as JSON text, times ISO 8601
with offset, empty cell for NULL. JSONL: one JSON object per inspection, with its defects
if the rows carry them.

Every CSV the station writes (here, the HMI's history export) goes through ``csv_cell``: a
spreadsheet runs a cell that begins with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return
as a formula, so such a *text* cell gets a leading apostrophe (``'=HYPERLINK(…)`` shows as
text). Numbers are written as numbers, negative ones included: a number is not a formula.
``read_csv`` takes the apostrophe off again, so export → import gives the stored text back.
JSONL is machine data for programs, not spreadsheets: it carries every value verbatim.
"""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import json
import math
from collections.abc import Iterable, Iterator
from typing import IO, Any

from station.db.queries import DEFECT_COLUMNS, EXPORT_COLUMNS

INT_COLUMNS = {"id", "sequence", "part_id", "recipe_version", "plc_code", "defect_count", "images_dropped"}
JSON_COLUMNS = {"model_hashes", "scores", "thresholds", "timings_ms"}
TIME_COLUMNS = {"triggered_at"}
NULLABLE = {"reject_reason", "top_class", "error"}


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # what makes a spreadsheet run a cell
NEUTRALISER = "'"


def neutralise_text(text: str) -> str:
    """``text`` as a cell no spreadsheet runs: an apostrophe before a formula start.

    Text already beginning with apostrophes before a formula start gets one more, so that
    ``restore_text`` can tell an added apostrophe from one that was in the data."""
    return NEUTRALISER + text if text.lstrip(NEUTRALISER).startswith(FORMULA_STARTS) else text


def restore_text(cell: str) -> str:
    """The text ``neutralise_text`` was given."""
    if cell.startswith(NEUTRALISER) and cell.lstrip(NEUTRALISER).startswith(FORMULA_STARTS):
        return cell[1:]
    return cell


def csv_cell(value: Any) -> str | int | float | decimal.Decimal:
    """One CSV cell: empty for None, finite numbers as numbers, dicts and lists as JSON text,
    times ISO 8601, and any text made safe for spreadsheets (``neutralise_text``)."""
    if value is None:
        return ""
    if isinstance(value, (int, float, decimal.Decimal)) and not isinstance(value, bool):
        if not isinstance(value, float) or math.isfinite(value):
            return value
    if isinstance(value, (dict, list)):
        value = json.dumps(value, sort_keys=True)
    elif isinstance(value, dt.datetime):
        value = value.isoformat()
    return neutralise_text(str(value))


def csv_writer(out: IO[str]):
    """The station's CSV writer. Rows end in CRLF (RFC 4180) so that a cell holding a carriage
    return is quoted: Python's writer leaves it bare with "\n" line ends, and a spreadsheet
    then starts a new row there, with whatever follows as a fresh, unneutralised cell."""
    return csv.writer(out, lineterminator="\r\n")


def write_csv(rows: Iterable[dict[str, Any]], out: IO[str]) -> int:
    """Write ``rows`` (EXPORT_COLUMNS) as CSV with a header; returns the number of rows."""
    w = csv_writer(out)
    w.writerow(EXPORT_COLUMNS)
    n = 0
    for row in rows:
        w.writerow([csv_cell(_json_text(row.get(c)) if c in JSON_COLUMNS else row.get(c)) for c in EXPORT_COLUMNS])
        n += 1
    return n


def _json_text(value: Any) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True)


def read_csv(src: IO[str]) -> Iterator[dict[str, Any]]:
    """Rows written by ``write_csv``, with their types (and their text) back."""
    for raw in csv.DictReader(src):
        row: dict[str, Any] = {}
        for c in EXPORT_COLUMNS:
            v = restore_text(raw[c])
            if v == "" and c in NULLABLE:
                row[c] = None
            elif c in INT_COLUMNS:
                row[c] = int(v)
            elif c in JSON_COLUMNS:
                row[c] = json.loads(v)
            elif c in TIME_COLUMNS:
                row[c] = dt.datetime.fromisoformat(v)
            else:
                row[c] = v
        yield row


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_jsonl(rows: Iterable[dict[str, Any]], out: IO[str]) -> int:
    n = 0
    for row in rows:
        out.write(json.dumps(row, default=_json_default, sort_keys=True, ensure_ascii=False) + "\n")
        n += 1
    return n


def read_jsonl(src: IO[str]) -> Iterator[dict[str, Any]]:
    for line in src:
        if line.strip():
            row = json.loads(line)
            for c in TIME_COLUMNS:
                if row.get(c) is not None:
                    row[c] = dt.datetime.fromisoformat(row[c])
            yield row


__all__ = [
    "csv_cell", "csv_writer", "neutralise_text", "restore_text", "write_csv", "read_csv",
    "write_jsonl", "read_jsonl", "EXPORT_COLUMNS", "DEFECT_COLUMNS",
]
