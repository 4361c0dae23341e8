"""Stated intervals of the phase uncertainty: coverage, calibration factor, rank correlation.

A model with the uncertainty head states, for every pixel, one standard deviation ``sigma``
(radians) of its phase error, under a Laplace distribution (the likelihood that matches the
MAE loss the phase is trained with; `model.uncertainty`). The central interval holding a
fraction ``p`` of a Laplace distribution with standard deviation ``sigma`` is

    phase +- sigma / sqrt(2) * ln(1 / (1 - p))

(0.81 sigma for 68 %, 1.63 sigma for 90 %, 2.12 sigma for 95 %). Calibration multiplies every
stated ``sigma`` by one factor, fitted on held-out pairs so that the stated intervals hold
(`fit_scale`). numpy only: usable on the RunEngine side, in the stitcher and in benchmarks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

FIELD = "phase_uncertainty"
"""The one name of the phase-uncertainty field: model output channel 2 as the endpoint
publishes it (results array), in mosaics, in Tiled and in CXI files."""

LEVELS = (0.5, 0.68, 0.9, 0.95)
"""Interval levels that calibration fits and reports."""


def half_width(sigma: np.ndarray | float, level: float) -> np.ndarray | float:
    """Half-width (rad) of the central ``level`` interval of a Laplace of std ``sigma`` (rad)."""
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    return np.asarray(sigma) / math.sqrt(2.0) * math.log(1.0 / (1.0 - level))


def coverage(
    errors_rad: np.ndarray, sigma_rad: np.ndarray, levels: Sequence[float] = LEVELS
) -> dict[str, float]:
    """Fraction of |errors| inside the stated interval at each level ({"0.68": 0.71, ...})."""
    e = np.abs(np.asarray(errors_rad, dtype=np.float64)).ravel()
    s = np.asarray(sigma_rad, dtype=np.float64).ravel()
    if e.shape != s.shape or e.size == 0:
        raise ValueError(f"errors ({e.size}) and sigmas ({s.size}) must be equal and non-empty")
    return {f"{p:g}": float(np.mean(e <= half_width(s, p))) for p in levels}


def fit_scale(
    errors_rad: np.ndarray, sigma_rad: np.ndarray, levels: Sequence[float] = LEVELS
) -> float:
    """The factor k on every stated sigma that makes the stated intervals hold best.

    Minimises the mean absolute difference between stated level and measured coverage over
    ``levels``. Each level alone is met exactly by k_p = quantile_p(|e| / sigma) / (ln(1/(1-p))
    / sqrt 2); the best common k lies between the smallest and the largest k_p, and is found
    on a fine logarithmic grid there.
    """
    e = np.abs(np.asarray(errors_rad, dtype=np.float64)).ravel()
    s = np.asarray(sigma_rad, dtype=np.float64).ravel()
    ratio = e / np.maximum(s, 1e-12)
    per_level = [float(np.quantile(ratio, p)) / float(half_width(1.0, p)) for p in levels]
    lo, hi = max(min(per_level), 1e-6), max(max(per_level), 1e-6)
    candidates = np.geomspace(lo, hi, 201) if hi > lo else np.array([lo])
    ratio.sort()
    best, best_gap = float(candidates[0]), math.inf
    for k in candidates:
        gap = np.mean(
            [abs(np.searchsorted(ratio, k * half_width(1.0, p), "right") / ratio.size - p)
             for p in levels]
        )  # fmt: skip
        if gap < best_gap:
            best, best_gap = float(k), float(gap)
    return best


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two equally long samples (ties get their mean rank)."""
    from scipy.stats import spearmanr

    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape or a.size < 3:
        raise ValueError("spearman needs two samples of one length >= 3")
    return float(spearmanr(a, b).statistic)


def reliability(
    errors_rad: np.ndarray, sigma_rad: np.ndarray, bins: int = 10
) -> dict[str, list[float]]:
    """A reliability table: pixels in ``bins`` quantile bins of stated sigma, and per bin the
    mean stated sigma and the measured RMS error (rad); equal on a calibrated model
    (a Laplace's RMS is its standard deviation)."""
    e = np.abs(np.asarray(errors_rad, dtype=np.float64)).ravel()
    s = np.asarray(sigma_rad, dtype=np.float64).ravel()
    edges = np.quantile(s, np.linspace(0, 1, bins + 1))
    which = np.clip(np.searchsorted(edges, s, "right") - 1, 0, bins - 1)
    stated, rms, count = [], [], []
    for b in range(bins):
        inside = which == b
        if inside.any():
            stated.append(float(s[inside].mean()))
            rms.append(float(np.sqrt(np.mean(e[inside] ** 2))))
            count.append(int(inside.sum()))
    return {"stated_sigma_rad": stated, "rms_error_rad": rms, "pixels": count}
