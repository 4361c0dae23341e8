"""The live view in a real browser: headless Chromium loads the session's page during a
simulated scan, and the panels update (two screenshots a second apart differ)."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from bluesky_ptychonn.plans import spiral_scan
from bluesky_ptychonn.session import Session
from session_helpers import session_toml

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from view_browser import HeadlessBrowser, chromium_path  # noqa: E402

pytest.importorskip("playwright")
pytestmark = pytest.mark.skipif(chromium_path() is None, reason="no chromium (apt-get install "
                                "chromium; .ci/run installs it)")  # fmt: skip

MOSAIC_SHOWN = (
    "() => { const m = document.querySelector('#panel-mosaic img');"
    " return m.naturalWidth > 0 && document.body.dataset.version > 0; }"
)


def differing_fraction(a: Path, b: Path) -> float:
    from PIL import Image

    first = np.asarray(Image.open(a).convert("L"), dtype=np.int16)
    second = np.asarray(Image.open(b).convert("L"), dtype=np.int16)
    if first.shape != second.shape:
        return 1.0
    return float(np.mean(np.abs(first - second) > 8))


def test_the_panels_update_in_a_browser_during_a_scan(tmp_path, tiny_model, monkeypatch):
    monkeypatch.delenv("BLUESKY_PTYCHONN_VIEW_TOKEN", raising=False)
    model = tiny_model(tmp_path / "model", version="tiny", input_px=32, frame_px=128,
                       reduce="bin")  # fmt: skip
    config = tmp_path / "session.toml"
    text = session_toml(tmp_path, model, view="enabled = true\nmax_rate_hz = 5.0")
    config.write_text(text.replace("[tiled]", "[tiled]\nenabled = false"))
    screenshots = [tmp_path / "first.png", tmp_path / "second.png"]
    seen: dict[str, object] = {}
    loaded, failures = threading.Event(), []

    with Session.from_config(config) as session:
        url = session.view.url
        assert url.startswith("http://127.0.0.1:")

        def look() -> None:
            try:
                with HeadlessBrowser() as browser:
                    browser.open(url)
                    loaded.set()
                    browser.wait_for(MOSAIC_SHOWN, timeout_s=60)
                    seen["first"], started = browser.state(), time.monotonic()
                    browser.screenshot(screenshots[0])
                    browser.page.wait_for_timeout(1000)
                    seen["second"] = browser.state()
                    seen["elapsed_s"] = time.monotonic() - started
                    browser.screenshot(screenshots[1])
            except BaseException as error:  # noqa: BLE001 - reported by the test below
                failures.append(error)
            finally:
                loaded.set()

        browser_thread = threading.Thread(target=look)
        browser_thread.start()
        assert loaded.wait(60)
        (uid,) = session.RE(
            spiral_scan([session.detector, session.endpoint], session.stage, 0.6e-6,
                        step_m=70e-9)
        )  # fmt: skip
        browser_thread.join(120)
        assert session.wait(60)
        final = session.view.board.state()
    assert not failures, failures
    first, second = seen["first"], seen["second"]
    assert second["version"] > first["version"]  # the page took new updates
    # about a second at 5 Hz (more when the screenshot was slow): never more updates than the
    # bounded rate allows
    assert second["version"] - first["version"] <= 5 * seen["elapsed_s"] + 2
    for name in ("frame", "phase", "mosaic"):
        assert second["panels"][name]["width"] > 0, name
    assert second["panels"]["uncertainty"]["hidden"]  # the tiny model has no uncertainty
    assert second["panels"]["mosaic"]["src"] != first["panels"]["mosaic"]["src"]
    assert "newest wins" in second["note"]
    assert differing_fraction(*screenshots) > 0.001
    # after the run: the final mosaic is shown and accumulated
    assert final.run["uid"] == uid and final.run["state"] == "finished"
    assert final.composite is not None and final.composite.runs == [uid]
