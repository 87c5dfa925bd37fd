"""`station bench` runs the real pipeline on the real LiteMedSAM pair; figures come from the command, not asserted here."""

from __future__ import annotations

import json

import pytest

from station.benchmarks.pipeline import bench_backend, prepare_models
from station.cli import main
from station.inference import factory
from station.inference.metadata import ModelMetadata


@pytest.mark.slow
def test_sim_bench_spreads_parts_over_three_cores_in_order(shared_dir, tmp_path):
    models = tmp_path / "models"
    prepare_models(models, shared_dir / "models" / "mobilesam", simulated_npu=True)
    run = bench_backend(models, "sim-rk3588", parts=8, workers=4, npu_cores=3, distinct_frames=2)
    assert run.parts == 8 and run.rejects_not_defect == 0
    assert set(run.stage_ms) >= {"acquire", "preprocess", "analyse", "decide", "total"}
    assert run.slowest_stage == "analyse" and run.parts_per_s > 0 and run.efficiency > 0
    sim = factory.simulated_rk3588_runtime()
    assert sim.npu.peak_busy == 3  # three parts were in the encoder at once
    assert all(sim.npu.calls_by_core[m] > 0 for m in (1, 2, 4))


def test_bench_command_refuses_missing_models(tmp_path, capsys):
    assert main(["bench", "--sam-dir", str(tmp_path), "--json"]) == 2
    assert "no litemedsam_encoder.onnx" in capsys.readouterr().out


@pytest.mark.slow
def test_bench_command_json(shared_dir, capsys):
    assert main(["bench", "--backend", "sim-rk3588", "--parts", "4", "--json",
                 "--sam-dir", str(shared_dir / "models" / "mobilesam")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [r["npu_cores"] for r in report["runs"]] == [1, 2, 3]
    assert report["speedup_1_to_3"] > 0 and report["simulated_latency_ms"]["sam_encoder"] == 100.0


def test_recipe_models_get_batch_one_forms_or_stay_on_the_cpu(tmp_path, tiny_onnx):
    import torch

    from station.benchmarks.pipeline import stage_recipe_models
    from tests.npu.conftest import write_metadata

    src = tmp_path / "src"
    src.mkdir()
    write_metadata(src, "tiny", tiny_onnx)  # fixed 32x32 classifier
    net = torch.nn.Conv2d(3, 2, 3, padding=1).eval()  # fully convolutional, any H x W (like a proposal stage)
    torch.onnx.export(net, (torch.zeros(1, 3, 16, 16),), str(tmp_path / "fcn.onnx"), input_names=["features"],
                      output_names=["probs"], opset_version=17, dynamo=False,
                      dynamic_axes={"features": {2: "h", 3: "w"}, "probs": {2: "h", 3: "w"}})
    write_metadata(src, "fcn", tmp_path / "fcn.onnx", role="proposals")
    placement = stage_recipe_models(src, ["tiny", "fcn"], tmp_path / "work", simulated_npu=True)
    assert placement["tiny"] == "rknn (simulated)"
    assert placement["fcn"].startswith("onnxruntime:") and "dynamic shape" in placement["fcn"]
    assert not ModelMetadata.read(src / "tiny.json").forms  # the source models dir is untouched


def test_bench_recipe_runs_a_recipe_as_configured(repo_root, shared_dir, tmp_path):
    from station.benchmarks.pipeline import bench_recipe

    report = bench_recipe(repo_root / "recipes" / "demo-part.toml", shared_dir / "data" / "magnetic-tile-train" / "manifest.csv",
                          tmp_path / "none", "onnxruntime", 8, tmp_path, distinct_frames=2)
    (run,) = report["runs"]
    assert report["recipe"] == "demo-part" and run["parts"] == 8 and run["rejects_not_defect"] == 0
    assert run["stage_alone_parts_per_s"]["analyse"] > 0
