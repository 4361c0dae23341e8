"""Stated intervals of the phase uncertainty: coverage, calibration factor, rank correlation."""

import math

import numpy as np
import pytest

from bluesky_ptychonn import intervals


def laplace_errors(sigma: np.ndarray, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).laplace(0.0, sigma / math.sqrt(2.0))


def test_stated_intervals_hold_for_errors_drawn_from_the_stated_distribution():
    sigma = np.random.default_rng(1).uniform(0.05, 0.5, 200_000)
    got = intervals.coverage(laplace_errors(sigma), sigma)
    for level in intervals.LEVELS:
        assert got[f"{level:g}"] == pytest.approx(level, abs=0.005)


def test_fit_scale_recovers_a_misstated_sigma():
    sigma = np.random.default_rng(2).uniform(0.05, 0.5, 100_000)
    errors = laplace_errors(sigma, seed=3)
    k = intervals.fit_scale(errors, sigma / 2.5)  # the model states 2.5x too little
    assert k == pytest.approx(2.5, rel=0.03)
    after = intervals.coverage(errors, k * sigma / 2.5)
    assert after["0.9"] == pytest.approx(0.9, abs=0.01)


def test_half_width_of_the_laplace_intervals():
    assert intervals.half_width(1.0, 0.9) == pytest.approx(math.log(10) / math.sqrt(2))
    with pytest.raises(ValueError):
        intervals.half_width(1.0, 1.0)


def test_spearman_and_reliability_see_whether_sigma_follows_the_error():
    sigma = np.random.default_rng(4).uniform(0.05, 0.5, 20_000)
    errors = laplace_errors(sigma, seed=5)
    assert intervals.spearman(sigma, np.abs(errors)) > 0.3
    assert abs(intervals.spearman(np.random.default_rng(6).permutation(sigma), errors)) < 0.05
    table = intervals.reliability(errors, sigma, bins=5)
    # a calibrated sigma: each bin's RMS error is its mean stated sigma
    assert np.allclose(table["rms_error_rad"], table["stated_sigma_rad"], rtol=0.1)
