"""`bluesky-ptychonn study NAME --json OUT [--quick]`: the paper's results, reproduced.

Studies (`bluesky_ptychonn.studies`): ``refine`` (network, network + 5 / 10 seeded ePIE
iterations, ePIE from scratch), ``overlap`` (accuracy against the overlap ratio), ``dose``
(low counts: upscaled into the high-count network, or a network retrained low). Each writes a
JSON record and a figure (default ``docs/figures/study-NAME.png``; with ``--quick`` next to the
JSON). Without ``--model`` the study uses the cached demo model (quick: a smaller model of the
same recipe), trained first when the cache has none.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def run(args: argparse.Namespace) -> int:
    from ..studies import STUDIES
    from ..studies.common import figures_dir, write_json

    if args.name not in STUDIES:
        raise ValueError(f"unknown study {args.name!r}; available: {list(STUDIES)}")
    if args.model is not None and not Path(args.model).exists():
        raise FileNotFoundError(f"model {args.model} does not exist")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    out = Path(args.json)
    if args.figure:
        png = Path(args.figure)
    elif args.quick:
        png = out.with_suffix(".png")
    else:
        png = figures_dir() / f"study-{args.name}.png"
    if args.name == "refine":
        from ..studies.refine import RefineOptions, figure, run_refine

        options = RefineOptions.quick() if args.quick else RefineOptions()
        record = run_refine(options, model=args.model, quick=args.quick)
    elif args.name == "overlap":
        from ..studies.overlap import OverlapOptions, figure, run_overlap

        options = OverlapOptions.quick() if args.quick else OverlapOptions()
        record = run_overlap(options, model=args.model, quick=args.quick)
    else:
        from ..studies.dose import DoseOptions, figure, run_dose

        options = DoseOptions.quick() if args.quick else DoseOptions()
        record = run_dose(options, model=args.model, quick=args.quick)
    figure(record, png)
    public = {k: v for k, v in record.items() if not k.startswith("_")}
    public["figure"] = str(png)
    write_json(out, public)
    print(json.dumps({"json": str(out), "figure": str(png), "goals": public.get("goals", {})}))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "study",
        help="reproduce one of the paper's results (refine, overlap, dose) as JSON + figure",
        description=__doc__,
    )
    parser.add_argument("name", help="refine, overlap or dose")
    parser.add_argument("--json", required=True, help="output JSON record")
    parser.add_argument("--quick", action="store_true", help="the small version (tests)")
    parser.add_argument("--model", help="model directory (default: the cached demo model)")
    parser.add_argument("--figure", help="figure path (default: docs/figures/study-NAME.png)")
    parser.add_argument("--threads", type=int, help="CPU threads for torch")
    parser.set_defaults(func=run)
