"""A small, real exporter for the puller's tests (and an example of the interface in
station/models/export/__init__.py): a 3x3 conv net exported with torch and checked with ONNX
Runtime. Manifest ``extra`` steers the faults the tests need."""

from __future__ import annotations

import warnings

import numpy as np
import torch

from station.inference.metadata import ModelError
from station.models.export import Exported, ExportJob


def export(job: ExportJob) -> list[Exported]:
    import onnxruntime as ort

    (entry,) = job.entries.values()
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3, padding=1), torch.nn.Softmax(1)).eval()
    path = job.out_dir / entry.file
    with job.step(f"export {entry.file}"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(net, (torch.zeros(1, 3, 8, 8),), str(path), input_names=["image"], output_names=["probs"],
                          opset_version=17, dynamo=False)
    if entry.extra.get("fault") == "weights_changed_after_export":
        with torch.no_grad():
            net[0].weight[0].add_(0.5)  # one output channel: the softmax sees it
    x = np.random.default_rng(0).normal(size=(1, 3, 8, 8)).astype(np.float32)
    with torch.no_grad():
        ref = net(torch.from_numpy(x)).numpy()
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(["probs"], {"image": x})[0]
    err = float(np.abs(ref - got).max())
    if err > 1e-5:
        raise ModelError(f"{entry.file}: ONNX differs from PyTorch by {err:.3g}")
    out = path if entry.extra.get("fault") != "file_outside_out_dir" else job.cache_dir / entry.file
    if out != path:
        path.rename(out)
    return [Exported(entry.name, out, "a seeded 3x3 conv", {"export": {"max_abs_error": err}})]
