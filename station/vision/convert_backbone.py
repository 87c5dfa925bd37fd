"""A backbone recipe's backbone -> ``.rknn`` for one camera view size, gated on the recipe's verdicts.

On a line a camera's views have one size, so the backbone (dynamic H, W in ONNX) is converted
at the one model input those views need: ``model_size(view size, the head's short_side)``
(station.vision.backbone). The integrator states the view size (``--view-size HxW``); the form
records it, and the station refuses a form whose input no view of the recipe can use at load,
and a view needing another input when it comes (never resized differently from what was validated).

Samples are the recipe's own images through the station's own transform: its preprocessing,
grey, resized to the model input (``Backbone.model_input``), as uint8 RGB NHWC (the scaling is
baked into the ``.rknn``). Held-back views are those whose own model input *is* the form's (views
this form will really run); calibration images are the others, resized straight to it.

Two gates, both must pass or nothing is installed:
- cosine per output (s8, s16, s32) against ONNX Runtime (station.inference.convert);
- the decision: the recipe's analyzer (the head on the CPU, float32) and verdict rule on each
  held-back view, once with ONNX Runtime's features and once with the simulator's; a view whose
  verdict differs is a flip. The head's probabilities are compared with min_confidence (0.999976
  on the shipped tile recipe), so a cosine of 0.99 says little about whether verdicts survive.
SAM outlines are left out of this check (their models have their own parity gates): a finding
counts or not by its confidence, which SAM does not change.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from station.images import ImageError, read_image_file
from station.inference.base import InferenceModel
from station.inference.convert import DEFAULT_VENV, TARGETS, ConversionError, build_rknn, list_images, plan_conversion
from station.inference.metadata import ModelError, ModelMetadata, resolve_model
from station.inference.rknn import RknnForm
from station.inspection import View
from station.recipe import BackboneVision, LoadedRecipe

# Measured on the shipped tile recipe, views of 460x384 (model input 384x320), 40 held-back views (8 not
# passed), 32 calibration images: int8 "normal" cosine s8/s16/s32 0.983/0.967/0.948 and one blowhole
# view REJECT -> PASS (refused); "kl_divergence" 0.982/0.962/0.942, no flip; "mmse" 0.996/0.996/0.996,
# no flip, view scores within 1.19 log-odds (a ~5 min build); fp16 0.99993, no flip, within 0.15.
MAX_VERDICT_FLIPS = 0  # a held-back view judged otherwise with the NPU's features refuses the form
DEFAULT_HELD_BACK = 40  # views for the decision check (the generic 4 would say nothing about verdicts)


def parse_view_size(text: str) -> tuple[int, int]:
    """``"460x384"`` -> (460, 384): a camera view's height x width in px. Raises ValueError."""
    h, sep, w = text.lower().partition("x")
    if not sep or not h.strip().isdigit() or not w.strip().isdigit() or int(h) < 32 or int(w) < 32:
        raise ValueError(f"view size {text!r}: expected HxW in px (e.g. 460x384), both at least 32")
    return int(h), int(w)


class RecordedFeatures(InferenceModel):
    """The backbone as the simulator ran it: its outputs for the held-back inputs, served by input.
    Lets the station's own analyzer judge the views with the NPU's features."""

    backend = "rknn-toolkit2 simulator"

    def __init__(self, metadata: ModelMetadata, input_shape: list[int]):
        self.metadata = metadata
        self.input_shape = list(input_shape)
        self._outputs: dict[bytes, dict[str, np.ndarray]] = {}

    @staticmethod
    def _key(x: np.ndarray) -> bytes:
        return hashlib.blake2b(np.ascontiguousarray(x, np.float32).tobytes(), digest_size=16).digest()

    def add(self, x: np.ndarray, outputs: dict[str, np.ndarray]) -> None:
        self._outputs[self._key(x)] = outputs

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        got = self._outputs.get(self._key(inputs["image"]))
        if got is None:
            raise ModelError(f"model {self.name}: no simulator output recorded for this input")
        return got

    def fixed_input_shape(self, name: str) -> list[int] | None:
        return self.input_shape if name == "image" else None

    def close(self) -> None:
        self._outputs = {}


def as_rknn_pixels(x: np.ndarray, mean: float, std: float) -> np.ndarray:
    """The scaled float32 [1, 3, H, W] the station feeds ONNX Runtime, back as the uint8 RGB NHWC the
    .rknn takes (x * std + mean: exact for (u - 127) / 128 in float32)."""
    return np.clip(np.rint(x * std + mean), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1).copy()


def _inspector(loaded: LoadedRecipe, proposer, models_dir: Path):
    from station.inference.factory import load_model
    from station.recipe_models import recipe_models
    from station.vision.classifier import RegionClassifier
    from station.vision.inspector import Inspector
    from station.vision.sam_analyzer import SamAnalyzer

    recipe = loaded.recipe
    names = [c.name for c in recipe.classes]
    needed = recipe_models(recipe)
    classifier = RegionClassifier(load_model(models_dir, needed.classifier, "onnxruntime", 1), names) if needed.classifier else None
    return Inspector(loaded, SamAnalyzer(recipe, proposer, classifier, None, {}))


def decision_parity(loaded: LoadedRecipe, models_dir: Path, reference, npu, views: list[View]) -> dict:
    """The recipe's verdicts on ``views`` with the ``reference`` proposer's features and with ``npu``'s
    (two BackboneProposers sharing the head); the view score's largest difference in log-odds."""
    from station.vision.preprocess import to_gray

    judges = [_inspector(loaded, p, models_dir) for p in (reference, npu)]
    flips, rejected, score_diff = [], 0, 0.0
    for view in views:
        outcomes, scores = [], []
        for proposer, inspector in zip((reference, npu), judges):
            (prepared,) = inspector.preprocess([view])
            findings = inspector.find_defects([prepared])
            outcomes.append(inspector.decide(findings.defects).outcome.value)
            cells = proposer.cell_probabilities(proposer.features(to_gray(prepared.image)))
            scores.append(proposer.view_score(cells, proposer.edge_cells))
        rejected += outcomes[0] != "pass"
        score_diff = max(score_diff, abs(scores[0] - scores[1]))
        if outcomes[0] != outcomes[1]:
            flips.append(f"{view.source}: {outcomes[0]} -> {outcomes[1]}")
    return {"views": len(views), "not_passed_by_onnx": rejected, "verdict_flips": len(flips),
            "max_view_score_diff": round(score_diff, 4), "flipped": "; ".join(flips)}


def convert_backbone(
    models_dir: Path | str,
    loaded: LoadedRecipe,
    view_size: tuple[int, int],
    calib: Path,
    target: str = "rk3588",
    quant: str = "int8",
    venv: Path = DEFAULT_VENV,
    calib_count: int = 32,
    held_back: int = DEFAULT_HELD_BACK,
    log_file: Path | None = None,
    quantized_algorithm: str = "mmse",
) -> RknnForm:
    """Convert ``loaded``'s backbone for views of ``view_size`` (H, W px); see the module doc.
    Raises ConversionError (and installs nothing) when a gate fails."""
    from station.vision.backbone import Backbone, BackboneProposer, load_backbone_proposer, model_size
    from station.vision.preprocess import to_gray

    recipe = loaded.recipe
    if not isinstance(recipe.vision, BackboneVision):
        raise ConversionError(f"recipe {recipe.name}: analyzer {recipe.vision.analyzer!r} has no backbone to convert for a view size")
    if target not in TARGETS or quant not in ("fp16", "int8"):
        raise ConversionError(f"target {target!r} / quantisation {quant!r}: expected one of {', '.join(TARGETS)} / fp16, int8")
    models_dir = Path(models_dir)
    names = [c.name for c in recipe.classes]
    try:
        reference, _ = load_backbone_proposer(models_dir, recipe.vision.head, names, "onnxruntime", 1, recipe.vision.edge_margin_cells)
        meta, onnx_path = resolve_model(models_dir, recipe.vision.backbone)
    except ModelError as exc:
        raise ConversionError(str(exc)) from None
    model_hw = model_size(view_size, reference.short_side)
    plan = plan_conversion(onnx_path, meta, {"image": [1, 3, *model_hw]})
    backbone = reference.backbone
    camera = recipe.cameras[0].name
    preprocess = _inspector(loaded, reference, models_dir).preprocess

    held_views, held, calib_samples = [], [], []
    paths = list_images(Path(calib))
    for i in np.random.default_rng(0).permutation(len(paths)):
        if len(held) >= held_back and (quant == "fp16" or len(calib_samples) >= calib_count):
            break
        try:
            raw = View(camera, read_image_file(paths[i]), source=paths[i].name)
            (view,) = preprocess([raw])
        except ImageError as exc:
            raise ConversionError(f"calibration {exc}") from None
        grey = to_gray(view.image)
        x = backbone.model_input(grey, model_hw)
        if model_size(grey.shape, reference.short_side) == model_hw and len(held) < held_back:
            held_views.append(raw)
            held.append((x, grey))
        elif quant == "int8" and len(calib_samples) < calib_count:
            calib_samples.append([as_rknn_pixels(x, float(backbone.mean), float(backbone.std))])
    if len(held) < held_back:
        raise ConversionError(f"{calib} has {len(held)} images whose model input is {model_hw[0]}x{model_hw[1]} (views of about "
                              f"{view_size[0]}x{view_size[1]} px); the decision check needs {held_back}: lower --held-back or "
                              "give images of this camera")
    if quant == "int8" and len(calib_samples) < min(calib_count, 8):
        raise ConversionError(f"{calib}: {len(calib_samples)} calibration images left after the held-back views; need at least 8")

    def accept(outputs: list[dict[str, np.ndarray]]) -> dict:
        recorded = RecordedFeatures(meta, plan.inputs[0].shape)
        for (x, _), out in zip(held, outputs):
            recorded.add(x, out)
        npu = BackboneProposer(Backbone(recorded), reference.head, names, reference.edge_cells)
        parity = decision_parity(loaded, models_dir, reference, npu, held_views)
        if parity["verdict_flips"] > MAX_VERDICT_FLIPS:
            raise ConversionError(
                f"model {meta.name}: {quant} features change the verdict of {parity['verdict_flips']} of {parity['views']} held-back "
                f"views of recipe {recipe.name} ({parity['flipped']}); view scores differ by up to "
                f"{parity['max_view_score_diff']} log-odds; the .rknn is not installed (try --quant fp16)")
        return {"decision_parity": parity}

    held_samples = [[as_rknn_pixels(x, float(backbone.mean), float(backbone.std))] for x, _ in held]
    note = (f"{len(calib_samples)} calibration images from {calib} (preprocessed as recipe {recipe.name}, resized to "
            f"{model_hw[0]}x{model_hw[1]})" if calib_samples else "no calibration (fp16)")
    if quant == "int8":
        note += f", quantized_algorithm {quantized_algorithm}"
    note += f"; parity and verdicts on {len(held)} held-back views whose own model input is {model_hw[0]}x{model_hw[1]}"
    form, _ = build_rknn(models_dir, meta.name, onnx_path, plan, target, quant, held_samples, calib_samples, venv, log_file,
                         note, accept=accept, quantized_algorithm=quantized_algorithm if quant == "int8" else None,
                         view_size=list(view_size))
    return form
