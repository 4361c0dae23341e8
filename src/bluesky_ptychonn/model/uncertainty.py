"""Per-pixel phase uncertainty: the likelihood the scale head learns and its calibration.

A model built with ``ModelConfig(uncertainty=True)`` emits a third channel, one standard
deviation ``sigma`` of the phase per pixel (radians). It is trained with the negative
log-likelihood of a Laplace distribution, the distribution whose maximum-likelihood fit *is*
the MAE loss the phase is trained with: with scale ``b = sigma / sqrt(2)``,

    NLL(e) = ln(2 b) + |e| / b.

The phase error ``e`` is detached (`train._uncertainty_term`): the phase is trained by the MAE
as before and the head learns how large its error is. Why this and not an ensemble: one extra
output channel costs nothing at inference, while an ensemble of K members costs K times the
engine; measured side by side in ``bench uncertainty`` (docs/models.md).

The head learns on training pairs, where the network's errors are smaller than on new data,
so its raw sigma is rescaled after training by one factor fitted on held-out pairs
(`calibrate_uncertainty`, `intervals.fit_scale`) so that the stated intervals hold. The
factor and the coverage before and after are written into the sidecar's ``uncertainty``
section; every engine multiplies the third channel by it (`inference.engine`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from .. import intervals
from .data import TrainingSet, illuminated_mask
from .evaluate import predict
from .preprocessing import Preprocessing

UNCERTAINTY_CHANNEL = 2


def laplace_nll(error_rad: torch.Tensor, sigma_rad: torch.Tensor) -> torch.Tensor:
    """Per-element Laplace negative log-likelihood of ``error`` under std ``sigma`` (rad)."""
    b = sigma_rad / math.sqrt(2.0)
    return torch.log(2.0 * b) + error_rad.abs() / b


def phase_errors(predictions: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(N, H, W) wrapped phase error (rad) of predictions against labels (the label gauge)."""
    return np.angle(np.exp(1j * (predictions[:, 0] - labels[:, 0]))).astype(np.float32)


def calibrate_uncertainty(
    model: torch.nn.Module,
    data: TrainingSet,
    preprocessing: Preprocessing,
    *,
    levels: tuple[float, ...] = intervals.LEVELS,
    run: Any = None,
) -> dict[str, Any]:
    """Fit the calibration factor of a model's stated sigma on held-out pairs.

    Pixels of the illuminated region of every patch (where the network sees the object) are
    scored. Returns the sidecar's ``uncertainty`` section: ``calibration_scale``, the
    coverage of the stated intervals before and after, the Spearman correlation of stated
    sigma with the absolute error, pixel and pair counts.

    Args:
        model: a network with the uncertainty head.
        data: held-out pairs (not used for training).
        preprocessing: the model's.
        run: optional (N, 1, H, W) -> (N, 3, H, W) callable instead of eager PyTorch (e.g.
            an engine's ``run_batched``, to calibrate an int8 graph on its own outputs).
    """
    if not getattr(getattr(model, "config", None), "uncertainty", run is not None):
        raise ValueError("the model has no uncertainty head (ModelConfig.uncertainty)")
    inputs = preprocessing.apply(data.frames)
    out = run(inputs) if run is not None else predict(model, inputs)
    if out.shape[1] <= UNCERTAINTY_CHANNEL:
        raise ValueError(f"the model output has {out.shape[1]} channels: no uncertainty")
    mask = illuminated_mask(data.weights)
    errors = phase_errors(out, data.labels)[:, mask]
    sigma = out[:, UNCERTAINTY_CHANNEL][:, mask]
    return calibration_section(errors, sigma, levels, pairs=len(data), data=data.metadata)


def calibration_section(
    errors_rad: np.ndarray,
    sigma_rad: np.ndarray,
    levels: tuple[float, ...] = intervals.LEVELS,
    **facts: Any,
) -> dict[str, Any]:
    """The sidecar's ``uncertainty`` section from held-out errors and raw stated sigmas."""
    scale = intervals.fit_scale(errors_rad, sigma_rad, levels)
    return {
        "field": "phase_uncertainty",
        "meaning": "one standard deviation of the phase, rad, Laplace-distributed error",
        "calibration_scale": scale,
        "levels": list(levels),
        "coverage_before": intervals.coverage(errors_rad, sigma_rad, levels),
        "coverage_after": intervals.coverage(errors_rad, scale * sigma_rad, levels),
        "spearman_sigma_vs_abs_error": intervals.spearman(sigma_rad, np.abs(errors_rad)),
        "pixels": int(np.asarray(errors_rad).size),
        **facts,
    }
