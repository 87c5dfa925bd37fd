"""`station models pull`: local directories, HTTP downloads (a real loopback server), sha256
checks that refuse bad files, trained recipe models, and clear errors."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading
from pathlib import Path

import pytest

from station.inference.metadata import ModelError, ModelMetadata
from station.models_store import Manifest, ManifestEntry, ensure_recipe_models, pull

PAYLOAD = b"pretend-onnx-bytes" * 1000
SHA = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture
def http_dir(tmp_path):
    """A real HTTP server on 127.0.0.1 (free port) serving tmp_path/www; yields (dir, base url, request log)."""
    www = tmp_path / "www"
    www.mkdir()
    log: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, fmt, *args):
            log.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(www)))
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield www, f"http://127.0.0.1:{server.server_address[1]}", log
    server.shutdown()
    server.server_close()


def manifest(**kw) -> Manifest:
    entry = dict(name="tiny", role="classifier", file="tiny.onnx", sha256=SHA, input={"size": 32})
    entry.update(kw)
    return Manifest(models=[ManifestEntry(**entry)])


def test_download_checks_sha_and_writes_metadata(tmp_path, http_dir):
    www, url, log = http_dir
    (www / "tiny.onnx").write_bytes(PAYLOAD)
    models = tmp_path / "models"
    [res] = pull("tiny", models, manifest=manifest(urls=[f"{url}/tiny.onnx"]), sources=[], trained_dir=tmp_path / "none")
    assert res.action == "downloaded" and (models / "tiny.onnx").read_bytes() == PAYLOAD
    meta = ModelMetadata.read(models / "tiny.json")
    assert meta.sha256 == SHA and meta.bytes == len(PAYLOAD) and meta.input.size == 32
    assert log == ["/tiny.onnx"]
    # a second pull finds it in place and does not download again
    [again] = pull("tiny", models, manifest=manifest(urls=[f"{url}/tiny.onnx"]), sources=[], trained_dir=tmp_path / "none")
    assert again.action == "present" and log == ["/tiny.onnx"]


def test_download_with_wrong_sha_is_refused_and_leaves_nothing(tmp_path, http_dir):
    www, url, _ = http_dir
    (www / "tiny.onnx").write_bytes(PAYLOAD + b"tampered")
    models = tmp_path / "models"
    with pytest.raises(ModelError, match="does not match the pinned"):
        pull("tiny", models, manifest=manifest(urls=[f"{url}/tiny.onnx"]), sources=[], trained_dir=tmp_path / "none")
    assert not any(models.iterdir())  # no file, no temporary left behind


def test_dead_url_then_good_url_falls_through(tmp_path, http_dir):
    www, url, _ = http_dir
    (www / "tiny.onnx").write_bytes(PAYLOAD)
    m = manifest(urls=[f"{url}/missing.onnx", f"{url}/tiny.onnx"])
    [res] = pull("tiny", tmp_path / "models", manifest=m, sources=[], trained_dir=tmp_path / "none")
    assert res.source.endswith("/tiny.onnx")


def test_local_dir_first_skipping_a_corrupt_copy(tmp_path, http_dir):
    www, url, log = http_dir
    bad, good = tmp_path / "bad", tmp_path / "good"
    (bad / "sub").mkdir(parents=True)
    (good / "sub").mkdir(parents=True)
    (bad / "sub" / "tiny.onnx").write_bytes(b"corrupt")
    (good / "sub" / "tiny.onnx").write_bytes(PAYLOAD)
    m = manifest(local=["sub/tiny.onnx"], urls=[f"{url}/tiny.onnx"])
    [res] = pull("tiny", tmp_path / "models", manifest=m, sources=[bad, good], trained_dir=tmp_path / "none")
    assert res.action == "copied" and res.source == str(good / "sub" / "tiny.onnx") and log == []


def test_unpinned_model_needs_a_sha_and_no_source_is_a_clear_error(tmp_path, http_dir):
    www, url, _ = http_dir
    (www / "tiny.onnx").write_bytes(PAYLOAD)
    with pytest.raises(ModelError, match="pins no sha256"):
        pull("tiny", tmp_path / "m", manifest=manifest(sha256=""), sources=[], trained_dir=tmp_path / "none")
    [res] = pull("tiny", tmp_path / "m", manifest=manifest(sha256=""), sources=[], trained_dir=tmp_path / "none",
                 url=f"{url}/tiny.onnx", sha256=SHA)
    assert res.action == "downloaded"
    with pytest.raises(ModelError, match="could not be fetched"):
        pull("tiny", tmp_path / "m2", manifest=manifest(), sources=[], trained_dir=tmp_path / "none", allow_export=False)
    with pytest.raises(ModelError, match="not in the manifest"):
        pull("nope", tmp_path / "m2", manifest=manifest(), sources=[], trained_dir=tmp_path / "none")


def test_real_litemedsam_pair_pulled_by_the_cli(sam_models_dir, shared_dir):
    enc = ModelMetadata.read(sam_models_dir / "litemedsam.json")
    dec = ModelMetadata.read(sam_models_dir / "litemedsam_decoder.json")
    assert enc.pair == "litemedsam_decoder" and enc.input.size == 256 and enc.input.normalization == "minmax"
    assert dec.prompts == ["box"] and dec.mask_index == 0
    assert enc.sha256 == "b3560d46ba8b5980de3e12c49e06d4950bf8d60f058976ff37d95d5471450949"


def test_ensure_recipe_models_pulls_only_what_the_recipe_uses(tmp_path):
    recipe = Path(__file__).resolve().parents[2] / "recipes" / "plate-threshold.toml"
    assert ensure_recipe_models(recipe, tmp_path / "models") == []  # threshold analyzer: no model


def test_trained_recipe_models_are_copied_with_their_metadata_and_checked(tmp_path):
    trained = tmp_path / "trained"
    trained.mkdir()
    (trained / "r-classifier.onnx").write_bytes(PAYLOAD)
    ModelMetadata(name="r-classifier", role="classifier", file="r-classifier.onnx", sha256=SHA,
                  classes=["a", "not_defect"]).write(trained / "r-classifier.json")
    [res] = pull("r-classifier", tmp_path / "models", manifest=manifest(), sources=[], trained_dir=trained)
    assert res.action == "copied" and ModelMetadata.read(tmp_path / "models" / "r-classifier.json").classes == ["a", "not_defect"]
    (trained / "r-classifier.onnx").write_bytes(b"changed after training")
    with pytest.raises(ModelError, match="does not match"):
        pull("r-classifier", tmp_path / "other", manifest=manifest(), sources=[], trained_dir=trained)
