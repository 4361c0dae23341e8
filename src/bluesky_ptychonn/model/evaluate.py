"""How good is a model on labelled patterns: per-patch phase SSIM and MAE in the label gauge.

A prediction and its label are compared patch by patch on the illuminated region
(`data.illuminated_mask` of the probe intensity: the network cannot see the object where no
light falls), after removing each patch's phase offset with the same weights as the labels
(the gauge of `data`), without any shift or ramp fitting: a patch that is displaced or tilted
counts as wrong. SSIM is `metrics.phase_ssim` (7x7 window, data range the label's phase span).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..metrics import phase_ssim
from .data import illuminated_mask, remove_phase_offset


@torch.no_grad()
def predict(
    model: torch.nn.Module, inputs: np.ndarray, *, batch_size: int = 64, device: str = "cpu"
) -> np.ndarray:
    """(N, 1, H, W) preprocessed inputs -> (N, 2, H, W) float32 model output (eager PyTorch)."""
    model = model.to(device).eval()
    out = []
    for s in range(0, inputs.shape[0], batch_size):
        xb = torch.as_tensor(np.ascontiguousarray(inputs[s : s + batch_size]), device=device)
        out.append(model(xb).float().cpu().numpy())
    return np.concatenate(out)


def _complex(maps: np.ndarray) -> np.ndarray:
    return maps[:, 1] * np.exp(1j * maps[:, 0])


def patch_phase_ssim(
    predictions: np.ndarray,
    labels: np.ndarray,
    weights: np.ndarray | None = None,
    *,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Phase SSIM of each predicted patch against its label, (N,) floats (1 = identical).

    Args:
        predictions, labels: (N, 2, H, W) phase (rad) and amplitude (predictions may carry
            the phase uncertainty as a third channel).
        weights: (H, W) probe intensity on the label grid (the labels' gauge and the default
            mask); uniform when None.
        mask: bool (H, W) region to compare; default ``illuminated_mask(weights)``.
    """
    predictions = np.asarray(predictions)[:, :2]  # a third channel (uncertainty) is not scored
    labels = np.asarray(labels)
    if predictions.shape != labels.shape or predictions.ndim != 4 or predictions.shape[1] != 2:
        raise ValueError(
            f"predictions {predictions.shape} and labels {labels.shape} must both be (N, 2, H, W)"
        )
    if weights is None:
        weights = np.ones(labels.shape[-2:])
    if mask is None:
        mask = illuminated_mask(weights)
    est = remove_phase_offset(_complex(predictions.astype(np.float64)), weights)
    ref = remove_phase_offset(_complex(labels.astype(np.float64)), weights)
    return np.array(
        [phase_ssim(e, r, mask=mask, align=False) for e, r in zip(est, ref, strict=True)]
    )


def phase_mae(predictions: np.ndarray, labels: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean absolute wrapped phase difference in radians over the mask (all pixels if None)."""
    d = np.angle(np.exp(1j * (predictions[:, 0] - labels[:, 0])))
    if mask is not None:
        d = d[:, mask]
    return float(np.mean(np.abs(d)))


def evaluate(
    run: Callable[[np.ndarray], np.ndarray],
    inputs: np.ndarray,
    labels: np.ndarray,
    weights: np.ndarray | None = None,
) -> dict[str, float]:
    """Per-patch phase SSIM statistics of ``run(inputs)`` against labels (JSON-ready).

    Args:
        run: (N, 1, H, W) float32 -> (N, 2, H, W), e.g. an engine's ``run`` or
            ``lambda x: predict(model, x)``.
    """
    predictions = run(inputs)
    ssim = patch_phase_ssim(predictions, labels, weights)
    mask = illuminated_mask(weights if weights is not None else np.ones(labels.shape[-2:]))
    return {
        "n_patches": int(ssim.size),
        "phase_ssim_mean": float(np.mean(ssim)),
        "phase_ssim_median": float(np.median(ssim)),
        "phase_ssim_p10": float(np.percentile(ssim, 10)),
        "fraction_ssim_ge_0p7": float(np.mean(ssim >= 0.7)),
        "phase_mae_rad": phase_mae(predictions, labels, mask),
    }
