"""The EPICS devices on both of ophyd's control layers: caproto's (the suite's default) and
pyepics' (what APS beamlines run). The IOC tests are the same; the layer is chosen by
``OPHYD_CONTROL_LAYER`` before ophyd is imported (tests/conftest.py)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


LAYER_PV_MODULES = {"caproto": "caproto.", "pyepics": "epics."}


def test_the_devices_talk_through_the_control_layer_asked_for(ioc):
    import ophyd

    from bluesky_ptychonn.devices import SampleStage, connect

    layer = os.environ["OPHYD_CONTROL_LAYER"]
    assert ophyd.cl.name == layer
    stage = SampleStage(ioc["stage"]["prefix"], name="stage", egu=ioc["stage"]["egu"])
    connect(stage)
    pv = stage.x.user_readback._read_pv  # the PV object the layer made for this signal
    origins = [cls.__module__ for cls in type(pv).__mro__]  # ophyd's shim over the library's PV
    assert any(m.startswith(LAYER_PV_MODULES[layer]) for m in origins), origins
    others = set(LAYER_PV_MODULES) - {layer}
    assert not any(m.startswith(LAYER_PV_MODULES[o]) for o in others for m in origins)
    assert np.isfinite(stage.x.position)


@pytest.mark.slow
def test_the_ioc_tests_pass_on_the_pyepics_control_layer():
    """tests/ioc again, in a fresh process on ophyd's pyepics layer (about a minute)."""
    if importlib.util.find_spec("epics") is None:
        pytest.skip("pyepics is not installed: pip install 'bluesky-ptychonn[pyepics]'")
    if os.environ.get("OPHYD_CONTROL_LAYER") == "pyepics":
        pytest.skip("this process already runs the IOC tests on pyepics")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(ROOT / "tests/ioc"),
         "-k", "not pyepics_control_layer"],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
        env={**os.environ, "OPHYD_CONTROL_LAYER": "pyepics"},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and " failed" not in done.stdout
