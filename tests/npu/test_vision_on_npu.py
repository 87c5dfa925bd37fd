"""The vision stage's SAM segmenter on the rknn backend (three pooled cores, through the double) gives the CPU's mask."""

from __future__ import annotations

import numpy as np

from station.benchmarks.pipeline import simulated_views
from station.inference import rknn_double
from station.inference.factory import load_model
from station.inference.pool import CoreScheduler, ModelPool
from station.vision.segmentation import SamSegmenter


def test_sam_segmenter_same_mask_on_npu_and_cpu(sam_models_dir, tmp_path):
    from station.benchmarks.pipeline import stage_recipe_models

    models = tmp_path / "models"
    placement = stage_recipe_models(sam_models_dir, ["litemedsam", "litemedsam_decoder"], models, simulated_npu=True)
    assert set(placement.values()) == {"rknn (simulated)"}
    view = simulated_views(1)[0]
    cpu = SamSegmenter(load_model(models, "litemedsam", "onnxruntime"), load_model(models, "litemedsam_decoder", "onnxruntime"))
    cls, sched = rknn_double.simulated(), CoreScheduler()
    enc = load_model(models, "litemedsam", "rknn:3", runtime_class=cls, scheduler=sched)
    dec = load_model(models, "litemedsam_decoder", "rknn:3", runtime_class=cls, scheduler=sched)
    assert isinstance(enc, ModelPool) and enc.core_masks == [1, 2, 4]
    npu = SamSegmenter(enc, dec)
    box = (200, 150, 300, 250)  # px on the 640x480 view
    want, want_iou = cpu.box_mask(cpu.encode(view.image), box)
    got, got_iou = npu.box_mask(npu.encode(view.image), box)
    assert want.sum() > 0
    assert np.array_equal(got, want) and abs(got_iou - want_iou) < 1e-4
