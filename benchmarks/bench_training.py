"""Training on simulated etched samples, judged on sample kinds it never saw.

Trains an edge-family model (PtychoNN 2.0 layout, BatchNorm, configurable width, depth and
input size; default 32-pixel crop, width 8, depth 3) for a fixed budget of CPU epochs on
simulated etched samples (the demo's geometry: zone-plate probe 250 um out of focus, a donut,
1e6 photons per frame, Poisson noise), then infers held-out simulated patterns of other sample
kinds (Siemens star, letters: at their standard feature sizes and at coarser ones, 12 spokes /
letters 0.4-1.2 um high) and of new etched samples, and reports the per-patch phase SSIM
against the ground truth on the illuminated region (`model.evaluate`: each patch's phase
offset removed, no shift or ramp fitting).

One record per held-out sample: ``sample``, ``phase_ssim_mean``, ``phase_ssim_median``,
``phase_ssim_p10``, ``fraction_ssim_ge_0p7``, ``phase_mae_rad``, plus the training settings,
``train_seconds`` and the validation-loss history. The trained model is saved under
``benchmarks/results/models/training/`` for reuse (e.g. ``bench inference --edge``).

    bluesky-ptychonn bench training --json benchmarks/results/training.json [--quick]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from bluesky_ptychonn.commands.bench import write_records

HERE = Path(__file__).resolve().parent
# (label, sample kind, sample options): the held-out kinds at their standard feature sizes and
# at coarser ones (the SSIM of a patch depends on how its features compare with the resolution)
HELD_OUT = (
    ("siemens-star", "siemens-star", {}),
    ("siemens-star-12", "siemens-star", {"n_spokes": 12}),
    ("letters", "letters", {}),
    ("letters-large", "letters", {"letter_height_m": (400e-9, 1200e-9)}),
    ("etched", "etched", {}),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench training", description=__doc__.splitlines()[0])
    parser.add_argument("--json", required=True, help="output JSON file")
    parser.add_argument("--quick", action="store_true", help="a one-minute smoke run")
    parser.add_argument("--input-size", type=int, default=32, help="network input side (32)")
    parser.add_argument("--base-channels", type=int, default=8, help="first block width (8)")
    parser.add_argument("--depth", type=int, default=3, help="down / up blocks (3)")
    parser.add_argument("--reduce", choices=("crop", "bin"), default="crop")
    parser.add_argument("--patterns", type=int, default=24000, help="training patterns (24000)")
    parser.add_argument("--epochs", type=int, default=15, help="epochs (15)")
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument(
        "--half-cycle-epochs",
        type=float,
        default=None,
        help="epochs from the lowest to the peak learning rate (default: epochs / 2, one "
        "triangle that ends at the lowest rate)",
    )
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument(
        "--defocus-m",
        type=float,
        default=250e-6,
        help="probe defocus in metres (250e-6: the demo's donut)",
    )
    parser.add_argument("--test-patterns", type=int, default=300, help="per held-out kind")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: all cores)"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    import torch

    from bluesky_ptychonn.model import (
        ModelConfig,
        Preprocessing,
        TrainingOptions,
        evaluate,
        fit,
        predict,
        save_model,
        simulate_training_set,
    )

    if args.quick:
        args.patterns, args.epochs, args.test_patterns = 400, 2, 60
    args.threads = args.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(args.threads)
    size = args.input_size
    draft = Preprocessing((size, size), (128, 128), args.reduce)
    t0 = time.perf_counter()
    data = simulate_training_set(
        args.patterns, draft, n_samples=32, seed=args.seed, defocus_m=args.defocus_m
    )
    simulate_s = time.perf_counter() - t0
    config = ModelConfig.preset(
        "edge",
        input_shape=size,
        base_channels=args.base_channels,
        batch_norm=True,
        depth=args.depth,
    )
    options = TrainingOptions(
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        half_cycle_epochs=args.half_cycle_epochs or max(1.0, args.epochs / 2),
        seed=args.seed,
        num_threads=args.threads,
        progress=sys.stderr.isatty(),
    )
    result, prep, provenance = fit(data, config, options)
    tag = f"edge{size}-c{args.base_channels}-d{args.depth}-{args.reduce}" + (
        "-quick" if args.quick else ""
    )
    folder = HERE / "results" / "models" / f"training-{tag}"
    save_model(result.model, folder, prep, training=provenance)

    records = []
    settings = {
        "model": "edge",
        "input_size": size,
        "base_channels": args.base_channels,
        "depth": args.depth,
        "reduce": args.reduce,
        "train_patterns": args.patterns,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "half_cycle_epochs": options.half_cycle_epochs,
        "defocus_m": args.defocus_m,
        "photons": 1e6,
        "threads": args.threads,
        "cpu_cores": len(os.sched_getaffinity(0)),
        "simulate_seconds": round(simulate_s, 1),
        "train_seconds": round(result.seconds, 1),
        "best_epoch": result.best_epoch,
        "val_loss_history": [round(h["val_loss"], 4) for h in result.history],
        "model_dir": str(folder),
    }
    for i, (label, kind, sample_options) in enumerate(HELD_OUT):
        test = simulate_training_set(
            args.test_patterns,
            draft,
            sample=kind,
            n_samples=3,
            seed=1000 + i,
            defocus_m=args.defocus_m,
            sample_options=sample_options,
        )
        scores = evaluate(
            lambda x: predict(result.model, x), prep.apply(test.frames), test.labels, test.weights
        )
        records.append(
            {
                "sample": label,
                "sample_kind": kind,
                "sample_options": {
                    k: list(v) if isinstance(v, tuple) else v for k, v in sample_options.items()
                },
                "held_out": kind != "etched",
                **scores,
                **settings,
            }
        )
        print(
            f"{label:16s} phase SSIM mean {scores['phase_ssim_mean']:.3f} median "
            f"{scores['phase_ssim_median']:.3f}  >=0.7: {scores['fraction_ssim_ge_0p7']:.0%}  "
            f"MAE {scores['phase_mae_rad']:.3f} rad",
            flush=True,
        )
    out = write_records(args.json, records, indent=1)
    print(f"trained {result.seconds:.0f} s; wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
