"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

# ophyd picks its control layer when it is first imported: pyepics when it is installed (the
# dev extra installs it), else caproto. The suite runs on caproto's unless told otherwise;
# `OPHYD_CONTROL_LAYER=pyepics pytest tests/ioc` runs the IOC tests on pyepics'.
os.environ.setdefault("OPHYD_CONTROL_LAYER", "caproto")

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA_DIR = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """The shared reference-data folder, ``<repo>/../shared/data``.

    Fails (never skips) when the folder is missing: tests on real data must not pass silently.
    """
    if not SHARED_DATA_DIR.is_dir():
        pytest.fail(
            f"shared reference data folder not found at {SHARED_DATA_DIR} (expected next to the "
            f"repository {REPO_ROOT}, as <repo>/../shared/data); it holds siemens-star-tike.cxi",
            pytrace=False,
        )
    return SHARED_DATA_DIR


@pytest.fixture
def endpoint_factory():
    """Start real endpoint processes; every one is stopped at the end of the test."""
    from bluesky_ptychonn.inference.process import EndpointProcess

    started: list[EndpointProcess] = []

    def start(model: Path, **options) -> EndpointProcess:
        options.setdefault("backend", "pytorch")
        options.setdefault("batch_size", 8)
        options.setdefault("threads", 1)
        endpoint = EndpointProcess(model, **options).start()
        started.append(endpoint)
        return endpoint

    yield start
    for endpoint in started:
        endpoint.stop()


def save_tiny_model(
    directory: Path,
    *,
    seed: int = 0,
    version: str | None = None,
    input_px: int = 32,
    frame_px: int = 32,
    reduce: str = "bin",
) -> Path:
    """An untrained, small edge model (fast on CPU) saved with its sidecar."""
    import torch

    from bluesky_ptychonn.model.architectures import build_model
    from bluesky_ptychonn.model.checkpoint import save_model
    from bluesky_ptychonn.model.preprocessing import Preprocessing

    torch.manual_seed(seed)
    model = build_model("edge", input_shape=input_px, base_channels=4)
    preprocessing = Preprocessing(
        input_shape=(input_px, input_px), frame_shape=(frame_px, frame_px), reduce=reduce
    )
    return save_model(model, directory, preprocessing, version=version)


@pytest.fixture
def tiny_model():
    """`save_tiny_model` as a fixture: ``tiny_model(directory, seed=..., version=...)``."""
    return save_tiny_model


@pytest.fixture(scope="module")
def hutch():
    """A simulated hutch with an Eiger over a 3 x 3 um sample (quick to build)."""
    from bluesky_ptychonn.ioc import SimHutch
    from bluesky_ptychonn.sim import SimBeamlineConfig

    with SimHutch(SimBeamlineConfig(field_of_view_m=(3e-6, 3e-6)), detectors=("eiger",)) as h:
        yield h


@pytest.fixture(scope="module")
def stage(hutch):
    from bluesky_ptychonn.devices import SimStage

    return SimStage(hutch)


@pytest.fixture(scope="module")
def eiger(hutch):
    from bluesky_ptychonn.devices import SimEiger

    return SimEiger(hutch)


@pytest.fixture(autouse=True)
def files_in_tmp_path(request, tmp_path):
    """Fly scans write their HDF5 files under the test's temporary folder."""
    if "eiger" in request.fixturenames:
        eiger = request.getfixturevalue("eiger")
        previous, eiger.file_directory = eiger.file_directory, str(tmp_path)
        yield
        eiger.file_directory = previous
    else:
        yield


@pytest.fixture(scope="session")
def trained_head(tmp_path_factory):
    """A small model with the uncertainty head, trained once per session (a few seconds):
    `uncertainty_helpers.TrainedHead` (folder, model, preprocessing, held-out sets)."""
    from uncertainty_helpers import train_head

    return train_head(tmp_path_factory.mktemp("trained-head"))
