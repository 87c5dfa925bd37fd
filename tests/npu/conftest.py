"""Fixtures for the NPU area: a tiny real CNN exported to ONNX, in a models dir with metadata."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from station.inference.metadata import InputSpec, ModelMetadata, sha256_file

TINY_SIZE = 32
TINY_MEAN = [123.675, 116.28, 103.53]  # ImageNet mean/std in 0..255 units, like a real classifier
TINY_STD = [58.395, 57.12, 57.375]


def export_tiny_cnn(path: Path, seed: int = 0) -> Path:
    """A small real CNN (conv, BN, ReLU, pool, linear) exported with torch, opset 17."""
    import torch

    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.BatchNorm2d(8),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, stride=2, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(8, 4),
    ).eval()
    torch.onnx.export(
        net, (torch.zeros(1, 3, TINY_SIZE, TINY_SIZE),), str(path),
        input_names=["image"], output_names=["logits"], opset_version=17, dynamo=False,
    )
    return path


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory) -> Path:
    return export_tiny_cnn(tmp_path_factory.mktemp("tiny") / "tiny.onnx")


def write_metadata(models_dir: Path, name: str, onnx_path: Path, role: str = "classifier") -> ModelMetadata:
    target = models_dir / f"{name}.onnx"
    shutil.copyfile(onnx_path, target)
    meta = ModelMetadata(
        name=name,
        role=role,
        file=target.name,
        sha256=sha256_file(target),
        bytes=target.stat().st_size,
        input=InputSpec(size=TINY_SIZE, normalization="meanstd", mean=TINY_MEAN, std=TINY_STD, resize="stretch"),
        classes=["good", "scratch", "crack", "stain"],
    )
    meta.write(models_dir / f"{name}.json")
    return meta


@pytest.fixture
def models_dir(tmp_path, tiny_onnx) -> Path:
    d = tmp_path / "models"
    d.mkdir()
    write_metadata(d, "tiny", tiny_onnx)
    return d


def normalise(image_u8_nhwc: np.ndarray) -> np.ndarray:
    """What the vision code feeds ONNX Runtime: float32 NCHW, (x - mean) / std."""
    x = image_u8_nhwc.astype(np.float32).transpose(0, 3, 1, 2)
    return (x - np.asarray(TINY_MEAN, np.float32).reshape(1, 3, 1, 1)) / np.asarray(TINY_STD, np.float32).reshape(1, 3, 1, 1)


@pytest.fixture
def images() -> np.ndarray:
    return np.random.default_rng(7).integers(0, 256, (6, 1, TINY_SIZE, TINY_SIZE, 3), dtype=np.uint8)
