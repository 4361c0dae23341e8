"""The live view's figure in docs/session.md: headless Chromium during the second of two scans.

A session on the simulated beamline (a model directory given, the view on), a first spiral on
the left of the sample, then a second one on the right during which the page is shot: the
live mosaic of the second scan grows while the accumulated image holds the first.

    python benchmarks/view_screenshot.py --model ~/.cache/bluesky-ptychonn/models/demo-... \\
        --out docs/figures/live-view.png
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

from view_browser import HeadlessBrowser

from bluesky_ptychonn.plans import spiral_scan
from bluesky_ptychonn.session import Session, SessionConfig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True, help="model directory")
    parser.add_argument("--out", required=True, help="PNG to write")
    parser.add_argument("--sample", default="siemens-star")
    parser.add_argument("--delay-s", type=float, default=1.5,
                        help="seconds into the second scan when the page is shot")  # fmt: skip
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        config = SessionConfig.from_dict({
            "data_dir": tmp,
            "sim": {"detectors": ["eiger"], "sample": args.sample,
                    "field_of_view_m": [3.4e-6, 3.4e-6]},
            "endpoint": {"model": str(Path(args.model).expanduser()), "batch_size": 32},
            "tiled": {"enabled": False},
            "live_view": {"enabled": False},
            "view": {"enabled": True},
        })  # fmt: skip
        with Session(config) as session:
            shot = threading.Event()

            def look() -> None:
                with HeadlessBrowser(width=1400, height=980) as browser:
                    browser.open(session.view.url)
                    browser.wait_for("() => document.body.dataset.version > 0", 120)
                    started.wait(600)
                    time.sleep(args.delay_s)
                    browser.screenshot(args.out)
                    print(browser.state())
                shot.set()

            started = threading.Event()
            thread = threading.Thread(target=look)
            thread.start()
            plan = [session.detector, session.endpoint]
            session.RE(spiral_scan(plan, session.stage, 0.6e-6, step_m=80e-9,
                                   centre_m=(0.0, -0.65e-6)))  # fmt: skip
            session.wait(120)
            started.set()
            session.RE(spiral_scan(plan, session.stage, 0.6e-6, step_m=80e-9,
                                   centre_m=(0.0, 0.65e-6)))  # fmt: skip
            thread.join(600)
    print(f"wrote {args.out}" if shot.is_set() else "no screenshot")
    return 0 if shot.is_set() else 1


if __name__ == "__main__":
    raise SystemExit(main())
