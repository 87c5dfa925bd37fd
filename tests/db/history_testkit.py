"""Builders for history tests: real Inspection objects as the pipeline produces them."""

from __future__ import annotations

import contextlib
import datetime as dt
import random
import subprocess
from pathlib import Path

import numpy as np
import pytest

from station.inspection import Defect, Inspection, Outcome, RejectReason, Verdict, View
from station.recipe import LoadedRecipe
from tests.recipes import make_inspection as result_of

CLASSES = ("scratch", "crack", "stain")


def make_inspection(
    seq: int,
    *,
    reject: bool,
    when: dt.datetime | float | None = None,
    recipe: str | LoadedRecipe = "demo-part",
    part_id: int | None = None,
    n_defects: int | None = None,
    classes: tuple[str, ...] = CLASSES,
    views: tuple[str, ...] = ("top",),
    size: tuple[int, int] = (48, 64),
    rng: random.Random | None = None,
    reason: str | None = None,
) -> Inspection:
    """An inspection with ``n_defects`` defects (default 3 for a reject, 0 for a pass), masks,
    raw views and an overlay; image content depends on ``seq`` so checksums differ."""
    rng = rng or random.Random(seq)
    h, w = size
    if when is None:
        t = dt.datetime.now(dt.timezone.utc).timestamp()
    elif isinstance(when, dt.datetime):
        t = when.timestamp()
    else:
        t = float(when)
    n = (3 if reject else 0) if n_defects is None else n_defects
    defects = []
    for k in range(n):
        x0, y0 = rng.randrange(0, w - 8), rng.randrange(0, h - 8)
        x1, y1 = min(w, x0 + rng.randrange(2, 20)), min(h, y0 + rng.randrange(2, 20))
        mask = np.zeros((h, w), bool)
        mask[y0:y1, x0:x1] = True
        mask[y0, x0] = False
        defects.append(
            Defect(
                view=views[k % len(views)],
                class_name=classes[(seq + k) % len(classes)],
                confidence=round(rng.uniform(0.5, 1.0), 4),
                box=(x0, y0, x1, y1),
                area_px=int(mask.sum()),
                mask=mask,
                area_mm2=round(mask.sum() * 0.01, 4),
                proposal_score=round(rng.uniform(0, 1), 4),
                zone="body" if k % 2 == 0 else None,
            )
        )
    imgs = [View(v, np.full((h, w, 3), (seq * 7 + i) % 256, np.uint8), frame_id=seq) for i, v in enumerate(views)]
    if reject:
        verdict = Verdict(Outcome.REJECT, reason or (f"{defects[0].class_name} x{n}" if defects else "timeout: budget"),
                          RejectReason.DEFECT if defects else RejectReason.TIMEOUT, defects[0] if defects else None,
                          plc_code=2 if defects else 0xFFFF)
    else:
        verdict = Verdict(Outcome.PASS, reason or "no defect")
    overlay = np.full((h, w, 3), (seq * 11) % 256, np.uint8)
    return result_of(
        seq,
        part_id,
        recipe=recipe,
        triggered_at_s=t,
        views=imgs,
        defects=defects,
        verdict=verdict,
        timings_ms={"acquire": 1.5, "analyse": 20.25, "total": 25.0},
        scores={"max_score": round(rng.random(), 4), "n_views": float(len(views))},
        model_hashes={"segmentation": "cd" * 32},
        overlay=overlay,
    )


def history_file(root: Path, station_id: str, inspections) -> str:
    """A SQLite history ``root/h.db`` with its image archive ``root/img``, written by the real
    HistoryWriter from ``inspections``; returns the database URL."""
    from station.alarms import AlarmBoard
    from station.config import ArchiveConfig, DatabaseConfig
    from station.db.writer import HistoryWriter

    url = f"sqlite:///{root / 'h.db'}"
    w = HistoryWriter(DatabaseConfig(url=url), ArchiveConfig(dir=root / "img"), AlarmBoard(), station_id)
    w.start()
    for insp in inspections:
        w.publish(insp)
    assert w.flush(10)
    w.close()
    return url


TOKYO_SHIFTS = """[shifts]
timezone = "Asia/Tokyo"
calendar = [{name = "day", start = "08:00"}, {name = "swing", start = "20:00"}]
"""


def station_file(path: Path, db_url: str, more: str = TOKYO_SHIFTS) -> Path:
    """A minimal station.toml at ``path`` on the history ``db_url``, with ``more`` TOML (by
    default a two-shift calendar in Tokyo time: names and a zone no default has)."""
    path.write_text(f"""active_recipe = "demo-part"
[[cameras]]
type = "simulated"
[database]
url = "{db_url}"
{more}""")
    return path


@contextlib.contextmanager
def tiny_tmpfs(path: Path, size_kib: int):
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(path)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"DISK-FULL TEST SKIPPED: cannot mount a tmpfs here (needs root/CAP_SYS_ADMIN): {r.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(directory: Path) -> Path:
    """Fill the filesystem holding ``directory``; returns the filler file."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    return filler
