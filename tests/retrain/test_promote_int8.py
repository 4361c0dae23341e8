"""Promotion to an int8 endpoint: the graph is quantised on the scan's frames and shipped."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from test_loop import first_model, scans  # noqa: F401  (module fixtures)

from bluesky_ptychonn.inference import load_engine
from bluesky_ptychonn.model.checkpoint import ModelFileError, Sidecar
from bluesky_ptychonn.retrain.labels import LabelSet
from bluesky_ptychonn.retrain.promote import export_step


def test_an_int8_promotion_ships_a_graph_the_endpoint_loads_instead_of_quantising(
    first_model,  # noqa: F811
    tmp_path,
    monkeypatch,
):
    monkeypatch.setenv("BLUESKY_PTYCHONN_CACHE", str(tmp_path / "cache"))
    state, record = first_model
    folder = tmp_path / "model"
    shutil.copytree(record["model_path"], folder)
    labels = str(state / "labels" / "scan0.npz")
    exported = export_step(str(folder), int8=True, calibration_label_paths=[labels])
    entry = Sidecar.read(folder / "model.json").files["onnx-int8"]
    assert exported["int8"].endswith(entry["path"])
    assert "measured frames of scan0" in entry["calibration"]

    frames = LabelSet.load(labels).frames[:32]
    fp32 = load_engine(folder, "onnxruntime", threads=1).infer(frames)
    int8_engine = load_engine(folder, "onnxruntime", precision="int8", threads=1)
    int8 = int8_engine.infer(frames)
    # the shipped graph was used: nothing was quantised into the engine cache
    assert not list((tmp_path / "cache").rglob("*int8*/*.onnx"))
    phase_error = np.abs(np.angle(np.exp(1j * (int8[:, 0] - fp32[:, 0]))))
    assert float(np.median(phase_error)) < 0.05

    # a shipped graph that was altered is refused, not run
    (folder / entry["path"]).write_bytes((folder / entry["path"]).read_bytes()[:-8] + b"x" * 8)
    with pytest.raises(ModelFileError, match="sha256"):
        load_engine(folder, "onnxruntime", precision="int8", threads=1)
