"""`bluesky-ptychonn demo`: the simulated beamline end to end, live (`bluesky_ptychonn.demo`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def run(args: argparse.Namespace) -> int:
    from ..demo import DemoModelRecipe, DemoOptions, run_demo

    recipe = DemoModelRecipe()
    if args.train_patterns:
        recipe.n_patterns = args.train_patterns
    if args.train_epochs:
        recipe.epochs = args.train_epochs
    options = DemoOptions(
        recipe=recipe,
        out=Path(args.out),
        model=Path(args.model) if args.model else None,
        sample=args.sample,
        epie_iterations=args.epie_iterations,
        tiled=not args.no_tiled,
        continual=not args.no_continual,
        seed=args.seed,
    )
    report = run_demo(options)
    print(json.dumps(report, indent=2, default=str))
    print(f"\nreport folder: {Path(args.out).resolve()}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the simulated beamline end to end (live inference, stitching, Tiled, ePIE)",
        description="Simulated Eiger and stage, an inference endpoint process, live stitching, "
        "a local Tiled server, a spiral and a sparse scan, ePIE of the spiral, the continual-"
        "learning loop on the spiral and a scan of a new region with the model it leaves; "
        "writes PNGs and report.json to a report folder. Trains and caches a demo model on "
        "first use.",
    )
    parser.add_argument("--out", default="demo-output", help="report folder")
    parser.add_argument("--model", help="serve this model instead of the cached demo model")
    parser.add_argument("--sample", default="letters", help="sample kind of the test area")
    parser.add_argument("--epie-iterations", type=int, default=60)
    parser.add_argument("--no-tiled", action="store_true", help="skip the local Tiled server")
    parser.add_argument(
        "--no-continual", action="store_true", help="skip the continual-learning loop"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-patterns", type=int, help="training frames of the demo model")
    parser.add_argument("--train-epochs", type=int, help="training epochs of the demo model")
    parser.set_defaults(func=run)
