"""Inference engines: frames/s and latency for every backend x precision x batch, both models.

For each model ("ptychonn", "edge") and every engine this machine can run (PyTorch eager fp32,
the reference; PyTorch channels-last fp32 and bf16; ONNX Runtime fp32 and int8 on CPU, the
int8 graph with its output convs in fp32, and with the decoders' last up block in fp32 too;
where a GPU is present, PyTorch fp16 + CUDA graphs, ONNX Runtime CUDA and TensorRT fp16 /
fp32), at batch 1, 8, 32 and 64:

* ``frames_per_s``: frames through ``engine.run`` per second of wall time (median of several
  rounds; engines take turns round by round, so drifting load from other processes hits them
  alike);
* ``p50_ms`` / ``p99_ms``: latency of one ``run`` call (one batch), milliseconds;
* ``ssim_vs_fp32``: mean per-patch phase SSIM of the engine's output against the reference's
  on held-out simulated patterns (1.0 for the reference itself), and
  ``max_abs_phase_diff_rad``;
* ``speedup_vs_reference``: frames_per_s / the reference's at the same batch, same run.

Engines that cannot run here (TensorRT without TensorRT or a GPU, ...) get one record with
``frames_per_s: null`` and ``unavailable``: the reason. Timings exclude preprocessing (reported
once per model as ``preprocess_frames_per_s``).

The models are trained briefly on simulated etched samples unless given (``--edge``,
``--ptychonn``): the speed does not depend on the weights, and a trained model gives the
reduced-precision comparison real structure to lose. Trained models are kept under
``benchmarks/results/models/`` and reused.

    bluesky-ptychonn bench inference --json benchmarks/results/inference.json [--quick]
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from bluesky_ptychonn.commands.bench import write_records

HERE = Path(__file__).resolve().parent
BATCHES = (1, 8, 32, 64)
log = logging.getLogger("bench.inference")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        return os.cpu_count() or 1


def _train(
    name: str, folder: Path, quick: bool, threads: int, patterns: int = 1200, epochs: int = 3
) -> Path:
    """A briefly trained model of the family member ``name`` (reused when present)."""
    import torch

    from bluesky_ptychonn.model import (
        ModelConfig,
        Preprocessing,
        TrainingOptions,
        fit,
        save_model,
        simulate_training_set,
    )

    if (folder / "model.json").is_file():
        return folder
    config = ModelConfig.preset(name, batch_norm=True)
    n, epochs = (96, 1) if quick else (patterns, epochs)
    draft = Preprocessing(config.input_shape, (128, 128), "crop")
    data = simulate_training_set(n, draft, n_samples=8, seed=11)
    log.info("training a %s model for the benchmark (%d patterns, %d epochs)", name, n, epochs)
    torch.manual_seed(0)
    result, prep, provenance = fit(
        data,
        config,
        TrainingOptions(
            epochs=epochs,
            batch_size=16,
            progress=False,
            num_threads=threads,
            # the brief default keeps its first settings (its cached model stays valid);
            # longer recipes: two learning-rate cycles (up a quarter, down a quarter), peak 3e-3
            half_cycle_epochs=1 if epochs <= 3 else epochs / 4,
            learning_rate=1e-3 if epochs <= 3 else 3e-3,
        ),
    )
    provenance["purpose"] = "bench_inference (speed and reduced-precision accuracy only)"
    save_model(result.model, folder, prep, training=provenance)
    return folder


def _engines(model: Path, threads: int) -> list[tuple[str, dict, object]]:
    """(label, record fields, engine or unavailable reason) for every engine to measure."""
    import torch

    from bluesky_ptychonn.inference import load_engine
    from bluesky_ptychonn.inference.onnx_engine import cuda_provider_usable
    from bluesky_ptychonn.inference.tensorrt_engine import tensorrt_usable, tensorrt_version

    plans = [
        ("pytorch", "fp32", "cpu", {"channels_last": False}, "eager"),
        ("pytorch", "fp32", "cpu", {"channels_last": True}, "channels-last"),
        ("pytorch", "bf16", "cpu", {"channels_last": True}, "channels-last"),
        ("onnxruntime", "fp32", "cpu", {"threads": threads}, ""),
        ("onnxruntime", "int8", "cpu", {"threads": threads}, "output conv fp32"),
        (
            "onnxruntime",
            "int8",
            "cpu",
            {"threads": threads, "int8_float_convs": 2},
            "last block fp32",
        ),
        (
            "onnxruntime",
            "int8",
            "cpu",
            {"threads": threads, "workers": threads},
            f"output conv fp32, {threads} sessions",
        ),
        (
            "onnxruntime",
            "int8",
            "cpu",
            {"threads": threads, "int8_float_convs": 2, "workers": threads},
            f"last block fp32, {threads} sessions",
        ),
        (
            "onnxruntime",
            "int8",
            "cpu",
            {"threads": threads, "workers": threads, "micro_batch": 2},
            f"output conv fp32, {threads} sessions, pieces of 2",
        ),
        (
            "onnxruntime",
            "int8",
            "cpu",
            {"threads": threads, "int8_float_convs": 2, "workers": threads, "micro_batch": 2},
            f"last block fp32, {threads} sessions, pieces of 2",
        ),
        (
            "onnxruntime",
            "int8",
            "cpu",
            {
                "threads": threads,
                "int8_float_input_convs": 3,
                "workers": threads,
                "micro_batch": 2,
            },
            f"first block + output conv fp32, {threads} sessions, pieces of 2",
        ),
        (
            "onnxruntime",
            "int8",
            "cpu",
            {
                "threads": threads,
                "int8_float_input_convs": 3,
                "int8_float_convs": 2,
                "workers": threads,
                "micro_batch": 2,
            },
            f"first + last block fp32, {threads} sessions, pieces of 2",
        ),
        (
            "onnxruntime",
            "fp32",
            "cpu",
            {"threads": threads, "workers": threads},
            f"{threads} sessions",
        ),
        ("pytorch", "fp16", "cuda", {"channels_last": True, "cuda_graphs": True}, "CUDA graphs"),
        ("onnxruntime", "fp32", "cuda", {}, "CUDA provider"),
        ("tensorrt", "fp16", "cuda", {}, ""),
        ("tensorrt", "fp32", "cuda", {}, ""),
    ]
    out = []
    for backend, precision, device, options, variant in plans:
        if precision == "int8":  # the variants name what stays in float; 0 unless they say
            options = {"int8_float_input_convs": 0, **options}
        fields = {"backend": backend, "precision": precision, "device": device, "variant": variant}
        reason = None
        if device == "cuda" and not torch.cuda.is_available():
            reason = "no CUDA device"
        elif backend == "tensorrt" and not tensorrt_usable():
            reason = (
                "TensorRT is not installed"
                if tensorrt_version() is None
                else "no CUDA device for TensorRT"
            )
        elif backend == "onnxruntime" and device == "cuda" and not cuda_provider_usable():
            reason = "onnxruntime has no CUDA provider here"
        if reason:
            out.append((f"{backend}-{precision}-{device}", fields, reason))
            continue
        try:
            engine = load_engine(model, backend, precision=precision, device=device, **options)
        except Exception as error:  # report, do not stop the benchmark
            out.append(
                (f"{backend}-{precision}-{device}", fields, f"{type(error).__name__}: {error}")
            )
            continue
        out.append((f"{backend}-{precision}-{device}-{variant}", fields, engine))
    return out


def _eval_inputs(engine, n: int) -> np.ndarray:
    from bluesky_ptychonn.model import simulate_training_set

    prep = engine.preprocessing
    parts = [
        simulate_training_set(n // 2, prep, sample=kind, n_samples=1, seed=77 + i).frames
        for i, kind in enumerate(("siemens-star", "letters"))
    ]
    return prep.apply(np.concatenate(parts))


def _time(engine, x: np.ndarray, seconds: float, min_calls: int = 5) -> list[float]:
    latencies = []
    start = time.perf_counter()
    while len(latencies) < min_calls or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        engine.run(x)
        latencies.append(time.perf_counter() - t0)
    return latencies


def _measure_model(name: str, model: Path, args, threads: int) -> list[dict]:
    from bluesky_ptychonn.model import patch_phase_ssim

    engines = _engines(model, threads)
    ready = [(label, f, e) for label, f, e in engines if not isinstance(e, str)]
    reference = next(
        e
        for label, f, e in ready
        if f["backend"] == "pytorch"
        and f["precision"] == "fp32"
        and f["device"] == "cpu"
        and f["variant"] == "eager"
    )
    x_eval = _eval_inputs(reference, 32 if args.quick else 64)
    ref_out = reference.run_batched(x_eval)
    records = []
    accuracy = {}
    for label, _, engine in ready:
        out = engine.run_batched(x_eval)
        ssim = float(np.mean(patch_phase_ssim(out, ref_out)))
        diff = float(np.max(np.abs(np.angle(np.exp(1j * (out[:, 0] - ref_out[:, 0]))))))
        accuracy[label] = (ssim, diff)
    # preprocessing throughput, once per model
    from bluesky_ptychonn.model import simulate_training_set

    frames_eval = simulate_training_set(64, reference.preprocessing, n_samples=1, seed=5).frames
    t0 = time.perf_counter()
    reps = 5
    for _ in range(reps):
        reference.preprocessing.apply(frames_eval)
    preprocess_fps = reps * len(frames_eval) / (time.perf_counter() - t0)

    seconds = 0.3 if args.quick else args.seconds
    rounds = 2 if args.quick else args.rounds
    for batch in args.batches:
        x = np.ascontiguousarray(np.resize(x_eval, (batch, *x_eval.shape[1:])))
        for _, _, engine in ready:
            engine.warmup((batch,))
        lat: dict[str, list[float]] = {label: [] for label, _, _ in ready}
        fps: dict[str, list[float]] = {label: [] for label, _, _ in ready}
        for _ in range(rounds):
            for label, _, engine in ready:
                calls = _time(engine, x, seconds / rounds)
                lat[label] += calls
                fps[label].append(batch * len(calls) / sum(calls))
        ref_label = next(label for label, f, e in ready if e is reference)
        ref_fps = float(np.median(fps[ref_label]))
        for label, fields, engine in ready:
            f = float(np.median(fps[label]))
            ms = np.array(lat[label]) * 1e3
            ssim, diff = accuracy[label]
            records.append(
                {
                    "model": name,
                    **fields,
                    "batch": batch,
                    "frames_per_s": round(f, 1),
                    "p50_ms": round(float(np.percentile(ms, 50)), 3),
                    "p99_ms": round(float(np.percentile(ms, 99)), 3),
                    "calls": len(ms),
                    "ssim_vs_fp32": round(ssim, 5),
                    "max_abs_phase_diff_rad": round(diff, 5),
                    "reference": engine is reference,
                    "speedup_vs_reference": round(f / ref_fps, 2),
                    "preprocess_frames_per_s": round(preprocess_fps, 1),
                    "threads": threads,
                    "engine": engine.info.details | {"model_version": engine.info.model_version},
                }
            )
            print(
                f"{name:9s} {label:38s} b={batch:3d} {f:9.1f} frames/s  p50 "
                f"{np.percentile(ms, 50):8.2f} ms  p99 {np.percentile(ms, 99):8.2f} ms  "
                f"SSIM {ssim:.4f}",
                flush=True,
            )
    for label, fields, reason in engines:
        if isinstance(reason, str):
            records.append(
                {
                    "model": name,
                    **fields,
                    "batch": None,
                    "frames_per_s": None,
                    "p50_ms": None,
                    "p99_ms": None,
                    "ssim_vs_fp32": None,
                    "reference": False,
                    "unavailable": reason,
                }
            )
            print(f"{name:9s} {label:38s} unavailable: {reason}", flush=True)
    for _, _, engine in ready:
        engine.close()
    return records


def markdown_table(records: list[dict]) -> str:
    """The records as a Markdown table (for docs/benchmarks.md)."""
    lines = [
        "| model | backend | precision | device | batch | frames/s | p50 ms | p99 ms | "
        "x ref | SSIM vs fp32 |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in records:
        if r.get("frames_per_s") is None:
            continue
        backend = r["backend"] + (f" ({r['variant']})" if r.get("variant") else "")
        ref = " **ref**" if r["reference"] else ""
        lines.append(
            f"| {r['model']} | {backend}{ref} | {r['precision']} | {r['device']} | {r['batch']} | "
            f"{r['frames_per_s']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
            f"{r['speedup_vs_reference']:.2f} | {r['ssim_vs_fp32']:.4f} |"
        )
    missing = sorted(
        {
            (r["backend"], r["precision"], r["device"], r["unavailable"])
            for r in records
            if r.get("unavailable")
        }
    )
    if missing:
        lines.append("")
        lines.append(
            "Not measured here: "
            + "; ".join(
                f"{backend} {precision} on {device} ({reason})"
                for backend, precision, device, reason in missing
            )
            + "."
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench inference", description=__doc__.splitlines()[0])
    parser.add_argument("--json", required=True, help="output JSON file")
    parser.add_argument("--quick", action="store_true", help="short timings, tiny training")
    parser.add_argument("--edge", help="edge model to use (default: train one)")
    parser.add_argument("--ptychonn", help="ptychonn model to use (default: train one)")
    parser.add_argument(
        "--train-patterns",
        type=int,
        default=1200,
        help="patterns the benchmark's own models train on (1200)",
    )
    parser.add_argument(
        "--train-epochs",
        type=int,
        default=3,
        help="epochs of that training (3; 10 with --train-patterns 2400 is the 'trained' "
        "edge model of docs/benchmarks.md, about 9 minutes on 2 cores)",
    )
    parser.add_argument(
        "--models", nargs="+", default=["ptychonn", "edge"], choices=("ptychonn", "edge")
    )
    parser.add_argument(
        "--batches",
        type=lambda s: tuple(int(b) for b in s.split(",")),
        default=BATCHES,
        help="comma-separated batch sizes (default 1,8,32,64)",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=6.0,
        help="timing per engine and batch, split over the rounds (default 6)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds of turns (default 3)")
    parser.add_argument("--threads", type=int, help="CPU threads (default: all cores)")
    parser.add_argument("--markdown", help="also write the table as Markdown to this file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    import torch

    threads = args.threads or _cores()
    torch.set_num_threads(threads)
    recipe = (args.train_patterns, args.train_epochs)
    if args.quick:
        models_dir = HERE / "results" / "models" / "quick"
    elif recipe == (1200, 3):
        models_dir = HERE / "results" / "models" / "bench"
    else:
        models_dir = HERE / "results" / "models" / f"bench-{recipe[0]}x{recipe[1]}"
    records: list[dict] = []
    machine = {
        "cpu": _cpu_name(),
        "cores": _cores(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    for name in args.models:
        given = getattr(args, name)
        model = (
            Path(given) if given else _train(name, models_dir / name, args.quick, threads, *recipe)
        )
        for record in _measure_model(name, model, args, threads):
            record.update(machine, load_average_1min_at_end=os.getloadavg()[0])
            records.append(record)
    out = write_records(args.json, records, indent=1)
    table = markdown_table(records)
    print("\n" + table)
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")
    print(f"\nwrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
