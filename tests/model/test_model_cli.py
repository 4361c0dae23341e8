"""`bluesky-ptychonn train` and `export`: from simulated or reconstructed data to engines."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bluesky_ptychonn.cli import main
from bluesky_ptychonn.dataset import Reconstruction
from bluesky_ptychonn.model import load_model, resolve
from bluesky_ptychonn.sim import SimBeamline, SimBeamlineConfig

TINY = [
    "--input-size",
    "32",
    "--base-channels",
    "4",
    "--epochs",
    "1",
    "--batch-size",
    "8",
    "--threads",
    "1",
    "--no-progress",
    "--n-samples",
    "2",
]


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BLUESKY_PTYCHONN_CACHE", str(tmp_path / "cache"))


def test_train_on_simulated_data_then_export(tmp_path, capsys):
    out = tmp_path / "model"
    assert main(["train", "--out", str(out), "--simulate", "24", "--seed", "3", *TINY]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["pairs"] == 24 and summary["best_epoch"] == 1
    model, sidecar = load_model(out)
    assert sidecar.architecture.input_shape == (32, 32)
    assert sidecar.training["options"]["seed"] == 3
    assert sidecar.training["data"]["source"] == "simulation"
    assert main(["export", str(out), "--onnx", str(tmp_path / "g.onnx")]) == 0
    assert "onnx" in resolve(tmp_path / "g.onnx").sidecar.files
    # a second export refuses to overwrite
    assert main(["export", str(out), "--onnx", str(tmp_path / "g.onnx")]) == 2
    assert "exists" in capsys.readouterr().err


def test_finetune_from_a_reconstruction_in_a_cxi_file(tmp_path, capsys):
    pytest.importorskip("h5py")
    from bluesky_ptychonn.storage.cxi import write_cxi

    parent = tmp_path / "parent"
    assert main(["train", "--out", str(parent), "--simulate", "16", *TINY]) == 0
    capsys.readouterr()
    beamline = SimBeamline(
        SimBeamlineConfig(sample="letters", defocus_m=250e-6, field_of_view_m=(1e-6, 1e-6), seed=2)
    )
    positions = np.random.default_rng(0).uniform(-4e-7, 4e-7, (20, 2))
    data = beamline.measure(positions)
    cxi = write_cxi(
        tmp_path / "scan.cxi",
        data,
        Reconstruction(data.ground_truth, data.probe, algorithm="truth"),
    )
    child = tmp_path / "child"
    args = [
        "train",
        "--out",
        str(child),
        "--finetune",
        str(parent),
        "--from-cxi",
        str(cxi),
        "--epochs",
        "1",
        "--threads",
        "1",
        "--no-progress",
        "--batch-size",
        "8",
    ]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["pairs"] == 20
    _, sidecar = load_model(child)
    assert sidecar.training["parent"]["version"] == load_model(parent)[1].version
    assert sidecar.training["data"]["source"] == "reconstruction"
    assert sidecar.preprocessing == load_model(parent)[1].preprocessing


def test_train_refuses_to_overwrite_and_bad_models(tmp_path, capsys):
    out = tmp_path / "model"
    out.mkdir()
    (out / "model.json").write_text("{}")
    assert main(["train", "--out", str(out), "--simulate", "8", *TINY]) == 2
    assert "exists" in capsys.readouterr().err
    assert (
        main(
            ["train", "--out", str(tmp_path / "m2"), "--finetune", str(tmp_path / "nothing"), *TINY]
        )
        == 2
    )
    assert "does not exist" in capsys.readouterr().err


def test_train_with_the_uncertainty_head_calibrates_it_and_keeps_the_probe(tmp_path, capsys):
    from bluesky_ptychonn.model.checkpoint import read_probe

    out = tmp_path / "head"
    args = ["train", "--out", str(out), "--simulate", "40", "--uncertainty", "--onnx", *TINY]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["uncertainty"]["calibration_scale"] > 0
    model, sidecar = load_model(out)
    assert model.config.uncertainty and sidecar.uncertainty["pairs"] == 4  # the 10 % held out
    assert read_probe(resolve(out)).shape == (128, 128)
    # the ONNX export next to the weights keeps the probe and the calibration in its sidecar
    onnx_side = resolve(out / "model.onnx").sidecar
    assert "probe" in onnx_side.files and onnx_side.uncertainty_scale == sidecar.uncertainty_scale
