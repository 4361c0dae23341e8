"""Step *train*: a challenger from the new labels plus a replay of earlier ones, judged on holdout.

`train_step` runs on a worker. It warm-starts from the model in service (or builds a network
for the data, `ScratchModel`), trains on the new scan's trainable pairs plus at most
``replay_pairs`` pairs drawn evenly from earlier scans (so the model does not forget), keeps
the epoch with the lowest validation loss (`model.train.fit`), refuses weights that are not
finite, and scores challenger and incumbent on the frozen holdout of every scan so far (pairs
never trained on). `judge` (pure) says whether the challenger is promoted, and why.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from .options import ScratchModel, TrainOptions


def scratch_preprocessing_dict(frame_shape: tuple[int, int], scratch: ScratchModel) -> dict:
    """The preprocessing (as a dict, before its intensity scale is fitted) of a new network.

    Frames larger than ``scratch.input_px`` are cropped to it; a smaller frame sets the input
    size (rounded down to a multiple of ``2 ** depth``).
    """
    side = min(int(frame_shape[0]), int(frame_shape[1]))
    if frame_shape[0] != frame_shape[1]:
        raise ValueError(f"patterns must be square, got {frame_shape[0]}x{frame_shape[1]}")
    step = 2 ** int(scratch.depth)
    input_px = min(int(scratch.input_px), side) // step * step
    if input_px < step:
        raise ValueError(f"{side}-pixel patterns are too small for a depth-{scratch.depth} network")
    if scratch.reduce not in ("crop", "bin"):
        raise ValueError(f"scratch.reduce must be 'crop' or 'bin', got {scratch.reduce!r}")
    if scratch.reduce == "bin" and side % input_px:
        raise ValueError(
            f"binning {side}-pixel patterns to a {input_px}-pixel input needs a whole factor: "
            "choose scratch.input_px dividing the pattern side, or reduce = 'crop'"
        )
    return {
        "input_shape": [input_px, input_px],
        "frame_shape": [side, side],
        "reduce": scratch.reduce,
        "intensity_scale": 1.0,
        "log": True,
        "input_scale": 1.0,
    }


def _replay(label_sets: list[Any], budget: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Trainable pairs drawn evenly from earlier scans, at most ``budget`` in all."""
    if not label_sets or budget <= 0:
        return []
    rng = np.random.default_rng(seed)
    share = max(1, budget // len(label_sets))
    parts = []
    for label_set in label_sets:
        frames, labels = label_set.part(holdout=False)
        if frames.shape[0] > share:
            pick = np.sort(rng.choice(frames.shape[0], share, replace=False))
            frames, labels = frames[pick], labels[pick]
        parts.append((frames, labels))
    return parts


def train_step(
    incumbent_dir: str | None,
    new_labels: str,
    replay_labels: list[str],
    holdout_labels: list[str],
    out_dir: str,
    *,
    options: dict[str, Any],
    generation: int,
) -> dict[str, Any]:
    """Train a challenger and score it and the incumbent on the frozen holdout; worker side.

    Args:
        incumbent_dir: the model in service (warm start), or None (from scratch).
        new_labels: the new scan's `LabelSet` file.
        replay_labels: earlier scans' label files (replayed).
        holdout_labels: every scan's label files whose holdout parts judge the models.
        out_dir: the challenger's model folder (written).
        options: `TrainOptions` as a dict.
        generation: the loop's model generation (in the version string).

    Returns:
        JSON-ready: ``model_dir``, ``version``, ``sha256``, ``pairs``, ``best_epoch``,
        ``seconds``, ``holdout`` (``challenger`` and ``incumbent`` mismatch dicts).

    Raises:
        ValueError: labels of another shape than the network's, non-finite weights.
    """
    import torch

    from ..model.architectures import ModelConfig
    from ..model.checkpoint import Sidecar, load_model, read_probe, resolve, save_model
    from ..model.data import TrainingSet
    from ..model.preprocessing import Preprocessing
    from ..model.train import TrainingOptions, fit
    from ..model.uncertainty import calibrate_uncertainty
    from .executors import worker_threads
    from .gate import check_finite_weights, score_step
    from .labels import LabelSet
    from .options import _dataclass_from

    started = time.perf_counter()
    opts: TrainOptions = _dataclass_from(TrainOptions, dict(options), "train")
    opts.validate()
    threads = opts.threads or worker_threads()
    if threads:
        torch.set_num_threads(int(threads))
    new = LabelSet.load(new_labels)
    earlier = [LabelSet.load(p) for p in replay_labels]
    pieces = [new.part(holdout=False), *_replay(earlier, opts.replay_pairs, opts.seed)]
    frames = np.concatenate([f for f, _ in pieces])
    labels = np.concatenate([label for _, label in pieces])
    weights = np.mean([new.weights, *[e.weights for e in earlier]], axis=0)
    data = TrainingSet(
        frames,
        labels,
        weights / max(float(weights.max()), 1e-30),
        new.label_pixel_size_m,
        {"scans": [new.lineage.get("scan_uid"), *[e.lineage.get("scan_uid") for e in earlier]]},
    )
    parent = probe = None
    if incumbent_dir:
        model, sidecar = load_model(incumbent_dir)
        probe = read_probe(resolve(incumbent_dir))  # the physics check's probe carries over
        check_finite_weights(model, sidecar.version)
        preprocessing = sidecar.preprocessing
        epochs = opts.epochs
        parent = {"version": sidecar.version, "path": str(incumbent_dir)}
        network: Any = model
    else:
        scratch = opts.scratch
        draft = Preprocessing.from_dict(dict(new.lineage["preprocessing"]))
        network = ModelConfig.preset(
            scratch.architecture,
            input_shape=draft.input_shape,
            base_channels=scratch.base_channels,
            batch_norm=scratch.batch_norm,
            depth=scratch.depth,
        )
        preprocessing = Preprocessing.fit(
            frames, draft.input_shape, draft.frame_shape, reduce=draft.reduce, log=draft.log
        )
        epochs = scratch.epochs
    if tuple(frames.shape[-2:]) != tuple(preprocessing.frame_shape):
        raise ValueError(
            f"labels hold {frames.shape[-2]}x{frames.shape[-1]} patterns but the network takes "
            f"{tuple(preprocessing.frame_shape)} frames"
        )
    training = TrainingOptions(
        epochs=epochs,
        batch_size=opts.batch_size,
        learning_rate=opts.learning_rate,
        half_cycle_epochs=max(1.0, epochs / 2),
        seed=opts.seed,
        num_threads=threads,
        progress=False,
    )
    result, preprocessing, provenance = fit(
        data, network, training, preprocessing=preprocessing, parent=parent
    )
    provenance["continual"] = {"generation": generation, "new_labels": str(new_labels)}
    check_finite_weights(result.model, f"challenger of generation {generation}")
    out = Path(out_dir)
    uncertainty = None
    held_frames, held_labels = new.part(holdout=True)
    if result.model.config.uncertainty and len(held_frames) >= 2:
        # calibrated on the new scan's frozen holdout (never trained on)
        held = TrainingSet(held_frames, held_labels, new.weights, new.label_pixel_size_m)
        uncertainty = calibrate_uncertainty(result.model, held, preprocessing)
    sidecar_path = save_model(
        result.model, out, preprocessing, training=provenance, uncertainty=uncertainty,
        probe=probe,
    )  # fmt: skip
    sidecar = Sidecar.read(sidecar_path)
    digest = sidecar.files["weights"]["sha256"]
    # the version names the generation and the weights' digest (the sidecar is rewritten only)
    version = f"{result.model.config.name}-g{generation}-{digest[:12]}"
    sidecar.version = version
    sidecar.write(sidecar_path)
    holdout = {"challenger": score_step(str(out), holdout_labels)}
    if incumbent_dir:
        holdout["incumbent"] = score_step(str(incumbent_dir), holdout_labels)
    return {
        "model_dir": str(out),
        "sidecar": str(sidecar_path),
        "version": version,
        "sha256": digest,
        "parent": parent,
        "pairs": int(len(data)),
        "replayed_pairs": int(len(data) - pieces[0][0].shape[0]),
        "epochs": int(epochs),
        "best_epoch": int(result.best_epoch),
        "best_val_loss": float(result.best_val_loss),
        "seconds": round(time.perf_counter() - started, 2),
        "holdout": holdout,
    }


def judge(trained: dict[str, Any], min_improvement: float) -> tuple[bool, str]:
    """Whether a challenger is promoted, and why (its holdout phase error against the incumbent's).

    A challenger from scratch (no incumbent) is promoted when its holdout figures are finite.
    """
    challenger = trained["holdout"]["challenger"]
    error = float(challenger["phase_mae_rad"])
    if not np.isfinite(error):
        return False, "the challenger's holdout phase error is not finite"
    incumbent = trained["holdout"].get("incumbent")
    if incumbent is None:
        return True, (
            f"first model: holdout phase error {error:.4f} rad, "
            f"phase SSIM {challenger['ssim_mean']:.3f}"
        )
    bar = float(incumbent["phase_mae_rad"]) * (1.0 - min_improvement)
    if error < bar:
        return True, (
            f"challenger beats the model in service on the frozen holdout: phase error "
            f"{error:.4f} < {incumbent['phase_mae_rad']:.4f} rad, phase SSIM "
            f"{challenger['ssim_mean']:.3f} vs {incumbent['ssim_mean']:.3f}"
        )
    return False, (
        f"challenger not better on the frozen holdout: phase error {error:.4f} rad vs "
        f"{incumbent['phase_mae_rad']:.4f} rad of the model in service (needs < {bar:.4f})"
    )
