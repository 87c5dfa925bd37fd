"""Soak: 5,000 frames from the GenTL simulator; the process must not grow by 20 MB or more."""

from __future__ import annotations

import gc

import psutil
import pytest

from .conftest import FAST

FRAMES = 5000
WARM_UP = 300
MAX_GROWTH_MB = 20.0


@pytest.mark.slow
def test_5000_frames_without_memory_growth(open_camera):
    cam = open_camera("0", features={**FAST, "Width": 320, "Height": 240})
    process = psutil.Process()
    for view in cam.frames(WARM_UP):  # allocator pools and lazy imports settle first
        pass
    gc.collect()
    before = process.memory_info().rss
    ids = []
    for view in cam.frames(FRAMES):
        assert view.image.shape == (240, 320)
        ids.append(view.frame_id)
    gc.collect()
    grown_mb = (process.memory_info().rss - before) / 2**20
    print(f"soak: {FRAMES} frames, RSS growth {grown_mb:.2f} MB, dropped {cam.counters.dropped}, "
          f"incomplete {cam.counters.incomplete}")
    assert grown_mb < MAX_GROWTH_MB
    assert len(set(ids)) == FRAMES and ids == sorted(ids)
    assert cam.counters.frames == WARM_UP + FRAMES and cam.counters.losses == 0
