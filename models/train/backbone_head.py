"""Train the per-cell head on a frozen backbone (torch, CPU) and export it: ONNX + metadata.

The head of ``station.vision.backbone``: each stride-8 cell of the model input is described by
the backbone's ``s8``, ``s16`` and ``s32`` maps, each 3x3 average-pooled (a little context) and
the coarser two upsampled bilinearly onto the s8 grid, concatenated (Lite0: 40 + 112 + 320 =
472 values); the features are standardised and a multinomial logistic regression (background +
the recipe's defect classes, L2-regularised, class-balanced) gives the cell's class
probabilities. Everything after the backbone is one small ONNX graph (``CellHead``): in ``s8``,
``s16``, ``s32`` (dynamic H, W), out ``probs`` [1, K+1, H/8, W/8].

Training cells (labels from the manifest's masks): a cell more than ``POSITIVE_FRACTION`` inside
a defect mask is that defect's class; cells of a defective view that touch no mask are
background (at most ``GOOD_CELLS_PER_DEFECT_VIEW`` per view), cells in between are not used;
``GOOD_CELLS_PER_GOOD_VIEW`` random cells per good view. The regularisation, cell counts and
pooling were fixed a priori (the notes' values); the input size and the flip averaging were
chosen by grouped cross-validation on the magnetic tiles (models/trained/README.md). Features
come from the station's own ``Backbone`` (ONNX Runtime): the head learns what it will see.

Command line (the lead wires it into ``station train`` from here)::

    python -m station.models.train.backbone_head --manifest DATA/manifest.csv --good-class free \
        --models-dir var/models --backbone efficientnet-lite0 --out models/trained --name magnetic-tile-backbone-head
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from station.inference.metadata import ModelMetadata, sha256_file
from station.vision.backbone import CELL_PX, Backbone, BackboneFeatures
from station.vision.dataset import Sample, load_samples, read_manifest
from station.recipe import Preprocess
from station.vision.preprocess import model_view_settings, preprocess_image, to_gray
from station.vision.proposals import BACKGROUND

log = logging.getLogger("station.train")

POSITIVE_FRACTION = 0.1
GOOD_CELLS_PER_GOOD_VIEW = 40
GOOD_CELLS_PER_DEFECT_VIEW = 20
POOL = 3  # cells, each map's average-pooling window
IGNORE = -1
OPSET = 17


@dataclass(frozen=True)
class HeadSettings:
    short_side: int = 320  # model px (see station.vision.backbone.model_size)
    flip_tta: bool = True  # average the backbone's maps of the view and its mirror
    c: float = 0.05  # inverse L2 strength (scikit-learn's C), on standardised features
    seed: int = 0


class CellFeatures(nn.Module):
    """(s8, s16, s32) -> [N, D, H/8, W/8]: each map 3x3 average-pooled, upsampled onto the s8 grid, concatenated."""

    def forward(self, s8: torch.Tensor, s16: torch.Tensor, s32: torch.Tensor) -> torch.Tensor:
        maps = [F.avg_pool2d(m, POOL, 1, POOL // 2, count_include_pad=False) for m in (s8, s16, s32)]
        maps[1] = F.interpolate(maps[1], scale_factor=2.0, mode="bilinear", align_corners=False)
        maps[2] = F.interpolate(maps[2], scale_factor=4.0, mode="bilinear", align_corners=False)
        return torch.cat(maps, 1)


class CellHead(nn.Module):
    """CellFeatures, standardisation and a 1x1 linear layer (logistic regression per cell), softmax."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray, mean: np.ndarray, std: np.ndarray):
        super().__init__()
        self.features = CellFeatures()
        k, d = weight.shape
        self.linear = nn.Conv2d(d, k, 1)
        with torch.no_grad():  # standardisation folded into the layer: w' = w / std, b' = b - w' . mean
            w = torch.from_numpy((weight / std[None, :]).astype(np.float32))
            self.linear.weight.copy_(w[:, :, None, None])
            self.linear.bias.copy_(torch.from_numpy((bias - (weight / std[None, :]) @ mean).astype(np.float32)))

    def forward(self, s8: torch.Tensor, s16: torch.Tensor, s32: torch.Tensor) -> torch.Tensor:
        return self.linear(self.features(s8, s16, s32)).softmax(1)


_CELL_FEATURES = CellFeatures()


def view_cells(feats: BackboneFeatures) -> np.ndarray:
    """float32 [D, H/8, W/8]: the head's input features per cell of one view (``CellFeatures``)."""
    with torch.no_grad():
        t = [torch.from_numpy(feats.maps[k]) for k in ("s8", "s16", "s32")]
        return _CELL_FEATURES(*t)[0].numpy()


def cell_targets(mask: np.ndarray | None, label: int, grid_hw: tuple[int, int]) -> np.ndarray:
    """int64 [h, w] cell labels of a view (see the module doc); 0 background, IGNORE unused."""
    h, w = grid_hw
    target = np.zeros((h, w), np.int64)
    if label and mask is not None and mask.any():
        frac = cv2.resize(mask.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)
        target[frac > 0] = IGNORE
        target[frac > POSITIVE_FRACTION] = label
    return target


def sample_cells(cells: np.ndarray, target: np.ndarray, label: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(x [n, D] float32, y [n] int64): a view's defect cells and a random draw of its background cells."""
    flat, t = cells.reshape(cells.shape[0], -1).T, target.reshape(-1)
    background = np.flatnonzero(t == 0)
    n = GOOD_CELLS_PER_DEFECT_VIEW if label else GOOD_CELLS_PER_GOOD_VIEW
    picks = np.concatenate([np.flatnonzero(t > 0), rng.choice(background, min(n, background.size), replace=False)])
    return flat[picks], t[picks]


def fit_logistic(x: np.ndarray, y: np.ndarray, n_outputs: int, c: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Multinomial logistic regression on standardised ``x``: minimises 0.5 |W|^2 + c sum_i s_i CE_i
    with class-balanced sample weights s_i (scikit-learn's objective; L-BFGS). Returns (W [K, D],
    b [K], mean [D], std [D]). A class without examples keeps its bias very low."""
    mean = x.mean(0)
    std = x.std(0) + 1e-6
    xs = torch.from_numpy(((x - mean) / std).astype(np.float64))
    yt = torch.from_numpy(y)
    counts = np.bincount(y, minlength=n_outputs).astype(np.float64)
    present = counts > 0
    weights = torch.from_numpy(np.where(present, len(y) / (present.sum() * np.maximum(counts, 1)), 0.0))
    w = torch.zeros(n_outputs, x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(n_outputs, dtype=torch.float64, requires_grad=True)
    absent = torch.from_numpy(~present)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=500, tolerance_grad=1e-6, tolerance_change=1e-10,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        logits = (xs @ w.T + b).masked_fill(absent, -30.0)
        loss = c * F.cross_entropy(logits, yt, weight=weights, reduction="none").sum() * 1.0
        # F.cross_entropy with weight and reduction none already multiplies each term by its class weight
        loss = loss + 0.5 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    bias = b.detach().numpy().copy()
    bias[~present] = -30.0
    return w.detach().numpy(), bias, mean, std


def backbone_features(samples: list[Sample], backbone: Backbone, settings: HeadSettings,
                      preprocess: Preprocess | None = None) -> list[BackboneFeatures]:
    """Every sample's view, through the recipe's ``preprocess`` (what the inspector does before
    the analyzer) when given, then through the station's backbone (the slow part: ~25-100 ms per
    view on this CPU)."""
    out, t0 = [], time.monotonic()
    for n, s in enumerate(samples):
        view = s.image if preprocess is None else preprocess_image(s.image, preprocess)
        f = backbone.features(to_gray(view), settings.short_side, settings.flip_tta)
        out.append(BackboneFeatures({k: v.astype(np.float16) for k, v in f.maps.items()}, f.view_hw, f.model_hw))
        if n % 100 == 0:
            log.info("backbone features %d/%d (%.0f s)", n, len(samples), time.monotonic() - t0)
    return out


def _as_float32(feats: BackboneFeatures) -> BackboneFeatures:
    return BackboneFeatures({k: v.astype(np.float32) for k, v in feats.maps.items()}, feats.view_hw, feats.model_hw)


def train_head(samples: list[Sample], labels: list[int], n_classes: int, features: list[BackboneFeatures],
               settings: HeadSettings = HeadSettings()) -> tuple[CellHead, dict]:
    """The head from views (``labels``: 0 good, 1..K defect class) and their backbone ``features``;
    returns (head, info: cell counts)."""
    if len(samples) != len(labels) or len(samples) != len(features):
        raise ValueError(f"{len(samples)} samples, {len(labels)} labels, {len(features)} feature sets: one each")
    if not any(labels):
        raise ValueError("no defective view to learn from (every label is the good class)")
    rng = np.random.default_rng(settings.seed)
    xs, ys = [], []
    for s, label, f in zip(samples, labels, features):
        cells = view_cells(_as_float32(f))
        target = cell_targets(s.mask, label, cells.shape[1:])
        x, y = sample_cells(cells, target, label, rng)
        xs.append(x)
        ys.append(y)
    x, y = np.concatenate(xs), np.concatenate(ys)
    if not (y > 0).any():
        raise ValueError("no defect cell to learn from: the defective views' masks are empty or missing")
    weight, bias, mean, std = fit_logistic(x, y, n_classes + 1, settings.c)
    counts = np.bincount(y, minlength=n_classes + 1).tolist()
    return CellHead(weight, bias, mean, std).eval(), {"cells": int(len(y)), "cell_class_counts": counts}


def export_head(head: CellHead, path: Path | str, channels: dict[str, int]) -> None:
    """ONNX: in s8, s16, s32 (dynamic H, W), out probs [1, K+1, H/8, W/8]."""
    h, w = 8, 10  # any s32 grid; the others follow from the strides
    dummy = (torch.zeros(1, channels["s8"], 4 * h, 4 * w), torch.zeros(1, channels["s16"], 2 * h, 2 * w),
             torch.zeros(1, channels["s32"], h, w))
    dynamic = {"s8": {2: "h8", 3: "w8"}, "s16": {2: "h16", 3: "w16"}, "s32": {2: "h32", 3: "w32"}, "probs": {2: "h8", 3: "w8"}}
    torch.onnx.export(head.eval(), dummy, str(path), input_names=["s8", "s16", "s32"], output_names=["probs"],
                      dynamic_axes=dynamic, opset_version=OPSET, dynamo=False)


def write_head(head: CellHead, out_dir: Path | str, name: str, classes: list[str], backbone: Backbone,
               settings: HeadSettings, info: dict, source: str = "models/train/backbone_head.py",
               preprocess: Preprocess | None = None) -> ModelMetadata:
    """Export the head to ``out_dir/NAME.onnx`` and write ``NAME.json`` (role proposals, input
    backbone; with ``preprocess``, the views' preprocessing it was trained on, checked at load)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.onnx"
    bmeta = backbone.model.metadata
    channels = {k: int(v["channels"]) for k, v in bmeta.extra["outputs"].items()}
    export_head(head, path, channels)
    meta = ModelMetadata(
        name=name, role="proposals", file=path.name, sha256=sha256_file(path), bytes=path.stat().st_size,
        classes=[BACKGROUND, *classes], source=source,
        extra={"input": "backbone", "backbone": bmeta.name, "backbone_sha256": bmeta.sha256,
               "short_side": settings.short_side, "flip_tta": settings.flip_tta, "cell_px": CELL_PX,
               "head": "logistic regression per stride-8 cell on s8+s16+s32, 3x3 average-pooled",
               "settings": asdict(settings), **info,
               **({} if preprocess is None else {"preprocess": model_view_settings(preprocess)})},
    )
    meta.write(out_dir / f"{name}.json")
    return meta


def view_labels(samples: list[Sample], classes: list[str], good_class: str) -> list[int]:
    """0 for the good class, 1 + index of the defect class; ValueError naming an unknown class."""
    out = []
    for s in samples:
        if s.row.label == good_class:
            out.append(0)
        elif s.row.label in classes:
            out.append(1 + classes.index(s.row.label))
        else:
            raise ValueError(f"manifest row {s.row.index}: class {s.row.label!r} is neither {good_class!r} nor one of {classes}")
    return out


def train_from_manifest(manifest: Path | str, good_class: str, backbone: Backbone, out_dir: Path | str, name: str,
                        classes: list[str] | None = None, settings: HeadSettings = HeadSettings()) -> ModelMetadata:
    """Train a head on every usable row of ``manifest`` and write it (see ``write_head``).
    ``classes``: the defect classes in order (default: the manifest's, sorted)."""
    rows = read_manifest(manifest)
    samples, skipped = load_samples(rows)
    for s in skipped:
        log.warning("skipped row %d: %s", s.row.index, s.reason)
    if not samples:
        raise ValueError(f"{manifest}: no usable rows ({len(skipped)} skipped)")
    classes = classes or sorted({s.row.label for s in samples} - {good_class})
    labels = view_labels(samples, classes, good_class)
    t0 = time.monotonic()
    feats = backbone_features(samples, backbone, settings)
    head, info = train_head(samples, labels, len(classes), feats, settings)
    info.update({"views": len(samples), "skipped_rows": len(skipped), "seconds": round(time.monotonic() - t0, 1)})
    return write_head(head, out_dir, name, classes, backbone, settings, info)


def main(argv: list[str] | None = None) -> int:
    from station.inference.factory import load_model

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--manifest", type=Path, required=True)
    p.add_argument("--good-class", required=True)
    p.add_argument("--models-dir", type=Path, default=Path("var/models"), help="where the backbone is (station models pull)")
    p.add_argument("--backbone", default="efficientnet-lite0")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--short-side", type=int, default=HeadSettings.short_side)
    p.add_argument("--no-flip", action="store_true", help="no flip averaging (half the backbone cost per view)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    settings = HeadSettings(short_side=args.short_side, flip_tta=not args.no_flip, seed=args.seed)
    backbone = Backbone(load_model(args.models_dir, args.backbone, "onnxruntime", 1))
    meta = train_from_manifest(args.manifest, args.good_class, backbone, args.out, args.name, settings=settings)
    print(f"{meta.name}: {args.out / meta.file} sha256 {meta.sha256[:12]}…, classes {meta.classes[1:]}, {meta.extra['cells']} cells")
    return 0


if __name__ == "__main__":
    sys.exit(main())
