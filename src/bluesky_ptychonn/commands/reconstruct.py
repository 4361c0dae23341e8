"""`bluesky-ptychonn reconstruct FILE.cxi --out RECON.cxi`: iterative reconstruction of a scan.

Reads a CXI file (patterns, translations and, if present, a probe), runs ePIE or alternating
projections (`recon.reconstruct`), writes a CXI file with the scan and the reconstruction in
``/entry_1/image_1`` (object, probe, positions, error history, settings) and a PNG of phase,
amplitude, probe and error curve next to it. With ``--assess`` the ground-truth-free quality
check (`recon.assessment.assess_reconstruction`) goes into the settings and is printed. A
reconstruction that diverges is refused: one sentence on stderr, exit status 1, no file.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text}")
    return value


def build_options(args: argparse.Namespace):
    """The option dataclass the arguments describe (raises ValueError on bad combinations)."""
    from ..recon import (
        APOptions,
        EPIEOptions,
        ObjectOptions,
        PositionOptions,
        ProbeOptions,
        SyncOptions,
    )

    probe = ProbeOptions(
        update=not args.fixed_probe,
        initial="data" if args.probe_from_data else "auto",
        power_constraint=args.probe_power_constraint,
    )
    if args.trial_iterations is not None:
        probe.trial_iterations = args.trial_iterations
    if args.probe_modes is not None:
        probe.modes = args.probe_modes
    obj = ObjectOptions()
    if args.regularisation is not None:
        obj.regularisation = args.regularisation
    positions = PositionOptions(correct=args.correct_positions)
    if args.position_start is not None:
        positions.start_iteration = args.position_start
    if args.position_max_shift is not None:
        positions.max_shift_px = args.position_max_shift
    if args.algorithm != "epie" and (
        args.correct_positions
        or args.position_start is not None
        or args.position_max_shift is not None
    ):
        raise ValueError("--correct-positions and its options apply to --algorithm epie")
    common = dict(
        iterations=args.iterations,
        object=obj,
        probe=probe,
        device=args.device,
        seed=args.seed,
        progress=not args.quiet,
    )
    if args.algorithm == "epie":
        if args.sync_every:
            raise ValueError(
                "--sync-every applies to --algorithm ap (ePIE keeps no set of frames to "
                "synchronise)"
            )
        options = EPIEOptions(
            batch_size=args.batch_size,
            shuffle=not args.fixed_order,
            positions=positions,
            **common,
        )
    else:
        options = APOptions(sync=SyncOptions(every=args.sync_every), **common)
    options.validate()
    return options


def build_thresholds(args: argparse.Namespace):
    """The `AssessmentThresholds` the arguments describe."""
    from ..recon.assessment import AssessmentThresholds

    given = {
        name: getattr(args, name)
        for name in ("max_noise_ratio", "max_error_trend", "max_resolution_px", "frc_threshold")
        if getattr(args, name) is not None
    }
    if given.get("max_resolution_px") == 0:
        given["max_resolution_px"] = None
    thresholds = AssessmentThresholds(**given)
    thresholds.validate()
    return thresholds


def run(args: argparse.Namespace) -> int:
    from ..recon import ReconstructionDiverged, make_task
    from ..recon.assessment import assess_reconstruction
    from ..recon.figure import plot_reconstruction
    from ..storage.cxi import read_cxi, write_cxi

    source = Path(args.file)
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
    if out.resolve() == source.resolve():
        raise ValueError("--out must differ from the input file")
    png = Path(args.png) if args.png else out.with_suffix(".png")
    options = build_options(args)
    thresholds = build_thresholds(args) if args.assess else None
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    dataset = read_cxi(source, translation_sign=args.translation_sign)
    initial_object = None
    if args.initial_object:
        from ..recon.seed import seed_object
        from ..storage.cxi import read_reconstruction

        # resampled to the data's object grid; refused when it does not cover the scan
        initial_object = seed_object(
            dataset,
            read_reconstruction(args.initial_object).object,
            margin_px=options.object.margin_px,
        )
    # validates the data before any iteration
    task = make_task(dataset, options, initial_object=initial_object)
    log.info(
        "%s: %d patterns %dx%d, object %dx%d px of %.3g nm, probe from %s, device %s",
        source.name,
        task.scan.n_frames,
        *task.frame_shape,
        *task.object_shape,
        task.scan.grid.pixel_size_m * 1e9,
        task.scan.probe_source,
        task.device,
    )
    try:
        task.run()
    except ReconstructionDiverged as error:
        print(f"bluesky-ptychonn reconstruct: {error}; nothing written", file=sys.stderr)
        return 1
    result = task.result()
    assessment = None
    if args.assess:
        assessment = assess_reconstruction(
            dataset, task, options, half_scan=not args.no_half_scan, thresholds=thresholds
        ).to_dict()
        result.settings["assessment"] = assessment
        shown = {k: v for k, v in assessment.items() if k not in ("frc", "frc_frequency")}
        print(json.dumps({"assessment": shown}))
        if not assessment["passed"]:
            log.warning("the reconstruction failed its check: %s", "; ".join(assessment["reasons"]))
    write_cxi(out, dataset, result, overwrite=args.overwrite)
    plot_reconstruction(
        result, png, title=f"{source.name}: {result.algorithm}, {task.iteration} iterations"
    )
    summary = {
        "out": str(out),
        "png": str(png),
        "iterations": task.iteration,
        "final_error": result.error_history[-1] if result.error_history.size else None,
        "seconds": round(task.seconds, 3),
        "patterns_per_s": round(task.patterns_per_second, 1),
        "probe_source": task.probe_source,
        "probe_modes": task.n_modes,
    }
    if initial_object is not None:
        summary["initial_object"] = str(args.initial_object)
    run_info = result.settings["run"]
    if "position_correction_rms_px" in run_info:
        summary["position_correction_rms_px"] = round(run_info["position_correction_rms_px"], 4)
    if assessment is not None:
        summary["assessment_passed"] = assessment["passed"]
    print(json.dumps(summary))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "reconstruct",
        help="iterative reconstruction (ePIE or alternating projections) of a CXI scan",
        description=__doc__,
    )
    parser.add_argument("file", help="input CXI file (patterns, translations, optional probe)")
    parser.add_argument("--out", required=True, help="output CXI file (scan + /entry_1/image_1)")
    parser.add_argument("--algorithm", choices=("epie", "ap"), default="epie")
    parser.add_argument("--iterations", type=_non_negative_int, default=100)
    parser.add_argument(
        "--batch-size",
        type=_positive_int,
        default=32,
        help="ePIE positions per vectorised batch (default 32)",
    )
    parser.add_argument(
        "--sync-every",
        type=_non_negative_int,
        default=0,
        help="AP: synchronise frame phases every K iterations (0: never)",
    )
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu")
    parser.add_argument("--seed", type=int, default=0, help="seed of the position order")
    parser.add_argument(
        "--threads",
        type=_positive_int,
        help="CPU threads for torch (default: torch's choice; 1 is often fastest on a busy "
        "machine)",
    )
    parser.add_argument(
        "--fixed-order",
        action="store_true",
        help="ePIE: one random position order for all iterations",
    )
    parser.add_argument("--fixed-probe", action="store_true", help="do not refine the probe")
    parser.add_argument(
        "--probe-from-data",
        action="store_true",
        help="ignore the file's probe and build one from the data",
    )
    parser.add_argument(
        "--probe-power-constraint",
        action="store_true",
        help="keep the probe's power at the mean counts of a pattern",
    )
    parser.add_argument(
        "--trial-iterations",
        type=_non_negative_int,
        help="ePIE: iterations of the trial of candidate probe starts (the file's and probes "
        "built from the data) before the best is kept; 0 keeps the given start (default: "
        "ProbeOptions.trial_iterations)",
    )
    parser.add_argument(
        "--probe-modes",
        type=_positive_int,
        help="ePIE: mutually incoherent probe modes (partial coherence); written to the CXI "
        "probe as (M, H, W) (default: ProbeOptions.modes, 1)",
    )
    parser.add_argument(
        "--regularisation",
        type=float,
        help="ePIE object step: 1 is the classic ePIE step (divided by the batch's peak "
        "illumination), smaller values the rPIE-style regularised step (default: "
        "ObjectOptions.regularisation)",
    )
    parser.add_argument(
        "--correct-positions",
        action="store_true",
        help="ePIE: refine the scan positions (pty-chi's gradient method, bounded steps); the "
        "refined positions go into the output's /entry_1/image_1/translation",
    )
    parser.add_argument(
        "--position-start",
        type=_non_negative_int,
        help="--correct-positions: first iteration that moves positions (default: "
        "PositionOptions.start_iteration)",
    )
    parser.add_argument(
        "--position-max-shift",
        type=float,
        help="--correct-positions: largest correction of a coordinate, in object pixels "
        "(default: PositionOptions.max_shift_px)",
    )
    parser.add_argument(
        "--assess",
        action="store_true",
        help="judge the result without a ground truth (data error against the Poisson noise "
        "floor, error trend, half-scan FRC resolution); stored in the settings and printed",
    )
    parser.add_argument(
        "--no-half-scan",
        action="store_true",
        help="--assess without the two half-scan reconstructions (no FRC resolution)",
    )
    parser.add_argument(
        "--max-noise-ratio",
        type=float,
        help="--assess: largest data error / Poisson noise floor that passes (default: "
        "recon.assessment.AssessmentThresholds, as for the next three)",
    )
    parser.add_argument(
        "--max-error-trend",
        type=float,
        help="--assess: largest last / lowest iteration error that passes",
    )
    parser.add_argument(
        "--max-resolution-px",
        type=float,
        help="--assess: largest half-scan FRC resolution (object pixels, half period) that "
        "passes; 0 does not judge it",
    )
    parser.add_argument(
        "--frc-threshold",
        choices=("half-bit", "1/7"),
        help="--assess: FRC threshold for the resolution",
    )
    parser.add_argument(
        "--translation-sign",
        type=int,
        choices=(1, -1),
        default=1,
        help="-1 when the file's translations are sample-stage displacements",
    )
    parser.add_argument(
        "--initial-object",
        help="start from the object of this CXI reconstruction (e.g. `infer --out`'s network "
        "image), resampled to the data's object pixel size; refused when it does not cover "
        "the scanned region",
    )
    parser.add_argument("--png", help="figure path (default: OUT with .png)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)
