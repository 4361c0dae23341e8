"""Model files: safetensors + JSON sidecar with sha256; tampered files and pickles refused."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from bluesky_ptychonn.model import (
    ModelFileError,
    Preprocessing,
    build_model,
    load_model,
    resolve,
    save_model,
    sha256_file,
)

PREP = Preprocessing((64, 64), (128, 128), "crop", input_scale=0.1)


@pytest.fixture
def model_dir(tmp_path):
    torch.manual_seed(0)
    model = build_model("edge", base_channels=4, input_shape=64)
    save_model(model, tmp_path / "m", PREP, training={"note": "test"})
    return tmp_path / "m", model


def test_save_writes_safetensors_and_a_sidecar_with_sha256(model_dir):
    path, _ = model_dir
    sidecar = json.loads((path / "model.json").read_text())
    assert sidecar["format"] == "bluesky-ptychonn-model"
    assert sidecar["architecture"]["name"] == "edge"
    assert sidecar["input_shape"] == [64, 64]
    assert sidecar["preprocessing"]["reduce"] == "crop"
    weights = sidecar["files"]["weights"]
    assert weights["path"] == "model.safetensors"
    assert weights["sha256"] == sha256_file(path / "model.safetensors")
    assert sidecar["version"].startswith("edge-") and sidecar["training"] == {"note": "test"}
    assert sidecar["package_version"]


@pytest.mark.parametrize("which", ["directory", "weights", "sidecar"])
def test_load_round_trips_the_weights(model_dir, which):
    path, model = model_dir
    target = {
        "directory": path,
        "weights": path / "model.safetensors",
        "sidecar": path / "model.json",
    }[which]
    loaded, sidecar = load_model(target)
    assert not loaded.training
    for (k, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    assert sidecar.preprocessing == PREP


def test_a_changed_weights_file_is_refused_by_its_sha256(model_dir):
    path, _ = model_dir
    data = bytearray((path / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (path / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="sha256"):
        load_model(path)


def test_a_pickled_model_is_never_unpickled(tmp_path, model_dir):
    path, model = model_dir
    # a whole pickled module disguised as the weights, with a sidecar that vouches for it
    torch.save(model, path / "model.safetensors")
    sidecar = json.loads((path / "model.json").read_text())
    sidecar["files"]["weights"]["sha256"] = sha256_file(path / "model.safetensors")
    (path / "model.json").write_text(json.dumps(sidecar))
    with pytest.raises(ModelFileError, match="pickle"):
        load_model(path)


class _Boom:
    ran = False

    def __reduce__(self):
        return (_Boom._explode, ())

    @staticmethod
    def _explode():  # pragma: no cover - must never run
        _Boom.ran = True
        return {}


def test_a_pickled_state_dict_with_code_is_refused_by_weights_only(model_dir):
    path, _ = model_dir
    evil = path / "model.pt"
    evil.write_bytes(pickle.dumps({"x": _Boom()}))
    sidecar = json.loads((path / "model.json").read_text())
    sidecar["files"]["weights"] = {"path": "model.pt", "sha256": sha256_file(evil)}
    (path / "model.json").write_text(json.dumps(sidecar))
    with pytest.raises(ModelFileError, match="weights_only"):
        load_model(path)
    assert not _Boom.ran


def test_a_plain_state_dict_is_accepted(model_dir):
    path, model = model_dir
    torch.save(model.state_dict(), path / "model.pt")
    sidecar = json.loads((path / "model.json").read_text())
    sidecar["files"]["weights"] = {"path": "model.pt", "sha256": sha256_file(path / "model.pt")}
    (path / "model.json").write_text(json.dumps(sidecar))
    loaded, _ = load_model(path)
    assert torch.equal(
        loaded.state_dict()["encoder.0.weight"], model.state_dict()["encoder.0.weight"]
    )


def test_a_file_without_sidecar_is_refused(tmp_path, model_dir):
    path, model = model_dir
    lone = tmp_path / "lone.pt"
    torch.save(model.state_dict(), lone)
    with pytest.raises(ModelFileError, match="no sidecar"):
        load_model(lone)
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "missing.safetensors")


def test_weights_of_another_architecture_are_refused(model_dir):
    path, _ = model_dir
    sidecar = json.loads((path / "model.json").read_text())
    sidecar["architecture"]["encoder_channels"] = [8, 16, 32, 64]
    (path / "model.json").write_text(json.dumps(sidecar))
    with pytest.raises(ModelFileError, match="does not fit the architecture"):
        load_model(path)


def test_sidecar_must_be_ours(model_dir):
    path, _ = model_dir
    (path / "model.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ModelFileError, match="not a bluesky-ptychonn-model sidecar"):
        resolve(path)
    (path / "model.json").write_text("not json")
    with pytest.raises(ModelFileError, match="not a JSON sidecar"):
        resolve(path)


def test_sidecar_paths_cannot_escape_the_folder(model_dir):
    path, _ = model_dir
    sidecar = json.loads((path / "model.json").read_text())
    sidecar["files"]["weights"]["path"] = "../elsewhere.safetensors"
    (path / "model.json").write_text(json.dumps(sidecar))
    with pytest.raises(ModelFileError, match="next to the sidecar"):
        load_model(path)
