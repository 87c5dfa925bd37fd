"""The rknn backend through the RKNNLite double: real outputs, input forms, every failure return."""

from __future__ import annotations

import inspect
import json
import logging

import numpy as np
import pytest

from station.inference import rknn_double
from station.inference.factory import load_model
from station.inference.metadata import ModelError, ModelMetadata
from station.inference.onnx import OnnxModel
from station.inference.pool import CoreScheduler, ModelPool
from station.inference.rknn import RknnModel, pick_form, resolve_form_file
from tests.npu.conftest import normalise


def test_double_has_the_real_signatures_and_constants():
    # From ../shared/notes/rknn.md (rknn-toolkit-lite2 2.5.0).
    cls = rknn_double.RKNNLite
    expected = {
        "__init__": "(self, verbose=False, verbose_file=None)",
        "load_rknn": "(self, path, key_path=None)",
        "init_runtime": "(self, target=None, device_id=None, async_mode=False, core_mask=0)",
        "inference": "(self, inputs, data_type=None, data_format=None, inputs_pass_through=None, get_frame_id=False, reuse_outputs=False)",
        "get_sdk_version": "(self)",
        "list_devices": "(self)",
        "list_support_target_platform": "(self, rknn_model=None)",
        "release": "(self)",
    }
    for name, sig in expected.items():
        assert str(inspect.signature(getattr(cls, name))) == sig, name
    consts = {"NPU_CORE_AUTO": 0, "NPU_CORE_0": 1, "NPU_CORE_1": 2, "NPU_CORE_2": 4,
              "NPU_CORE_0_1": 3, "NPU_CORE_0_1_2": 7, "NPU_CORE_ALL": 0xFFFF}
    assert {k: getattr(cls, k) for k in consts} == consts


def _onnx_logits(models_dir, x):
    with load_model(models_dir, "tiny", "onnxruntime", threads=1) as m:
        return m.run({"image": x})["logits"]


@pytest.mark.parametrize("baked", [True, False])
def test_rknn_outputs_match_onnxruntime(models_dir, images, baked):
    rknn_double.add_simulated_form(models_dir, "tiny", bake_normalization=baked)
    model = load_model(models_dir, "tiny", "rknn:1", runtime_class=rknn_double.simulated(), scheduler=CoreScheduler())
    assert model.backend == "rknn"
    for img in images:
        x = normalise(img)
        want = _onnx_logits(models_dir, x)
        got = model.run({"image": x})["logits"]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
        if baked:  # uint8 RGB NHWC straight from the camera is what a baked .rknn takes
            np.testing.assert_allclose(model.run({"image": img})["logits"], want, rtol=1e-4, atol=1e-4)
    model.close()


def test_baked_form_feeds_uint8_nhwc_to_the_runtime(models_dir, images):
    seen = []

    class Spy(rknn_double.simulated()):
        def inference(self, inputs, data_type=None, data_format=None, inputs_pass_through=None, get_frame_id=False, reuse_outputs=False):
            seen.append((inputs[0].dtype, inputs[0].shape, data_format))
            return super().inference(inputs, data_type, data_format, inputs_pass_through, get_frame_id, reuse_outputs)

    rknn_double.add_simulated_form(models_dir, "tiny", bake_normalization=True)
    with load_model(models_dir, "tiny", "rknn:1", runtime_class=Spy, scheduler=CoreScheduler()) as model:
        model.run({"image": normalise(images[0])})
    assert seen == [(np.dtype(np.uint8), (1, 32, 32, 3), ["nhwc"])]


def _form(models_dir):
    meta = ModelMetadata.read(models_dir / "tiny.json")
    _, form = pick_form(meta, "rk3588")
    return meta, form


def test_load_rknn_failure_names_the_model(models_dir):
    rknn_double.add_simulated_form(models_dir, "tiny")
    meta, form = _form(models_dir)
    with pytest.raises(ModelError, match=r"model tiny: RKNNLite.load_rknn\(.*nope.rknn\) returned -1"):
        RknnModel(models_dir / "nope.rknn", meta, form, core_mask=1, runtime_class=rknn_double.simulated())


def test_corrupt_rknn_is_refused_at_init(models_dir, caplog):
    rknn_double.add_simulated_form(models_dir, "tiny")
    meta, form = _form(models_dir)
    path = models_dir / form.file
    path.write_bytes(b"\x00garbage, not an rknn model")
    raw = json.loads((models_dir / "tiny.json").read_text())
    from station.inference.metadata import sha256_file

    raw["forms"]["rknn-rk3588-fp16"]["sha256"] = sha256_file(path)  # metadata agrees: the file itself is bad
    (models_dir / "tiny.json").write_text(json.dumps(raw))
    with caplog.at_level(logging.WARNING), pytest.raises(ModelError, match=r"model tiny: no NPU runtime could be loaded.*init_runtime failed"):
        load_model(models_dir, "tiny", "rknn", runtime_class=rknn_double.simulated(), scheduler=CoreScheduler())


def test_rknn_file_not_matching_metadata_is_refused(models_dir):
    rknn_double.add_simulated_form(models_dir, "tiny")
    meta, form = _form(models_dir)
    (models_dir / form.file).write_bytes(rknn_double.RKNN_MAGIC + b"another build")
    with pytest.raises(ModelError, match=r"model tiny: .*tiny.rk3588.fp16.rknn has sha256 .* metadata says .*refusing"):
        load_model(models_dir, "tiny", "rknn", runtime_class=rknn_double.simulated())


def test_missing_rknn_file_says_how_to_make_it(models_dir):
    rknn_double.add_simulated_form(models_dir, "tiny")
    meta, form = _form(models_dir)
    (models_dir / form.file).unlink()
    with pytest.raises(ModelError, match=r"station models convert --model tiny"):
        load_model(models_dir, "tiny", "rknn", runtime_class=rknn_double.simulated())


def test_model_without_rknn_form_says_how_to_convert(models_dir):
    with pytest.raises(ModelError, match=r"model tiny: no RKNN form for rk3588 \(run `station models convert"):
        load_model(models_dir, "tiny", "rknn", runtime_class=rknn_double.simulated())


def test_missing_runtime_library(models_dir):
    rknn_double.add_simulated_form(models_dir, "tiny")
    cls = rknn_double.simulated(faults=rknn_double.Faults(missing_library=True))
    with pytest.raises(ModelError, match=r"model tiny: .*init_runtime failed.*librknnrt"):
        load_model(models_dir, "tiny", "rknn", runtime_class=cls, scheduler=CoreScheduler())


def test_rknnlite_not_installed_is_a_model_error(models_dir):
    # This machine has no rknn-toolkit-lite2 (aarch64 only): the real class import must fail cleanly.
    rknn_double.add_simulated_form(models_dir, "tiny")
    from station.inference.select import NpuStatus

    with pytest.raises(ModelError, match=r"rknn-toolkit-lite2"):
        load_model(models_dir, "tiny", "rknn", status=NpuStatus(True, "test", "rk3588", "2.5.0"))


def test_inference_none_becomes_model_error_with_core(models_dir, images):
    rknn_double.add_simulated_form(models_dir, "tiny")
    meta, form = _form(models_dir)
    cls = rknn_double.simulated(faults=rknn_double.Faults(inference_from_call=1))
    model = RknnModel(resolve_form_file(models_dir, meta, form), meta, form, core_mask=2, runtime_class=cls)
    model.run({"image": normalise(images[0])})  # call 0 works
    with pytest.raises(ModelError, match=r"model tiny: NPU inference failed on core mask 2 \(RKNNLite returned None\)"):
        model.run({"image": normalise(images[1])})
    model.close()
    with pytest.raises(ModelError, match="closed"):
        model.run({"image": normalise(images[1])})


def test_wrong_input_shape_and_missing_input(models_dir):
    rknn_double.add_simulated_form(models_dir, "tiny")
    with load_model(models_dir, "tiny", "rknn:1", runtime_class=rknn_double.simulated(), scheduler=CoreScheduler()) as m:
        with pytest.raises(ModelError, match=r"model tiny: input image has shape \[1, 3, 64, 64\], the .rknn takes \[1, 3, 32, 32\]"):
            m.run({"image": np.zeros((1, 3, 64, 64), np.float32)})
        with pytest.raises(ModelError, match=r"input 'image' missing"):
            m.run({"picture": np.zeros((1, 3, 32, 32), np.float32)})


def test_init_runtime_with_a_target_is_refused_by_the_double(models_dir):
    # The adapter never passes target (on the board it is the local NPU; a name starts adb).
    rt = rknn_double.simulated()()
    rknn_double.add_simulated_form(models_dir, "tiny")
    assert rt.load_rknn(str(models_dir / "tiny.rk3588.fp16.rknn")) == 0
    assert rt.init_runtime(target="rk3588") == -1
    assert rt.inference(inputs=[np.zeros((1, 32, 32, 3), np.uint8)]) is None  # not initialised: None, no raise
    assert rt.init_runtime(core_mask=5) == -1
    assert rt.init_runtime(core_mask=rt.NPU_CORE_1) == 0


def test_onnx_backend_unchanged(models_dir, images):
    m = load_model(models_dir, "tiny", "onnxruntime", threads=1)
    assert isinstance(m, OnnxModel) and not isinstance(m, ModelPool)
    assert m.run({"image": normalise(images[0])})["logits"].shape == (1, 4)


def test_a_batch_runs_item_by_item_on_a_batch_one_rknn(models_dir, images):
    # the classifier sends N crops at once; an .rknn has a fixed batch of 1
    rknn_double.add_simulated_form(models_dir, "tiny")
    batch = np.concatenate([normalise(img) for img in images[:4]])
    want = np.concatenate([_onnx_logits(models_dir, normalise(img)) for img in images[:4]])
    with load_model(models_dir, "tiny", "rknn:2", runtime_class=rknn_double.simulated(), scheduler=CoreScheduler()) as m:
        got = m.run({"image": batch})["logits"]
    assert got.shape == (4, 4)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_corrupt_onnx_with_matching_metadata_is_a_model_error(models_dir):
    from station.inference.metadata import sha256_file

    onnx = models_dir / "tiny.onnx"
    onnx.write_bytes(onnx.read_bytes()[:200])  # truncated download
    raw = json.loads((models_dir / "tiny.json").read_text())
    raw["sha256"] = sha256_file(onnx)
    (models_dir / "tiny.json").write_text(json.dumps(raw))
    with pytest.raises(ModelError, match=r"model tiny: cannot load .*tiny.onnx"):
        load_model(models_dir, "tiny", "onnxruntime")
    with pytest.raises(ModelError, match=r"model tiny: cannot load"):
        load_model(models_dir, "tiny", "auto")  # auto here (no NPU) is onnxruntime: same clear error


def test_memoised_double_still_returns_each_inputs_own_outputs(models_dir, images):
    rknn_double.add_simulated_form(models_dir, "tiny")
    cls = rknn_double.simulated(memoize=True, memo_entries=4)
    with load_model(models_dir, "tiny", "rknn:2", runtime_class=cls, scheduler=CoreScheduler()) as m:
        for _ in range(2):  # the second round is served from the memo
            for img in images:
                x = normalise(img)
                np.testing.assert_allclose(m.run({"image": x})["logits"], _onnx_logits(models_dir, x), rtol=1e-4, atol=1e-4)
    assert len(cls._memo_store) == 4  # bounded
