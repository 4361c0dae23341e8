"""A small trained model with the uncertainty head, its data and its probe (a few seconds)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

FRAME_PX, INPUT_PX = 128, 32


@dataclass
class TrainedHead:
    folder: Path  # model.safetensors + model.json (calibrated) + model.probe.npy
    model: object  # the network
    preprocessing: object
    calibration: object  # held-out TrainingSet the sidecar's factor was fitted on
    test: object  # another held-out TrainingSet of the training kind


def train_head(folder: Path, *, patterns: int = 1500, epochs: int = 6) -> TrainedHead:
    """Train an 8-channel, depth-3 edge model with the head on etched patterns; save it."""
    import torch

    from bluesky_ptychonn.model import (
        ModelConfig,
        Preprocessing,
        TrainingOptions,
        fit,
        save_model,
        simulate_training_set,
    )
    from bluesky_ptychonn.model.uncertainty import calibrate_uncertainty

    torch.set_num_threads(1)
    draft = Preprocessing((INPUT_PX, INPUT_PX), (FRAME_PX, FRAME_PX), "crop")
    train = simulate_training_set(patterns, draft, n_samples=8, seed=1)
    calibration = simulate_training_set(160, draft, n_samples=2, seed=2)
    test = simulate_training_set(160, draft, n_samples=2, seed=3)
    prep = Preprocessing.fit(train.frames, (INPUT_PX, INPUT_PX), (FRAME_PX, FRAME_PX))
    config = ModelConfig.preset(
        "edge", input_shape=INPUT_PX, base_channels=8, depth=3, batch_norm=True, uncertainty=True
    )
    options = TrainingOptions(
        epochs=epochs, learning_rate=3e-3, half_cycle_epochs=epochs / 2, batch_size=16,
        progress=False, num_threads=1,
    )  # fmt: skip
    result, prep, provenance = fit(train, config, options, preprocessing=prep)
    section = calibrate_uncertainty(result.model, calibration, prep)
    save_model(
        result.model, folder, prep, training=provenance, uncertainty=section, probe=train.probe
    )
    return TrainedHead(folder, result.model, prep, calibration, test)


def noise_frames(like: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Poisson noise frames with the mean count of ``like`` (no diffraction in them)."""
    rng = np.random.default_rng(seed)
    return rng.poisson(float(np.mean(like)), (n, FRAME_PX, FRAME_PX)).astype(np.uint16)
