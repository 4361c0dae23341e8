"""The import-layer lint: the package keeps its layers, and the check catches a breach."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from check_layers import check

SRC = Path(__file__).resolve().parents[2] / "src"


def test_no_lower_layer_imports_a_higher_one():
    violations = check(SRC)
    assert not violations, "\n".join(map(str, violations))


def test_the_check_names_each_kind_of_breach(tmp_path):
    package = tmp_path / "bluesky_ptychonn"
    for folder in ("sim", "stitch", "callbacks", "session"):
        (package / folder).mkdir(parents=True)
        (package / folder / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "sim" / "beam.py").write_text(
        "def f():\n    from ..callbacks import live_stitch\n"  # lazy, still a dependency
    )
    (package / "stitch" / "mosaic.py").write_text("import bluesky.plan_stubs\n")
    (package / "callbacks" / "view.py").write_text(
        "import torch\nfrom ..session import Session\ndef g():\n    import torch\n"
    )
    (package / "session" / "core.py").write_text("from ..callbacks.view import g\n")
    (package / "gadget.py").write_text("")
    found = sorted(str(v).replace(str(tmp_path) + "/", "") for v in check(tmp_path))
    assert found == [
        "bluesky_ptychonn/callbacks/view.py:1: callbacks imports torch at import time "
        "(RunEngine side)",
        "bluesky_ptychonn/callbacks/view.py:2: callbacks (layer 3) imports "
        "bluesky_ptychonn.session (session, layer 4): a lower layer never imports a higher one",
        "bluesky_ptychonn/gadget.py:1: bluesky_ptychonn.gadget: no layer assigned (LAYERS)",
        "bluesky_ptychonn/sim/beam.py:2: sim (layer 1) imports bluesky_ptychonn.callbacks "
        "(callbacks, layer 3): a lower layer never imports a higher one",
        "bluesky_ptychonn/stitch/mosaic.py:1: stitch (layer 1) imports bluesky.plan_stubs: "
        "no bluesky",
    ]
    script = Path(__file__).with_name("check_layers.py")
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path)], capture_output=True, text=True
    )
    assert result.returncode == 1 and "5 violation(s)" in result.stderr
