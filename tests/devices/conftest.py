"""Simulated hutches and twins shared by the device tests (small field of view: fast)."""

from __future__ import annotations

import pytest

from bluesky_ptychonn.devices import SimEiger, SimStage
from bluesky_ptychonn.ioc import SimHutch
from bluesky_ptychonn.sim import SimBeamlineConfig

SMALL = SimBeamlineConfig(field_of_view_m=(3e-6, 3e-6))


@pytest.fixture(scope="session")
def small_config():
    """A 3 x 3 um sample: quick to build."""
    return SMALL


@pytest.fixture(scope="module")
def hutch():
    with SimHutch(SMALL, detectors=("eiger",)) as simulated:
        yield simulated


@pytest.fixture(scope="module")
def stage(hutch):
    return SimStage(hutch)


@pytest.fixture(scope="module")
def eiger(hutch):
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
