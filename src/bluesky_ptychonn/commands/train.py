"""`bluesky-ptychonn train --out MODEL_DIR ...`: train or fine-tune a PtychoNN-family model.

Training data come from the simulator (``--simulate N`` random patterns of random samples,
etched by default) and/or from finished scans (``--from-cxi FILE.cxi``: the diffraction data
and the reconstruction stored in the same CXI file, whose object becomes the labels). Writes
``MODEL_DIR/model.safetensors`` and its sidecar ``MODEL_DIR/model.json`` (and, with
``--onnx``, ``MODEL_DIR/model.onnx``).
"""

from __future__ import annotations

import argparse
import json
import logging

log = logging.getLogger(__name__)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..model import (
        ModelConfig,
        Preprocessing,
        TrainingOptions,
        TrainingSet,
        fit,
        load_model,
        resolve,
        save_model,
        simulate_training_set,
        training_set_from_reconstruction,
    )

    out = Path(args.out)
    if (out / "model.json").exists() and not args.overwrite:
        raise FileExistsError(f"{out / 'model.json'} exists (use --overwrite to replace it)")
    options = TrainingOptions(
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        half_cycle_epochs=args.half_cycle_epochs,
        seed=args.seed,
        device=args.device,
        num_threads=args.threads,
        progress=not args.no_progress,
        loss_region=args.loss_region,
    )
    options.validate()

    parent = None
    if args.finetune:
        files = resolve(args.finetune)
        model, sidecar = load_model(args.finetune)
        preprocessing = sidecar.preprocessing
        parent = {
            "version": sidecar.version,
            "sha256": files.sidecar.files["weights"]["sha256"],
            "path": str(files.sidecar_path),
        }
        config = model.config
        log.info("fine-tuning %s (%s)", sidecar.version, config.name)
    else:
        config = ModelConfig.preset(
            args.model,
            input_shape=args.input_size,
            base_channels=args.base_channels,
            batch_norm=args.batch_norm,
            uncertainty=args.uncertainty,
        )
        model = config
        preprocessing = None

    frame_shape = tuple(preprocessing.frame_shape) if preprocessing else (128, 128)
    draft = preprocessing or Preprocessing(
        config.input_shape, frame_shape, args.reduce, args.intensity_scale, not args.no_log
    )
    parts: list[TrainingSet] = []
    for cxi in args.from_cxi or []:
        from ..storage.cxi import read_cxi, read_reconstruction

        data = read_cxi(cxi)
        if preprocessing is None and data.pattern_shape != draft.frame_shape:
            draft = Preprocessing(
                config.input_shape,
                data.pattern_shape,
                args.reduce,
                args.intensity_scale,
                not args.no_log,
            )
        parts.append(training_set_from_reconstruction(read_reconstruction(cxi), data, draft))
        log.info("%s: %d labelled patterns", cxi, data.n_patterns)
    n_sim = args.simulate if args.simulate is not None else (0 if parts else 4000)
    if n_sim:
        parts.append(
            simulate_training_set(
                n_sim,
                draft,
                sample=args.sample,
                n_samples=args.n_samples,
                detector=args.detector,
                defocus_m=args.defocus_m,
                photons=args.photons,
                seed=args.seed,
            )
        )
    if not parts:
        raise ValueError("no training data: give --simulate N and/or --from-cxi FILE")
    data = parts[0] if len(parts) == 1 else TrainingSet.concatenate(parts)
    if preprocessing is None:
        preprocessing = Preprocessing.fit(
            data.frames,
            config.input_shape,
            draft.frame_shape,
            reduce=args.reduce,
            intensity_scale=args.intensity_scale,
            log=not args.no_log,
        )
    result, preprocessing, provenance = fit(
        data, model, options, preprocessing=preprocessing, parent=parent
    )
    provenance["command"] = "bluesky-ptychonn train"
    provenance["sources"] = {"cxi": [str(p) for p in args.from_cxi or []], "simulated": n_sim}
    uncertainty = None
    if result.model.config.uncertainty:
        from ..model.train import held_out
        from ..model.uncertainty import calibrate_uncertainty

        # the validation pairs: never trained on (they only chose the kept epoch)
        uncertainty = calibrate_uncertainty(result.model, held_out(data, options), preprocessing)
    sidecar_path = save_model(
        result.model,
        out,
        preprocessing,
        version=args.version,
        training=provenance,
        uncertainty=uncertainty,
        probe=data.probe,
    )
    summary = {
        "sidecar": str(sidecar_path),
        "pairs": len(data),
        "best_epoch": result.best_epoch,
        "best_val_loss": round(result.best_val_loss, 5),
        "val_phase_mae_rad": round(result.history[result.best_epoch - 1]["val_phase_mae_rad"], 5),
        "seconds": round(result.seconds, 1),
    }
    if uncertainty is not None:
        summary["uncertainty"] = {
            k: uncertainty[k] for k in ("calibration_scale", "coverage_before", "coverage_after")
        }
    if args.onnx:
        from ..model.export import export_onnx

        summary["onnx"] = str(export_onnx(out / "model.safetensors", out / "model.onnx"))
    print(json.dumps(summary, indent=2))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train or fine-tune a PtychoNN model on simulated and/or reconstructed data",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", required=True, help="model folder to write (model.safetensors + .json)")
    p.add_argument(
        "--model",
        choices=("edge", "ptychonn"),
        default="edge",
        help="architecture of a new model (default edge)",
    )
    p.add_argument(
        "--finetune",
        metavar="MODEL",
        help="start from this model (its architecture and preprocessing are kept)",
    )
    p.add_argument(
        "--from-cxi",
        nargs="+",
        metavar="FILE",
        help="CXI files holding diffraction "
        "data and a reconstruction (/entry_1/image_K) to use as labels",
    )
    p.add_argument(
        "--simulate",
        type=int,
        metavar="N",
        help="N simulated training patterns (default 4000 when no --from-cxi is given)",
    )
    p.add_argument("--sample", default="etched", help="simulated sample kind (default etched)")
    p.add_argument("--n-samples", type=int, default=16, help="distinct random samples (default 16)")
    p.add_argument("--detector", default="eiger", help="simulated detector preset (default eiger)")
    p.add_argument(
        "--defocus-m",
        type=float,
        default=250e-6,
        help="simulated probe defocus in metres (default 250e-6)",
    )
    p.add_argument("--photons", type=float, default=1e6, help="photons per simulated frame")
    p.add_argument(
        "--input-size",
        type=int,
        help="network input side in pixels (default 128 edge, 64 ptychonn)",
    )
    p.add_argument(
        "--base-channels",
        type=int,
        help="channels of the first block (default 16 edge, 32 ptychonn)",
    )
    p.add_argument("--batch-norm", action="store_true", help="BatchNorm after hidden convs")
    p.add_argument(
        "--uncertainty",
        action="store_true",
        help="add the per-pixel phase-uncertainty head (Laplace NLL), calibrated after "
        "training on the held-out validation pairs (docs/models.md)",
    )
    p.add_argument(
        "--reduce",
        choices=("crop", "bin"),
        default="crop",
        help="bring frames to the input size by cropping (default) or binning",
    )
    p.add_argument(
        "--intensity-scale",
        type=float,
        default=1.0,
        help="factor on the counts before the log (default 1)",
    )
    p.add_argument("--no-log", action="store_true", help="feed counts without log1p")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--learning-rate", type=float, default=1e-3, help="peak learning rate")
    p.add_argument(
        "--half-cycle-epochs",
        type=float,
        default=6.0,
        help="epochs per half cycle of the learning rate",
    )
    p.add_argument(
        "--loss-region",
        choices=("illuminated", "all"),
        default="illuminated",
        help="where the MAE is taken (default: the illuminated part of the patch)",
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, help="CPU threads for torch")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--version", help="model version string (default <name>-<sha256 prefix>)")
    p.add_argument("--onnx", action="store_true", help="also export MODEL_DIR/model.onnx")
    p.add_argument("--overwrite", action="store_true", help="replace an existing model")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
