"""The spreadsheet CSV of the filtered history with the engineers' review labels.

The columns of ``db.export.write_csv`` (local times with their UTC offset, UTF-8 with BOM, no
JSON cells, defects as columns or one row per defect) with ``review_label``,
``review_comment``, ``reviewer``, ``reviewed_at`` (the latest review of each inspection; empty
if none) after the part's own. Cells go through ``db.export.csv_cell``: a comment like
``=HYPERLINK(…)`` is exported as text.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Iterator

from sqlalchemy import select

from station.db.export import write_csv
from station.db.filters import HistoryFilter
from station.db.models import ReviewRow
from station.db.queries import HistoryQueries

REVIEW_COLUMNS = ("review_label", "review_comment", "reviewer", "reviewed_at")
MAX_EXPORT_ROWS = 200_000


def latest_reviews(queries: HistoryQueries, ids: list[int]) -> dict[int, dict]:
    if not ids:
        return {}
    r = ReviewRow.__table__.c
    out: dict[int, dict] = {}
    with queries.engine.connect() as conn:
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            for row in conn.execute(select(r.inspection_id, r.label, r.comment, r.reviewer, r.at)
                                    .where(r.inspection_id.in_(chunk)).order_by(r.id)):
                out[row.inspection_id] = {"review_label": row.label, "review_comment": row.comment,
                                          "reviewer": row.reviewer, "reviewed_at": row.at}
    return out


def _with_reviews(queries: HistoryQueries, flt: HistoryFilter, limit: int) -> Iterator[dict]:
    batch: list[dict] = []

    def flush() -> Iterator[dict]:
        reviews = latest_reviews(queries, [r["id"] for r in batch])
        for row in batch:
            yield row | reviews.get(row["id"], {})
        batch.clear()

    for row in queries.iter_export(flt, limit=limit, with_defects=True, check=False):
        batch.append(row)
        if len(batch) >= 1000:
            yield from flush()
    yield from flush()


def history_csv(queries: HistoryQueries, flt: HistoryFilter, zone: dt.tzinfo, *, per_defect: bool = False,
                limit: int = MAX_EXPORT_ROWS, decimal: str = ".") -> tuple[bytes, int]:
    """(CSV bytes, inspection count) of the inspections matching ``flt``, newest first, times in
    ``zone``, numbers with ``decimal`` (the station file's [export] decimal_separator)."""
    buf = io.StringIO()
    n = write_csv(lambda: _with_reviews(queries, flt, limit), buf, zone=zone, per_defect=per_defect,
                  extra=REVIEW_COLUMNS, decimal=decimal)
    return buf.getvalue().encode("utf-8"), n
