"""Throughput benchmark of the station's pipeline on real models: `station bench`.

Workload per part (``SamPromptInspector``): one SAM encoder run on the view, one box
prompt through the decoder, the mask back at view resolution; then a verdict. ``--recipe``
benches a shipped recipe as configured instead (its proposals, classifier, SAM).

Parts come from a camera replaying a few distinct frames, so the NPU double's memoised
outputs let a CPU machine behave like the chip (published latencies, outputs still ONNX
Runtime's); on onnxruntime every part is computed.

Figures: per-stage p50/p99 (ms), parts/s through the real ``Pipeline``, each stage's own
rate measured alone (with the parallelism it has in the pipeline), and pipeline
efficiency = measured parts/s ÷ the rate of the slowest stage alone.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from station.alarms import AlarmBoard
from station.camera.base import Camera
from station.camera.simulated import SimulatedCamera, plate_rect
from station.config import SimulatedCameraConfig
from station.inference.convert import model_input_pixels, normalise
from station.inference.factory import load_model
from station.inference.metadata import InputSpec, ModelMetadata, sha256_file
from station.inspection import Defect, Inspection, Outcome, RejectReason, Verdict, View
from station.pipeline import Findings, Pipeline, TriggerRefused
from station.recipe import Preprocess, load_recipe
from station.vision.preprocess import preprocess_views

log = logging.getLogger("station.bench")

ENCODER, DECODER = "litemedsam_encoder", "litemedsam_decoder"
BENCH_PREPROCESS = Preprocess(clahe=True, denoise_sigma=1.0)
BENCH_RECIPE = """
name = "bench"
plc_id = 1
time_budget_ms = 600000
[[cameras]]
name = "top"
[[classes]]
name = "defect"
plc_code = 1
"""


# ---- models -----------------------------------------------------------------------------
def prepare_models(models_dir: Path, sam_dir: Path, simulated_npu: bool) -> None:
    """LiteMedSAM pair (from ../shared/models/mobilesam) with metadata in ``models_dir``; sim RKNN forms if asked."""
    from station.inference import rknn_double

    models_dir.mkdir(parents=True, exist_ok=True)
    spec = InputSpec(size=256, normalization="minmax", resize="longest_side")
    for name, role, pair, spec_ in ((ENCODER, "sam_encoder", DECODER, spec), (DECODER, "sam_decoder", ENCODER, None)):
        src = sam_dir / f"{name}.onnx"
        dst = models_dir / src.name
        if not dst.exists():
            try:
                dst.symlink_to(src.resolve())
            except OSError:
                shutil.copyfile(src, dst)
        ModelMetadata(
            name=name, role=role, file=dst.name, sha256=sha256_file(dst), bytes=dst.stat().st_size,
            input=spec_, pair=pair, source=str(src),
        ).write(models_dir / f"{name}.json")
    if simulated_npu:
        # min-max normalisation depends on each image: it stays outside the .rknn (float input)
        rknn_double.add_simulated_form(models_dir, ENCODER)
        rknn_double.add_simulated_form(models_dir, DECODER, shapes={"point_coords": [1, 2, 2], "point_labels": [1, 2]})


# ---- workload -----------------------------------------------------------------------------
class SamPromptInspector:
    """One encoder run + one box prompt per part. Thread-safe (models are; no per-call state)."""

    def __init__(self, models_dir: Path, backend: str, threads: int = 0):
        self.encoder = load_model(models_dir, ENCODER, backend, threads)
        self.decoder = load_model(models_dir, DECODER, backend, threads)
        self.spec: InputSpec = self.encoder.metadata.input

    def close(self) -> None:
        self.encoder.close()
        self.decoder.close()

    def preprocess(self, views: list[View]) -> list[View]:
        # a typical recipe's enhancement (CLAHE on lightness, light denoise): real CPU work in its own stage
        return preprocess_views(views, BENCH_PREPROCESS)

    def prompt_box(self, view: View) -> tuple[int, int, int, int]:
        """The defect's ground-truth box when the simulated part has one, else the plate's centre (px)."""
        h, w = view.image.shape[:2]
        for mask in (view.ground_truth or {}).values():
            ys, xs = np.nonzero(mask)
            if xs.size:
                return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
        x0, y0, x1, y1 = plate_rect(w, h)
        return (x0 + x1) // 2 - 40, (y0 + y1) // 2 - 40, (x0 + x1) // 2 + 40, (y0 + y1) // 2 + 40

    def find_defects(self, views: list[View]) -> Findings:
        view = views[0]
        img = view.image if view.image.ndim == 3 else np.repeat(view.image[:, :, None], 3, axis=2)
        h, w = img.shape[:2]
        size = self.spec.size
        scale = size / max(h, w)
        px = model_input_pixels(img, self.spec)[None]
        emb = self.encoder.run({"image": normalise(px, self.spec)})["image_embeddings"]
        x0, y0, x1, y1 = self.prompt_box(view)
        out = self.decoder.run({
            "image_embeddings": emb,
            "point_coords": np.array([[[x0 * scale, y0 * scale], [x1 * scale, y1 * scale]]], np.float32),
            "point_labels": np.array([[2, 3]], np.float32),
            "mask_input": np.zeros((1, 1, 256, 256), np.float32),
            "has_mask_input": np.zeros((1,), np.float32),
        })
        nh, nw = round(h * scale), round(w * scale)
        logits = out["masks"][0, 0, :nh, :nw]
        mask = cv2.resize(logits, (w, h), interpolation=cv2.INTER_LINEAR) > 0
        area = int(mask.sum())
        confidence = float(out["iou_predictions"][0, 0])
        defects = [Defect(view.camera, "defect", confidence, (x0, y0, x1, y1), area, mask)] if area else []
        return Findings(defects, {"mask_area_px": float(area)})

    def decide(self, inspection: Inspection) -> Verdict:
        if inspection.defects:
            d = inspection.defects[0]
            return Verdict(Outcome.REJECT, f"defect {d.area_px} px", RejectReason.DEFECT, d, 1)
        return Verdict(Outcome.PASS, "no defect")


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


def simulated_views(count: int, seed: int = 3) -> list[View]:
    cam = SimulatedCamera(SimulatedCameraConfig(name="top", seed=seed, defect_rate=0.5))
    cam.open()
    try:
        return [cam.grab(i, 1.0) for i in range(count)]
    finally:
        cam.close()


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


def run_pipeline(inspector, camera: Camera, parts: int, workers: int, warmup: int) -> tuple[float, list[Inspection]]:
    """Trigger ``parts`` parts as fast as the station takes them; parts/s after ``warmup`` parts, and the inspections."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.toml"
        path.write_text(BENCH_RECIPE)
        loaded = load_recipe(path)
    pipe = Pipeline({"top": camera}, lambda _: inspector, AlarmBoard(), queue_depth=max(4, workers + 1), inference_workers=workers)
    pipe.load_recipe(loaded)
    done: list[tuple[float, Inspection]] = []
    pipe.sinks.append(type("Sink", (), {"publish": lambda self, insp: done.append((time.perf_counter(), insp))})())
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


def analyse_and_decide(inspector, view: View) -> Verdict:
    """What one analyse worker of the pipeline does for a part: find defects, then decide."""
    findings = inspector.find_defects([view])
    insp = Inspection(sequence=0, part_id=view.frame_id, recipe="bench", recipe_version=1,
                      triggered_at_s=time.time(), deadline_s=time.monotonic() + 600, views=[view])
    insp.defects = list(findings.defects)
    insp.overlay = findings.overlay
    return inspector.decide(insp)


def measure(inspector, views: list[View], backend: str, npu_cores: int | None, parts: int, workers: int) -> BenchRun:
    """Warm up on every distinct view, time each stage alone, then the whole pipeline."""
    camera = ReplayFramesCamera(views)
    for v in views:  # warm-up: sessions, and the double's memo of each distinct frame
        inspector.find_defects(inspector.preprocess([v]))
    grabbed = [camera.grab(i, 1.0) for i in range(parts)]
    prepared = [inspector.preprocess([v])[0] for v in grabbed]
    warm = min(max(2, workers), parts // 4)
    # each stage alone, with the parallelism it has in the pipeline
    alone = {
        "acquire": stage_alone_rate(lambda i: camera.grab(i, 1.0), list(range(parts)), 1, warm),
        "preprocess": stage_alone_rate(lambda v: inspector.preprocess([v]), grabbed, 1, warm),
        "analyse": stage_alone_rate(lambda v: analyse_and_decide(inspector, v), prepared, workers, warm),
    }
    rate, insps = run_pipeline(inspector, camera, parts, workers, warm)
    stages: dict[str, list[float]] = {}
    for insp in insps:
        for k, v in insp.timings_ms.items():
            stages.setdefault(k, []).append(v)
    slowest = min(alone, key=alone.get)
    failed = sum(1 for i in insps if i.verdict and i.verdict.reject_reason not in (None, RejectReason.DEFECT))
    return BenchRun(
        backend=backend, npu_cores=npu_cores, workers=workers, parts=parts,
        parts_per_s=round(rate, 2),
        stage_ms={k: _percentiles(v) for k, v in stages.items()},
        stage_alone_parts_per_s={k: round(v, 2) for k, v in alone.items()},
        slowest_stage=slowest,
        efficiency=round(rate / alone[slowest], 3),
        rejects_not_defect=failed,
    )


def bench_backend(
    models_dir: Path,
    backend: str,
    parts: int,
    workers: int,
    npu_cores: int | None = None,
    threads: int = 0,
    distinct_frames: int = 8,
) -> BenchRun:
    """The SAM prompt workload on simulated parts."""
    be = f"{backend}:{npu_cores}" if npu_cores else backend
    inspector = SamPromptInspector(models_dir, be, threads)
    try:
        return measure(inspector, simulated_views(distinct_frames), backend, npu_cores, parts, workers)
    finally:
        inspector.close()


def run_bench(backend: str, parts: int, sam_dir: Path, work_dir: Path, threads: int = 0, extra_workers: int = 1) -> dict:
    """The `station bench` report: one run on onnxruntime, or sim-rk3588 on 1, 2 and 3 cores with the speed-up."""
    from station.inference import rknn_double

    sim = backend == "sim-rk3588"
    models_dir = work_dir / "models"
    prepare_models(models_dir, sam_dir, simulated_npu=sim)
    report: dict = {"backend": backend, "parts": parts, "workload": "1 SAM encoder run + 1 box prompt per part (LiteMedSAM 256)"}
    if not sim:
        run = bench_backend(models_dir, "onnxruntime", parts, workers=1, threads=threads)
        report["runs"] = [asdict(run)]
        return report
    report["simulated_latency_ms"] = {k: v * 1000 for k, v in rknn_double.RK3588_PUBLISHED_LATENCY_S.items()}
    runs = []
    for cores in (1, 2, 3):
        # one analyse worker more than cores keeps a core busy while a worker does its CPU part
        runs.append(bench_backend(models_dir, "sim-rk3588", parts, workers=cores + extra_workers, npu_cores=cores))
    report["runs"] = [asdict(r) for r in runs]
    report["speedup_1_to_3"] = round(runs[2].parts_per_s / runs[0].parts_per_s, 2)
    return report


def format_report(report: dict) -> str:
    what = report.get("workload") or f"recipe {report.get('recipe')} as configured"
    lines = [f"station bench: {report['backend']}, {report['parts']} parts; {what}"]
    for name, where in report.get("models", {}).items():
        lines.append(f"  model {name}: {where}")
    if "simulated_latency_ms" in report:
        lines.append("simulated RK3588 single-core latency (ms): " + ", ".join(f"{k} {v:g}" for k, v in report["simulated_latency_ms"].items()))
    for r in report["runs"]:
        cores = f", {r['npu_cores']} NPU core(s)" if r["npu_cores"] else ""
        lines.append(f"\n{r['backend']}{cores}, {r['workers']} analyse worker(s)")
        lines.append(f"  throughput     {r['parts_per_s']:.2f} parts/s")
        lines.append(f"  efficiency     {r['efficiency']:.3f} (slowest stage alone: {r['slowest_stage']} {r['stage_alone_parts_per_s'][r['slowest_stage']]:.2f} parts/s)")
        for stage, p in r["stage_ms"].items():
            lines.append(f"  {stage:<12} p50 {p['p50']:8.1f} ms  p99 {p['p99']:8.1f} ms")
        if r["rejects_not_defect"]:
            lines.append(f"  WARNING: {r['rejects_not_defect']} parts failed (not a defect verdict)")
    if "speedup_1_to_3" in report:
        lines.append(f"\nspeed-up 1 -> 3 cores: {report['speedup_1_to_3']:.2f}x")
    return "\n".join(lines)


# ---- a shipped recipe as configured -------------------------------------------------------
def recipe_views(manifest: Path, count: int) -> list[View]:
    """The first ``count`` readable images of a manifest CSV (``image`` column), as camera views."""
    import csv

    views = []
    with open(manifest, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            img = cv2.imread(str(manifest.parent / row["image"]), cv2.IMREAD_COLOR)
            if img is None:
                continue
            views.append(View("top", cv2.cvtColor(img, cv2.COLOR_BGR2RGB), len(views), 0.0, row["image"]))
            if len(views) == count:
                break
    if not views:
        raise ValueError(f"no readable images in {manifest}")
    return views


def stage_recipe_models(models_dir: Path, names: list[str], work: Path, simulated_npu: bool) -> dict[str, str]:
    """Link the recipe's models into ``work``; with a simulated NPU give each a batch-1 RKNN form where shapes allow.

    Returns model name -> where it runs ("rknn (simulated)" or "onnxruntime: reason").
    """
    import onnxruntime as ort

    from station.inference import rknn_double

    work.mkdir(parents=True, exist_ok=True)
    placement = {}
    for name in names:
        meta = ModelMetadata.read(models_dir / f"{name}.json")
        for f in {meta.file}:
            if not (work / f).exists():
                (work / f).symlink_to((models_dir / f).resolve())
        meta.model_copy(update={"forms": {}}).write(work / f"{name}.json")
        if not simulated_npu:
            placement[name] = "onnxruntime"
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


def bench_recipe(
    recipe_path: Path, manifest: Path, models_dir: Path, backend: str, parts: int, work_dir: Path,
    threads: int = 0, distinct_frames: int = 8,
) -> dict:
    """Parts/s of a shipped recipe as configured (its own models and analyzer) on its own images."""
    from station.models_store import ensure_recipe_models
    from station.vision.inspector import build_inspector

    loaded = load_recipe(recipe_path)
    ensure_recipe_models(loaded.path, models_dir)  # the recipe's models, checksummed, as a station would get them
    refs = loaded.recipe.models
    names = [*refs.proposal_names, *([refs.classifier] if refs.classifier else [])]
    if loaded.recipe.vision.analyzer == "sam":
        names.append(refs.segmentation)
        pair = ModelMetadata.read(models_dir / f"{refs.segmentation}.json").pair
        if pair:
            names.append(pair)
    sim = backend == "sim-rk3588"
    placement = stage_recipe_models(models_dir, names, work_dir / "models", sim)
    views = recipe_views(manifest, distinct_frames)
    report = {"recipe": loaded.recipe.name, "backend": backend, "parts": parts, "models": placement, "runs": []}
    for cores in ((1, 3) if sim else (None,)):
        be = f"{backend}:{cores}" if cores else backend
        inspector = build_inspector(loaded, work_dir / "models", be, threads)
        workers = cores + 1 if cores else 1
        run = measure(inspector, views, backend, cores, parts, workers)
        report["runs"].append(asdict(run))
    if sim:
        report["speedup_1_to_3"] = round(report["runs"][1]["parts_per_s"] / report["runs"][0]["parts_per_s"], 2)
    return report
