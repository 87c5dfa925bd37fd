"""Train the U-Net proposal stage (``vision.proposal_net = "unet"``) on the grey view (torch, CPU).

The network (``models.train.nets.ProposalNet``) sees native-resolution crops of the training
images. Sampling: half the batch from good parts, half from defective parts with the classes
balanced by the square root of their counts. ``DEFECT_CROP_SHARE`` of the defective parts'
crops are centred near a defect, the rest anywhere; as many of the good parts' crops are
centred where defects sit on the defective parts (same relative position on the part), the
rest anywhere. Without that matching the net learns where defects are rather than what they
are: breaks and frays sit at the tile's edges and corners, so every good tile's corner looked
like a fray.

Loss = per-pixel cross-entropy (background + the recipe's classes) + an image-level term:
the crop's defect logit (top-k mean of logsumexp(defect classes) - background) must be low
on crops without a defect and high inside the defect on crops with one. The per-pixel term
alone lets a few confident false pixels on a bright streak of a good tile go almost unpunished,
yet the station rejects a part on its single most confident region: the image-level term
trains exactly that.

Exported with dynamic H, W: in ``image`` [1, 1, H, W] grey 0..1 (H, W multiples of
``ProposalNet.STRIDE``), out ``probs`` [1, K+1, H, W].
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch.nn import functional as F

from station.models.train.nets import ProposalNet, WithSoftmax, fit_one_cycle
from station.vision.dataset import Sample
from station.vision.preprocess import to_gray

CROP_PX = 128
BATCH = 16
STEPS = 2500
WIDTH = 8
DEFECT_CROP_SHARE = 0.5
TOP_K_PX = 8
IMAGE_LOSS_WEIGHT = 1.0
DEFECT_CLASS_WEIGHT = 2.0


class CropSampler:
    """Random augmented (grey 0..1, label map) crops of the training images."""

    def __init__(self, samples: list[Sample], labels: list[int], seed: int):
        self.rng = np.random.default_rng(seed)
        self.greys, self.maps = [], []
        for s, label in zip(samples, labels):
            grey = to_gray(s.image)
            target = np.zeros(grey.shape, np.int64)
            if label and s.mask is not None:
                target[s.mask] = label
            pad = CROP_PX  # reflect-pad so a crop near the border still has full size
            self.greys.append(cv2.copyMakeBorder(grey, pad, pad, pad, pad, cv2.BORDER_REFLECT))
            self.maps.append(np.pad(target, pad))
        lab = np.asarray(labels)
        self.labels = lab
        # where defects sit, as fractions of their part's height and width
        spots = [np.argwhere(m > 0)[:: max(1, int((m > 0).sum()) // 200)] / np.array(m.shape) for m in
                 (t[CROP_PX:-CROP_PX, CROP_PX:-CROP_PX] for t in self.maps) if (m > 0).any()]
        self.defect_spots = np.concatenate(spots) if spots else np.zeros((0, 2))
        weights = np.zeros(len(lab))
        if (lab == 0).any():
            weights[lab == 0] = 0.5 / (lab == 0).sum()
        counts = np.bincount(lab, minlength=int(lab.max()) + 1)
        for c in range(1, len(counts)):
            if counts[c]:
                weights[lab == c] = np.sqrt(counts[c]) / counts[c]
        if (lab > 0).any():
            weights[lab > 0] *= (0.5 if (lab == 0).any() else 1.0) / weights[lab > 0].sum()
        self.weights = weights / weights.sum()

    def crop(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        rng, grey, target = self.rng, self.greys[i], self.maps[i]
        pad = CROP_PX
        h, w = grey.shape[0] - 2 * pad, grey.shape[1] - 2 * pad
        jitter = rng.integers(-CROP_PX // 3, CROP_PX // 3 + 1, 2)
        near_defect = rng.random() < DEFECT_CROP_SHARE
        ys, xs = np.nonzero(target) if self.labels[i] and near_defect else ((), ())
        if len(ys):
            k = rng.integers(len(ys))
            cy, cx = ys[k] + jitter[0], xs[k] + jitter[1]
        elif not self.labels[i] and near_defect and len(self.defect_spots):
            fy, fx = self.defect_spots[rng.integers(len(self.defect_spots))]
            cy, cx = pad + int(fy * h) + jitter[0], pad + int(fx * w) + jitter[1]
        else:
            cy, cx = rng.integers(pad, pad + h), rng.integers(pad, pad + w)
        y0 = int(np.clip(cy - CROP_PX // 2, 0, grey.shape[0] - CROP_PX))
        x0 = int(np.clip(cx - CROP_PX // 2, 0, grey.shape[1] - CROP_PX))
        g = grey[y0 : y0 + CROP_PX, x0 : x0 + CROP_PX].astype(np.float32) / 255.0
        t = target[y0 : y0 + CROP_PX, x0 : x0 + CROP_PX]
        k = int(rng.integers(4))
        g, t = np.rot90(g, k), np.rot90(t, k)
        if rng.random() < 0.5:
            g, t = g[:, ::-1], t[:, ::-1]
        g = np.clip(g * rng.uniform(0.7, 1.3) + rng.uniform(-0.1, 0.1), 0.0, 1.0)
        return np.ascontiguousarray(g), np.ascontiguousarray(t)

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        picks = self.rng.choice(len(self.labels), BATCH, p=self.weights)
        gs, ts = zip(*(self.crop(int(i)) for i in picks))
        return torch.from_numpy(np.stack(gs))[:, None], torch.from_numpy(np.stack(ts))


def loss_terms(logits: torch.Tensor, target: torch.Tensor, class_weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-pixel cross-entropy, image-level top-k loss) for logits [N, K+1, H, W], target [N, H, W]."""
    pixel = F.cross_entropy(logits, target, weight=class_weights)
    defect_logit = torch.logsumexp(logits[:, 1:], 1) - logits[:, 0]
    has = (target > 0).flatten(1).any(1)
    inside = torch.where(target > 0, defect_logit, torch.full_like(defect_logit, -1e4)).flatten(1)
    pos = inside.topk(TOP_K_PX, 1).values.mean(1)
    anywhere = defect_logit.flatten(1).topk(TOP_K_PX, 1).values.mean(1)
    image = F.binary_cross_entropy_with_logits(torch.where(has, pos, anywhere), has.float())
    return pixel, image


def train_proposal_net(samples: list[Sample], labels: list[int], n_classes: int, seed: int = 0,
                       steps: int | None = None) -> ProposalNet:
    """``labels``: 0 for a good part, else 1 + the class index. ``steps`` defaults to ``STEPS``."""
    steps = STEPS if steps is None else steps
    torch.manual_seed(seed)
    sampler = CropSampler(samples, labels, seed)
    net = ProposalNet(n_classes, width=WIDTH)
    class_weights = torch.tensor([1.0] + [DEFECT_CLASS_WEIGHT] * n_classes)

    def step_loss() -> tuple[torch.Tensor, str]:
        x, y = sampler.batch()
        pixel, image = loss_terms(net(x), y, class_weights)
        return pixel + IMAGE_LOSS_WEIGHT * image, f"pixel {pixel.item():.3f} image {image.item():.3f}"

    return fit_one_cycle(net, steps, 1e-4, step_loss, "proposal net")


def export_proposal_net(net: ProposalNet, path) -> None:
    dummy = torch.zeros(1, 1, 64, 64)
    torch.onnx.export(
        WithSoftmax(net).eval(), (dummy,), str(path), input_names=["image"], output_names=["probs"], opset_version=17,
        dynamo=False, dynamic_axes={"image": {2: "height", 3: "width"}, "probs": {2: "height", 3: "width"}},
    )
