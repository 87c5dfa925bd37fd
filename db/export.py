"""CSV and JSONL export of inspections.

CSV is for people with a spreadsheet (Excel, LibreOffice): it opens right with a double click.

- UTF-8 with a byte-order mark (Excel reads a CSV without one in the Windows code page, and
  "Kratzer überlänge" turns into mojibake), rows end in CRLF (RFC 4180).
- Times in the station's local time: ``triggered_at`` ISO 8601 with the UTC offset
  (``2026-12-04T23:10:05.123456+01:00``: unambiguous across the autumn clock change), and
  ``local_time`` ``2026-12-04 23:10:05``, which a spreadsheet takes as a date and time by itself.
- No JSON in a cell: each dict column is flattened into one column per key
  (``timings_ms.total``, ``thresholds.scratch.min_confidence``; keys are the union over the
  exported rows, an empty cell where a row has none). Defects:
  - per part (default): one row per inspection, ``count.<class>`` per defect class, then
    ``defect1.class_name``, ``defect1.confidence``, … for as many defects as the busiest part has;
  - per defect (``per_defect=True``): one row per defect with its part's columns repeated, and
    one row with empty defect cells for a part without defects (so the passes are still there).
  Defect masks (``mask_rle``) are not spreadsheet material: they are in the JSONL export.
- Decimal comma (``decimal=","``, the station file's ``[export] decimal_separator``): Excel set up
  for German, French, … reads a comma-separated file as one column and "0.93" as text. For it
  the cells are separated by semicolons and numbers written with a decimal comma ("0,93"), as
  Excel itself saves "CSV (semicolon)" there. Times are unchanged (ISO 8601 text, and
  ``local_time``, which Excel reads as a date in any locale). ``read_csv`` reads both.
- Formula neutralisation: a spreadsheet runs a cell that begins with ``=``, ``+``, ``-``,
  ``@``, a tab or a carriage return as a formula, so every *text* cell goes through
  ``csv_cell``: such a cell gets a leading apostrophe (``'=HYPERLINK(…)`` shows as text).
  Numbers are written as numbers, negative ones included: a number is not a formula.
  ``read_csv`` takes the apostrophe off again, so export → import gives the stored text back.

JSONL is machine data for programs, not spreadsheets: one JSON object per inspection (UTC
times, dicts as they are stored, defects with their masks if the rows carry them), verbatim.
"""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import json
import math
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

from station.db.localtime import local_iso, local_text
from station.db.queries import DEFECT_COLUMNS, EXPORT_COLUMNS

INT_COLUMNS = {"id", "sequence", "part_id", "recipe_version", "plc_code", "defect_count", "images_dropped"}
JSON_COLUMNS = ("model_hashes", "scores", "thresholds", "timings_ms")
TIME_COLUMNS = {"triggered_at"}
NULLABLE = {"reject_reason", "top_class", "error"}
# the inspection's own cells, in order; the dict columns follow flattened
PART_COLUMNS = tuple(c for c in EXPORT_COLUMNS if c not in JSON_COLUMNS)
# a defect's cells (not its id: a spreadsheet user has no use for it; not its mask: see above)
DEFECT_CELLS = tuple(c for c in DEFECT_COLUMNS if c not in ("id", "mask_rle"))
LOCAL_TIME = "local_time"
BOM = "\ufeff"


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
    """One CSV cell: empty for None, finite numbers as numbers, times ISO 8601, and any text made
    safe for spreadsheets (``neutralise_text``). A dict or list is refused: a spreadsheet cannot
    use JSON text, so ``flatten`` it into columns first."""
    if value is None:
        return ""
    if isinstance(value, (int, float, decimal.Decimal)) and not isinstance(value, bool):
        if not isinstance(value, float) or math.isfinite(value):
            return value
    if isinstance(value, (dict, list)):
        raise TypeError(f"a {type(value).__name__} is no CSV cell: flatten it into columns")
    if isinstance(value, dt.datetime):
        value = value.isoformat()
    return neutralise_text(str(value))


DECIMAL_SEPARATORS = (".", ",")


def delimiter_for(decimal: str) -> str:
    """The cell separator a spreadsheet with ``decimal`` as its decimal separator expects."""
    if decimal not in DECIMAL_SEPARATORS:
        raise ValueError(f"decimal separator {decimal!r}: use '.' or ','")
    return ";" if decimal == "," else ","


class _Writer:
    """csv.writer with the numbers of each row written with the spreadsheet's decimal separator."""

    def __init__(self, out: IO[str], decimal: str):
        self._w = csv.writer(out, delimiter=delimiter_for(decimal), lineterminator="\r\n")
        self._comma = decimal == ","

    def writerow(self, row: list) -> None:
        if self._comma:
            row = [str(c).replace(".", ",") if isinstance(c, (float, decimal.Decimal)) else c for c in row]
        self._w.writerow(row)


def csv_writer(out: IO[str], decimal: str = "."):
    """The station's CSV writer. Rows end in CRLF (RFC 4180) so that a cell holding a carriage
    return is quoted: Python's writer leaves it bare with "\n" line ends, and a spreadsheet
    then starts a new row there, with whatever follows as a fresh, unneutralised cell. With
    ``decimal=","``: semicolons between cells and numbers with a decimal comma."""
    return _Writer(out, decimal)


def flatten(value: dict | None, prefix: str = "") -> dict[str, Any]:
    """A stored dict column as flat cells: nested keys joined with dots, None left out."""
    out: dict[str, Any] = {}
    for key, v in (value or {}).items():
        name = f"{prefix}{key}"
        if isinstance(v, dict):
            out.update(flatten(v, name + "."))
        elif isinstance(v, list):
            out.update(flatten(dict(enumerate(v)), name + "."))
        elif v is not None:
            out[name] = v
    return out


class _Shape:
    """What the header needs to know about all exported rows: dict keys, classes, most defects."""

    def __init__(self) -> None:
        self.keys: dict[str, set[str]] = {c: set() for c in JSON_COLUMNS}
        self.classes: set[str] = set()
        self.most_defects = 0

    def add(self, row: dict[str, Any]) -> None:
        if "defects" not in row:
            raise ValueError("the CSV export needs each row's defects (iter_export(..., with_defects=True))")
        for c in JSON_COLUMNS:
            self.keys[c].update(flatten(row.get(c)))
        self.classes.update(d["class_name"] for d in row["defects"])
        self.most_defects = max(self.most_defects, len(row["defects"]))


def write_csv(rows: Callable[[], Iterable[dict[str, Any]]], out: IO[str], *, zone: dt.tzinfo,
              per_defect: bool = False, extra: tuple[str, ...] = (), decimal: str = ".") -> int:
    """Write the spreadsheet CSV (see the module's docstring) of the rows ``rows()`` yields
    (EXPORT_COLUMNS with their ``defects``, plus the ``extra`` columns, which go after the part's
    own). ``rows`` is called twice: once for the header's columns, once for the cells. Times are
    shown in ``zone``; numbers with ``decimal`` as the decimal separator (see the module's
    docstring). Returns the number of inspections written."""
    delimiter_for(decimal)  # a wrong separator is refused before anything is written
    shape = _Shape()
    for row in rows():
        shape.add(row)
    flat = [(c, k) for c in JSON_COLUMNS for k in sorted(shape.keys[c])]
    classes = sorted(shape.classes)
    head = [*PART_COLUMNS[:PART_COLUMNS.index("triggered_at") + 1], LOCAL_TIME,
            *PART_COLUMNS[PART_COLUMNS.index("triggered_at") + 1:], *extra, *(f"{c}.{k}" for c, k in flat)]
    if per_defect:
        head += [f"defect.{c}" for c in DEFECT_CELLS]
    else:
        head += [f"count.{c}" for c in classes]
        head += [f"defect{n}.{c}" for n in range(1, shape.most_defects + 1) for c in DEFECT_CELLS]
    out.write(BOM)
    w = csv_writer(out, decimal)
    w.writerow([csv_cell(h) for h in head])
    n = 0
    for row in rows():
        part = [_cell(row.get(c), zone) for c in PART_COLUMNS]
        at = PART_COLUMNS.index("triggered_at") + 1
        part[at:at] = [csv_cell(local_text(row.get("triggered_at"), zone))]
        part += [_cell(row.get(c), zone) for c in extra]
        cells = {c: flatten(row.get(c)) for c in JSON_COLUMNS}
        part += [csv_cell(cells[c].get(k)) for c, k in flat]
        defects = row["defects"]
        if per_defect:
            for d in defects or [{}]:
                w.writerow(part + [csv_cell(d.get(c)) for c in DEFECT_CELLS])
        else:
            counts = {c: 0 for c in classes}
            for d in defects:
                counts[d["class_name"]] += 1
            tail = [counts[c] for c in classes]
            for k in range(shape.most_defects):
                tail += [csv_cell(defects[k].get(c)) if k < len(defects) else "" for c in DEFECT_CELLS]
            w.writerow(part + tail)
        n += 1
    return n


def _cell(value: Any, zone: dt.tzinfo) -> Any:
    return csv_cell(local_iso(value, zone) if isinstance(value, dt.datetime) else value)


def _number_or_text(cell: str, decimal: str = ".") -> Any:
    number = cell.replace(",", ".") if decimal == "," else cell
    for kind in (int, float):
        try:
            return kind(number)
        except ValueError:
            pass
    return cell


def read_csv(src: IO[str]) -> Iterator[dict[str, Any]]:
    """The inspections of a per-part CSV written by ``write_csv``, typed: the part's columns as
    stored (times aware, in the file's local time), each dict column as its ``flatten``ed cells,
    ``count.<class>`` as ``counts``, and the text of any other column under its name (as written:
    with a decimal comma in the decimal-comma form)."""
    first = src.read(1)
    if first != BOM:
        raise ValueError("not a station CSV export: it does not start with a UTF-8 byte-order mark")
    header = src.readline()  # its names hold neither separator: a semicolon means the decimal-comma form
    decimal = "," if ";" in header else "."
    delimiter = delimiter_for(decimal)
    names = next(csv.reader([header], delimiter=delimiter))
    for raw in csv.DictReader(src, fieldnames=names, delimiter=delimiter):
        row: dict[str, Any] = {c: {} for c in JSON_COLUMNS} | {"counts": {}}
        for name, text in raw.items():
            v = restore_text(text)
            top, _, key = name.partition(".")
            if name in PART_COLUMNS:
                if v == "" and name in NULLABLE:
                    row[name] = None
                elif name in INT_COLUMNS:
                    row[name] = int(v)
                elif name in TIME_COLUMNS:
                    row[name] = dt.datetime.fromisoformat(v)
                else:
                    row[name] = v
            elif top in JSON_COLUMNS and key:
                if v != "":
                    row[top][key] = v if top == "model_hashes" else _number_or_text(v, decimal)
            elif top == "count" and key:
                row["counts"][key] = int(v)
            else:
                row[name] = v
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
    "csv_cell", "csv_writer", "flatten", "neutralise_text", "restore_text", "write_csv", "read_csv",
    "write_jsonl", "read_jsonl", "EXPORT_COLUMNS", "DEFECT_COLUMNS", "PART_COLUMNS", "DEFECT_CELLS", "BOM",
]
