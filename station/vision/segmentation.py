"""SAM-family encoder/decoder pair behind one small class, driven by model metadata.

What differs between pairs (input size, resize, normalisation, padding, mask head, whether
the decoder returns low-res logits or masks at the original size) is read from the models'
metadata (``station.inference.metadata``), never from branches on the model's name:

- LiteMedSAM: 256 input, longest side, min-max, zero pad bottom/right, low-res logits, head 0;
- official MobileSAM: 1024 input, SAM pixel mean/std (``meanstd``), ``extra.mask_output =
  "original"`` when its decoder takes ``orig_im_size``;
- the 448x448 RK3588 variant: ``resize = "stretch"``.

Coordinates: boxes in view pixels (x0, y0, x1, y1), x1/y1 exclusive; the model frame is the
resized input (``scale_x``, ``scale_y`` map view px to model px).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from station.inference.base import InferenceModel
from station.inference.image_input import prepare_image
from station.inference.metadata import ModelError


@dataclass(frozen=True)
class EncodedView:
    embedding: np.ndarray  # [1, C, h, w]
    view_hw: tuple[int, int]  # original H, W px
    model_hw: tuple[int, int]  # the image's extent inside the padded model input (H, W px)
    scale_x: float
    scale_y: float
    input_size: int  # side of the square encoder input the embedding covers (model px)


class SamSegmenter:
    def __init__(self, encoder: InferenceModel, decoder: InferenceModel):
        meta = encoder.metadata
        if meta.role != "sam_encoder" or decoder.metadata.role != "sam_decoder":
            raise ModelError(f"models {meta.name}/{decoder.metadata.name}: expected a sam_encoder and a sam_decoder")
        if meta.input is None:
            raise ModelError(f"model {meta.name}: metadata has no input spec (size, normalisation)")
        if "box" not in decoder.metadata.prompts:
            raise ModelError(f"model {decoder.metadata.name}: the station prompts with boxes; metadata says {decoder.metadata.prompts}")
        self.encoder, self.decoder, self.spec = encoder, decoder, meta.input
        self.mask_index = decoder.metadata.mask_index
        self.mask_output = decoder.metadata.extra.get("mask_output", "lowres")
        self.input_name = meta.extra.get("input_name", "image")
        self.embedding_name = meta.extra.get("output_name", "image_embeddings")

    # -- encoder ----------------------------------------------------------------------------
    def encode(self, image: np.ndarray) -> EncodedView:
        """One encoder run for a uint8 HxW or HxWx3 view; reuse the result for every prompt on it."""
        prepared = prepare_image(image, self.spec)
        out = self.encoder.run({self.input_name: prepared.tensor})
        emb = out.get(self.embedding_name)
        if emb is None:
            emb = next(iter(out.values()))
        return EncodedView(emb, image.shape[:2], prepared.model_hw, prepared.scale_x, prepared.scale_y, self.spec.size)

    # -- decoder ----------------------------------------------------------------------------
    def box_mask(self, encoded: EncodedView, box: tuple[int, int, int, int]) -> tuple[np.ndarray, float]:
        """(bool HxW mask in the view frame, predicted IoU) for a box prompt in view px."""
        x0, y0, x1, y1 = box
        coords = np.array([[[x0 * encoded.scale_x, y0 * encoded.scale_y], [x1 * encoded.scale_x, y1 * encoded.scale_y]]], np.float32)
        emb = encoded.embedding
        low = 4 * emb.shape[-1]
        inputs = {
            "image_embeddings": emb,
            "point_coords": coords,
            "point_labels": np.array([[2, 3]], np.float32),
            "mask_input": np.zeros((1, 1, low, low), np.float32),
            "has_mask_input": np.zeros(1, np.float32),
        }
        h, w = encoded.view_hw
        if self.mask_output == "original":
            inputs["orig_im_size"] = np.array([h, w], np.float32)
        out = self.decoder.run(inputs)
        masks, iou = out["masks"], out["iou_predictions"]
        logits = masks[0, self.mask_index]
        if self.mask_output != "original":
            nh, nw = encoded.model_hw
            lh, lw = round(nh * logits.shape[0] / self.spec.size), round(nw * logits.shape[1] / self.spec.size)
            logits = cv2.resize(logits[: max(1, lh), : max(1, lw)], (w, h), interpolation=cv2.INTER_LINEAR)
        return logits > 0, float(iou[0, self.mask_index])
