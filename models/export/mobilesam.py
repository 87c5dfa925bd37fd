"""Official MobileSAM (``vit_t``, Apache-2.0): the authors' checkpoint ``mobile_sam.pt``, downloaded
(resumably, sha256 pinned in the manifest) from their repository, built with the model code of
the PyPI package mobilesam-mirror 1.0.0.

1024 px input with SAM's pixel mean/std; points and boxes. The decoder is SAM's own ONNX model
(``SamOnnxModel``): it takes ``orig_im_size`` and returns the logits at the view's size
(``mask_output = "original"``), all four heads.
"""

from __future__ import annotations

import torch

from . import Exported, ExportJob, checkpoint, sam, upstream


def export(job: ExportJob) -> list[Exported]:
    weights = checkpoint.fetched(job.by_role("sam_encoder"), job)
    build_sam, _ = upstream.mobile_sam()
    net = build_sam.build_sam_vit_t()
    net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return sam.export_pair(net.eval(), job)
