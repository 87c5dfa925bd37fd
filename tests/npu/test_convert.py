"""Conversion: plan and error paths (fast), and a real rknn-toolkit2 build with parity (slow, in its own venv)."""

from __future__ import annotations

import argparse
import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from station.commands.npu import cmd_list, model_rows
from station.inference import convert
from station.inference.convert import ConversionError, convert_model, plan_conversion
from station.inference.metadata import ModelMetadata, sha256_file
from tests.conftest import REPO_ROOT, SHARED_DIR

VENV = REPO_ROOT / "var" / "rknn-venv"  # cached between runs; created by the slow test if missing


def _calib_manifest(tmp_path: Path, n: int = 14) -> Path:
    """A few of the recipe's own photos (magnetic tile), as a manifest next to copies of them."""
    src = SHARED_DIR / "data" / "magnetic-tile-train"
    with open(src / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))[::60][:n]
    out = tmp_path / "calib"
    out.mkdir()
    with open(out / "manifest.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "class"])
        for r in rows:
            name = Path(r["image"]).name
            shutil.copyfile(src / r["image"], out / name)
            w.writerow([name, r["class"]])
    return out / "manifest.csv"


def test_plan_bakes_meanstd_into_first_input(models_dir):
    meta = ModelMetadata.read(models_dir / "tiny.json")
    plan = plan_conversion(models_dir / "tiny.onnx", meta)
    assert [t.shape for t in plan.inputs] == [[1, 3, 32, 32]] and plan.image_index == 0
    assert plan.mean_values == [meta.input.mean] and plan.std_values == [meta.input.std]


def test_plan_for_the_sam_pair(shared_dir, tmp_path):
    src = shared_dir / "models" / "mobilesam"
    for role, fname in (("sam_decoder", "litemedsam_decoder.onnx"), ("sam_encoder", "litemedsam_encoder.onnx")):
        meta = ModelMetadata(name=role, role=role, file=fname, sha256="0" * 64,
                             input={"size": 256, "normalization": "minmax"} if role == "sam_encoder" else None)
        plan = plan_conversion(src / fname, meta)
        if role == "sam_decoder":  # one box prompt: fixed two corner points
            shapes = {t.name: t.shape for t in plan.inputs}
            assert shapes["point_coords"] == [1, 2, 2] and shapes["point_labels"] == [1, 2]
            assert shapes["image_embeddings"] == [1, 256, 64, 64] and plan.mean_values is None
        else:  # min-max depends on each image: cannot be baked in, the .rknn takes float
            assert plan.image_index == 0 and plan.mean_values is None


def test_conversion_refuses_bad_requests(models_dir, tmp_path):
    with pytest.raises(ConversionError, match="int8 needs calibration images"):
        convert_model(models_dir, "tiny", quant="int8", venv=tmp_path / "no-venv")
    with pytest.raises(ConversionError, match="unknown target"):
        convert_model(models_dir, "tiny", target="rk9999", venv=tmp_path / "no-venv")
    with pytest.raises(ConversionError, match=r"nope.json not found"):
        convert_model(models_dir, "nope", venv=tmp_path / "no-venv")
    with pytest.raises(ConversionError, match="neither a manifest CSV nor a folder"):
        convert_model(models_dir, "tiny", quant="int8", calib=tmp_path / "missing", venv=tmp_path / "no-venv")
    assert not (tmp_path / "no-venv").exists()  # nothing was built for a bad request


@pytest.mark.slow
def test_convert_tiny_cnn_fp16_and_int8_with_parity(models_dir, tmp_path, monkeypatch, capsys):
    calib = _calib_manifest(tmp_path)
    log = tmp_path / "convert.log"
    before = (models_dir / "tiny.json").read_text()
    # a threshold the model cannot meet: the conversion fails and the metadata is untouched
    monkeypatch.setitem(convert.MIN_COSINE, "fp16", 1.5)
    with pytest.raises(ConversionError, match=r"fp16 parity under 1.5: logits cosine"):
        convert_model(models_dir, "tiny", "rk3588", "fp16", calib, VENV, held_back=4, log_file=log)
    assert (models_dir / "tiny.json").read_text() == before
    assert not (models_dir / "tiny.rk3588.fp16.rknn").exists()
    monkeypatch.setitem(convert.MIN_COSINE, "fp16", 0.999)

    for quant, floor in (("fp16", 0.999), ("int8", 0.99)):
        form = convert_model(models_dir, "tiny", "rk3588", quant, calib, VENV, calib_count=10, held_back=4, log_file=log)
        rknn = models_dir / form.file
        assert rknn.read_bytes()[:4] == b"RKNN"  # the magic the double checks
        assert form.sha256 == sha256_file(rknn)
        assert form.parity["logits"]["cosine"] >= floor
        assert form.mean_values is not None  # normalisation baked in: the .rknn takes uint8 RGB NHWC
        assert "held-back" in form.calibration
    meta = ModelMetadata.read(models_dir / "tiny.json")
    assert set(meta.forms) == {"rknn-rk3588-fp16", "rknn-rk3588-int8"}

    # the converted forms are what the rknn backend reads: run them (through the double) against ONNX Runtime
    from station.inference import rknn_double
    from station.inference.factory import load_model
    from station.inference.pool import CoreScheduler
    from tests.npu.conftest import normalise

    img = np.random.default_rng(3).integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
    want = load_model(models_dir, "tiny", "onnxruntime").run({"image": normalise(img)})["logits"]
    for key in ("rknn-rk3588-fp16", "rknn-rk3588-int8"):
        with load_model(models_dir, "tiny", "rknn:1", form=key, runtime_class=rknn_double.simulated(), scheduler=CoreScheduler()) as m:
            np.testing.assert_allclose(m.run({"image": normalise(img)})["logits"], want, rtol=1e-4, atol=1e-4)

    rows = {r["name"]: r for r in model_rows(models_dir)}
    assert rows["tiny"]["forms"]["rknn-rk3588-int8"]["parity"]["logits"]["cosine"] >= 0.99
    assert cmd_list(argparse.Namespace(models_dir=models_dir, json=False)) == 0
    out = capsys.readouterr().out
    assert "rknn-rk3588-fp16" in out and "rknn-rk3588-int8" in out and "logits: cos" in out
    json.loads(json.dumps(rows))  # the --json rows are plain data


def test_convert_env_is_reused_only_while_its_pinned_lists_are_unchanged(tmp_path, monkeypatch):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(Path(convert.sys.executable))
    assert not convert.convert_env_ready(venv)  # no stamp: would be (re)built
    (venv / ".station-requirements.sha256").write_text(convert._requirements_hash() + "\n")
    assert convert.convert_env_ready(venv)
    assert convert.ensure_convert_env(venv) == venv.resolve() / "bin" / "python"  # reused, nothing installed
    pins = tmp_path / "pins"
    shutil.copytree(convert.CONVERT_DIR, pins, ignore=shutil.ignore_patterns("__pycache__"))
    (pins / "requirements.txt").write_text((pins / "requirements.txt").read_text() + "tqdm==4.0\n")
    monkeypatch.setattr(convert, "CONVERT_DIR", pins)
    assert not convert.convert_env_ready(venv)  # a changed pin means a new venv


def test_int8_needs_image_inputs(tmp_path, tiny_onnx):
    import torch

    from tests.npu.conftest import write_metadata

    net = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(3))
    net(torch.zeros(1, 2, 8, 8))
    torch.onnx.export(net.eval(), (torch.zeros(1, 2, 8, 8),), str(tmp_path / "crops.onnx"), input_names=["crops"],
                      output_names=["logits"], opset_version=17, dynamo=False)
    d = tmp_path / "m"
    d.mkdir()
    write_metadata(d, "cls", tmp_path / "crops.onnx")
    with pytest.raises(ConversionError, match=r"int8 calibration needs image inputs .*\['crops'\]: use --quant fp16"):
        convert_model(d, "cls", quant="int8", calib=tmp_path, venv=tmp_path / "no-venv")


def test_parity_floors():
    from station.inference.convert import check_parity

    ok = {"image_embeddings": {"cosine": 0.99998, "max_abs_error": 0.0063}}
    check_parity("enc", "fp16", ok)
    with pytest.raises(ConversionError, match=r"enc: int8 parity under 0.99: image_embeddings cosine 0.66347"):
        check_parity("enc", "int8", {"image_embeddings": {"cosine": 0.66347, "max_abs_error": 3.1}})
    # measured on the LiteMedSAM decoder in int8: logits close by cosine, masks not
    dec = {"masks": {"cosine": 0.995867, "max_abs_error": 17.6, "mask_iou": 0.185}, "iou_predictions": {"cosine": 0.99994, "max_abs_error": 0.036}}
    with pytest.raises(ConversionError, match=r"dec: int8 masks differ .* IoU under 0.9: masks mask IoU 0.185"):
        check_parity("dec", "int8", dec)
    check_parity("dec", "fp16", {"masks": {"cosine": 1.0, "max_abs_error": 0.1, "mask_iou": 0.99}})


def test_models_list_command_shows_forms_and_bad_metadata(models_dir, capsys):
    from station.cli import main
    from station.inference import rknn_double

    rknn_double.add_simulated_form(models_dir, "tiny")
    (models_dir / "broken.json").write_text("{not json")
    assert main(["models", "list", "--models-dir", str(models_dir), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    rows = {r["name"]: r for r in report["models"]}
    assert set(rows["tiny"]["forms"]) == {"onnxruntime", "rknn-rk3588-fp16"}
    assert rows["tiny"]["forms"]["rknn-rk3588-fp16"]["present"] is True
    assert "invalid" in rows["broken"]["error"]
    assert report["npu"]["present"] is False  # this machine
