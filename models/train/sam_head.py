"""Train the proposal stage as a head on frozen SAM encoder embeddings (torch, CPU).

Recipe ``vision.proposal_net = "sam-head"``. Every training view is encoded once by the
recipe's SAM encoder (the station encodes each view anyway to outline its defects); a small
per-location network (1x1 convolutions: C -> HIDDEN -> HIDDEN -> K+1) learns from each
embedding cell the class of the defect under it. A cell is labelled with the part's defect
class when at least ``POSITIVE_FRACTION`` of it is inside the defect mask, background when
none of it is, and is ignored in between (or when it lies on the encoder's padding).

Loss: per-cell cross-entropy plus an image-level term on the top-k cells' defect probability
(a good part with one confident false cell is penalised as a whole), as for the U-Net.

Recipe ``vision.proposal_net = "sam-context-head"``: the same, but after the 1x1 bottleneck
(C -> HIDDEN -> CONTEXT_CHANNELS) four residual 3x3 convolutions dilated 1, 2, 4, 8 let each
cell see ~31 cells (~120 px of a 256-px view) around it; trained with flips. On the magnetic
tiles it finds break, fray and uneven that the per-location head and the pixel MLP miss
(models/trained/README.md); it is meant as a second opinion next to them.

Exported: in ``image_embeddings`` [1, C, g, g], out ``probs`` [1, K+1, g, g]; metadata
``extra.input = "sam_embedding"`` and the encoder's sha256.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import cv2
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from station.progress import step
from station.models.train.nets import WithSoftmax, fit_one_cycle
from station.vision.dataset import Sample
from station.vision.segmentation import EncodedView, SamSegmenter

log = logging.getLogger("station.train")

HIDDEN = 64
CONTEXT_CHANNELS = 32
CONTEXT_DILATIONS = (1, 2, 4, 8)
POSITIVE_FRACTION = 0.1
IGNORE = -1
BATCH = 16
EPOCHS = 20
DEFECT_CLASS_WEIGHT = 4.0
TOP_K_CELLS = 4
IMAGE_LOSS_WEIGHT = 1.0


@dataclass(frozen=True)
class EncodedSample:
    embedding: np.ndarray  # float16 [C, g, g]
    target: np.ndarray  # int64 [g, g]: 0 background, 1.. class, IGNORE
    label: int  # 0 good part, else 1 + class index


def cell_targets(mask: np.ndarray | None, label: int, model_hw: tuple[int, int], input_size: int, grid: int) -> np.ndarray:
    """int64 [grid, grid] cell labels for one view (see the module doc)."""
    cell = input_size / grid
    nh, nw = model_hw
    gh, gw = min(grid, max(1, round(nh / cell))), min(grid, max(1, round(nw / cell)))
    target = np.full((grid, grid), IGNORE, np.int64)
    target[:gh, :gw] = 0
    if label and mask is not None and mask.any():
        frac = cv2.resize(mask.astype(np.float32), (gw, gh), interpolation=cv2.INTER_AREA)
        inner = target[:gh, :gw]
        inner[frac >= POSITIVE_FRACTION] = label
        inner[(frac > 0) & (frac < POSITIVE_FRACTION)] = IGNORE
    return target


def encode_views(samples: list[Sample], segmenter: SamSegmenter) -> dict[int, EncodedView]:
    """Every sample's view encoded once (float16 embeddings), by manifest row: the slow part,
    ~0.6 s per view on 2 CPU cores; shared by all folds and the final training."""
    out = {}
    with step("SAM encoder on every view", total=len(samples), unit="views") as p:
        for s in samples:
            enc = segmenter.encode(s.image)
            out[s.row.index] = replace(enc, embedding=enc.embedding.astype(np.float16))
            p.update(1)
    return out


def encoded_samples(samples: list[Sample], labels: list[int], views: dict[int, EncodedView]) -> list[EncodedSample]:
    out = []
    for s, label in zip(samples, labels):
        v = views[s.row.index]
        emb = v.embedding[0]
        out.append(EncodedSample(emb, cell_targets(s.mask, label, v.model_hw, v.input_size, emb.shape[-1]), label))
    return out


class EmbeddingHead(nn.Module):
    def __init__(self, channels: int, n_classes: int, hidden: int = HIDDEN):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, hidden, 1), nn.BatchNorm2d(hidden), nn.ReLU(),
            nn.Conv2d(hidden, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, n_classes + 1, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class _Residual(nn.Module):
    def __init__(self, channels: int, dilation: int):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation),
                                  nn.BatchNorm2d(channels), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x)


class ContextHead(nn.Module):
    """The per-location head's bottleneck, then dilated residual 3x3 convolutions (see the module doc)."""

    def __init__(self, channels: int, n_classes: int, hidden: int = HIDDEN):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, hidden, 1), nn.BatchNorm2d(hidden), nn.ReLU(),
            nn.Conv2d(hidden, CONTEXT_CHANNELS, 1), nn.ReLU(),
            *(_Residual(CONTEXT_CHANNELS, d) for d in CONTEXT_DILATIONS),
            nn.Conv2d(CONTEXT_CHANNELS, n_classes + 1, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


HEADS = {"sam-head": EmbeddingHead, "sam-context-head": ContextHead}


def _rotate(x: torch.Tensor, k: int, dims: tuple[int, int]) -> torch.Tensor:
    return torch.rot90(x, k, dims)


def _flip(x: torch.Tensor, k: int, dims: tuple[int, int]) -> torch.Tensor:
    """k in 0..3: as is, flipped along the second dim, along the first, along both."""
    along = [d for d, on in zip(dims, ((k >> 1) & 1, k & 1)) if on]
    return torch.flip(x, along) if along else x


# the per-location head was measured with 90° rotations, the context head with flips
# (a rotation turns the encoder's padding, bottom and right, to another side)
AUGMENT = {"sam-head": _rotate, "sam-context-head": _flip}


def head_loss(logits: torch.Tensor, target: torch.Tensor, is_defect: torch.Tensor, class_weights: torch.Tensor) -> torch.Tensor:
    """Cell cross-entropy + image-level BCE on the mean defect probability of the top-k valid cells."""
    cells = F.cross_entropy(logits, target, weight=class_weights, ignore_index=IGNORE)
    defect = 1.0 - logits.softmax(1)[:, 0]
    # on a good part the ignored cells are the encoder's padding: not part of the view
    defect = defect.masked_fill((target == IGNORE) & ~is_defect[:, None, None], 0.0)
    top = defect.flatten(1).topk(TOP_K_CELLS, 1).values.mean(1).clamp(1e-4, 1 - 1e-4)
    return cells + IMAGE_LOSS_WEIGHT * F.binary_cross_entropy(top, is_defect.float())


def train_sam_head(encoded: list[EncodedSample], n_classes: int, seed: int = 0, epochs: int = EPOCHS,
                   kind: str = "sam-head") -> nn.Module:
    """Half of each batch good parts, half defective (when both exist); random 90° rotations
    (``kind`` "sam-head") or flips ("sam-context-head")."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(np.stack([e.embedding for e in encoded]))
    t = torch.from_numpy(np.stack([e.target for e in encoded]))
    y = torch.tensor([e.label for e in encoded])
    good = (y == 0).numpy()
    weights = np.where(good, 0.5 / max(1, good.sum()), 0.5 / max(1, (~good).sum()))
    weights /= weights.sum()
    steps = max(50, epochs * len(encoded) // BATCH)
    net = HEADS[kind](x.shape[1], n_classes)
    augment = AUGMENT[kind]
    class_weights = torch.tensor([1.0] + [DEFECT_CLASS_WEIGHT] * n_classes)

    def step_loss() -> tuple[torch.Tensor, str]:
        pick = torch.from_numpy(rng.choice(len(encoded), BATCH, p=weights))
        k = int(rng.integers(4))
        xb, tb = augment(x[pick].float(), k, (2, 3)), augment(t[pick], k, (1, 2))
        loss = head_loss(net(xb), tb, y[pick] > 0, class_weights)
        return loss, f"loss {loss.item():.3f}"

    return fit_one_cycle(net, steps, 1e-3, step_loss, kind)


def export_sam_head(net: nn.Module, path, channels: int, grid: int) -> None:
    torch.onnx.export(
        WithSoftmax(net).eval(), (torch.zeros(1, channels, grid, grid),), str(path), input_names=["image_embeddings"],
        output_names=["probs"], opset_version=17, dynamo=False,
    )
