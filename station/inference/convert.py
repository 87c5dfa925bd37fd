"""ONNX -> RKNN conversion, driven from the app, run by rknn-toolkit2 in its own venv.

The app never imports ``rknn.api``: toolkit2 needs numpy 1.x and pins that would break the
station's environment. ``ensure_convert_env`` builds that venv from the pinned lists in
``models/convert/``; ``convert_model`` prepares the inputs (fixed shapes, normalisation to
bake in, calibration and held-back samples), runs ``models/convert/convert_rknn.py`` there
as a subprocess, checks parity against thresholds and records the form in the metadata.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from station.images import ImageError, read_image_file
from station.inference.image_input import model_pixels, prepare_image
from station.inference.metadata import ModelError, ModelMetadata, resolve_model, sha256_file
from station.inference.rknn import RknnForm, RknnTensor, form_key
from station.paths import MODELS_PACKAGE

log = logging.getLogger("station.inference.convert")

CONVERT_DIR = Path(os.environ.get("STATION_CONVERT_DIR", MODELS_PACKAGE / "convert"))
DEFAULT_VENV = Path("var/rknn-venv")
MIN_COSINE = {"fp16": 0.999, "int8": 0.99}
# SAM mask logits can keep a high cosine while the mask (> 0) changes: measured on the LiteMedSAM
# decoder, int8 gave cosine 0.9959 but mask IoU 0.19 against ONNX Runtime. The mask is what counts.
MIN_MASK_IOU = {"fp16": 0.95, "int8": 0.90}
TARGETS = ("rk3588", "rk3576", "rk3568", "rk3566", "rk3562")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


class ConversionError(Exception):
    """Conversion failed or its parity is under the threshold; the metadata is left unchanged."""


# ---- the conversion venv -------------------------------------------------------------------
def _requirements_hash() -> str:
    h = hashlib.sha256()
    for name in ("requirements-toolkit.txt", "requirements.txt"):
        h.update((CONVERT_DIR / name).read_bytes())
    return h.hexdigest()


def venv_python(venv: Path) -> Path:
    return Path(venv) / "bin" / "python"


def convert_env_ready(venv: Path) -> bool:
    stamp = Path(venv) / ".station-requirements.sha256"
    return venv_python(venv).is_file() and stamp.is_file() and stamp.read_text().strip() == _requirements_hash()


def ensure_convert_env(venv: Path = DEFAULT_VENV, log_file: Path | None = None) -> Path:
    """Create (or reuse, when its pinned lists are unchanged) the toolkit2 venv; return its python (absolute)."""
    venv = Path(venv).resolve()
    if convert_env_ready(venv):
        return venv_python(venv)
    log.info("creating the rknn-toolkit2 venv in %s (about 1.5 GB; takes minutes)", venv)
    if venv.exists():
        shutil.rmtree(venv)
    venv.parent.mkdir(parents=True, exist_ok=True)
    base = getattr(sys, "_base_executable", sys.executable)
    out = open(log_file, "a", encoding="utf-8") if log_file else subprocess.DEVNULL
    try:
        steps = [
            [base, "-m", "venv", str(venv)],
            # toolkit2's declared pins pull CUDA torch and numpy<=1.26 over everything: no deps for it
            [str(venv_python(venv)), "-m", "pip", "install", "--no-deps", "-r", str(CONVERT_DIR / "requirements-toolkit.txt")],
            [str(venv_python(venv)), "-m", "pip", "install", "-r", str(CONVERT_DIR / "requirements.txt")],
            [str(venv_python(venv)), "-c", "from rknn.api import RKNN; RKNN()"],
        ]
        for cmd in steps:
            res = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, check=False)
            if res.returncode != 0:
                see = f"; see {log_file}" if log_file else ""
                raise ConversionError(f"conversion venv: `{' '.join(cmd)}` failed ({res.returncode}){see}")
    finally:
        if log_file:
            out.close()
    (venv / ".station-requirements.sha256").write_text(_requirements_hash() + "\n")
    return venv_python(venv)


# ---- samples ------------------------------------------------------------------------------
def list_images(source: Path) -> list[Path]:
    """Images of a manifest CSV (``image`` column, relative to it) or a folder (recursive)."""
    source = Path(source)
    if source.is_file() and source.suffix.lower() == ".csv":
        with open(source, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        if not rows or "image" not in rows[0]:
            raise ConversionError(f"calibration manifest {source} has no rows with an 'image' column")
        return [source.parent / r["image"] for r in rows]
    if source.is_dir():
        return sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    raise ConversionError(f"calibration source {source} is neither a manifest CSV nor a folder of images")


@dataclass
class Plan:
    """What the toolkit is asked to build: fixed input shapes and the normalisation to bake in."""

    inputs: list[RknnTensor]
    image_index: int | None
    mean_values: list[list[float]] | None
    std_values: list[list[float]] | None


def plan_conversion(onnx_path: Path, meta: ModelMetadata, shapes: dict[str, list[int]] | None = None) -> Plan:
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    shapes = dict(shapes or {})
    if meta.role == "sam_decoder":  # one box prompt: two corner points (the NPU needs fixed shapes)
        shapes.setdefault("point_coords", [1, 2, 2])
        shapes.setdefault("point_labels", [1, 2])
    inputs, image_index = [], None
    for i, inp in enumerate(session.get_inputs()):
        shape = shapes.get(inp.name, inp.shape)
        if not all(isinstance(d, int) and d > 0 for d in shape):
            raise ConversionError(f"model {meta.name}: input {inp.name} has dynamic shape {inp.shape}; "
                                  f"fix it with --shape {inp.name}=d,d,...")
        dtype = {"tensor(float)": "float32", "tensor(int64)": "int64", "tensor(uint8)": "uint8"}.get(inp.type, "float32")
        inputs.append(RknnTensor(name=inp.name, shape=list(shape), dtype=dtype))
        if image_index is None and len(shape) == 4 and shape[1] == 3 and meta.input is not None:
            image_index = i
    mean = std = None
    spec = meta.input
    if image_index is not None and spec is not None and spec.normalization != "minmax":
        # baked in, the .rknn takes uint8 RGB NHWC straight from the camera
        if image_index != 0:
            raise ConversionError(f"model {meta.name}: normalisation can only be baked into the first input")
        mean = [list(spec.mean)] if spec.normalization == "meanstd" else [[0.0, 0.0, 0.0]]
        std = [list(spec.std)] if spec.normalization == "meanstd" else [[255.0, 255.0, 255.0]]
    return Plan(inputs, image_index, mean, std)


def _paired_encoder(models_dir: Path, meta: ModelMetadata):
    from station.inference.onnx import OnnxModel

    if not meta.pair:
        raise ConversionError(f"model {meta.name}: a SAM decoder needs its encoder (metadata 'pair') for realistic samples")
    enc_meta, enc_path = resolve_model(models_dir, meta.pair)
    return enc_meta, OnnxModel(enc_path, enc_meta, threads=0)


def build_samples(models_dir: Path, meta: ModelMetadata, plan: Plan, images: list[np.ndarray], seed: int = 0) -> list[list[np.ndarray]]:
    """One list of input arrays per image, in the form the .rknn is fed (uint8 NHWC when baked, else float NCHW)."""
    rng = np.random.default_rng(seed)
    samples = []
    if plan.image_index is not None:
        spec = meta.input
        for img in images:
            # the station's own transform (station.inference.image_input): calibration and the
            # parity gate see exactly what the station feeds
            image_input = model_pixels(img, spec)[None] if plan.mean_values else prepare_image(img, spec).tensor
            sample = []
            for i, t in enumerate(plan.inputs):
                if i == plan.image_index:
                    sample.append(image_input)
                else:
                    sample.append(rng.standard_normal(t.shape).astype(np.dtype(t.dtype)))
            samples.append(sample)
        return samples
    if meta.role == "sam_decoder":
        enc_meta, encoder = _paired_encoder(models_dir, meta)
        try:
            for img in images:
                emb = next(iter(encoder.run({encoder.input_names[0]: prepare_image(img, enc_meta.input).tensor}).values()))
                size = enc_meta.input.size
                x0, y0 = rng.uniform(0, size * 0.6, 2)
                w, h = rng.uniform(size * 0.1, size * 0.4, 2)
                by_name = {
                    "image_embeddings": emb.astype(np.float32),
                    "point_coords": np.array([[[x0, y0], [x0 + w, y0 + h]]], np.float32),
                    "point_labels": np.array([[2, 3]], np.float32),
                    "mask_input": np.zeros((1, 1, 4 * emb.shape[2], 4 * emb.shape[3]), np.float32),
                    "has_mask_input": np.zeros((1,), np.float32),
                }
                samples.append([by_name[t.name].reshape(t.shape) for t in plan.inputs])
        finally:
            encoder.close()
        return samples
    # e.g. a classifier on [grey, region mask] crops: no pixels to take from the images, so
    # fp16 parity runs on seeded inputs in 0..1 (int8 is refused earlier: it needs real tensors)
    return [[rng.random(t.shape).astype(np.dtype(t.dtype)) for t in plan.inputs] for _ in images]


def read_image(path: Path) -> np.ndarray:
    """A calibration image as HxWx3 RGB (station.images decodes it: truncated or corrupt files are refused)."""
    try:
        img = read_image_file(path)
    except ImageError as exc:
        raise ConversionError(f"calibration {exc}") from None
    return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB) if img.ndim == 2 else img


# ---- conversion ---------------------------------------------------------------------------
def convert_model(
    models_dir: Path | str,
    name: str,
    target: str = "rk3588",
    quant: str = "fp16",
    calib: Path | None = None,
    venv: Path = DEFAULT_VENV,
    calib_count: int = 32,
    held_back: int = 4,
    shapes: dict[str, list[int]] | None = None,
    log_file: Path | None = None,
    quantized_algorithm: str | None = None,
) -> RknnForm:
    """Build ``NAME.<target>.<quant>.rknn`` next to the model, check parity, record the form. Raises ConversionError."""
    if target not in TARGETS:
        raise ConversionError(f"unknown target {target!r} ({', '.join(TARGETS)})")
    if quant not in MIN_COSINE:
        raise ConversionError(f"unknown quantisation {quant!r} (fp16, int8)")
    models_dir = Path(models_dir)
    try:
        meta, onnx_path = resolve_model(models_dir, name)
    except ModelError as exc:
        raise ConversionError(str(exc)) from None
    if meta.role == "backbone":
        raise ConversionError(f"model {name} is a backbone: it is converted for a recipe's camera view size, with the recipe's "
                              "verdicts as a gate (station models convert --recipe NAME --view-size HxW --calib MANIFEST.csv)")
    plan = plan_conversion(onnx_path, meta, shapes)
    if quant == "int8" and plan.image_index is None and meta.role != "sam_decoder":
        raise ConversionError(
            f"model {name}: int8 calibration needs image inputs (3-channel, with an input spec); its inputs are "
            f"{[t.name for t in plan.inputs]}: use --quant fp16"
        )
    if quant == "int8" and calib is None:
        raise ConversionError(f"model {name}: int8 needs calibration images from the recipe's data (--calib MANIFEST.csv or folder)")
    rng = np.random.default_rng(0)
    if calib is not None:
        paths = list_images(Path(calib))
        if len(paths) < held_back + (1 if quant == "int8" else 0):
            raise ConversionError(f"calibration source {calib} has {len(paths)} images; need more than {held_back}")
        order = rng.permutation(len(paths))
        held_paths = [paths[i] for i in order[:held_back]]  # never used for calibration
        calib_paths = [paths[i] for i in order[held_back : held_back + calib_count]]
        held_images = [read_image(p) for p in held_paths]
        calib_images = [read_image(p) for p in calib_paths] if quant == "int8" else []
        used = f"{len(calib_images)} calibration images" if calib_images else "no calibration (fp16)"
        calibration_note = f"{used} from {calib}; parity on {len(held_images)} held-back images"
        if plan.image_index is None and meta.role != "sam_decoder":
            calibration_note = f"no calibration (fp16); parity on {held_back} seeded random inputs in 0..1"
    else:
        size = meta.input.size if meta.input else 256
        held_images = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(held_back)]
        calib_images = []
        calibration_note = f"no calibration (fp16); parity on {held_back} random images"

    held = build_samples(models_dir, meta, plan, held_images, seed=1)
    calib_samples = build_samples(models_dir, meta, plan, calib_images, seed=2) if calib_images else []
    form, _ = build_rknn(models_dir, name, onnx_path, plan, target, quant, held, calib_samples, venv, log_file, calibration_note,
                         quantized_algorithm=quantized_algorithm if quant == "int8" else None)
    return form


def build_rknn(
    models_dir: Path,
    name: str,
    onnx_path: Path,
    plan: Plan,
    target: str,
    quant: str,
    held: list[list[np.ndarray]],
    calib: list[list[np.ndarray]],
    venv: Path,
    log_file: Path | None,
    calibration_note: str,
    accept=None,
    quantized_algorithm: str | None = None,
    **form_fields,
) -> tuple[RknnForm, list[dict[str, np.ndarray]]]:
    """Run the toolkit on prepared samples (as the .rknn is fed), check cosine parity and, when
    given, ``accept(simulator outputs per held-back sample)`` (raises ConversionError to refuse, or
    returns fields to record in the form); then install ``NAME.<target>.<quant>.rknn`` next to the
    model and record the form. Returns the form and the simulator's outputs per held-back sample."""
    out_name = f"{name}.{target}.{quant}.rknn"
    final = models_dir / out_name
    with tempfile.TemporaryDirectory(prefix=f"rknn-{name}-") as tmp:
        tmp = Path(tmp)
        held_paths = [[str(_save(tmp / f"held{k}_{i}.npy", x)) for i, x in enumerate(sample)] for k, sample in enumerate(held)]
        dataset = None
        if calib:
            lines = []
            for k, sample in enumerate(calib):
                # the toolkit's dataset (measured): 4-D tensors NCHW; raw 0..255 pixels when normalisation is baked
                files = [
                    _save(tmp / f"calib{k}_{i}.npy", x.transpose(0, 3, 1, 2).astype(np.float32) if (plan.mean_values and i == 0) else x)
                    for i, x in enumerate(sample)
                ]
                lines.append(" ".join(str(f) for f in files))
            dataset = tmp / "dataset.txt"
            dataset.write_text("\n".join(lines) + "\n")
        spec = {
            "onnx": str(onnx_path.resolve()),
            "output": str(tmp / out_name),
            "target": target,
            "quant": quant,
            "inputs": [t.model_dump() for t in plan.inputs],
            "mean_values": plan.mean_values,
            "std_values": plan.std_values,
            "calibration": str(dataset) if dataset else None,
            "held_back": held_paths,
            "outputs_dir": str(tmp / "outputs") if accept else None,
            "quantized_algorithm": quantized_algorithm,
        }
        (tmp / "spec.json").write_text(json.dumps(spec, indent=2))
        python = ensure_convert_env(Path(venv), log_file)
        cmd = [str(python), str(CONVERT_DIR / "convert_rknn.py"), str(tmp / "spec.json"), str(tmp / "result.json")]
        log.info("converting %s -> %s (%s, %s)", name, out_name, target, quant)
        out = open(log_file, "a", encoding="utf-8") if log_file else subprocess.DEVNULL
        try:
            proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=tmp, check=False)
        finally:
            if log_file:
                out.close()
        result_path = tmp / "result.json"
        result = json.loads(result_path.read_text()) if result_path.is_file() else {"error": f"exit status {proc.returncode}, no result"}
        if proc.returncode != 0 or "error" in result:
            where = f" (log: {log_file})" if log_file else ""
            raise ConversionError(f"model {name}: rknn-toolkit2 failed: {result.get('error')}{where}")
        check_parity(name, quant, result["parity"])
        outputs = [{n: np.load(f) for n, f in sample.items()} for sample in result.get("held_outputs", [])]
        if accept is not None:
            form_fields.update(accept(outputs) or {})
        shutil.move(str(tmp / out_name), final)
    form = RknnForm(
        file=out_name,
        sha256=sha256_file(final),
        target=target,
        quant=quant,
        inputs=plan.inputs,
        outputs=result["outputs"],
        mean_values=plan.mean_values,
        std_values=plan.std_values,
        parity=result["parity"],
        toolkit_version=result.get("toolkit_version", ""),
        calibration=calibration_note,
        created_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        **form_fields,
    )
    meta_path = models_dir / f"{name}.json"
    current = ModelMetadata.read(meta_path)  # re-read: keep whatever else changed meanwhile
    forms = dict(current.forms)
    forms[form_key(target, quant)] = form.model_dump(exclude_none=True)
    current.model_copy(update={"forms": forms}).write(meta_path)
    return form, outputs


def check_parity(name: str, quant: str, parity: dict[str, dict[str, float]]) -> None:
    """Raise ConversionError when an output's cosine, or a mask output's IoU, is under the floor for ``quant``."""
    threshold = MIN_COSINE[quant]
    worst = {o: p for o, p in parity.items() if p["cosine"] < threshold}
    if worst:
        detail = ", ".join(f"{o} cosine {p['cosine']:.5f}" for o, p in worst.items())
        raise ConversionError(f"model {name}: {quant} parity under {threshold}: {detail}; the .rknn is not installed")
    iou_floor = MIN_MASK_IOU[quant]
    bad_masks = {o: p for o, p in parity.items() if p.get("mask_iou", 1.0) < iou_floor}
    if bad_masks:
        detail = ", ".join(f"{o} mask IoU {p['mask_iou']:.3f} (cosine {p['cosine']:.5f})" for o, p in bad_masks.items())
        raise ConversionError(
            f"model {name}: {quant} masks differ from ONNX Runtime's, IoU under {iou_floor}: {detail}; the .rknn is not installed"
        )


def _save(path: Path, x: np.ndarray) -> Path:
    np.save(path, np.ascontiguousarray(x))
    return path
