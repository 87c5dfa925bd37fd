"""`station bench` runs the real pipeline on the real LiteMedSAM pair; figures come from the command, not asserted here."""

from __future__ import annotations

import json

import pytest

from station.cli import main
from station.inference import factory
from station.inference.metadata import ModelMetadata


@pytest.mark.slow
def test_sim_bench_runs_the_tile_nets_recipes_own_models_on_three_cores(repo_root, shared_dir, sam_models_dir, tmp_path, capsys):
    models = tmp_path / "models"
    models.mkdir()
    for f in sam_models_dir.iterdir():  # the SAM pair, pulled once for the session
        (models / f.name).symlink_to(f)
    assert main(["bench", "--recipe", "magnetic-tile-nets", "--backend", "sim-rk3588", "--parts", "6", "--json",
                 "--data", str(shared_dir / "data" / "magnetic-tile-train" / "manifest.csv"),
                 "--models-dir", str(models)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["recipe"] == "magnetic-tile-nets" and [r["npu_cores"] for r in report["runs"]] == [1, 2, 3]
    # the recipe's own models, each where it can run: fixed shapes on the (simulated) NPU
    placement = report["models"]
    assert set(placement) == {"litemedsam", "litemedsam_decoder", "magnetic-tile-proposals-pixel-mlp",
                              "magnetic-tile-proposals-sam-head", "magnetic-tile-proposals-sam-context-head",
                              "magnetic-tile-classifier"}
    assert placement["litemedsam"] == "rknn (simulated)" and placement["magnetic-tile-proposals-sam-head"] == "rknn (simulated)"
    assert placement["magnetic-tile-proposals-pixel-mlp"].startswith("onnxruntime:")  # any H x W: stays on the CPU
    for run in report["runs"]:
        assert run["parts"] == 6 and run["rejects_not_defect"] == 0
        assert set(run["stage_ms"]) >= {"acquire", "preprocess", "analyse", "decide", "total"}
    assert report["speedup_1_to_3"] > 0 and report["simulated_latency_ms"]["sam_encoder"] == 100.0
    sim = factory.simulated_rk3588_runtime()
    assert sim.npu.peak_busy == 3  # three parts were on the NPU at once
    assert all(sim.npu.calls_by_core[m] > 0 for m in (1, 2, 4))


def test_bench_command_refuses_an_unknown_recipe(tmp_path, capsys):
    assert main(["bench", "--recipe", str(tmp_path / "nope.toml"), "--json"]) == 2
    assert "file not found" in capsys.readouterr().err


def test_bench_by_default_runs_the_demo_recipe_on_simulated_parts(tmp_path, capsys, shared_dir, monkeypatch):
    monkeypatch.setenv("STATION_MODEL_DIRS", str(shared_dir / "models"))  # the SAM pair; the rest is in models/trained
    assert main(["bench", "--parts", "4", "--json", "--models-dir", str(tmp_path / "models")]) == 0
    report = json.loads(capsys.readouterr().out)
    (run,) = report["runs"]
    assert report["recipe"] == "demo-part" and report["images"] == "simulated parts"
    assert run["parts"] == 4 and run["rejects_not_defect"] == 0 and run["parts_per_s"] > 0


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

    report = bench_recipe(repo_root / "recipes" / "plate-threshold.toml", shared_dir / "data" / "magnetic-tile-train" / "manifest.csv",
                          tmp_path / "none", "onnxruntime", 8, tmp_path, distinct_frames=2)
    (run,) = report["runs"]
    assert report["recipe"] == "plate-threshold" and run["parts"] == 8 and run["rejects_not_defect"] == 0
    assert run["stage_alone_parts_per_s"]["analyse"] > 0
