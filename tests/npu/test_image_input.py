"""One transform from a view to the SAM encoder's input: what the station feeds at run time is
what RKNN calibration and the conversion's parity gate are given (issue: the conversion used to
normalise the zero-padded square, the runtime the image; a 200x400 view differed by 0.155)."""

from __future__ import annotations

import numpy as np

from station.inference.convert import build_samples, plan_conversion
from station.inference.factory import load_model
from station.inference.image_input import model_pixels, prepare_image
from station.inference.metadata import InputSpec, ModelMetadata
from station.vision.segmentation import SamSegmenter


class Spy:
    """The real encoder, noting each input it is given (changes nothing)."""

    def __init__(self, model):
        self.model, self.inputs = model, []
        self.metadata = model.metadata

    def run(self, inputs):
        self.inputs.append({k: v.copy() for k, v in inputs.items()})
        return self.model.run(inputs)


def _view(h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(7)
    img = (rng.random((h, w)) * 120 + 60).astype(np.uint8)
    img[h // 3 : h // 2, w // 4 : w // 2] = 20  # a dark blotch, so the range is not trivial
    return img


def test_runtime_and_conversion_feed_the_encoder_the_same_tensor_for_non_square_views(sam_models_dir):
    meta = ModelMetadata.read(sam_models_dir / "litemedsam.json")
    encoder = Spy(load_model(sam_models_dir, "litemedsam", "onnxruntime"))
    segmenter = SamSegmenter(encoder, load_model(sam_models_dir, "litemedsam_decoder", "onnxruntime"))
    plan = plan_conversion(sam_models_dir / meta.file, meta)
    for h, w in ((200, 400), (400, 200), (333, 250)):
        view = _view(h, w)
        segmenter.encode(view)
        (runtime,) = encoder.inputs[-1].values()
        (calibration,) = build_samples(sam_models_dir, meta, plan, [view])
        np.testing.assert_array_equal(calibration[plan.image_index], runtime)
        # the padding is 0 after normalisation, the image itself spans 0..1 (min-max over the image only)
        nh, nw = prepare_image(view, meta.input).model_hw
        assert runtime[..., nh:, :].max(initial=0) == 0 and runtime[..., :, nw:].max(initial=0) == 0
        assert runtime[..., :nh, :nw].min() == 0.0 and runtime[..., :nh, :nw].max() == 1.0


def test_baked_normalisation_pixels_give_the_runtimes_float_input_on_the_chip():
    """A model with mean/std baked in (an RKNN form) takes uint8 pixels; the chip's (x - mean) / std
    of ``model_pixels`` must be the float tensor the CPU path feeds, padding included."""
    spec = InputSpec(size=448, resize="longest_side", normalization="meanstd",
                     mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375])
    view = np.dstack([_view(200, 400)] * 3)
    pixels = model_pixels(view, spec).astype(np.float32)
    on_chip = (pixels - np.array(spec.mean, np.float32)) / np.array(spec.std, np.float32)
    cpu = prepare_image(view, spec).tensor[0].transpose(1, 2, 0)
    # uint8 pixels round the mean by at most 0.5: within 0.5 / std of the float path
    assert np.abs(on_chip - cpu).max() <= 0.5 / min(spec.std) + 1e-6
