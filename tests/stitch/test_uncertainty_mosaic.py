"""The mosaic's phase uncertainty, and the mosaic weighted by the patches' stated variance."""

import numpy as np
import pytest

from bluesky_ptychonn.geometry import PixelGrid
from bluesky_ptychonn.stitch import Mosaic
from bluesky_ptychonn.stitch.uncertainty import InverseVarianceMosaic, UncertaintyMosaic

PATCH = 16


def grid():
    return PixelGrid(1e-8, (0.0, 0.0), (48, 48))


def test_equal_patches_on_top_of_each_other():
    weight = np.ones((PATCH, PATCH), np.float32)
    mosaic = UncertaintyMosaic(grid(), weight)
    positions = np.full((4, 2), 24e-8)  # four patches at one place
    mosaic.add(np.full((4, PATCH, PATCH), 0.2, np.float32), positions)
    measured = ~np.isnan(mosaic.sigma())
    assert measured.sum() == PATCH * PATCH
    # correlated errors: the mean sigma; independent: sigma / sqrt(n)
    assert np.allclose(mosaic.sigma("correlated")[measured], 0.2, atol=1e-6)
    assert np.allclose(mosaic.sigma("independent")[measured], 0.1, atol=1e-6)
    with pytest.raises(ValueError):
        mosaic.sigma("none")
    with pytest.raises(ValueError):
        mosaic.add(np.full((1, PATCH, PATCH), -1.0, np.float32), positions[:1])


def test_inverse_variance_weighting_trusts_the_confident_patch():
    weight = np.ones((PATCH, PATCH), np.float32)
    position = np.array([[24e-8, 24e-8]])
    right, wrong = np.full((1, PATCH, PATCH), 0.5, np.float32), np.full((1, PATCH, PATCH), 1.5)
    sigma_right = np.full((1, PATCH, PATCH), 0.05, np.float32)
    sigma_wrong = np.full((1, PATCH, PATCH), 0.5, np.float32)
    sigma_wrong[0, :, : PATCH // 2] = 0.04  # half of the wrong patch is stated confident
    amplitude = np.full((1, PATCH, PATCH), 0.7, np.float32)
    plain = Mosaic(grid(), weight, align_phase=False)
    weighted = InverseVarianceMosaic(grid(), weight, align_phase=False)
    for phase, sigma in ((right, sigma_right), (wrong, sigma_wrong)):
        plain.add(phase, amplitude, position)
        weighted.add_with_uncertainty(phase, amplitude, sigma, position)
    p, w = plain.snapshot(), weighted.snapshot()
    inside = p.weights > 0
    assert np.allclose(p.phase[inside], 1.0, atol=1e-5)  # the plain mean of 0.5 and 1.5
    rows, cols = np.nonzero(inside)
    right_half = cols >= cols.min() + PATCH // 2
    # where the wrong patch says it is unsure, the mosaic follows the confident one
    assert np.all(np.abs(w.phase[rows[right_half], cols[right_half]] - 0.5) < 0.02)
    assert np.all(w.phase[rows[~right_half], cols[~right_half]] > 0.9)
    assert np.allclose(w.amplitude[inside], 0.7, atol=1e-5)  # amplitudes stay amplitudes
    # the uncertainty mosaic under the same weights: the confident sigma dominates
    sigmas = UncertaintyMosaic(grid(), weight)
    both = np.concatenate([sigma_right, sigma_wrong])
    sigmas.add(both, np.repeat(position, 2, axis=0), InverseVarianceMosaic.variance_weights(both))
    assert np.nanmax(sigmas.sigma()[rows[right_half], cols[right_half]]) < 0.06


def test_inverse_variance_mosaic_without_uncertainty_is_the_plain_mosaic():
    rng = np.random.default_rng(0)
    weight = rng.uniform(0.1, 1.0, (PATCH, PATCH)).astype(np.float32)
    phase = rng.uniform(-1, 1, (5, PATCH, PATCH)).astype(np.float32)
    positions = rng.uniform(10e-8, 38e-8, (5, 2))
    plain, weighted = Mosaic(grid(), weight), InverseVarianceMosaic(grid(), weight)
    plain.add(phase, None, positions)
    weighted.add(phase, None, positions)
    a, b = plain.snapshot(), weighted.snapshot()
    assert np.allclose(a.phase, b.phase, atol=1e-5) and np.allclose(a.amplitude, b.amplitude)
