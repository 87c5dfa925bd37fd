"""Throughput benchmark of a recipe on the station's real pipeline: `station bench`.

The workload is a recipe as configured (its preprocessing, its models and analyzer, its
verdict rules: ``station.stages``, exactly what the line runs), by default the demo's recipe on
simulated parts, or a recipe on its own images (``--data`` manifest).

Parts come from a camera replaying a few distinct frames, so the NPU double's memoised
outputs let a CPU machine behave like the chip (published latencies, outputs still ONNX
Runtime's); on onnxruntime every part is computed. With ``sim-rk3588`` every model of the
recipe that has fixed shapes gets a simulated RKNN form (``stage_recipe_models``); models with
dynamic shapes stay on the CPU, and the report says so.

Figures: per-stage p50/p99 (ms), parts/s through the real ``Pipeline``, each stage's own
rate measured alone (with the parallelism it has in the pipeline), and pipeline
efficiency = measured parts/s ÷ the rate of the slowest stage alone.
"""

from __future__ import annotations

import csv
import logging
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from station import stages
from station.alarms import AlarmBoard
from station.camera.base import Camera
from station.camera.simulated import SimulatedCamera
from station.config import SimulatedCameraConfig
from station.inference.metadata import ModelMetadata
from station.inspection import Inspection, View
from station.pipeline import Pipeline, TriggerRefused
from station.recipe import LoadedRecipe, load_recipe

log = logging.getLogger("station.bench")


class ReplayFramesCamera(Camera):
    """Replays a fixed list of views in turn (a conveyor of a few known parts)."""

    name = "top"

    def __init__(self, views: list[View]):
        self.views = views

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def grab(self, part_id: int, timeout_s: float) -> View:
        v = self.views[part_id % len(self.views)]
        return View(v.camera, v.image, part_id, time.time(), v.source, v.ground_truth, v.truth_class)


# ---- measurement -------------------------------------------------------------------------
@dataclass
class BenchRun:
    backend: str
    npu_cores: int | None
    workers: int
    parts: int
    parts_per_s: float
    stage_ms: dict[str, dict[str, float]]
    stage_alone_parts_per_s: dict[str, float]
    slowest_stage: str
    efficiency: float
    rejects_not_defect: int = 0
    analyse_ms_by_truth: dict[str, dict[str, float]] = field(default_factory=dict)  # "good" / "defective" views (manifest class)
    notes: list[str] = field(default_factory=list)


def _percentiles(values: list[float]) -> dict[str, float]:
    a = np.asarray(values)
    return {"p50": round(float(np.percentile(a, 50)), 2), "p99": round(float(np.percentile(a, 99)), 2), "n": int(a.size)}


def stage_alone_rate(fn, items: list, workers: int, warmup: int = 0) -> float:
    """Parts/s of ``fn`` over ``items`` run by ``workers`` threads, nothing else running.

    Counted like the pipeline's rate: completions after the first ``warmup`` ones.
    """
    it = iter(list(items))
    lock = threading.Lock()
    finished: list[float] = []

    def work():
        while True:
            with lock:
                item = next(it, None)
            if item is None:
                return
            fn(item)
            with lock:
                finished.append(time.perf_counter())

    t0 = time.perf_counter()
    ts = [threading.Thread(target=work) for _ in range(workers)]
    for th in ts:
        th.start()
    for th in ts:
        th.join()
    finished.sort()
    if warmup and len(finished) > warmup + 1:
        return (len(finished) - 1 - warmup) / (finished[-1] - finished[warmup])
    return len(finished) / (finished[-1] - t0)


def run_pipeline(loaded: LoadedRecipe, inspector, camera: Camera, parts: int, workers: int,
                 warmup: int) -> tuple[float, list[Inspection]]:
    """Trigger ``parts`` parts as fast as the station takes them; parts/s after ``warmup`` parts, and the inspections."""
    names = [c.name for c in loaded.recipe.cameras]
    pipe = Pipeline(dict.fromkeys(names, camera), lambda _: inspector, AlarmBoard(), queue_depth=max(4, workers + 1),
                    inference_workers=workers)
    pipe.load_recipe(loaded)
    done: list[tuple[float, Inspection]] = []
    pipe.sinks = [type("Sink", (), {"publish": lambda self, insp: done.append((time.perf_counter(), insp))})()]
    pipe.start()
    try:
        last = 0
        for pid in range(parts):
            while True:
                try:
                    last = pipe.trigger(pid)
                    break
                except TriggerRefused:
                    time.sleep(0.001)
        if not pipe.wait_published(last, 600):
            raise RuntimeError("bench: parts did not finish within 600 s")
    finally:
        pipe.stop()
    times = [t for t, _ in done]
    rate = (len(times) - 1 - warmup) / (times[-1] - times[warmup]) if len(times) > warmup + 1 else float("nan")
    return rate, [i for _, i in done]


def _truth(view: View, loaded: LoadedRecipe) -> str | None:
    """"good" or "defective" by the view's manifest class, None when it has none (simulated parts)."""
    if view.truth_class is None:
        return None
    return "good" if view.truth_class == loaded.recipe.good_class else "defective"


def analyse_and_decide(loaded: LoadedRecipe, inspector, view: View) -> Inspection:
    """What one analyse worker of the pipeline does for a part (station.stages): find defects, then decide."""
    insp = Inspection(0, view.frame_id, loaded, time.time(), time.monotonic() + 600, views=[view])
    stages.analyse(insp, inspector)
    stages.decide(insp, inspector)
    return insp


def measure(loaded: LoadedRecipe, inspector, views: list[View], backend: str, npu_cores: int | None, parts: int,
            workers: int) -> BenchRun:
    """Warm up on every distinct view, time each stage alone, then the whole pipeline."""
    camera = ReplayFramesCamera(views)
    for v in views:  # warm-up: sessions, and the double's memo of each distinct frame
        analyse_and_decide(loaded, inspector, inspector.preprocess([v])[0])
    grabbed = [camera.grab(i, 1.0) for i in range(parts)]
    prepared = [inspector.preprocess([v])[0] for v in grabbed]
    warm = min(max(2, workers), parts // 4)
    # each stage alone, with the parallelism it has in the pipeline
    alone = {
        "acquire": stage_alone_rate(lambda i: camera.grab(i, 1.0), list(range(parts)), 1, warm),
        "preprocess": stage_alone_rate(lambda v: inspector.preprocess([v]), grabbed, 1, warm),
        "analyse": stage_alone_rate(lambda v: analyse_and_decide(loaded, inspector, v), prepared, workers, warm),
    }
    rate, insps = run_pipeline(loaded, inspector, camera, parts, workers, warm)
    by_stage: dict[str, list[float]] = {}
    for insp in insps:
        for k, v in insp.timings_ms.items():
            by_stage.setdefault(k, []).append(v)
    by_truth: dict[str, list[float]] = {}
    for insp in insps:
        truth = _truth(insp.views[0], loaded) if insp.views else None
        if truth and "analyse" in insp.timings_ms:
            by_truth.setdefault(truth, []).append(insp.timings_ms["analyse"])
    slowest = min(alone, key=alone.get)
    failed = sum(1 for i in insps if i.failure is not None)
    run = BenchRun(
        backend=backend, npu_cores=npu_cores, workers=workers, parts=parts,
        parts_per_s=round(rate, 2),
        stage_ms={k: _percentiles(v) for k, v in by_stage.items()},
        stage_alone_parts_per_s={k: round(v, 2) for k, v in alone.items()},
        slowest_stage=slowest,
        efficiency=round(rate / alone[slowest], 3),
        rejects_not_defect=failed,
        analyse_ms_by_truth={k: _percentiles(v) for k, v in sorted(by_truth.items())},
    )
    budget = loaded.recipe.time_budget_ms
    if run.stage_ms["total"]["p50"] > budget:
        run.notes.append(f"the median part takes {run.stage_ms['total']['p50']:.0f} ms, over the recipe's time budget of "
                         f"{budget} ms: on this machine most parts would be timeout rejects")
    return run


def format_report(report: dict) -> str:
    what = f"recipe {report['recipe']} as configured, on {report['images']}"
    if any(report.get("views_by_truth", {}).values()):
        what += f" ({report['views_by_truth']['good']} good, {report['views_by_truth']['defective']} defective)"
    lines = [f"station bench: {report['backend']}, {report['parts']} parts; {what}"]
    for name, where in report.get("models", {}).items():
        lines.append(f"  model {name}: {where}")
    if "simulated_latency_ms" in report:
        latency = ", ".join(f"{k} {v:g}" for k, v in report["simulated_latency_ms"].items())
        lines.append("simulated RK3588 single-core latency (ms): " + latency)
    for r in report["runs"]:
        cores = f", {r['npu_cores']} NPU core(s)" if r["npu_cores"] else ""
        lines.append(f"\n{r['backend']}{cores}, {r['workers']} analyse worker(s)")
        lines.append(f"  throughput     {r['parts_per_s']:.2f} parts/s")
        slowest = r["slowest_stage"]
        lines.append(f"  efficiency     {r['efficiency']:.3f} (slowest stage alone: {slowest} "
                     f"{r['stage_alone_parts_per_s'][slowest]:.2f} parts/s)")
        for stage, p in r["stage_ms"].items():
            lines.append(f"  {stage:<12} p50 {p['p50']:8.1f} ms  p99 {p['p99']:8.1f} ms")
        for truth, p in r.get("analyse_ms_by_truth", {}).items():
            lines.append(f"  analyse, {truth + ' views':<15} p50 {p['p50']:8.1f} ms  p99 {p['p99']:8.1f} ms  (n {p['n']})")
        if r["rejects_not_defect"]:
            lines.append(f"  WARNING: {r['rejects_not_defect']} parts failed (not a defect verdict)")
        for note in r.get("notes", []):
            lines.append(f"  WARNING: {note}")
    if "speedup_1_to_3" in report:
        lines.append(f"\nspeed-up 1 -> 3 cores: {report['speedup_1_to_3']:.2f}x")
    return "\n".join(lines)


# ---- the recipe's models and views ---------------------------------------------------------
def recipe_views(manifest: Path, count: int, short_side: int | None = None, seed: int = 0,
                 view_size: tuple[int, int] | None = None) -> list[View]:
    """``count`` readable images of a manifest CSV (``image`` column; ``class`` kept as the view's
    truth), drawn in a seeded order, so the mix of good and defective parts is the data's. With
    ``short_side`` (a backbone recipe) only views with one model input, that of ``view_size`` (else
    the first view's): a line's camera gives views of one size, and the backbone's NPU form takes
    that one input."""
    from station.images import read_image_file
    from station.vision.backbone import model_size

    with open(manifest, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    views, size = [], None
    if short_side is not None and view_size is not None:
        size = model_size(view_size, short_side)
    for i in np.random.default_rng(seed).permutation(len(rows)):
        row = rows[i]
        try:
            img = read_image_file(manifest.parent / row["image"])
        except Exception:  # noqa: BLE001 - an unreadable row is skipped, as station eval does
            continue
        if short_side is not None:
            this = model_size(img.shape[:2], short_side)
            if size is not None and this != size:
                continue
            size = this
        views.append(View("top", img, len(views), 0.0, row["image"], truth_class=row.get("class")))
        if len(views) == count:
            break
    if not views:
        raise ValueError(f"no readable images in {manifest}")
    return views


def simulated_views(count: int, seed: int = 3) -> list[View]:
    cam = SimulatedCamera(SimulatedCameraConfig(name="top", seed=seed, defect_rate=0.5))
    cam.open()
    try:
        return [cam.grab(i, 1.0) for i in range(count)]
    finally:
        cam.close()


def stage_recipe_models(models_dir: Path, names: list[str], work: Path, simulated_npu: bool,
                        view_size: tuple[int, int] | None = None) -> dict[str, str]:
    """Link the recipe's models into ``work``; with a simulated NPU give each a batch-1 RKNN form where shapes allow.

    A backbone gets the form `station models convert --recipe R --view-size HxW` makes: int8, its
    scaling baked in, at the model input of views of ``view_size`` (the head's short side); the head on
    backbone features stays on the CPU (station.vision.backbone). Returns model name -> where it runs
    ("rknn (simulated)" or "onnxruntime: reason").
    """
    import onnxruntime as ort

    from station.inference import rknn_double
    from station.vision.backbone import model_size

    work.mkdir(parents=True, exist_ok=True)
    placement = {}
    for name in names:
        meta = ModelMetadata.read(models_dir / f"{name}.json")
        if not (work / meta.file).exists():
            (work / meta.file).symlink_to((models_dir / meta.file).resolve())
        meta.model_copy(update={"forms": {}}).write(work / f"{name}.json")
        if not simulated_npu:
            placement[name] = "onnxruntime"
            continue
        if meta.extra.get("input") == "backbone":
            placement[name] = ("onnxruntime: by design, a per-cell linear map whose probabilities are compared with "
                               "min_confidence (float32 on the CPU)")
            continue
        if meta.role == "backbone":
            heads = (ModelMetadata.read(models_dir / f"{n}.json") for n in names)
            head = next((h for h in heads if h.extra.get("input") == "backbone" and h.extra.get("backbone") == name), None)
            if view_size is None or head is None:
                placement[name] = "onnxruntime: no view size (a backbone's form is made for one)"
                continue
            mh, mw = model_size(view_size, head.extra["short_side"])
            rknn_double.add_simulated_form(work, name, quant="int8", bake_normalization=True,
                                           shapes={"image": [1, 3, mh, mw]}, view_size=list(view_size))
            placement[name] = f"rknn (simulated): int8, input {mh}x{mw} for views of {view_size[0]}x{view_size[1]} px"
            continue
        session = ort.InferenceSession(str(work / meta.file), providers=["CPUExecutionProvider"])
        shapes = {}
        for i in session.get_inputs():
            shape = [1] + list(i.shape[1:])
            if meta.role == "sam_decoder" and i.name in ("point_coords", "point_labels"):
                shape = [1, 2, 2] if i.name == "point_coords" else [1, 2]
            shapes[i.name] = shape
        try:
            rknn_double.add_simulated_form(work, name, shapes=shapes)
            placement[name] = "rknn (simulated)"
        except ValueError as exc:  # dynamic spatial dims: an NPU needs fixed shapes
            placement[name] = f"onnxruntime: {exc}"
    return placement


def model_files(models_dir: Path, names: list[str]) -> list[str]:
    """``names`` and the SAM decoders their metadata pairs them with."""
    out = []
    for name in names:
        out.append(name)
        pair = ModelMetadata.read(models_dir / f"{name}.json").pair
        if pair and pair not in names and pair not in out:
            out.append(pair)
    return out


def bench_recipe(
    recipe_path: Path, manifest: Path | None, models_dir: Path, backend: str, parts: int, work_dir: Path,
    threads: int = 0, distinct_frames: int = 8, extra_workers: int = 1, view_size: tuple[int, int] | None = None,
) -> dict:
    """Parts/s of a recipe as configured (its own models and analyzer) on its own images
    (``manifest``) or on simulated parts; with ``sim-rk3588`` on 1, 2 and 3 NPU cores."""
    from station.inference import rknn_double
    from station.models_store import ensure_recipe_models
    from station.recipe_models import recipe_models
    from station.vision.inspector import build_inspector

    loaded = load_recipe(recipe_path)
    ensure_recipe_models(loaded.path, models_dir)  # the recipe's models, checksummed, as a station would get them
    names = model_files(models_dir, recipe_models(loaded.recipe).names)
    sim = backend == "sim-rk3588"
    short_side = None
    if getattr(loaded.recipe.vision, "analyzer", None) == "backbone":
        short_side = ModelMetadata.read(models_dir / f"{loaded.recipe.vision.head}.json").extra.get("short_side")
    if manifest is not None:
        views = recipe_views(manifest, distinct_frames, short_side, view_size=view_size)
    else:
        views = simulated_views(distinct_frames)
    placement = stage_recipe_models(models_dir, names, work_dir / "models", sim, view_size or views[0].image.shape[:2])
    h, w = view_size or views[0].image.shape[:2]
    report = {"recipe": loaded.recipe.name, "backend": backend, "parts": parts, "models": placement, "runs": [],
              "images": (f"{manifest}, {len(views)} distinct views with the model input of a {h}x{w} px view" if short_side
                         else str(manifest))
              if manifest is not None else "simulated parts",
              "views_by_truth": {t: sum(1 for v in views if _truth(v, loaded) == t) for t in ("good", "defective")}}
    if sim:
        report["simulated_latency_ms"] = {k: v * 1000 for k, v in rknn_double.RK3588_PUBLISHED_LATENCY_S.items()}
        for name, where in placement.items():
            if where.startswith("rknn") and ModelMetadata.read(models_dir / f"{name}.json").role == "backbone":
                shape = ModelMetadata.read(work_dir / "models" / f"{name}.json").forms["rknn-rk3588-int8"]["inputs"][0]["shape"]
                per_mpx = rknn_double.RK3588_DERIVED_LATENCY_S_PER_MPX["backbone"]
                report["simulated_latency_ms"][f"{name} (derived)"] = round(per_mpx * shape[2] * shape[3] / 1e3, 2)
    for cores in ((1, 2, 3) if sim else (None,)):
        be = f"{backend}:{cores}" if cores else backend
        inspector = build_inspector(loaded, work_dir / "models", be, threads)
        # one analyse worker more than cores keeps a core busy while a worker does its CPU part
        workers = cores + extra_workers if cores else 1
        run = measure(loaded, inspector, views, backend, cores, parts, workers)
        report["runs"].append(asdict(run))
    if sim:
        report["speedup_1_to_3"] = round(report["runs"][2]["parts_per_s"] / report["runs"][0]["parts_per_s"], 2)
    return report
