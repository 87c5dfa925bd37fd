"""The U-Net proposal stage: trained on synthetic parts, exported to ONNX, run by the station's
ProposalStage at the view's own (odd) size."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from station.inference.metadata import ModelError, ModelMetadata, sha256_file
from station.inference.onnx import OnnxModel
from station.vision.dataset import Row, Sample
from station.vision.proposals import BACKGROUND, ProposalStage

torch = pytest.importorskip("torch")

from station.models.train.nets import ProposalNet
from station.models.train.proposal_net import (
    export_proposal_net,
    loss_terms,
    train_proposal_net,
)


def streaky_part(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A grey part with vertical streaks (like ground ferrite) and sensor noise."""
    streaks = rng.normal(0, 18, w)[None, :] + rng.normal(0, 6, (h, w))
    return np.clip(110 + cv2.GaussianBlur(streaks, (0, 0), 0.8), 0, 255).astype(np.uint8)


def with_hole(rng: np.random.Generator, grey: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h, w = grey.shape
    cx, cy, r = int(rng.integers(12, w - 12)), int(rng.integers(12, h - 12)), int(rng.integers(4, 7))
    mask = np.zeros((h, w), np.uint8)
    cv2.circle(mask, (cx, cy), r, 1, -1)
    out = grey.copy()
    out[mask > 0] = 25
    return out, mask.astype(bool)


def save_model(net: ProposalNet, directory: Path, extra: dict) -> OnnxModel:
    path = directory / "p.onnx"
    export_proposal_net(net, path)
    meta = ModelMetadata(name="p", role="proposals", file=path.name, sha256=sha256_file(path),
                         classes=[BACKGROUND, "blowhole"], extra=extra)
    return OnnxModel(path, meta)


def test_proposal_stage_pads_a_view_of_any_size_to_the_stride_and_crops_back(tmp_path):
    model = save_model(ProposalNet(1, width=4).eval(), tmp_path, {"input": "grey", "stride": ProposalNet.STRIDE})
    stage = ProposalStage(model, ["blowhole"])
    probs = stage.probabilities(streaky_part(np.random.default_rng(0), 37, 53))
    assert probs.shape == (2, 37, 53)
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-4)


def test_a_filter_bank_model_without_its_feature_set_is_refused(tmp_path):
    model = save_model(ProposalNet(1, width=4).eval(), tmp_path, {})
    with pytest.raises(ModelError, match="feature"):
        ProposalStage(model, ["blowhole"])


def test_image_level_loss_punishes_one_confident_false_pixel_on_a_good_crop():
    target = torch.zeros(1, 8, 8, dtype=torch.long)
    logits = torch.zeros(1, 2, 8, 8)
    logits[0, 0] = 5.0  # background everywhere
    clean_pixel, clean_image = loss_terms(logits, target, torch.ones(2))
    logits[0, 1, 2:5, 2:5] = 12.0  # a 3x3 spot sure it is a defect
    spot_pixel, spot_image = loss_terms(logits, target, torch.ones(2))
    # averaged over 64 pixels the per-pixel term moves little; the image-level term a lot
    assert spot_image - clean_image > 5 * (spot_pixel - clean_pixel)


@pytest.mark.slow
def test_trained_unet_finds_holes_on_streaky_parts_it_has_not_seen(tmp_path):
    rng = np.random.default_rng(0)
    samples, labels = [], []
    for i in range(24):
        grey = streaky_part(rng, 96, 112)
        mask = None
        if i % 2:
            grey, mask = with_hole(rng, grey)
        samples.append(Sample(Row(i + 1, Path(f"{i}.png"), None, "blowhole" if i % 2 else "good"), grey, mask))
        labels.append(i % 2)
    net = train_proposal_net(samples, labels, 1, seed=0, steps=150)
    stage = ProposalStage(save_model(net, tmp_path, {"input": "grey", "stride": ProposalNet.STRIDE}), ["blowhole"])
    hits, good_scores, bad_scores = 0, [], []
    for _ in range(6):
        good = streaky_part(rng, 90, 101)
        bad, mask = with_hole(rng, streaky_part(rng, 90, 101))
        good_scores.append(float(1 - stage.probabilities(good)[0].min()))
        p_bad = 1 - stage.probabilities(bad)[0]
        bad_scores.append(float(p_bad.max()))
        hits += int(mask[np.unravel_index(np.argmax(p_bad), p_bad.shape)])
    assert hits >= 5, hits  # the most defect-like pixel of a part with a hole lies in the hole
    assert min(bad_scores) > max(good_scores), (bad_scores, good_scores)
