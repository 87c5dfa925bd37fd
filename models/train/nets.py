"""The two small networks the vision stage trains per recipe (torch; train/export extras only).

- ``ProposalNet``: fully convolutional U-Net on the grey view at native resolution. In: [N,1,H,W]
  grey scaled to 0..1 (H, W multiples of 16). Out: [N,K+1,H,W] logits (0 = background, then the
  recipe's defect classes). Per-image standardisation happens inside the graph, so lighting
  level and contrast do not need to be normalised outside.
- ``CropClassifier``: names a proposed region. In: [N,2,S,S] (grey crop around the region,
  0..1, and the region's mask). Out: [N,K+1] logits (the recipe's classes, then "not a defect").
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

log = logging.getLogger("station.train")


def _block(cin: int, cout: int, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=dilation, dilation=dilation, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
    )


def standardise(x: torch.Tensor) -> torch.Tensor:
    mean = x.mean(dim=(2, 3), keepdim=True)
    std = ((x - mean) ** 2).mean(dim=(2, 3), keepdim=True).sqrt()
    return (x - mean) / (std + 0.02)


class ProposalNet(nn.Module):
    """A light U-Net: one thin full-resolution layer, the rest from 1/2 down to 1/16 resolution."""

    STRIDE = 16

    def __init__(self, n_classes: int, width: int = 12):
        super().__init__()
        w = [width, width * 2, width * 3, width * 4]
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(inplace=True))
        self.down = nn.Sequential(nn.Conv2d(8, w[0], 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(w[0]), nn.ReLU(inplace=True))
        self.enc = nn.ModuleList([_block(w[0], w[0]), _block(w[0], w[1]), _block(w[1], w[2]), _block(w[2], w[3])])
        self.dec = nn.ModuleList([_block(w[3] + w[2], w[2]), _block(w[2] + w[1], w[1]), _block(w[1] + w[0], w[0])])
        self.fuse = nn.Sequential(nn.Conv2d(w[0] + 8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True))
        self.head = nn.Conv2d(16, n_classes + 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        full = self.stem(standardise(x))
        x = self.down(full)
        skips = []
        for i, enc in enumerate(self.enc):
            if i:
                x = F.max_pool2d(x, 2)
            x = enc(x)
            skips.append(x)
        for dec, skip in zip(self.dec, reversed(skips[:-1])):
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            x = dec(torch.cat([x, skip], dim=1))
        x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        return self.head(self.fuse(torch.cat([x, full], dim=1)))


class CropClassifier(nn.Module):
    SIZE = 32

    def __init__(self, n_classes: int, width: int = 16):
        super().__init__()
        self.features = nn.Sequential(
            _block(2, width), nn.MaxPool2d(2),
            _block(width, width * 2), nn.MaxPool2d(2),
            _block(width * 2, width * 3), nn.MaxPool2d(2),
            _block(width * 3, width * 4), nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.Linear(width * 4, n_classes + 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grey = standardise(x[:, :1])
        return self.head(self.features(torch.cat([grey, x[:, 1:2]], dim=1)))


class WithSoftmax(nn.Module):
    """``net`` with a softmax over the class axis, as exported: the station reads probabilities."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(x), dim=1)


def fit_one_cycle(net: nn.Module, steps: int, weight_decay: float, step_loss: Callable[[], tuple[torch.Tensor, str]],
                  what: str, log_every: int = 500) -> nn.Module:
    """AdamW under a one-cycle schedule (peak lr 3e-3) for ``steps`` steps; ``step_loss`` draws a
    batch and returns (loss, a short text for the log). Returns ``net`` in eval mode."""
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    t0 = time.monotonic()
    net.train()
    for step in range(steps):
        loss, detail = step_loss()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % log_every == 0:
            log.info("%s step %d/%d: %s (%.0f s)", what, step, steps, detail, time.monotonic() - t0)
    return net.eval()
