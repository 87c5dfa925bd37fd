"""Train the region classifier: a small CNN on region crops, with a "not a defect" class.

Examples: the true defect regions of the training images (with jittered context), and every
region the trained proposal stage finds on the training images, labelled by whether it
touches a true defect (then the image's class) or not (``not_defect``). Exported with a
dynamic batch: in ``crops`` [N, 2, S, S], out ``probs`` [N, K+1].
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from station.models.train.nets import CropClassifier

SIZE = 32
WIDTH = 8


def augment(batch: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Flips, 90° turns, brightness/contrast jitter of the grey channel."""
    if torch.rand(1, generator=gen) < 0.5:
        batch = batch.flip(3)
    if torch.rand(1, generator=gen) < 0.5:
        batch = batch.flip(2)
    k = int(torch.randint(0, 4, (1,), generator=gen))
    batch = torch.rot90(batch, k, dims=(2, 3)).clone()
    n = batch.shape[0]
    gain = 1 + 0.3 * (torch.rand(n, 1, 1, generator=gen) - 0.5)
    bias = 0.15 * (torch.rand(n, 1, 1, generator=gen) - 0.5)
    batch[:, 0] = (batch[:, 0] * gain + bias).clamp(0, 1)
    return batch


def train_classifier(crops: np.ndarray, labels: np.ndarray, n_classes: int, epochs: int = 6, seed: int = 0) -> CropClassifier:
    """``labels``: 0..K-1 the classes, K not a defect."""
    torch.manual_seed(seed)
    model = CropClassifier(n_classes, width=WIDTH)
    counts = np.bincount(labels, minlength=n_classes + 1).astype(np.float64)
    weights = torch.tensor(np.where(counts > 0, (counts.sum() / np.maximum(counts, 1)) ** 0.5, 0.0), dtype=torch.float32)
    weights = weights / weights[weights > 0].mean()
    loss_fn = nn.CrossEntropyLoss(weight=weights, label_smoothing=0.05)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-3)
    xt, yt = torch.from_numpy(crops.astype(np.float32)), torch.from_numpy(labels.astype(np.int64))
    batch = 128
    steps = epochs * max(1, (len(yt) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(yt), generator=gen)
        for s in range(0, len(order), batch):
            b = order[s : s + batch]
            if len(b) < 2:
                continue
            opt.zero_grad()
            loss = loss_fn(model(augment(xt[b], gen)), yt[b])
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    return model


class _WithSoftmax(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(crops), dim=1)


def export_classifier(model: CropClassifier, path) -> None:
    dummy = torch.zeros(2, 2, SIZE, SIZE)
    torch.onnx.export(
        _WithSoftmax(model).eval(), (dummy,), str(path), input_names=["crops"], output_names=["probs"], opset_version=17,
        dynamo=False, dynamic_axes={"crops": {0: "n"}, "probs": {0: "n"}},
    )
