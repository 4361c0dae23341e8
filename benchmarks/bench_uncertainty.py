"""Knowing when the live image is wrong: the uncertainty head, an ensemble, the physics check.

One run, everything side by side on the simulated beamline (the demo's geometry: 128 x 128
Eiger frames cropped to 32 x 32, zone-plate probe 250 um out of focus, 1e6 photons a frame):

1. **Uncertainty, head vs ensemble.** An edge model with the uncertainty head (Laplace NLL,
   `model.uncertainty`) and an ensemble of ``--members`` plain models (different seeds; the
   stated sigma is the members' circular phase spread) are trained on the same etched
   patterns; both are calibrated on one held-out etched set (`intervals.fit_scale`), then
   scored on held-out sets of the training kind and of kinds never trained on (letters, a
   Siemens star, a drifted probe, pure noise): coverage of the 50/68/90/95 % intervals before
   and after calibration, the Spearman correlation of stated sigma with the absolute error,
   the phase MAE, and a reliability table (stated sigma vs measured RMS error, by bin).
2. **Engines.** The calibrated head through ONNX Runtime fp32 and int8 (coverage measured
   again on the int8 graph's own outputs) and PyTorch; throughput of the head model against
   the same model without the head, and the cost of the physics residual as a ratio to
   inference (same engine, same batches).
3. **Physics residual.** Per-frame residual (`inference.physics`) by kind, its separation
   (median of the kind / median of the training kind; fraction of frames above the training
   kind's 99.9th percentile), and a live detector on a run (rolling median of ``--window``
   frames above the training kind's median plus ``--z`` standard errors of such a median):
   false alarms per in-distribution frame, and frames from a switch of sample kind / probe to
   the alarm.
4. **Mosaic.** A spiral scan of a new etched sample stitched with the probe weight and with
   inverse-variance weighting: phase RMS (gauge removed), SSIM and FRC against the ground
   truth, and the coverage of the mosaic's stated sigma (correlated vs independent errors).

    bluesky-ptychonn bench uncertainty --json benchmarks/results/uncertainty.json [--quick]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

from bluesky_ptychonn.commands.bench import write_records

HERE = Path(__file__).resolve().parent
# (label, simulate_training_set options): held-out kinds; "etched" is the training kind
KINDS = (
    ("etched", {}),
    ("letters", {"sample": "letters", "sample_options": {"letter_height_m": (400e-9, 1200e-9)}}),
    ("siemens-star", {"sample": "siemens-star"}),
    ("drifted-probe", {"defocus_m": 350e-6}),
)


def _circular_std(phases: np.ndarray) -> np.ndarray:
    """(K, N, H, W) member phases -> (N, H, W) circular standard deviation (rad)."""
    r = np.abs(np.mean(np.exp(1j * phases), axis=0))
    return np.sqrt(-2.0 * np.log(np.clip(r, 1e-6, 1.0))).astype(np.float32)


def _circular_mean(phases: np.ndarray) -> np.ndarray:
    return np.angle(np.mean(np.exp(1j * phases), axis=0)).astype(np.float32)


def _scores(errors: np.ndarray, sigma: np.ndarray, scale: float) -> dict:
    from bluesky_ptychonn import intervals

    return {
        "phase_mae_rad": float(np.mean(np.abs(errors))),
        "sigma_mean_rad": float(np.mean(sigma * scale)),
        "spearman_sigma_vs_abs_error": intervals.spearman(sigma, np.abs(errors)),
        "coverage_before": intervals.coverage(errors, sigma),
        "coverage_after": intervals.coverage(errors, sigma * scale),
        "reliability": intervals.reliability(errors, sigma * scale, bins=8),
    }


def _time_per_frame(fn, repeats: int) -> float:
    fn()  # warm
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _rolling_median(values: np.ndarray, window: int) -> np.ndarray:
    from numpy.lib.stride_tricks import sliding_window_view

    return np.median(sliding_window_view(values, window), axis=1)


def main(argv: list[str] | None = None) -> int:  # noqa: PLR0915 - one benchmark, one story
    parser = argparse.ArgumentParser(prog="bench uncertainty", description=__doc__.splitlines()[0])
    parser.add_argument("--json", required=True, help="output JSON file")
    parser.add_argument("--quick", action="store_true", help="a smoke run (about a minute)")
    parser.add_argument("--patterns", type=int, default=8000, help="training patterns (8000)")
    parser.add_argument("--epochs", type=int, default=12, help="epochs per model (12)")
    parser.add_argument("--members", type=int, default=3, help="ensemble members (3)")
    parser.add_argument("--test-patterns", type=int, default=400, help="per held-out kind")
    parser.add_argument("--run-frames", type=int, default=10000, help="in-distribution run")
    parser.add_argument("--window", type=int, default=32, help="live detector window (frames)")
    parser.add_argument("--z", type=float, default=5.0, help="live detector threshold (z)")
    parser.add_argument("--threads", type=int, default=1, help="torch / ORT threads (1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--figure", help="also draw the reliability diagram into this PNG (docs/figures/...)"
    )
    parser.add_argument(
        "--figure-from", metavar="JSON", help="only draw --figure from an earlier run's JSON"
    )
    args = parser.parse_args(argv)
    if args.figure_from:
        import json

        reliability_figure(json.loads(Path(args.figure_from).read_text()), args.figure)
        return 0
    logging.basicConfig(level=logging.WARNING)
    if args.quick:
        args.patterns, args.epochs, args.members = 1200, 3, 2
        args.test_patterns, args.run_frames = 120, 1000

    import torch

    from bluesky_ptychonn import intervals
    from bluesky_ptychonn.inference import load_engine
    from bluesky_ptychonn.inference.physics import PhysicsCheck
    from bluesky_ptychonn.model import (
        ModelConfig,
        Preprocessing,
        TrainingOptions,
        fit,
        predict,
        save_model,
        simulate_training_set,
    )
    from bluesky_ptychonn.model.data import illuminated_mask
    from bluesky_ptychonn.model.uncertainty import calibration_section, phase_errors

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    draft = Preprocessing((32, 32), (128, 128), "crop")
    train = simulate_training_set(args.patterns, draft, n_samples=24, seed=args.seed)
    calibration = simulate_training_set(args.test_patterns, draft, n_samples=4, seed=9000)
    prep = Preprocessing.fit(train.frames, (32, 32), (128, 128))
    mask = illuminated_mask(train.weights)
    options = dict(
        epochs=args.epochs,
        learning_rate=3e-3,
        half_cycle_epochs=max(1.0, args.epochs / 2),
        batch_size=16,
        num_threads=args.threads,
        progress=sys.stderr.isatty(),
    )

    def config(uncertainty: bool) -> ModelConfig:
        return ModelConfig.preset(
            "edge", input_shape=32, base_channels=8, depth=3, batch_norm=True,
            uncertainty=uncertainty,
        )  # fmt: skip

    # ---- 1. head vs ensemble ------------------------------------------------------------------
    t0 = time.perf_counter()
    head, prep, provenance = fit(
        train, config(True), TrainingOptions(seed=args.seed, **options), preprocessing=prep
    )
    head_train_s = time.perf_counter() - t0
    members, member_s = [], []
    for k in range(args.members):
        t0 = time.perf_counter()
        result, _, member_provenance = fit(
            train, config(False), TrainingOptions(seed=args.seed + k, **options), preprocessing=prep
        )
        member_s.append(time.perf_counter() - t0)
        members.append(result.model)
        if k == 0:
            plain_provenance = member_provenance

    def head_run(d):
        out = predict(head.model, prep.apply(d.frames))
        return out[:, 0], out[:, 2], out

    def ensemble_run(d):
        x = prep.apply(d.frames)
        phases = np.stack([predict(m, x)[:, 0] for m in members])
        return _circular_mean(phases), _circular_std(phases), None

    def errors_sigma(run, d):
        phase, sigma, _ = run(d)
        e = phase_errors(phase[:, None], d.labels)[:, mask]
        return e, sigma[:, mask]

    sections = {}
    for name, run in (("head", head_run), ("ensemble", ensemble_run)):
        e, s = errors_sigma(run, calibration)
        sections[name] = calibration_section(e, s, pairs=len(calibration))
    noise_frames = (
        np.random.default_rng(5)
        .poisson(float(calibration.frames.mean()), (args.test_patterns, 128, 128))
        .astype(np.uint16)
    )
    tests = {}
    for i, (label, kw) in enumerate(KINDS):
        tests[label] = simulate_training_set(
            args.test_patterns, draft, n_samples=3, seed=2000 + i, **kw
        )
    records = []
    settings = {
        "train_patterns": args.patterns,
        "epochs": args.epochs,
        "members": args.members,
        "threads": args.threads,
        "cpu_cores": len(os.sched_getaffinity(0)),
        "head_train_seconds": round(head_train_s, 1),
        "member_train_seconds": [round(s, 1) for s in member_s],
    }
    for method, run in (("head", head_run), ("ensemble", ensemble_run)):
        scale = sections[method]["calibration_scale"]
        for label, d in tests.items():
            e, s = errors_sigma(run, d)
            records.append(
                {"section": "uncertainty", "method": method, "kind": label,
                 "trained_on": label == "etched", "calibration_scale": scale,
                 **_scores(e, s, scale)}
            )  # fmt: skip
        _, s, _ = run(type("Frames", (), {"frames": noise_frames})())
        records.append(
            {"section": "uncertainty", "method": method, "kind": "noise",
             "trained_on": False, "sigma_mean_rad": float(np.mean(s[:, mask]) * scale)}
        )  # fmt: skip

    # ---- 2. engines: calibration survives export, cost ---------------------------------------
    folder = HERE / "results" / "models" / ("uncertainty-quick" if args.quick else "uncertainty")
    save_model(
        head.model, folder / "head", prep, training=provenance,
        uncertainty=sections["head"], probe=train.probe,
    )  # fmt: skip
    save_model(members[0], folder / "plain", prep, training=plain_provenance, probe=train.probe)
    check = PhysicsCheck(train.probe, prep)
    batch = calibration.frames[:32]
    x = prep.apply(batch)
    engines = (("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("pytorch", "fp32"))
    for backend, precision in engines:
        engine = load_engine(folder / "head", backend, precision=precision, threads=args.threads)
        plain = load_engine(folder / "plain", backend, precision=precision, threads=args.threads)
        out = engine.run_batched(prep.apply(calibration.frames))
        e = phase_errors(out, calibration.labels)[:, mask]
        # the engine already applied the fp32 calibration: coverage of its calibrated output
        coverage = intervals.coverage(e, out[:, 2][:, mask])
        t_head = _time_per_frame(lambda engine=engine: engine.run(x), 5) / len(x)
        t_plain = _time_per_frame(lambda plain=plain: plain.run(x), 5) / len(x)
        y = engine.run(x)
        t_residual = _time_per_frame(lambda y=y: check.residuals(batch, y), 5) / len(x)
        records.append(
            {"section": "engine", "backend": backend, "precision": precision,
             "coverage_calibrated": coverage,
             "spearman_sigma_vs_abs_error": intervals.spearman(out[:, 2][:, mask], np.abs(e)),
             "infer_us_per_frame_head": t_head * 1e6, "infer_us_per_frame_plain": t_plain * 1e6,
             "head_over_plain_time": t_head / t_plain,
             "residual_us_per_frame": t_residual * 1e6,
             "residual_over_infer_time": t_residual / t_head,
             "throughput_with_both_over_plain": t_plain / (t_head + t_residual),
             "batch": len(x)}
        )  # fmt: skip
        engine.close()
        plain.close()

    # ---- 3. physics residual -----------------------------------------------------------------
    def residuals(frames: np.ndarray) -> np.ndarray:
        out = predict(head.model, prep.apply(frames))
        return check.residuals(frames, out)

    reference = residuals(calibration.frames)
    threshold = float(np.percentile(reference, 99.9))
    base = float(np.median(reference))
    # the live detector: the rolling median of W frames against the training kind's median
    # plus z standard errors of a median of W frames (sigma from the MAD of single frames)
    spread = 1.4826 * float(np.median(np.abs(reference - base)))
    window_threshold = base + args.z * 1.2533 * spread / np.sqrt(args.window)
    by_kind = {label: residuals(d.frames) for label, d in tests.items()}
    by_kind["noise"] = residuals(noise_frames)
    labels_out = np.concatenate(
        [calibration.labels, np.zeros_like(calibration.labels[:, :1])], axis=1
    )
    truth_residual = check.residuals(calibration.frames, labels_out)
    for label, r in by_kind.items():
        records.append(
            {"section": "residual", "kind": label, "median": float(np.median(r)),
             "p01": float(np.percentile(r, 1)), "p99": float(np.percentile(r, 99)),
             "separation_median_ratio": float(np.median(r)) / base,
             "fraction_above_threshold": float(np.mean(r > threshold)),
             "threshold_p99_9_training_kind": threshold}
        )  # fmt: skip
    records.append(
        {"section": "residual", "kind": "ground-truth patches (the forward model's floor)",
         "median": float(np.median(truth_residual)),
         "p99": float(np.percentile(truth_residual, 99))}
    )  # fmt: skip
    run = simulate_training_set(args.run_frames, draft, n_samples=8, seed=3000)
    run_medians = _rolling_median(residuals(run.frames), args.window)
    false_alarms = int(np.sum(run_medians > window_threshold))
    for label in ("siemens-star", "drifted-probe", "letters"):
        switched = residuals(tests[label].frames[:200])
        tail = residuals(run.frames[-args.window :])
        series = _rolling_median(np.concatenate([tail, switched]), args.window)
        above = np.nonzero(series[1:] > window_threshold)[0]
        records.append(
            {"section": "live-detector", "switch_to": label, "window_frames": args.window,
             "z": args.z, "window_threshold": window_threshold,
             "run_window_median_max": float(run_medians.max()),
             "frames_to_alarm": None if above.size == 0 else int(above[0] + 1),
             "in_distribution_frames": int(args.run_frames),
             "false_alarm_windows": false_alarms,
             "false_alarms_per_10000_frames": false_alarms / args.run_frames * 1e4}
        )  # fmt: skip

    # ---- 4. the mosaic -----------------------------------------------------------------------
    records += _mosaic_records(folder / "head", args)
    for r in records:
        r.update(settings)
    records.append({"section": "run", "seconds": round(time.perf_counter() - started, 1),
                    "calibration": {k: sections[k] for k in sections}})  # fmt: skip
    out = write_records(args.json, records, indent=1, default=float)
    for r in records:
        brief = {k: v for k, v in r.items() if k not in settings and k != "reliability"}
        print(brief, flush=True)
    print(f"wrote {out}", file=sys.stderr)
    if args.figure:
        reliability_figure(records, args.figure)
    return 0


def reliability_figure(records: list[dict], path: str) -> Path:
    """Stated sigma against measured RMS error, per kind, head and ensemble (one PNG)."""
    from matplotlib.figure import Figure

    rows = [r for r in records if r.get("section") == "uncertainty" and "reliability" in r]
    methods = sorted({r["method"] for r in rows})
    fig = Figure(figsize=(4.2 * len(methods), 4.0), layout="constrained")
    for i, method in enumerate(methods):
        ax = fig.add_subplot(1, len(methods), i + 1)
        top = 0.0
        for r in (r for r in rows if r["method"] == method):
            table = r["reliability"]
            cover = r["coverage_after"]["0.9"]
            ax.plot(table["stated_sigma_rad"], table["rms_error_rad"], "o-", ms=3,
                    label=f"{r['kind']} (90 %: {cover:.0%})")  # fmt: skip
            top = max(top, *table["stated_sigma_rad"], *table["rms_error_rad"])
        ax.plot([0, top], [0, top], "k--", lw=0.8, label="calibrated")
        ax.set_xlabel("stated phase sigma (rad)")
        ax.set_ylabel("measured RMS phase error (rad)")
        ax.set_title(f"{method}: calibrated on held-out etched")
        ax.legend(fontsize=7)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    return out


def _mosaic_records(model_dir: Path, args) -> list[dict]:
    """A spiral of a new etched sample stitched two ways, scored against the truth."""
    from bluesky_ptychonn import intervals
    from bluesky_ptychonn.inference import load_engine
    from bluesky_ptychonn.metrics import align_to_reference, compare
    from bluesky_ptychonn.model.data import label_weights
    from bluesky_ptychonn.retrain.evaluate import covered_region, on_canvas
    from bluesky_ptychonn.sim import SimBeamline, SimBeamlineConfig
    from bluesky_ptychonn.sim.scans import scan_positions
    from bluesky_ptychonn.stitch.mosaic import Mosaic
    from bluesky_ptychonn.stitch.uncertainty import InverseVarianceMosaic, UncertaintyMosaic

    records = []
    engine = load_engine(model_dir, "onnxruntime", threads=args.threads)
    prep = engine.preprocessing
    for kind, overlap in (("etched", 0.6), ("etched", 0.3), ("siemens-star", 0.6)):
        beamline = SimBeamline(
            SimBeamlineConfig(sample=kind, photons=1e6, defocus_m=250e-6, seed=77)
        )
        extent = (1.2e-6, 1.2e-6) if args.quick else (2.5e-6, 2.5e-6)
        positions = scan_positions(
            "spiral", extent, beamline.beam_size_on_sample_m, overlap=overlap
        )
        data = beamline.measure(positions)
        out = engine.infer(np.asarray(data.patterns))
        pixel = float(prep.object_patch_geometry(data.object_pixel_size_m)[0])
        weight = label_weights(data.probe, prep)
        truth = None
        for weighting in ("probe", "inverse_variance"):
            cls = InverseVarianceMosaic if weighting == "inverse_variance" else Mosaic
            mosaic = cls.covering(
                data.positions_m, pixel, weight, align_phase=True, keep_patches_bytes=1 << 30
            )
            sigma_mosaic = UncertaintyMosaic(mosaic.grid, mosaic.weight)
            if weighting == "inverse_variance":
                mosaic.add_with_uncertainty(out[:, 0], out[:, 1], out[:, 2], data.positions_m)
                v = InverseVarianceMosaic.variance_weights(out[:, 2])
            else:
                mosaic.add(out[:, 0], out[:, 1], data.positions_m)
                v = None
            sigma_mosaic.add(out[:, 2], data.positions_m, v)
            mosaic.synchronise()
            snap = mosaic.snapshot()
            if truth is None:
                truth = on_canvas(beamline.sample, snap)
            region = covered_region(snap)
            estimate = snap.amplitude * np.exp(1j * snap.phase)
            scores = compare(estimate, truth, region)
            aligned = align_to_reference(estimate, truth, region)
            error = np.angle(aligned.aligned * np.conj(truth))[aligned.region]
            coverage = {
                errors: intervals.coverage(error, sigma_mosaic.sigma(errors)[aligned.region])
                for errors in ("correlated", "independent")
            }
            records.append(
                {"section": "mosaic", "sample": kind, "overlap": overlap, "weighting": weighting,
                 "patches": len(positions), "phase_rms_rad": scores["phase_rms_rad"],
                 "phase_ssim": scores["phase_ssim"],
                 "frc_half_bit_resolution_px": scores["frc_half_bit_resolution_px"],
                 "sigma_coverage": coverage,
                 "spearman_sigma_vs_abs_error": intervals.spearman(
                     sigma_mosaic.sigma()[aligned.region], np.abs(error))}
            )  # fmt: skip
    engine.close()
    return records


if __name__ == "__main__":
    sys.exit(main())
