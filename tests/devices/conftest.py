"""The small simulated sample of the device tests (the hutch and twins are in tests/conftest.py)."""

from __future__ import annotations

import pytest

from bluesky_ptychonn.sim import SimBeamlineConfig

SMALL = SimBeamlineConfig(field_of_view_m=(3e-6, 3e-6))


@pytest.fixture(scope="session")
def small_config():
    """A 3 x 3 um sample: quick to build."""
    return SMALL
