"""Train the proposal stage: a per-pixel MLP on the filter-bank features (torch, CPU).

Pixels are sampled per image (all classes of defect pixels, background near and far from
defects, background of good parts), so one image's thousands of identical background pixels
do not drown its defect. Exported as 1x1 convolutions + softmax: in ``features``
[1, F, H, W] (dynamic H, W), out ``probs`` [1, K+1, H, W].
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch import nn

from station.vision.dataset import Sample
from station.vision.features import N_FEATURES, pixel_features
from station.vision.preprocess import to_gray

HIDDEN = 32
DEFECT_PX_PER_IMAGE = 200
NEAR_PX_PER_IMAGE = 100
FAR_PX_PER_IMAGE = 120
MIN_STEPS = 600


def sample_pixels(sample: Sample, label: int, rng: np.random.Generator, feats: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(X [n, F] float16, y [n] int64) from one image; label 0 for a good part."""
    feats = pixel_features(to_gray(sample.image)) if feats is None else feats
    h, w = feats.shape[1:]
    mask = sample.mask if sample.mask is not None else np.zeros((h, w), bool)
    picks: list[tuple[np.ndarray, int]] = []

    def take(where: np.ndarray, n: int, y: int) -> None:
        idx = np.flatnonzero(where)
        if idx.size:
            picks.append((rng.choice(idx, size=min(n, idx.size), replace=False), y))

    if label and mask.any():
        take(mask, DEFECT_PX_PER_IMAGE, label)
        near = cv2.dilate(mask.astype(np.uint8), np.ones((15, 15), np.uint8)).astype(bool) & ~mask
        # the ring right at the mask edge is ambiguous in hand-drawn masks: not sampled
        edge = cv2.dilate(mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        take(near & ~edge, NEAR_PX_PER_IMAGE, 0)
        take(~near, FAR_PX_PER_IMAGE, 0)
    else:
        take(~mask, FAR_PX_PER_IMAGE + NEAR_PX_PER_IMAGE, 0)
    flat = feats.reshape(N_FEATURES, -1)
    xs = [flat[:, i].T for i, _ in picks]
    ys = [np.full(len(i), y, np.int64) for i, y in picks]
    return np.concatenate(xs).astype(np.float16), np.concatenate(ys)


class PixelMLP(nn.Module):
    def __init__(self, n_classes: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(N_FEATURES, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, n_classes + 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class PixelMLPConv(nn.Module):
    """The trained MLP as 1x1 convolutions over a feature map, with softmax (for export)."""

    def __init__(self, mlp: PixelMLP):
        super().__init__()
        layers = []
        for m in mlp.net:
            if isinstance(m, nn.Linear):
                conv = nn.Conv2d(m.in_features, m.out_features, 1)
                conv.weight.data = m.weight.data[:, :, None, None].clone()
                conv.bias.data = m.bias.data.clone()
                layers.append(conv)
            else:
                layers.append(nn.ReLU())
        self.net = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(features), dim=1)


def train_pixel_mlp(x: np.ndarray, y: np.ndarray, n_classes: int, epochs: int = 5, seed: int = 0) -> PixelMLP:
    torch.manual_seed(seed)
    model = PixelMLP(n_classes)
    counts = np.bincount(y, minlength=n_classes + 1).astype(np.float64)
    # Background keeps weight 1 so p(background) stays meaningful for the threshold; defect
    # classes are balanced among themselves (inverse square root of frequency, capped).
    defect = counts[1:]
    w = np.where(defect > 0, np.sqrt(defect[defect > 0].mean() / np.maximum(defect, 1)), 0.0).clip(0.0, 3.0)
    weights = torch.tensor(np.concatenate([[1.0], w]), dtype=torch.float32)
    loss_fn = nn.CrossEntropyLoss(weight=weights)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    xt, yt = torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y)
    per_epoch = max(1, len(y) // 2048)
    epochs = max(epochs, -(-MIN_STEPS // per_epoch))
    steps = epochs * per_epoch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(yt), generator=gen)
        for s in range(0, len(order) - 2047, 2048):
            b = order[s : s + 2048]
            opt.zero_grad()
            loss = loss_fn(model(xt[b]), yt[b])
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    return model


def export_proposals(mlp: PixelMLP, path) -> None:
    conv = PixelMLPConv(mlp).eval()
    dummy = torch.zeros(1, N_FEATURES, 32, 32)
    torch.onnx.export(
        conv, (dummy,), str(path), input_names=["features"], output_names=["probs"], opset_version=17, dynamo=False,
        dynamic_axes={"features": {2: "height", 3: "width"}, "probs": {2: "height", 3: "width"}},
    )
