"""Adaptive scanning against fixed patterns at equal points (and so equal dose).

    bluesky-ptychonn bench adaptive --json OUT [--quick] [--extra "--sample KIND"]
    python benchmarks/bench_adaptive.py --json OUT [--quick] [--sample KIND |
        --sample image --sample-image PATH] [--field-um F] [--fractions 0.1,0.2,...]

On the simulated beamline (a sample with empty regions and features: letters scattered over
a large field, a circuit-like layout, or any grey-level image), each strategy places N points
in the field; the phase patch at each point is the sample's true phase there (an *ideal
network*: the benchmark measures where the points go, not the network's error), trusted where
the beam's Gaussian weight exceeds ``--trust`` of its peak, and the patches are stitched into
a mosaic with the live stitcher's `Mosaic`. Each mosaic is scored against the truth over the
whole field (phase RMS after gauge removal and SSIM, `metrics.compare`). Strategies:
``adaptive`` (`MosaicAgent`, no-overlap mode, batches of ``--batch`` points, reading the live
mosaic after every batch), ``uniform`` (sparse grid), ``random``, ``spiral`` (Fermat) at each
N, and ``dense_raster`` (step = beam size x (1 - ``--dense-overlap``)) once.

Records: ``strategy``, ``points``, ``phase_rms_rad``, ``ssim``, ``dose_photons``, ``sample``;
then one ``summary`` record per strategy with ``points_to_match_dense`` (the fewest points
whose SSIM is within 0.02 of the dense raster's, None if never) and its ratio to the dense
raster's points; then ``suggest_timing`` (ms for ``suggest(64)`` on a mid-scan agent, median
of repeats). The goals (issue 16) are printed as met or missed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bluesky_ptychonn.adaptive import AgentOptions, MosaicAgent
from bluesky_ptychonn.adaptive.maps import patch_structure
from bluesky_ptychonn.adaptive.strategies import fermat_spiral_points, random_points, uniform_grid
from bluesky_ptychonn.commands.bench import write_records
from bluesky_ptychonn.geometry import PixelGrid
from bluesky_ptychonn.metrics import compare
from bluesky_ptychonn.sim import SimBeamline, SimBeamlineConfig
from bluesky_ptychonn.sim.scans import raster_scan
from bluesky_ptychonn.stitch.mosaic import Mosaic
from bluesky_ptychonn.stitch.weights import gaussian_weight

SSIM_MARGIN = 0.02
SAMPLE_OPTIONS = {
    "letters": {"fill_fraction": 0.06, "letter_height_m": (300e-9, 900e-9)},
    "circuit": {},
    "image": {},
}


class Field:
    """The simulated sample, its truth over the field and a mosaic factory."""

    def __init__(self, sample: str, field_m: float, image: str | None, seed: int):
        options = dict(SAMPLE_OPTIONS.get(sample, {}))
        if sample == "image" and image:
            options["image"] = image
        config = SimBeamlineConfig(
            sample=sample, field_of_view_m=(field_m, field_m), sample_options=options, seed=seed
        )
        self.beamline = SimBeamline(config)
        self.sample = sample
        self.photons = config.photons
        self.beam_m = self.beamline.beam_size_on_sample_m
        self.pixel_m = self.beamline.pixel_size_m
        half = field_m / 2
        self.region_m = (-half, half, -half, half)
        n = int(round(field_m / self.pixel_m))
        self.grid = PixelGrid(self.pixel_m, (-half + self.pixel_m / 2,) * 2, (n, n))
        sample_grid = self.beamline.sample.grid
        r0, c0 = (int(round(v)) for v in sample_grid.to_pixels(np.array([self.grid.origin_m]))[0])
        self.truth = np.exp(1j * np.angle(self.beamline.sample.array[r0 : r0 + n, c0 : c0 + n]))

    def new_mosaic(self, trust: float) -> Mosaic:
        shape = self.beamline.readout_shape
        weight = gaussian_weight(shape, fwhm_px=self.beam_m / self.pixel_m)
        weight[weight < trust] = 0.0
        return Mosaic(self.grid, weight, align_phase=True)

    def footprint_m(self, trust: float) -> float:
        """Diameter where the Gaussian patch weight (FWHM = beam) exceeds ``trust``, m."""
        sigma = self.beam_m / (2 * np.sqrt(2 * np.log(2)))
        return float(2 * sigma * np.sqrt(2 * np.log(1 / trust)))

    def snap(self, positions_m: np.ndarray) -> np.ndarray:
        """Positions on the object pixel lattice (the mosaic places patches on whole pixels:
        off-lattice truth patches would blur where they overlap, favouring sparse scans)."""
        o = np.array(self.grid.origin_m)
        return o + np.round((np.asarray(positions_m) - o) / self.pixel_m) * self.pixel_m

    def phases(self, positions_m: np.ndarray) -> np.ndarray:
        return np.angle(self.beamline.ground_truth_patches(positions_m)).astype(np.float32)

    def score(self, mosaic: Mosaic) -> dict[str, float]:
        snap = mosaic.snapshot()
        estimate = np.exp(1j * snap.phase) * (snap.weights > 0)
        estimate[snap.weights <= 0] = 1.0  # unmeasured: phase 0, unit amplitude
        m = compare(estimate, self.truth)
        return {"phase_rms_rad": m["phase_rms_rad"], "ssim": m["phase_ssim"]}


def run_fixed(field: Field, positions: np.ndarray, trust: float) -> dict[str, float]:
    mosaic = field.new_mosaic(trust)
    for start in range(0, len(positions), 256):
        chunk = field.snap(positions[start : start + 256])
        mosaic.add(field.phases(chunk), None, chunk)
    return field.score(mosaic)


def run_adaptive(
    field: Field, n_points: int, trust: float, batch: int, seed: int, **options: float
) -> tuple[dict[str, float], MosaicAgent]:
    agent = MosaicAgent(
        AgentOptions(
            region_m=field.region_m,
            beam_size_m=field.beam_m,
            budget_points=n_points,
            mode="no_overlap",
            footprint_m=field.footprint_m(trust),
            photons_per_point=field.photons,
            seed=seed,
            **options,
        )
    )
    mosaic = field.new_mosaic(trust)
    weight = mosaic.weight
    while not agent.should_stop()[0]:
        suggestions = agent.suggest(batch)
        if not suggestions:
            break
        positions = field.snap([[s["beam_y_m"], s["beam_x_m"]] for s in suggestions])
        phases = field.phases(positions)
        mosaic.add(phases, None, positions)
        agent.ingest(
            [
                {"_id": s["_id"], "structure_rad_per_m": patch_structure(p, field.pixel_m, weight)}
                for s, p in zip(suggestions, phases, strict=True)
            ]
        )
        agent.observe_mosaic(mosaic.snapshot())
    return field.score(mosaic), agent


def time_suggest(field: Field, trust: float, repeats: int) -> dict[str, Any]:
    """ms for suggest(64) on an agent over a 12 um square region (the beam and footprint of
    ``field``) that has measured an 82-point survey (structure values seeded at random)."""
    times = []
    rng = np.random.default_rng(0)
    region = (-6e-6, 6e-6, -6e-6, 6e-6)
    for _ in range(repeats):
        agent = MosaicAgent(
            AgentOptions(
                region_m=region,
                beam_size_m=field.beam_m,
                footprint_m=field.footprint_m(trust),
                budget_points=4096,
                survey_fraction=82 / 4096,
            )
        )
        survey = agent.suggest(82)
        agent.ingest(
            [{"_id": p["_id"], "structure_rad_per_m": float(rng.exponential(1e7))} for p in survey]
        )
        t0 = time.perf_counter()
        got = agent.suggest(64)
        times.append((time.perf_counter() - t0) * 1e3)
        if len(got) != 64:
            raise RuntimeError(f"suggest(64) gave {len(got)} points")
    return {
        "record": "suggest_timing",
        "points": 64,
        "ms_median": float(np.median(times)),
        "ms_max": float(np.max(times)),
        "repeats": repeats,
        "map_cells": int(np.prod(agent.map.grid.shape)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", required=True)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sample", default=None, help="letters | circuit | image | any kind")
    parser.add_argument("--sample-image", default=None, help="grey-level image for --sample image")
    parser.add_argument("--field-um", type=float, default=None, help="field width, um")
    parser.add_argument(
        "--fractions",
        default=None,
        help="points as fractions of the dense raster's, comma-separated",
    )
    parser.add_argument(
        "--trust",
        type=float,
        default=0.1,
        help="patch weight below this share of its peak is not trusted",
    )
    parser.add_argument("--dense-overlap", type=float, default=0.5)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--weight-explore",
        type=float,
        default=None,
        help="the agent's weight_explore (default: its own)",
    )
    args = parser.parse_args(argv)
    if args.sample == "image" and args.sample_image and not Path(args.sample_image).is_file():
        parser.error(f"--sample-image {args.sample_image} does not exist")
    samples = (
        [args.sample] if args.sample else (["letters"] if args.quick else ["letters", "circuit"])
    )
    field_m = (args.field_um or (5.0 if args.quick else 10.0)) * 1e-6
    fractions = (
        [float(f) for f in args.fractions.split(",")]
        if args.fractions
        else ([0.15, 0.3, 0.45] if args.quick else [0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6])
    )
    records: list[dict[str, Any]] = []
    for sample in samples:
        field = Field(sample, field_m, args.sample_image, args.seed)
        step = field.beam_m * (1 - args.dense_overlap)
        dense = raster_scan((field_m - 1e-12, field_m - 1e-12), step)
        base = {
            "sample": sample,
            "field_m": field_m,
            "beam_size_m": field.beam_m,
            "photons_per_point": field.photons,
        }
        t0 = time.perf_counter()
        scores = run_fixed(field, dense, args.trust)
        records.append(
            {
                **base,
                "strategy": "dense_raster",
                "points": len(dense),
                "dose_photons": len(dense) * field.photons,
                **scores,
                "wall_s": time.perf_counter() - t0,
            }
        )
        print(json.dumps(records[-1]), flush=True)
        counts = sorted({max(4, int(round(f * len(dense)))) for f in fractions})
        for n in counts:
            for strategy in ("adaptive", "uniform", "random", "spiral"):
                t0 = time.perf_counter()
                extra: dict[str, Any] = {}
                if strategy == "adaptive":
                    options = {}
                    if args.weight_explore is not None:
                        options["weight_explore"] = args.weight_explore
                    scores, agent = run_adaptive(
                        field, n, args.trust, args.batch, args.seed, **options
                    )
                    reasons: dict[str, int] = {}
                    for rec in agent.history:
                        reasons[rec["reason"]] = reasons.get(rec["reason"], 0) + 1
                    extra = {
                        "measured": len(agent.measured),
                        "reasons": reasons,
                        "stop_reason": agent.should_stop()[1],
                    }
                    used = len(agent.measured)
                else:
                    positions = {"uniform": uniform_grid, "spiral": fermat_spiral_points}.get(
                        strategy, lambda r, k: random_points(r, k, seed=args.seed)
                    )(field.region_m, n)
                    scores = run_fixed(field, positions, args.trust)
                    used = len(positions)
                records.append(
                    {
                        **base,
                        "strategy": strategy,
                        "points": used,
                        "dose_photons": used * field.photons,
                        **scores,
                        **extra,
                        "wall_s": time.perf_counter() - t0,
                    }
                )
                print(json.dumps(records[-1]), flush=True)
        dense_ssim = [
            r for r in records if r.get("sample") == sample and r.get("strategy") == "dense_raster"
        ][0]["ssim"]
        for strategy in ("adaptive", "uniform", "random", "spiral"):
            rows = sorted(
                (r for r in records if r.get("sample") == sample and r.get("strategy") == strategy),
                key=lambda r: r["points"],
            )
            hit = next((r["points"] for r in rows if r["ssim"] >= dense_ssim - SSIM_MARGIN), None)
            records.append(
                {
                    "record": "summary",
                    "sample": sample,
                    "strategy": strategy,
                    "dense_points": len(dense),
                    "dense_ssim": dense_ssim,
                    "points_to_match_dense": hit,
                    "fraction_of_dense": None if hit is None else hit / len(dense),
                }
            )
            print(json.dumps(records[-1]), flush=True)
        for n in counts:
            a = [
                r
                for r in records
                if r.get("sample") == sample
                and r.get("strategy") == "adaptive"
                and "record" not in r
                and abs(r["points"] - n) <= 0
            ]
            u = [
                r
                for r in records
                if r.get("sample") == sample
                and r.get("strategy") == "uniform"
                and "record" not in r
                and r["points"] == n
            ]
            if a and u:
                records.append(
                    {
                        "record": "gain_over_uniform",
                        "sample": sample,
                        "points": n,
                        "ssim_gain": a[0]["ssim"] - u[0]["ssim"],
                    }
                )
                print(json.dumps(records[-1]), flush=True)
    records.append({**time_suggest(field, args.trust, 3 if args.quick else 7)})
    print(json.dumps(records[-1]), flush=True)
    write_records(args.json, records, default=float)
    return 0


if __name__ == "__main__":
    sys.exit(main())
