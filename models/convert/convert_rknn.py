"""ONNX -> .rknn with rknn-toolkit2, plus simulator-vs-ONNX-Runtime parity. Runs INSIDE the conversion venv.

Never imported by the station (toolkit2 needs numpy 1.x and pins that break the app's
environment). ``station models convert`` writes a spec JSON and calls:

    var/rknn-venv/bin/python models/convert/convert_rknn.py SPEC.json RESULT.json

SPEC keys:
  onnx, output (.rknn path), target ("rk3588"), quant ("fp16" | "int8"),
  inputs: [{name, shape (fixed, NCHW for images), dtype}],
  mean_values / std_values: per-input lists (0..255 units) to bake in, or null,
  calibration: dataset .txt for int8 (one line per sample, .npy per input, NHWC raw pixels), or null,
  held_back: [[npy per input, as fed to the .rknn: uint8 NHWC when baked, else float NCHW]],
  outputs_dir: where to save the simulator's outputs per held-back sample (.npy), or null.
RESULT keys: toolkit_version, outputs (names), parity {output: {cosine, max_abs_error[, mask_iou]}}, samples,
  held_outputs: [{output: npy path}] per held-back sample (empty without outputs_dir).
Exit status 0 on success; on failure RESULT holds {"error": "..."} and the status is 1.
The simulator is the toolkit's own (init_runtime() with no target): a target name would
start an adb server looking for a board.
"""

from __future__ import annotations

import json
import os
import sys
import traceback


def cosine(a, b) -> float:
    import numpy as np

    a = a.astype(np.float64).ravel()
    b = b.astype(np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 and nb == 0:
        return 1.0
    if na == 0 or nb == 0:
        return 0.0
    return float(a @ b / (na * nb))


def onnx_reference(session, spec, sample):
    """ONNX Runtime outputs for one held-back sample (undoing the NHWC uint8 feed when normalisation is baked)."""
    import numpy as np

    feed = {}
    for i, (inp, x) in enumerate(zip(spec["inputs"], sample)):
        if spec.get("mean_values") and i < len(spec["mean_values"]) and x.ndim == 4:
            mean = np.asarray(spec["mean_values"][i], np.float32).reshape(1, -1, 1, 1)
            std = np.asarray(spec["std_values"][i], np.float32).reshape(1, -1, 1, 1)
            x = (x.transpose(0, 3, 1, 2).astype(np.float32) - mean) / std
        feed[inp["name"]] = x.astype(np.dtype(inp.get("dtype", "float32")))
    return session.run(None, feed)


def convert(spec: dict) -> dict:
    import numpy as np
    import onnxruntime as ort
    from rknn.api import RKNN

    rknn = RKNN(verbose=False)
    try:
        cfg = {"target_platform": spec["target"], "optimization_level": 3}
        if spec.get("quantized_algorithm"):  # "normal" (the toolkit's default), "mmse", "kl_divergence"
            cfg["quantized_algorithm"] = spec["quantized_algorithm"]
        if spec.get("mean_values"):
            cfg["mean_values"] = spec["mean_values"]
            cfg["std_values"] = spec["std_values"]
        if rknn.config(**cfg) != 0:
            raise RuntimeError(f"rknn.config({cfg}) failed")
        names = [i["name"] for i in spec["inputs"]]
        shapes = [i["shape"] for i in spec["inputs"]]
        if rknn.load_onnx(model=spec["onnx"], inputs=names, input_size_list=shapes) != 0:
            raise RuntimeError(f"load_onnx({spec['onnx']}) failed (opset > 19, or an op the toolkit does not know)")
        int8 = spec["quant"] == "int8"
        if rknn.build(do_quantization=int8, dataset=spec.get("calibration") if int8 else None) != 0:
            raise RuntimeError("build failed (see the toolkit log above)")
        if rknn.export_rknn(spec["output"]) != 0:
            raise RuntimeError(f"export_rknn({spec['output']}) failed")
        if rknn.init_runtime() != 0:  # the simulator; never a target name (adb)
            raise RuntimeError("init_runtime() (simulator) failed")
        session = ort.InferenceSession(spec["onnx"], providers=["CPUExecutionProvider"])
        out_names = [o.name for o in session.get_outputs()]
        parity = {n: {"cosine": 1.0, "max_abs_error": 0.0} for n in out_names}
        baked = bool(spec.get("mean_values"))
        outputs_dir = spec.get("outputs_dir")
        held_outputs = []
        if outputs_dir:
            os.makedirs(outputs_dir, exist_ok=True)
        for k, sample_paths in enumerate(spec["held_back"]):
            sample = [np.load(p) for p in sample_paths]
            # a string per input: the toolkit calls .lower() on each (None fails); only 4-D inputs use it
            formats = ["nhwc" if (baked and x.ndim == 4 and i == 0) else "nchw" for i, x in enumerate(sample)]
            got = rknn.inference(inputs=sample, data_format=formats)
            if got is None:
                raise RuntimeError("simulator inference returned None")
            want = onnx_reference(session, spec, sample)
            saved = {}
            for n, g, w in zip(out_names, got, want):
                g = np.asarray(g, np.float32).reshape(w.shape)
                if outputs_dir:  # the station judges these too (e.g. a backbone's verdicts with them)
                    saved[n] = os.path.join(outputs_dir, f"held{k}_{n}.npy")
                    np.save(saved[n], g)
                p = parity[n]
                p["cosine"] = min(p["cosine"], cosine(g, w))
                p["max_abs_error"] = max(p["max_abs_error"], float(np.max(np.abs(g - w))))
                if n == "masks":  # SAM mask logits: what matters is the mask they give at > 0
                    inter, union = np.logical_and(g > 0, w > 0).sum(), np.logical_or(g > 0, w > 0).sum()
                    p["mask_iou"] = min(p.get("mask_iou", 1.0), float(inter / union) if union else 1.0)
            if outputs_dir:
                held_outputs.append(saved)
        version = ""
        try:
            from importlib.metadata import version as pkg_version

            version = pkg_version("rknn-toolkit2")
        except Exception:
            pass
        return {
            "toolkit_version": version,
            "outputs": out_names,
            "parity": {n: {k: round(v, 6) for k, v in p.items()} for n, p in parity.items()},
            "samples": len(spec["held_back"]),
            "held_outputs": held_outputs,
        }
    finally:
        rknn.release()


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: convert_rknn.py SPEC.json RESULT.json", file=sys.stderr)
        return 2
    spec = json.loads(open(argv[1], encoding="utf-8").read())
    try:
        result = convert(spec)
        status = 0
    except Exception as exc:  # the toolkit raises ValueError and friends; report, don't crash silently
        traceback.print_exc()
        result = {"error": f"{type(exc).__name__}: {exc}"}
        status = 1
    with open(argv[2], "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv))
