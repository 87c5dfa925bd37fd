"""CSV of the filtered history with the engineers' review labels (for retraining).

Columns: ``db.queries.EXPORT_COLUMNS`` then ``review_label``, ``review_comment``, ``reviewer``,
``reviewed_at`` (the latest review of each inspection; empty if none). Times ISO 8601 UTC.
Cells go through ``db.export.csv_cell``: a comment like ``=HYPERLINK(…)`` is exported as text.
"""

from __future__ import annotations

import io

from sqlalchemy import select

from station.db.export import csv_cell, csv_writer
from station.db.filters import HistoryFilter
from station.db.models import ReviewRow
from station.db.queries import EXPORT_COLUMNS, HistoryQueries

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


def history_csv(queries: HistoryQueries, flt: HistoryFilter, limit: int = MAX_EXPORT_ROWS) -> tuple[bytes, int]:
    """(UTF-8 CSV bytes, row count) of the inspections matching ``flt``, newest first."""
    buf = io.StringIO()
    w = csv_writer(buf)
    w.writerow(EXPORT_COLUMNS + REVIEW_COLUMNS)
    n = 0
    batch: list[dict] = []

    def flush() -> None:
        reviews = latest_reviews(queries, [r["id"] for r in batch])
        for row in batch:
            rv = reviews.get(row["id"], {})
            w.writerow([csv_cell(row.get(c)) for c in EXPORT_COLUMNS] + [csv_cell(rv.get(c)) for c in REVIEW_COLUMNS])
        batch.clear()

    for row in queries.iter_export(flt, limit=limit):
        batch.append(row)
        n += 1
        if len(batch) >= 1000:
            flush()
    flush()
    return buf.getvalue().encode("utf-8"), n
