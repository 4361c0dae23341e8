"""Fixtures for the inference tests: a small model on disk, a private engine cache."""

from __future__ import annotations

import pytest
import torch

from bluesky_ptychonn.model import Preprocessing, build_model, save_model
from bluesky_ptychonn.model.export import export_onnx


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Engines cache derived files (ONNX exports, int8 graphs) in the test's own folder."""
    monkeypatch.setenv("BLUESKY_PTYCHONN_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    """(model folder, network): a reduced-width edge model at 64x64 with a lively output.

    The output conv gets a large random initialisation so that phase and amplitude maps have
    structure: reduced-precision engines are then compared on something that can differ.
    """
    torch.manual_seed(0)
    model = build_model("edge", base_channels=8, input_shape=64).eval()
    with torch.no_grad():
        head = model.decoder[-1]
        head.weight.normal_(0, 0.15)
    prep = Preprocessing((64, 64), (128, 128), "crop", input_scale=0.12)
    folder = tmp_path_factory.mktemp("model")
    save_model(model, folder, prep, training={"data": {"beamline": {"defocus_m": 250e-6}}})
    export_onnx(folder, folder / "model.onnx")  # once, instead of on demand in every test
    return folder, model


@pytest.fixture(scope="module")
def frames():
    """(8, 128, 128) uint16 simulated detector frames (etched sample)."""
    from bluesky_ptychonn.model import simulate_training_set

    prep = Preprocessing((64, 64), (128, 128), "crop")
    return simulate_training_set(8, prep, n_samples=1, seed=5, field_of_view_m=(1e-6, 1e-6)).frames
