"""`bluesky-ptychonn demo`: the main job on embedded defaults.

Until the live pipeline exists this runs the simulated beamline end to end on files: a dense
spiral scan (EIGER2, etched sample) and a sparse, touching-patch scan (Medipix3, letters the
training samples never hold), each written as CXI with ground truth and a figure, read back and
checked; then a reconstruction of the spiral when the `reconstruct` command is available. All
figures land in one report folder with a ``report.json`` of the numbers.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SCANS = (
    {
        "name": "spiral-eiger-etched",
        "detector": "eiger",
        "sample": "etched",
        "scan": "spiral",
        "overlap": 0.7,
        "extent": 2e-6,
    },
    {
        "name": "sparse-medipix3-letters",
        "detector": "medipix3",
        "sample": "letters",
        "scan": "sparse",
        "overlap": 0.0,
        "extent": 3e-6,
    },
)


def _scan_args(spec: dict[str, Any], seed: int) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    from .simulate import add_beamline_arguments

    add_beamline_arguments(parser)
    args = parser.parse_args([])
    for key in ("detector", "sample", "scan", "overlap", "extent"):
        setattr(args, key, spec[key])
    args.seed = seed
    return args


def run(args: argparse.Namespace) -> int:
    from ..storage.cxi import read_cxi
    from .simulate import simulate_to_cxi

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "scans": []}
    for spec in SCANS:
        cxi = out / f"{spec['name']}.cxi"
        log.info("simulating %s", spec["name"])
        summary = simulate_to_cxi(
            _scan_args(spec, args.seed), cxi, out / f"{spec['name']}.png", overwrite=True
        )
        back = read_cxi(cxi)
        summary["read_back_frames"] = back.n_patterns
        if back.n_patterns != summary["frames"]:
            raise RuntimeError(f"{cxi}: wrote {summary['frames']} frames, read {back.n_patterns}")
        summary["name"] = spec["name"]
        report["scans"].append(summary)
    report["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    (out / "report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    print(f"\nreport folder: {out.resolve()}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="run the simulated beamline end to end and write a report folder"
    )
    parser.add_argument("--out", default="demo-output", help="report folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(func=run)
