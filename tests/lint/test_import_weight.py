"""RunEngine-side modules load what they use: importing the endpoint device, the real stage,
the stitcher or the browser view does not load torch, the training code or the simulator
(each package's ``__init__`` imports its modules on first use, PEP 562)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "h5py", "scipy", "bluesky_ptychonn.sim", "bluesky_ptychonn.model.train")


@pytest.mark.parametrize(
    "module, allowed",
    [
        ("bluesky_ptychonn.devices.endpoint", ()),
        ("bluesky_ptychonn.devices.stage", ()),
        ("bluesky_ptychonn.callbacks.live_stitch", ("scipy",)),  # phase sync: scipy.sparse
        ("bluesky_ptychonn.view.live", ("scipy",)),
        ("bluesky_ptychonn.session", ()),
    ],
)
def test_importing_a_run_engine_side_module_does_not_load_heavy_ones(module, allowed):
    code = (
        f"import importlib, json, sys; importlib.import_module({module!r}); "
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)  # fmt: skip
    loaded = set(json.loads(result.stdout.strip().splitlines()[-1])) - set(allowed)
    assert not loaded, f"importing {module} loads {sorted(loaded)}"


def test_the_lazy_packages_still_hand_out_their_names():
    from bluesky_ptychonn import devices, inference, model, recon

    assert devices.SampleStage.__name__ == "SampleStage"
    assert inference.load_engine.__name__ == "load_engine"
    assert model.Sidecar.__name__ == "Sidecar" and recon.EPIETask.__name__ == "EPIETask"
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        _ = devices.nothing
    assert set(devices.__all__) <= set(dir(devices))
