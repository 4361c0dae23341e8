"""`bluesky-ptychonn simulate`: a simulated scan written as CXI (with ground truth) + a figure."""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def add_beamline_arguments(parser: argparse.ArgumentParser) -> None:
    """Options that define a simulated beamline and scan (shared with `demo`)."""
    from ..sim.detector import DETECTOR_PRESETS
    from ..sim.samples import SAMPLE_KINDS
    from ..sim.scans import SCAN_PATTERNS

    group = parser.add_argument_group("simulated beamline")
    group.add_argument("--sample", default="etched", choices=sorted(SAMPLE_KINDS))
    group.add_argument("--sample-image", help="image file for --sample image")
    group.add_argument("--material", default="gold", help="feature material (default: gold)")
    group.add_argument("--thickness", type=float, default=500e-9, help="feature depth, m")
    group.add_argument("--detector", default="eiger", help=f"one of {sorted(DETECTOR_PRESETS)}")
    group.add_argument("--energy", type=float, default=10_000.0, help="photon energy, eV")
    group.add_argument(
        "--distance", type=float, default=None, help="detector distance, m (default: 10 nm pixels)"
    )
    group.add_argument("--beam-size", type=float, default=60e-9, help="focal spot FWHM, m")
    group.add_argument("--defocus", type=float, default=250e-6, help="defocus, m (0: in focus)")
    group.add_argument(
        "--probe-kind", default="zone-plate", choices=["zone-plate", "airy", "gaussian"]
    )
    group.add_argument("--photons", type=float, default=1e6, help="incident photons per frame")
    group.add_argument("--seed", type=int, default=0, help="seed of sample and noise")
    scan = parser.add_argument_group("scan")
    scan.add_argument("--scan", default="spiral", choices=SCAN_PATTERNS)
    scan.add_argument("--overlap", type=float, default=0.7, help="1 - step / beam size (< 1)")
    scan.add_argument("--extent", type=float, default=2e-6, help="side of the scanned area, m")
    scan.add_argument("--jitter", type=float, default=0.0, help="raster jitter, fraction of step")


def beamline_from_args(args: argparse.Namespace):
    """Validate every option and build (SimBeamline, positions); raises ValueError early."""
    from ..sim import SimBeamline, SimBeamlineConfig
    from ..sim.scans import scan_positions, step_from_overlap

    if not (args.extent > 0):
        raise ValueError(f"--extent must be a positive length in metres, got {args.extent}")
    step_from_overlap(1.0, args.overlap)  # overlap >= 1 is refused before any work
    options: dict[str, Any] = {}
    if args.sample_image:
        if args.sample != "image":
            raise ValueError("--sample-image needs --sample image")
        options["image"] = args.sample_image
    config = SimBeamlineConfig(
        detector=args.detector,
        energy_ev=args.energy,
        distance_m=args.distance,
        beam_size_m=args.beam_size,
        defocus_m=args.defocus,
        probe_kind=args.probe_kind,
        photons=args.photons,
        sample=args.sample,
        material=args.material,
        thickness_m=args.thickness,
        field_of_view_m=(args.extent, args.extent),
        sample_options=options,
        seed=args.seed,
    )
    beamline = SimBeamline(config)
    positions = scan_positions(
        args.scan,
        (args.extent, args.extent),
        beamline.beam_size_on_sample_m,
        args.overlap,
        jitter_fraction=args.jitter,
        seed=args.seed,
    )
    return beamline, positions


def simulate_to_cxi(
    args: argparse.Namespace, out: Path, figure: Path | None, overwrite: bool
) -> dict[str, Any]:
    """Simulate the scan the options describe, write CXI (+ PNG); return a summary dict."""
    from ..sim.scans import overlap_ratio
    from ..storage.cxi import write_cxi

    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
    beamline, positions = beamline_from_args(args)
    start = time.perf_counter()
    dataset = beamline.measure(positions, seed=args.seed)
    seconds = time.perf_counter() - start
    dataset.metadata.update(
        {"scan": {"pattern": args.scan, "overlap": args.overlap, "extent_m": args.extent}}
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    write_cxi(out, dataset, overwrite=overwrite)
    summary = {
        "cxi": str(out),
        "frames": dataset.n_patterns,
        "pattern_shape": list(dataset.pattern_shape),
        "object_pixel_size_m": beamline.pixel_size_m,
        "beam_size_on_sample_m": beamline.beam_size_on_sample_m,
        "overlap_requested": args.overlap,
        "overlap_measured": overlap_ratio(positions, beamline.beam_size_on_sample_m)
        if len(positions) > 1
        else None,
        "mean_counts_per_frame": float(dataset.patterns.reshape(len(positions), -1).sum(1).mean()),
        "saturated_pixel_fraction": float(
            (dataset.patterns >= beamline.detector.saturation_counts).mean()
        ),
        "simulated_frames_per_s": dataset.n_patterns / seconds,
    }
    if figure is not None:
        from ..plots import plot_dataset

        summary["figure"] = str(plot_dataset(dataset, figure))
    return summary


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    figure = Path(args.figure) if args.figure else out.with_suffix(".png")
    summary = simulate_to_cxi(args, out, None if args.no_figure else figure, args.overwrite)
    print(json.dumps(summary, indent=2))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "simulate",
        help="simulate a scan on the simulated beamline and write CXI + PNG",
        description="Simulate a ptychographic scan (diffraction patterns, positions, probe and "
        "the ground-truth object) and write it as a CXI file and a PNG figure.",
    )
    add_beamline_arguments(parser)
    parser.add_argument("--out", required=True, help="output CXI file")
    parser.add_argument("--figure", help="output PNG (default: next to --out)")
    parser.add_argument("--no-figure", action="store_true", help="write no PNG")
    parser.add_argument("--overwrite", action="store_true", help="replace existing files")
    parser.set_defaults(func=run)
