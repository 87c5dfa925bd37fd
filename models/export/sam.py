"""ONNX export of a SAM-family model (image encoder; prompt encoder + mask decoder) and the numeric
check of the exported pair against the PyTorch model it came from. Used by litemedsam.py and
mobilesam.py; the family modules only build the PyTorch model and say how its decoder answers.

The files have the signatures the station's ``SamSegmenter`` runs (station/vision/segmentation.py):
- encoder: ``image`` [1, 3, S, S] (resized, normalised and zero-padded outside the graph, as the
  metadata's ``input`` says) -> ``image_embeddings`` [1, 256, S/16, S/16];
- decoder: SAM's ONNX signature, ``image_embeddings``, ``point_coords`` [1, N, 2] (model px),
  ``point_labels`` [1, N] (1/0 points, 2/3 box corners, -1 padding), ``mask_input``
  [1, 1, S/4, S/4], ``has_mask_input`` [1] -> ``masks`` (all 4 heads; head 0 is the single-mask
  head SAM uses for a box) and ``iou_predictions`` [1, 4]. With ``mask_output = "lowres"`` the
  masks are the S/4 logits; with ``"original"`` the decoder also takes ``orig_im_size`` [2]
  (H, W) and returns the logits at that size (SAM's own ONNX model), plus ``low_res_masks``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from station.inference.image_input import prepare_image
from station.inference.metadata import InputSpec, ModelError

from . import Exported, ExportJob, upstream

OPSET = 17
# Export vs PyTorch, same inputs, fp32 on the CPU: what this check accepts. Measured differences
# are far below (LiteMedSAM: encoder 2e-6 of an embedding std of 0.1; mask logits 5e-5).
MAX_REL_ERROR = 1e-3  # max |onnx - torch| / std(torch), per output
MIN_SIGN_AGREEMENT = 0.999  # share of mask pixels on the same side of 0 (the mask threshold)
MAX_IOU_ERROR = 1e-3


@dataclass(frozen=True)
class ReferenceView:
    image: np.ndarray  # uint8 HxWx3
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 (view px, x1/y1 exclusive)
    truth: np.ndarray  # bool HxW: the dark ellipse the box encloses


def reference_view() -> ReferenceView:
    """A fixed, non-square test view: a dark ellipse on a shaded, noisy plate, and a box around it."""
    h, w = 240, 320
    yy, xx = np.mgrid[:h, :w]
    plate = 150.0 + 40.0 * xx / w + np.random.default_rng(0).normal(0.0, 4.0, (h, w))
    truth = ((xx - 190) / 45.0) ** 2 + ((yy - 110) / 30.0) ** 2 <= 1.0
    plate[truth] -= 90.0
    grey = np.clip(plate, 0, 255).astype(np.uint8)
    return ReferenceView(np.repeat(grey[:, :, None], 3, axis=2), (135, 70, 246, 151), truth)


class LowResDecoder(torch.nn.Module):
    """SAM's ONNX decoder without its upscaling: the S/4 logits of all heads, and their IoU predictions."""

    def __init__(self, model):
        super().__init__()
        self.sam_onnx = upstream.mobile_sam()[1].SamOnnxModel(model, return_single_mask=False)

    @torch.no_grad()
    def forward(self, image_embeddings, point_coords, point_labels, mask_input, has_mask_input):
        m = self.sam_onnx
        sparse = m._embed_points(point_coords, point_labels)
        dense = m._embed_masks(mask_input, has_mask_input)
        return m.model.mask_decoder.predict_masks(
            image_embeddings=image_embeddings, image_pe=m.model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
        )


def decoder_module(model, mask_output: str) -> torch.nn.Module:
    if mask_output == "lowres":
        return LowResDecoder(model).eval()
    return upstream.mobile_sam()[1].SamOnnxModel(model, return_single_mask=False).eval()


def _quiet_export(module, args, path: Path, **kw) -> None:
    with warnings.catch_warnings():
        # tracing warnings on shape arithmetic, and the TorchScript exporter's deprecation notice
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), opset_version=OPSET, dynamo=False, do_constant_folding=True, **kw)


def export_encoder(encoder: torch.nn.Module, size: int, path: Path, job: ExportJob) -> None:
    with job.step(f"export {path.name}"), torch.no_grad():
        _quiet_export(encoder.eval(), (torch.zeros(1, 3, size, size),), path,
                      input_names=["image"], output_names=["image_embeddings"])


def export_decoder(model, mask_output: str, size: int, path: Path, job: ExportJob) -> None:
    """The decoder of ``model`` (SAM-like: ``prompt_encoder``, ``mask_decoder``) for a ``size`` px input."""
    pe = model.prompt_encoder
    args = [
        torch.randn(1, pe.embed_dim, *pe.image_embedding_size),
        torch.randint(0, size, (1, 5, 2)).float(),
        torch.randint(0, 4, (1, 5)).float(),
        torch.randn(1, 1, *pe.mask_input_size),
        torch.tensor([1.0]),
    ]
    names = ["image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input"]
    outputs = ["masks", "iou_predictions"]
    if mask_output == "original":
        args.append(torch.tensor([1500.0, 2250.0]))
        names.append("orig_im_size")
        outputs.append("low_res_masks")
    with job.step(f"export {path.name}"):
        _quiet_export(decoder_module(model, mask_output), tuple(args), path, input_names=names, output_names=outputs,
                      dynamic_axes={"point_coords": {1: "num_points"}, "point_labels": {1: "num_points"}})


def _session(path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _compare(what: str, ref: np.ndarray, got: np.ndarray, failures: list[str]) -> dict:
    if ref.shape != got.shape:
        failures.append(f"{what}: shape {got.shape}, PyTorch gives {ref.shape}")
        return {"shape": list(got.shape), "expected_shape": list(ref.shape)}
    err = float(np.abs(ref - got).max())
    std = float(ref.std()) or 1.0
    out = {"max_abs_error": err, "reference_std": std, "rel_error": err / std}
    if err / std > MAX_REL_ERROR:
        failures.append(f"{what}: max |onnx - torch| = {err:.3g}, {err / std:.2g} of the output's std (limit {MAX_REL_ERROR})")
    return out


@torch.no_grad()
def torch_box_masks(model, embedding: torch.Tensor, box_model_px: np.ndarray, multimask: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """SAM's own PyTorch path for one box (model px): low-res logits and IoU predictions."""
    sparse, dense = model.prompt_encoder(points=None, boxes=torch.from_numpy(box_model_px).reshape(1, 4), masks=None)
    return model.mask_decoder(image_embeddings=embedding, image_pe=model.prompt_encoder.get_dense_pe(),
                              sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=multimask)


@torch.no_grad()
def check_pair(model, spec: InputSpec, mask_output: str, encoder_path: Path, decoder_path: Path, job: ExportJob) -> dict:
    """Run the reference view through PyTorch and through the exported pair; ModelError unless they agree.

    The reference is the PyTorch model's own path (image encoder; prompt encoder with a box and
    mask decoder, single-mask head and multimask heads), not the wrapper that was exported, so the
    check also covers how the ONNX decoder reads its prompts.
    """
    view = reference_view()
    h, w = view.image.shape[:2]
    prepared = prepare_image(view.image, spec)  # what the station feeds the encoder
    x = prepared.tensor
    nh, nw = prepared.model_hw
    sx, sy = prepared.scale_x, prepared.scale_y
    box = np.array(view.box, np.float32) * np.array([sx, sy, sx, sy], np.float32)
    failures: list[str] = []
    with job.step("check the export against PyTorch"):
        emb_ref = model.image_encoder(torch.from_numpy(x))
        emb_onnx = _session(encoder_path).run(["image_embeddings"], {"image": x})[0]
        report = {"encoder": _compare("image_embeddings", emb_ref.numpy(), emb_onnx, failures)}
        single, single_iou = torch_box_masks(model, emb_ref, box, multimask=False)
        multi, multi_iou = torch_box_masks(model, emb_ref, box, multimask=True)
        low_ref, iou_ref = torch.cat([single, multi], 1), torch.cat([single_iou, multi_iou], 1).numpy()
        inputs = {
            "image_embeddings": emb_ref.numpy(),
            "point_coords": box.reshape(1, 2, 2),
            "point_labels": np.array([[2, 3]], np.float32),
            "mask_input": np.zeros((1, 1, *low_ref.shape[-2:]), np.float32),
            "has_mask_input": np.zeros(1, np.float32),
        }
        if mask_output == "original":
            inputs["orig_im_size"] = np.array([h, w], np.float32)
            masks_ref = model.postprocess_masks(low_ref, (nh, nw), (h, w)).numpy()
        else:
            masks_ref = low_ref.numpy()
        masks, iou = _session(decoder_path).run(["masks", "iou_predictions"], inputs)
        report["masks"] = _compare("masks", masks_ref, masks, failures)
        if masks.shape == masks_ref.shape:
            # pixels nearer the threshold than the tolerance may fall either side
            clear = np.abs(masks_ref) > MAX_REL_ERROR * (float(masks_ref.std()) or 1.0)
            agree = float(((masks > 0) == (masks_ref > 0))[clear].mean()) if clear.any() else 1.0
            report["masks"]["sign_agreement"] = agree
            if agree < MIN_SIGN_AGREEMENT:
                failures.append(f"masks: {100 * (1 - agree):.2f} % of pixels on the other side of 0 than PyTorch")
        iou_err = float(np.abs(iou - iou_ref).max()) if iou.shape == iou_ref.shape else float("inf")
        report["iou_predictions"] = {"max_abs_error": iou_err}
        if iou_err > MAX_IOU_ERROR:
            failures.append(f"iou_predictions: max |onnx - torch| = {iou_err:.3g} (limit {MAX_IOU_ERROR})")
    if failures:
        raise ModelError(f"export of {encoder_path.name}/{decoder_path.name} does not match PyTorch: " + "; ".join(failures))
    report["view"] = {"size": [h, w], "box": list(view.box)}
    return report


def provenance() -> dict:
    import onnx

    return {"torch": torch.__version__, "onnx": onnx.__version__, "opset": OPSET, "exporter": "torch.onnx (TorchScript)"}


def export_pair(model, job: ExportJob) -> list[Exported]:
    """Export ``model`` (eval mode, weights loaded) as the job's encoder + decoder entries, checked."""
    enc, dec = job.by_role("sam_encoder"), job.by_role("sam_decoder")
    mask_output = dec.extra.get("mask_output", "lowres")  # as SamSegmenter reads it from the metadata
    enc_path, dec_path = job.out_dir / enc.file, job.out_dir / dec.file
    export_encoder(model.image_encoder, enc.input.size, enc_path, job)
    export_decoder(model, mask_output, enc.input.size, dec_path, job)
    parity = check_pair(model, enc.input, mask_output, enc_path, dec_path, job)
    ck = enc.checkpoint
    made = {**provenance(), "checkpoint": {"file": ck.file, "sha256": ck.sha256, "from": ck.package}, "parity": parity}
    source = f"{ck.file} ({ck.package})"
    return [Exported(e.name, p, source, {"export": made}) for e, p in ((enc, enc_path), (dec, dec_path))]
