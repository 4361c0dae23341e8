"""Continual learning on the simulated beamline: the paper's Fig. 5 with the package's own loop.

A network trained on etched samples (the demo model's recipe) serves while a series of scans of
a sample kind it never saw arrives (letters 0.4-1.2 um high by default, the demo's test sample),
each a new region. The continual-learning loop (`retrain.loop.ContinualLoop`, its heavy steps on
a local Dask cluster of niced workers) processes every scan: ePIE labels, the gate, training,
promotion. The model that was in service when each scan arrived stitches that scan (the live image
it gave) and is scored against the ground truth and against the loop's ePIE of the same scan
(phase RMS after removing the global phase, shift and ramp; phase SSIM; FRC half-bit
resolution) on the mosaic's canvas. After the adaptation scans come ``--steady-scans`` more of
the same kind, each gated (recheck interval 0), to count false retrains; at the end the model is
scored again on an etched scan (forgetting). Last, one loop pass on a ``--pass-patterns`` scan is
timed while an ONNX Runtime engine of the model infers at full rate in this process; its rate is
compared with its idle rate measured in the same run.

Goals (issue 13): live-image phase error within 1.5x of ePIE's after at most 3 scans; no
retraining over 10 further scans of the same kind; the etched kind loses at most 0.02 SSIM;
one pass for a 500-pattern scan within 10 minutes on 2 cores.

    bluesky-ptychonn bench continual --json benchmarks/results/continual.json [--quick]
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from bluesky_ptychonn.commands.bench import write_records

HERE = Path(__file__).resolve().parent
NEW_KIND = ("letters", {"letter_height_m": (0.4e-6, 1.2e-6)})
OLD_KIND = ("etched", {})


def make_scan(
    folder: Path, name: str, kind: tuple[str, dict], seed: int, extent_m: float, overlap: float
) -> tuple[Path, Any]:
    """A spiral scan of a new region (seed) of one sample kind: (CXI path, PtychoDataset)."""
    from bluesky_ptychonn.sim import SimBeamline, SimBeamlineConfig
    from bluesky_ptychonn.sim.scans import scan_positions
    from bluesky_ptychonn.storage.cxi import write_cxi

    sample, options = kind
    beamline = SimBeamline(
        SimBeamlineConfig(sample=sample, sample_options=dict(options), seed=seed, photons=1e6)
    )
    positions = scan_positions(
        "spiral", (extent_m, extent_m), beamline.beam_size_on_sample_m, overlap, seed=seed
    )
    dataset = beamline.measure(positions)
    return write_cxi(folder / f"{name}.cxi", dataset, overwrite=True), dataset


def epie_object(dataset: Any, iterations: int) -> tuple[Any, float]:
    from bluesky_ptychonn.recon import EPIEOptions, reconstruct

    started = time.perf_counter()
    result = reconstruct(dataset, EPIEOptions(iterations=iterations))
    return result.object, time.perf_counter() - started


def loop_epie(loop: Any, path: Path, dataset: Any, iterations: int) -> tuple[Any, float]:
    """ePIE of a scan: the loop's own reconstruction when it made one, else a new one."""
    from bluesky_ptychonn.storage.cxi import read_reconstruction

    made = loop.state_dir / "labels" / f"{path.stem}-recon.cxi"
    if made.is_file():
        return read_reconstruction(made).object, float("nan")
    return epie_object(dataset, iterations)


def score_live_image(
    model_dir: str, dataset: Any, epie: Any, snapshot: Any = None
) -> dict[str, Any]:
    """The model's stitched image of a scan against the truth and ePIE, and ePIE's own error
    (``snapshot``: that image when already made)."""
    from bluesky_ptychonn.retrain.evaluate import (
        covered_region,
        network_mosaic,
        on_canvas,
        score_image,
    )

    if snapshot is None:
        snapshot = network_mosaic(model_dir, dataset)
    region = covered_region(snapshot)
    truth = on_canvas(dataset.ground_truth, snapshot)
    epie_on = on_canvas(epie, snapshot)
    network = score_image(snapshot.complex, truth, region)
    reference = score_image(epie_on, truth, region)
    return {
        "model_version": snapshot.model_version,
        "network_vs_truth": network,
        "epie_vs_truth": reference,
        "network_vs_epie": score_image(snapshot.complex, epie_on, region),
        "phase_rms_ratio_network_over_epie": network["phase_rms_rad"]
        / max(reference["phase_rms_rad"], 1e-12),
        "region_pixels": int(region.sum()),
        "mosaic_pixel_size_m": float(snapshot.pixel_size_m),
    }


def network_mosaic(model_dir: str, dataset: Any) -> Any:
    from bluesky_ptychonn.retrain.evaluate import network_mosaic as mosaic_of

    return mosaic_of(model_dir, dataset)


def live_mosaic_seed(snapshot: Any, work: Path, name: str) -> Path:
    """The live image written as the seed file the dispatcher hands the loop."""
    from bluesky_ptychonn.retrain.dispatcher import write_seed
    from bluesky_ptychonn.retrain.mosaics import seed_image

    image = seed_image(
        snapshot.phase,
        snapshot.amplitude,
        snapshot.weights,
        snapshot.pixel_size_m,
        snapshot.origin_m,
    )
    return write_seed(work / "scans" / f"{name}-mosaic.cxi", image, name)


def ceiling_rows(dataset: Any, model: Path, epie: Any) -> list[dict[str, Any]]:
    """The best live image a network with a given input can give: the truth cut into labels at
    every position on that network's label grid, stitched exactly as the live image is, and
    scored against the truth (as `score_live_image` scores a network's), beside ePIE's image
    (``epie``) and the model's own live image on the same canvas."""
    import types

    from bluesky_ptychonn.model.checkpoint import load_model
    from bluesky_ptychonn.model.data import label_weights, training_set_from_reconstruction
    from bluesky_ptychonn.model.preprocessing import Preprocessing
    from bluesky_ptychonn.retrain.evaluate import covered_region, on_canvas, score_image
    from bluesky_ptychonn.stitch.mosaic import Mosaic

    side = dataset.pattern_shape[0]
    _, sidecar = load_model(model)
    inputs = [(sidecar.preprocessing.input_shape[0], sidecar.preprocessing.reduce, "the model's")]
    inputs += [(side // 2, "bin", ""), (side, "crop", "")]
    truth_recon = types.SimpleNamespace(
        object=dataset.ground_truth, positions_m=None, probe=dataset.probe, algorithm="truth"
    )
    rows = []
    for px, reduce, note in inputs:
        prep = Preprocessing(input_shape=(px, px), frame_shape=(side, side), reduce=reduce)
        labels = training_set_from_reconstruction(
            truth_recon, dataset, prep, normalise_amplitude=False
        ).labels
        pixel = float(prep.object_patch_geometry(dataset.object_pixel_size_m)[0])
        mosaic = Mosaic.covering(
            dataset.positions_m,
            pixel,
            label_weights(dataset.probe, prep),
            align_phase=True,
            keep_patches_bytes=1 << 30,
        )
        mosaic.add(labels[:, 0], labels[:, 1], dataset.positions_m)
        mosaic.synchronise()
        snap = mosaic.snapshot(model_version="truth-labels")
        truth, region = on_canvas(dataset.ground_truth, snap), covered_region(snap)
        ceiling = score_image(snap.complex, truth, region)
        reference = score_image(on_canvas(epie, snap), truth, region)
        rows.append(
            {
                "kind": "ceiling",
                "input_px": px,
                "reduce": reduce,
                "mosaic_pixel_size_m": pixel,
                "note": note,
                "truth_labels_stitched_vs_truth": ceiling,
                "epie_vs_truth": reference,
                "best_phase_rms_ratio_over_epie": ceiling["phase_rms_rad"]
                / max(reference["phase_rms_rad"], 1e-12),
            }
        )
        if note:
            live = network_mosaic(str(model), dataset)
            rows[-1]["model_live_image_vs_truth"] = score_image(
                live.complex, on_canvas(dataset.ground_truth, live), covered_region(live)
            )
        print(f"ceiling: {rows[-1]}", flush=True)
    return rows


def seeding_study(args: argparse.Namespace, work: Path, model: Path) -> list[dict[str, Any]]:
    """ePIE of one new-kind scan seeded by the live image against ePIE from scratch, at the
    same iteration counts: phase RMS and SSIM against the truth over the scan's core, the data
    error, the wall time (one process, the same threads)."""
    from bluesky_ptychonn.metrics import compare
    from bluesky_ptychonn.recon import options_from_dict, reconstruct
    from bluesky_ptychonn.recon.quality import reference_on_grid
    from bluesky_ptychonn.retrain.labels import seed_from_mosaic
    from bluesky_ptychonn.retrain.mosaics import seed_image

    _, dataset = make_scan(work / "scans", "seeding", NEW_KIND, 202, args.extent_m, args.overlap)
    snapshot = network_mosaic(str(model), dataset)
    live = seed_image(
        snapshot.phase,
        snapshot.amplitude,
        snapshot.weights,
        snapshot.pixel_size_m,
        snapshot.origin_m,
    )

    def score(obj: Any) -> dict[str, float]:
        truth = reference_on_grid(dataset.ground_truth, obj)
        h, w = obj.array.shape
        core = (slice(h // 5, 4 * h // 5), slice(w // 5, 4 * w // 5))
        scores = compare(obj.array[core], truth[core], np.ones(truth[core].shape, bool))
        return {k: float(scores[k]) for k in ("phase_rms_rad", "phase_ssim")}

    rows = []
    counts = (5, 10, 20) if args.quick else (10, 20, 30, 50, 100)
    for seeded in (True, False):
        for iterations in counts:
            options = options_from_dict({"iterations": iterations, "progress": False})
            initial = seed_from_mosaic(live, dataset, options)[0] if seeded else None
            started = time.perf_counter()
            result = reconstruct(dataset, options, initial_object=initial)
            rows.append(
                {
                    "kind": "seeding",
                    "seeded_by_live_image": seeded,
                    "iterations": iterations,
                    "seconds": round(time.perf_counter() - started, 2),
                    "data_error": float(result.error_history[-1]),
                    **score(result.object),
                }
            )
            print(f"seeding: {rows[-1]}", flush=True)
    return rows + ceiling_rows(dataset, model, result.object)  # the longest unseeded ePIE


def initial_model(args: argparse.Namespace) -> Path:
    from bluesky_ptychonn.model.demo_model import DemoModelRecipe, ensure_demo_model

    if args.model:
        return Path(args.model)
    import torch

    torch.set_num_threads(args.threads)  # two threads on two busy cores stall in spin-waits
    recipe = DemoModelRecipe()
    if args.quick:
        recipe = DemoModelRecipe(n_patterns=2000, n_samples=8, epochs=4)
    elif args.recipe_patterns or args.recipe_epochs:
        recipe = DemoModelRecipe(
            n_patterns=args.recipe_patterns or recipe.n_patterns,
            epochs=args.recipe_epochs or recipe.epochs,
        )
    return ensure_demo_model(recipe)


def engine_rate(model_dir: Path, frames: np.ndarray, seconds: float, threads: int) -> float:
    """Frames/s of an ONNX Runtime engine of the model inferring batches for ``seconds``."""
    from bluesky_ptychonn.inference import load_engine
    from bluesky_ptychonn.model.checkpoint import load_model

    _, sidecar = load_model(model_dir)
    engine = load_engine(model_dir, "onnxruntime", threads=threads)
    inputs = sidecar.preprocessing.apply(frames[:32]).astype(np.float32)
    engine.run(inputs)
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        engine.run(inputs)
        done += inputs.shape[0]
    rate = done / (time.perf_counter() - started)
    close = getattr(engine, "close", None)
    if close is not None:
        close()
    return rate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench continual", description=__doc__.splitlines()[0])
    parser.add_argument("--json", required=True, help="output JSON file")
    parser.add_argument("--quick", action="store_true", help="a few-minute smoke run")
    parser.add_argument("--model", help="initial model (default: the demo model, trained once)")
    parser.add_argument(
        "--recipe-patterns", type=int, help="etched training patterns of the initial model"
    )
    parser.add_argument("--recipe-epochs", type=int, help="epochs of the initial model")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (1)")
    parser.add_argument("--adapt-scans", type=int, default=3, help="scans of the new kind (3)")
    parser.add_argument("--steady-scans", type=int, default=10, help="further scans (10)")
    parser.add_argument(
        "--extent-m", type=float, default=3.4e-6, help="spiral diameter, m (3.4e-6: ~400 patterns)"
    )
    parser.add_argument("--overlap", type=float, default=0.6, help="spiral overlap (0.6)")
    parser.add_argument("--iterations", type=int, default=100, help="ePIE iterations (100)")
    parser.add_argument(
        "--seeded-iterations",
        type=int,
        default=None,
        help="ePIE iterations when seeded by the live image (default: the loop's)",
    )
    parser.add_argument(
        "--no-seed", action="store_true", help="do not seed ePIE with the live image"
    )
    parser.add_argument(
        "--seeding-only",
        action="store_true",
        help="only compare ePIE seeded by the live image with ePIE from scratch",
    )
    parser.add_argument("--epochs", type=int, default=50, help="fine-tuning epochs (50)")
    parser.add_argument("--tolerance", type=float, default=0.10, help="gate tolerance (0.10)")
    parser.add_argument("--pass-patterns", type=int, default=500, help="timed pass size (500)")
    parser.add_argument("--skip-pass", action="store_true", help="skip the timed 500-scan pass")
    parser.add_argument("--keep", action="store_true", help="keep the scans and loop state")
    parser.add_argument(
        "--figure",
        default=str(HERE.parent / "docs" / "figures" / "continual-learning.png"),
        help="the figure to write ('' for none)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.adapt_scans, args.steady_scans = 2, 2
        args.extent_m, args.iterations, args.epochs = 1.0e-6, 30, 5
        args.pass_patterns = 120
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("bluesky_ptychonn.retrain").setLevel(logging.INFO)
    for noisy in ("distributed", "onnx_ir", "bluesky_ptychonn.model.export"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    from bluesky_ptychonn.retrain.executors import DaskExecutor
    from bluesky_ptychonn.retrain.loop import ContinualLoop
    from bluesky_ptychonn.retrain.options import LoopOptions

    work = Path(args.json).with_suffix("")
    work = work.parent / f"{work.name}-work"
    shutil.rmtree(work, ignore_errors=True)
    (work / "scans").mkdir(parents=True)
    started = time.perf_counter()
    model = initial_model(args)
    print(f"initial model: {model}", flush=True)
    if args.seeding_only:
        write_records(args.json, seeding_study(args, work, model), default=float)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        return 0

    n_new = args.adapt_scans + args.steady_scans
    scans = [
        make_scan(work / "scans", f"new{i:02d}", NEW_KIND, 100 + i, args.extent_m, args.overlap)
        for i in range(n_new)
    ]
    old_path, old_data = make_scan(work / "scans", "old", OLD_KIND, 7, args.extent_m, args.overlap)
    old_epie, _ = epie_object(old_data, args.iterations)
    old_before = score_live_image(str(model), old_data, old_epie)

    options = LoopOptions.from_mapping(
        {
            "gate": {"tolerance_ssim": args.tolerance, "recheck_interval_s": 0.0},
            "train": {"epochs": args.epochs, "threads": args.threads},
            "recon": {"iterations": args.iterations},
            "seed": {"live_mosaic": not args.no_seed, "iterations": args.seeded_iterations},
        }
    )
    executor = DaskExecutor({"kind": "local", "n_workers": 1, "threads_per_worker": 1})
    loop = ContinualLoop(work / "state", options, executor=executor, model_dir=model)
    records: list[dict[str, Any]] = []
    try:
        for i, (path, dataset) in enumerate(scans):
            serving = loop.model_path  # the model whose live image this scan would show
            snapshot = network_mosaic(serving, dataset)  # the scan's live image
            seed = None if args.no_seed else live_mosaic_seed(snapshot, work, path.stem)
            record = loop.process_scan(path, path.stem, initial_object_path=seed)
            epie, epie_s = loop_epie(loop, path, dataset, args.iterations)
            live = score_live_image(serving, dataset, epie, snapshot)
            phase = "adapt" if i < args.adapt_scans else "steady"
            entry = {
                "kind": "scan",
                "phase": phase,
                "index": i,
                "scan": path.name,
                "n_patterns": int(dataset.n_patterns),
                "live_image_before_this_scan": live,
                "epie_seconds": round(epie_s, 2),
                "decision": record.decision,
                "reason": record.reason,
                "mismatch": record.mismatch,
                "trained": record.trained,
                "promoted": record.promoted,
                "promotion_reason": record.promotion_reason,
                "model_version_after": record.model_version,
                "steps_s": record.steps,
                "labels": record.labels,
                "seeded_by_live_mosaic": seed is not None,
                "seconds": record.seconds,
                "error": record.error,
            }
            records.append(entry)
            ratio = live["phase_rms_ratio_network_over_epie"]
            print(
                f"[{time.perf_counter() - started:6.0f} s] {path.name} ({phase}): live image "
                f"{live['network_vs_truth']['phase_rms_rad']:.3f} rad "
                f"(ePIE {live['epie_vs_truth']['phase_rms_rad']:.3f}, x{ratio:.2f}) -> "
                f"{record.decision}: {record.reason}",
                flush=True,
            )
        last_path, last_data = make_scan(
            work / "scans", "new-final", NEW_KIND, 999, args.extent_m, args.overlap
        )
        final_epie, _ = epie_object(last_data, args.iterations)
        final_live = score_live_image(loop.model_path, last_data, final_epie)
        old_after = score_live_image(loop.model_path, old_data, old_epie)
        timed = None
        if not args.skip_pass:
            timed = timed_pass(args, work, loop, model)
    finally:
        executor.close()

    adapt = [r for r in records if r["phase"] == "adapt"]
    steady = [r for r in records if r["phase"] == "steady"]
    ratios = [
        r["live_image_before_this_scan"]["phase_rms_ratio_network_over_epie"] for r in records
    ]
    ratios.append(final_live["phase_rms_ratio_network_over_epie"])
    # the live image on the scan after scan k is ratios[k + 1]
    reached = next((k + 1 for k in range(len(ratios) - 1) if ratios[k + 1] <= 1.5), None)
    forgetting = (
        old_before["network_vs_truth"]["phase_ssim"] - old_after["network_vs_truth"]["phase_ssim"]
    )
    summary = {
        "kind": "summary",
        "initial_model": str(model),
        "new_kind": NEW_KIND[0],
        "adapt_decisions": [r["decision"] for r in adapt],
        "steady_decisions": [r["decision"] for r in steady],
        "false_retrains": sum(1 for r in steady if r["trained"]),
        "phase_rms_ratio_by_scan": ratios,
        "scans_until_within_1p5x_of_epie": reached,
        "final_live_image": final_live,
        "old_kind_before": old_before,
        "old_kind_after": old_after,
        "old_kind_ssim_loss": forgetting,
        "timed_pass": timed,
        "goals": {
            "within_1p5x_after_at_most_3_scans": reached is not None and reached <= 3,
            "no_false_retrains": all(not r["trained"] for r in steady),
            "old_kind_loses_at_most_0p02_ssim": forgetting <= 0.02,
            "pass_within_10_min": None if timed is None else timed["loop_seconds"] <= 600,
        },
        "settings": vars(args),
        "seconds": round(time.perf_counter() - started, 1),
    }
    if args.figure:
        summary["figure"] = str(figure(records, summary, Path(args.figure)))
    write_records(args.json, [*records, summary], default=float)
    print(f"wrote {args.json}: goals {summary['goals']}", flush=True)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def figure(records: list[dict[str, Any]], summary: dict[str, Any], path: Path) -> Path:
    """Fig. 5A-like: live-image and ePIE phase error per scan, decisions marked."""
    from matplotlib.figure import Figure

    scans = [r for r in records if r["kind"] == "scan"]
    x = np.arange(1, len(scans) + 1)
    live = [r["live_image_before_this_scan"] for r in scans]
    fig = Figure(figsize=(9, 4.2), layout="constrained")
    ax = fig.subplots()
    ax.plot(x, [v["network_vs_truth"]["phase_rms_rad"] for v in live], "o-", label="live image")
    ax.plot(x, [v["epie_vs_truth"]["phase_rms_rad"] for v in live], "s--", label="ePIE")
    marks = {"fine_tune": "^", "train_from_scratch": "^", "resume": "^", "suspend": "v"}
    for xi, r, v in zip(x, scans, live, strict=True):
        if r["promoted"]:
            ax.annotate(
                "new model",
                (xi, v["network_vs_truth"]["phase_rms_rad"]),
                textcoords="offset points",
                xytext=(0, 8),
                ha="center",
                fontsize=7,
            )
        ax.plot(xi, 0, marks.get(r["decision"], "x"), color="gray")
    adapt = sum(1 for r in scans if r["phase"] == "adapt")
    ax.axvline(adapt + 0.5, color="gray", lw=0.8)
    ax.set_xticks(x)
    ax.set_xlabel("scan of the new sample kind (gray: ^ retrain decided, v suspended)")
    ax.set_ylabel("phase RMS error vs truth (rad)")
    ax.set_title(
        f"continual learning on {summary['new_kind']}: live image of each scan with the model "
        "in service when it arrived",
        fontsize=9,
    )
    ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def timed_pass(args: argparse.Namespace, work: Path, loop: Any, model: Path) -> dict[str, Any]:
    """One full pass (ePIE, labels, training, export) on a bigger scan, with an engine at work."""
    from bluesky_ptychonn.model.export import export_onnx
    from bluesky_ptychonn.retrain.executors import DaskExecutor
    from bluesky_ptychonn.retrain.loop import ContinualLoop
    from bluesky_ptychonn.retrain.options import LoopOptions

    extent = args.extent_m
    path, dataset = make_scan(work / "scans", "pass", NEW_KIND, 5000, extent, args.overlap)
    while dataset.n_patterns < args.pass_patterns:
        extent *= 1.25
        path, dataset = make_scan(work / "scans", "pass", NEW_KIND, 5000, extent, args.overlap)
    serving = work / "serving"
    shutil.copytree(loop.model_path, serving)
    if not (serving / "model.onnx").is_file():
        export_onnx(serving / "model.safetensors", serving / "model.onnx")
    frames = np.asarray(dataset.patterns[:64])
    idle = engine_rate(serving, frames, 10.0, threads=1)
    options = LoopOptions.from_mapping(
        {
            "gate": {"tolerance_ssim": 1e-6, "recheck_interval_s": 0.0},  # always fine-tune
            "train": {"epochs": args.epochs, "threads": args.threads},
            "recon": {"iterations": args.iterations},
            "seed": {"live_mosaic": not args.no_seed, "iterations": args.seeded_iterations},
        }
    )
    seed = None
    if not args.no_seed:  # the scan's live image, as the session's stitcher hands it over
        seed = live_mosaic_seed(network_mosaic(str(serving), dataset), work, "pass")
    executor = DaskExecutor({"kind": "local", "n_workers": 1, "threads_per_worker": 1})
    pass_loop = ContinualLoop(work / "pass-state", options, executor=executor, model_dir=serving)
    executor.handle  # noqa: B018  (start the cluster before the clock)
    result: dict[str, Any] = {}
    runner = threading.Thread(
        target=lambda: result.setdefault(
            "r", pass_loop.process_scan(path, initial_object_path=seed)
        )
    )
    started = time.perf_counter()
    runner.start()
    rates = []
    while runner.is_alive():
        rates.append(engine_rate(serving, frames, 5.0, threads=1))
    runner.join()
    seconds = time.perf_counter() - started
    executor.close()
    record = result["r"]
    busy = float(np.mean(rates)) if rates else float("nan")
    return {
        "n_patterns": int(dataset.n_patterns),
        "loop_seconds": round(seconds, 1),
        "steps_s": record.steps,
        "decision": record.decision,
        "trained": record.trained,
        "error": record.error,
        "engine_threads": 1,
        "engine_idle_frames_per_s": idle,
        "engine_during_pass_frames_per_s": busy,
        "engine_rate_ratio_during_over_idle": busy / idle,
    }


if __name__ == "__main__":
    sys.exit(main())
