"""`station models pull mobilesam`, end to end against a loopback HTTP server: the checkpoint (made
here from mobilesam-mirror's model code with random weights, as no test may need the internet) is
downloaded with a first connection cut mid-file and resumed, exported with a progress bar on a
terminal, checked against PyTorch, and the pair segments through the station's SamSegmenter like
SAM's own PyTorch pipeline does."""

from __future__ import annotations

import sys

import pytest
import tomlkit

from station.inference.factory import load_model
from station.inference.metadata import ModelMetadata, sha256_file
from station.models.export.sam import reference_view
from station.models_store import read_manifest
from station.vision.segmentation import SamSegmenter

from .conftest import REPO_ROOT, station_env
from .http_files import FileServer
from .terminal import run_in_terminal

pytestmark = pytest.mark.slow  # one real export of a 1024 px SAM (~30-60 s on 2 cores)

CUT_AT = 7_000_000


def _manifest_serving(path, url: str, data: bytes, sha: str):
    """The shipped manifest, with the MobileSAM checkpoint pinned to ``data`` and served from ``url``."""
    manifest = read_manifest()
    enc = manifest.get("mobilesam")
    enc.checkpoint = enc.checkpoint.model_copy(update={"sha256": sha, "bytes": len(data), "urls": [url]})
    path.write_text(tomlkit.dumps(manifest.model_dump(exclude_none=True)), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def mobilesam_pull(tmp_path_factory, random_mobilesam_checkpoint):
    data, sha = random_mobilesam_checkpoint
    root = tmp_path_factory.mktemp("mobilesam")
    with FileServer() as server:
        server.state.files["/weights/mobile_sam.pt"] = data
        server.state.cut_after = [CUT_AT]  # the first connection breaks after 7 MB
        manifest = _manifest_serving(root / "manifest.toml", f"{server.url}/weights/mobile_sam.pt", data, sha)
        cmd = [sys.executable, "-m", "station.cli", "models", "pull", "mobilesam",
               "--models-dir", str(root / "models"), "--manifest", str(manifest)]
        status, screen = run_in_terminal(cmd, env=station_env(), cwd=REPO_ROOT, timeout_s=600)
        assert status == 0, screen[-4000:]
        again, screen2 = run_in_terminal(cmd, env=station_env(), cwd=REPO_ROOT, timeout_s=120)
        requests = list(server.state.requests)
    return root / "models", screen, requests, (again, screen2), sha


def test_the_checkpoint_download_is_resumed_after_a_cut_connection(mobilesam_pull):
    models, screen, requests, _, sha = mobilesam_pull
    assert requests == [("/weights/mobile_sam.pt", None), ("/weights/mobile_sam.pt", f"bytes={CUT_AT}-")]
    assert f"interrupted at byte {CUT_AT}" in screen
    assert sha256_file(models / "checkpoints" / "mobile_sam.pt") == sha  # kept for re-exports (e.g. fixed shapes)


def test_a_terminal_shows_progress_bars_for_download_and_export(mobilesam_pull):
    _, screen, _, _, _ = mobilesam_pull
    for bar in ("download mobile_sam.pt: 100%|", "export mobile_sam_encoder.onnx:", "export mobile_sam_decoder.onnx:",
                "check the export against PyTorch:"):
        assert bar in screen, screen[-3000:]
    assert "38.8M/38.8M" in screen  # the download's bar counts bytes
    assert "mobilesam                    exported" in screen and "mobilesam_decoder            exported" in screen


def test_the_pair_has_the_metadata_the_station_runs_it_by(mobilesam_pull):
    models, _, _, _, sha = mobilesam_pull
    enc = ModelMetadata.read(models / "mobilesam.json")
    dec = ModelMetadata.read(models / "mobilesam_decoder.json")
    assert (enc.input.size, enc.input.normalization, enc.input.resize) == (1024, "meanstd", "longest_side")
    assert enc.input.mean == [123.675, 116.28, 103.53] and enc.input.std == [58.395, 57.12, 57.375]
    assert (dec.prompts, dec.mask_index, dec.extra["mask_output"], dec.pair) == (["box", "point"], 0, "original", "mobilesam")
    assert enc.sha256 == sha256_file(models / enc.file) and enc.extra["export"]["checkpoint"]["sha256"] == sha
    parity = dec.extra["export"]["parity"]
    assert parity["encoder"]["rel_error"] < 1e-3 and parity["masks"]["rel_error"] < 1e-3


def test_a_box_prompt_through_the_station_gives_the_mask_sams_pytorch_pipeline_gives(mobilesam_pull, random_mobilesam_checkpoint):
    import io

    import torch
    import torch.nn.functional as F

    from station.models.export import upstream

    models, _, _, _, _ = mobilesam_pull
    seg = SamSegmenter(load_model(models, "mobilesam", threads=2), load_model(models, "mobilesam_decoder", threads=2))
    view = reference_view()
    encoded = seg.encode(view.image)
    assert encoded.embedding.shape == (1, 256, 64, 64)
    mask, _ = seg.box_mask(encoded, view.box)
    assert mask.shape == view.truth.shape and mask.dtype == bool

    # SAM's own pipeline in PyTorch: resize longest side to 1024, preprocess (mean/std, pad), encode,
    # box prompt, single-mask head, postprocess to the view's size
    net = upstream.mobile_sam()[0].build_sam_vit_t()
    net.load_state_dict(torch.load(io.BytesIO(random_mobilesam_checkpoint[0]), weights_only=True))
    h, w = view.truth.shape
    s = 1024 / max(h, w)
    nh, nw = round(h * s), round(w * s)
    with torch.no_grad():
        x = F.interpolate(torch.from_numpy(view.image).permute(2, 0, 1)[None].float(), (nh, nw), mode="bilinear",
                          align_corners=False, antialias=True)
        emb = net.eval().image_encoder(net.preprocess(x))
        box = torch.tensor(view.box, dtype=torch.float32) * torch.tensor([nw / w, nh / h, nw / w, nh / h])
        sparse, dense = net.prompt_encoder(points=None, boxes=box[None], masks=None)
        low, _ = net.mask_decoder(image_embeddings=emb, image_pe=net.prompt_encoder.get_dense_pe(),
                                  sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=False)
        expected = net.postprocess_masks(low, (nh, nw), (h, w))[0, 0].numpy() > 0
    assert 0.01 < expected.mean() < 0.99  # random weights, but not an all-or-nothing mask
    agreement = float((mask == expected).mean())
    assert agreement > 0.995, agreement  # 0.9999 measured: the resizes differ (cv2 vs torch), nothing else


def test_a_second_pull_finds_both_files_in_place(mobilesam_pull):
    _, _, requests, (status, screen), _ = mobilesam_pull
    assert status == 0 and "mobilesam                    present" in screen
    assert len(requests) == 2  # nothing downloaded again
