"""CSV and JSONL export of inspections (and reading them back, typed, for checks and imports).

CSV: one row per inspection, ``EXPORT_COLUMNS``; dict columns as JSON text, times ISO 8601
with offset, empty cell for NULL. JSONL: one JSON object per inspection, with its defects
if the rows carry them.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from collections.abc import Iterable, Iterator
from typing import IO, Any

from station.db.queries import DEFECT_COLUMNS, EXPORT_COLUMNS

INT_COLUMNS = {"id", "sequence", "part_id", "recipe_version", "plc_code", "defect_count", "images_dropped"}
JSON_COLUMNS = {"model_hashes", "scores", "thresholds", "timings_ms"}
TIME_COLUMNS = {"triggered_at"}
NULLABLE = {"reject_reason", "top_class", "error"}


def _cell(column: str, value: Any) -> str:
    if value is None:
        return ""
    if column in JSON_COLUMNS:
        return json.dumps(value, sort_keys=True)
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return str(value)


def write_csv(rows: Iterable[dict[str, Any]], out: IO[str]) -> int:
    """Write ``rows`` (EXPORT_COLUMNS) as CSV with a header; returns the number of rows."""
    w = csv.writer(out, lineterminator="\n")
    w.writerow(EXPORT_COLUMNS)
    n = 0
    for row in rows:
        w.writerow([_cell(c, row.get(c)) for c in EXPORT_COLUMNS])
        n += 1
    return n


def read_csv(src: IO[str]) -> Iterator[dict[str, Any]]:
    """Rows written by ``write_csv``, with their types back."""
    for raw in csv.DictReader(src):
        row: dict[str, Any] = {}
        for c in EXPORT_COLUMNS:
            v = raw[c]
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


__all__ = ["write_csv", "read_csv", "write_jsonl", "read_jsonl", "EXPORT_COLUMNS", "DEFECT_COLUMNS"]
