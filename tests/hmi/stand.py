"""A real Station for HMI tests: the core's Station with its simulated camera, real pipeline,
alarms and recipes, where the vision side is a plain stand-in that reports the simulated
camera's ground truth as defects (masks, boxes) and rejects by the recipe's classes.

It is not a mock: every part really flows camera → pipeline → sinks; only the neural
segmentation is replaced, which the HMI does not depend on.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from station.app import Station
from station.config import StationConfig
from station.inspection import Defect, Outcome, RejectReason, Verdict, View
from station.pipeline import Findings
from station.recipe import LoadedRecipe

REPO = Path(__file__).resolve().parents[2]


class GroundTruthInspector:
    """Defects = the simulated camera's ground-truth masks, confidence 0.9."""

    model_hashes: dict = {}

    def __init__(self, loaded: LoadedRecipe):
        self.recipe = loaded.recipe

    def preprocess(self, views: list[View]) -> list[View]:
        return views

    def find_defects(self, views: list[View]) -> Findings:
        defects = []
        for v in views:
            for cls, mask in (v.ground_truth or {}).items():
                if not mask.any():
                    continue
                ys, xs = np.nonzero(mask)
                box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
                defects.append(Defect(view=v.camera, class_name=cls, confidence=0.9, box=box,
                                      area_px=int(mask.sum()), mask=mask))
        return Findings(defects=defects, scores={"defects": float(len(defects))})

    def decide(self, defects: list[Defect]) -> Verdict:
        known = {c.name: c for c in self.recipe.classes}
        for d in defects:
            if d.class_name in known:
                c = known[d.class_name]
                return Verdict(Outcome.REJECT, f"{d.class_name} ({d.area_px} px)", RejectReason.DEFECT, top_defect=d,
                               plc_code=c.plc_code)
        return Verdict(Outcome.PASS, "no defect")


def make_station(root: Path, *, history: bool = True, hmi_port: int = 8089, defect_rate: float = 0.5,
                 demo_autologin: bool = False, plc_port: int | None = None, **sections) -> Station:
    """A started-ready (not started) Station under ``root`` with a copy of the repo's recipes;
    with ``plc_port`` its Modbus server listens on 127.0.0.1 there; ``sections``: more station
    file sections (e.g. ``shifts={"timezone": ...}``)."""
    recipes = root / "recipes"
    if not recipes.exists():
        shutil.copytree(REPO / "recipes", recipes)
    config = StationConfig.embedded(
        root,
        cameras=[{"type": "simulated", "name": "top", "seed": 3, "defect_rate": defect_rate}],
        plc={"enabled": False} if plc_port is None else {"mode": "server", "host": "127.0.0.1", "port": plc_port,
                                                    "heartbeat_timeout_ms": 60_000},  # tests step slower than a PLC
        hmi={"host": "127.0.0.1", "port": hmi_port, "demo_autologin": demo_autologin, "session_timeout_min": 30},
        **sections,
    )
    station = Station(config, plc=plc_port is not None, history=history)
    station.pipeline.build_inspector = GroundTruthInspector
    return station
