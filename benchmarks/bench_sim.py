"""Simulated-beamline throughput: frames/s delivered by `SimBeamline.stream`.

Compared in the same run with (a) the detector's maximum frame rate (can the simulated twin
keep up with the real detector?) and (b) a straightforward per-frame implementation of the same
physics (numpy FFTs with fftshift rolls, one frame at a time), the reference the batched,
precomputed forward model is measured against. Writes a JSON list of records.

    bluesky-ptychonn bench sim --json benchmarks/results/sim.json [--quick]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import warnings

import numpy as np

from bluesky_ptychonn.commands.bench import write_records
from bluesky_ptychonn.geometry import patch_corners
from bluesky_ptychonn.sim import SimBeamline, SimBeamlineConfig
from bluesky_ptychonn.sim.scans import fermat_spiral


def naive_frames(beamline: SimBeamline, positions_m: np.ndarray, rng) -> np.ndarray:
    """One frame at a time: shift the probe, multiply, FFT with rolls, count, read out."""
    probe = beamline.probe
    n = probe.shape[0]
    grid = beamline.sample.grid
    obj = beamline.sample.array
    fy = np.fft.fftfreq(n)[:, None]
    fx = np.fft.fftfreq(n)[None, :]
    probe_ft = np.fft.fft2(np.fft.ifftshift(probe))
    out = []
    for position in positions_m:
        corner, offset = patch_corners(grid.to_pixels(position[None]), (n, n))
        (r0, c0), (dy, dx) = corner[0], offset[0]
        shifted = np.fft.fftshift(
            np.fft.ifft2(probe_ft * np.exp(-2j * np.pi * (fy * dy + fx * dx)))
        )
        wave = shifted * obj[r0 : r0 + n, c0 : c0 + n]
        intensity = np.abs(np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(wave), norm="ortho"))) ** 2
        out.append(beamline.detector.read_out(intensity[None], rng)[0])
    return np.stack(out)


def rate(function, args: tuple, n_frames: int, repeats: int) -> float:
    """Frames per second of ``function(*args)`` producing ``n_frames``, best of ``repeats``."""
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        function(*args)
        best = min(best, time.perf_counter() - start)
    return n_frames / best


def stream_all(beamline: SimBeamline, positions_m: np.ndarray, batch: int) -> int:
    return sum(frames.shape[0] for _, frames in beamline.stream(positions_m, batch))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", required=True)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    records = []
    batches = (16, 64) if args.quick else (1, 16, 64, 256)
    for detector, n_frames in (
        ("eiger", 512 if args.quick else 4096),
        ("medipix3", 64 if args.quick else 512),
    ):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            beamline = SimBeamline(
                SimBeamlineConfig(detector=detector, field_of_view_m=(3e-6, 3e-6))
            )
        positions = fermat_spiral(1.4e-6, n_points=n_frames)
        rng = np.random.default_rng(0)
        naive_n = min(n_frames, 256)
        naive = rate(
            naive_frames, (beamline, positions[:naive_n], rng), naive_n, 1 if args.quick else 2
        )
        for batch in batches:
            measured = rate(
                stream_all, (beamline, positions, batch), n_frames, 1 if args.quick else 3
            )
            records.append(
                {
                    "benchmark": "sim_stream",
                    "detector": detector,
                    "batch": batch,
                    "frames": n_frames,
                    "frames_per_s": measured,
                    "detector_max_rate_hz": beamline.detector.max_frame_rate_hz,
                    "ratio_vs_detector_rate": measured / beamline.detector.max_frame_rate_hz,
                    "reference": "naive per-frame numpy",
                    "reference_frames_per_s": naive,
                    "speedup_vs_reference": measured / naive,
                    "quick": args.quick,
                    "cpu_count": os.cpu_count(),
                    "machine": platform.machine(),
                }
            )
            print(
                f"{detector:9s} batch {batch:4d}: {measured:8.0f} frames/s "
                f"({measured / beamline.detector.max_frame_rate_hz:4.2f}x detector rate, "
                f"{measured / naive:4.2f}x naive)"
            )
    write_records(args.json, records)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
