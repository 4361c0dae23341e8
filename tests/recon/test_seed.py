"""Seeding ePIE with a stitched network image: resampling, neutral fill, refusals."""

from __future__ import annotations

import numpy as np
import pytest

from bluesky_ptychonn.dataset import ComplexImage
from bluesky_ptychonn.geometry import PixelGrid
from bluesky_ptychonn.recon.seed import initial_object_from_mosaic, seed_object

FINE_M = 10e-9
COARSE_M = 40e-9


def smooth_object(grid: PixelGrid, ramp_rad_per_m: float = 0.0) -> np.ndarray:
    """A smooth complex object evaluated at the grid's pixel centres (phase may wrap)."""
    rows, cols = np.indices(grid.shape)
    yx = grid.to_metres(np.stack([rows.ravel(), cols.ravel()], 1)).reshape(*grid.shape, 2)
    y, x = yx[..., 0], yx[..., 1]
    phase = 0.8 * np.sin(2 * np.pi * y / 1.2e-6) * np.cos(2 * np.pi * x / 0.9e-6)
    phase = phase + ramp_rad_per_m * x
    amplitude = 0.9 + 0.05 * np.cos(2 * np.pi * (x + y) / 1.5e-6)
    return amplitude * np.exp(1j * phase)


def test_a_coarse_mosaic_resamples_onto_the_fine_grid_within_its_sampling_error():
    coarse = PixelGrid(COARSE_M, (-1.0e-6, -1.0e-6), (51, 51))
    fine = PixelGrid(FINE_M, (-0.6e-6, -0.5e-6), (100, 110))
    out = initial_object_from_mosaic(
        smooth_object(coarse), COARSE_M, coarse.origin_m,
        pixel_size_m=FINE_M, shape=fine.shape, origin_m=fine.origin_m,
    )  # fmt: skip
    truth = smooth_object(fine)
    assert out.shape == fine.shape and out.dtype == np.complex64
    error = np.angle(out * np.conj(truth))
    assert np.sqrt(np.mean(error**2)) < 0.02  # linear interpolation of a smooth phase
    assert np.max(np.abs(np.abs(out) - np.abs(truth))) < 0.01


def test_a_phase_that_wraps_keeps_its_amplitude():
    """Resampling the phase through its phasor (not real and imaginary parts with the
    amplitude) keeps a steep ramp's amplitude: complex interpolation would shrink it."""
    coarse = PixelGrid(COARSE_M, (-1.0e-6, -1.0e-6), (51, 51))
    fine = PixelGrid(FINE_M, (-0.6e-6, -0.5e-6), (100, 110))
    steep = 2.0 / COARSE_M  # 2 rad per coarse pixel: wraps every 3 pixels
    out = initial_object_from_mosaic(
        smooth_object(coarse, steep), COARSE_M, coarse.origin_m,
        pixel_size_m=FINE_M, shape=fine.shape, origin_m=fine.origin_m,
    )  # fmt: skip
    truth = smooth_object(fine, steep)
    assert np.min(np.abs(out)) > 0.8  # linear on real/imag: down to ~0.5 between pixels
    assert np.sqrt(np.mean(np.angle(out * np.conj(truth)) ** 2)) < 0.3


def test_unmeasured_pixels_are_filled_with_the_measured_median_and_mean_phase():
    coarse = PixelGrid(COARSE_M, (-1.0e-6, -1.0e-6), (51, 51))
    mosaic = 0.7 * np.exp(1j * 0.4) * np.ones(coarse.shape, complex)
    mosaic[:, 30:] = 0  # right of x = 0.2 um nothing was measured
    fine = PixelGrid(FINE_M, (-0.5e-6, -0.5e-6), (100, 100))
    out = initial_object_from_mosaic(
        mosaic, COARSE_M, coarse.origin_m,
        pixel_size_m=FINE_M, shape=fine.shape, origin_m=fine.origin_m,
    )  # fmt: skip
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(np.abs(out), 0.7, atol=1e-5)  # no dark edge, no step
    np.testing.assert_allclose(np.angle(out), 0.4, atol=1e-5)


def test_a_mosaic_of_another_region_is_refused(small_scan):
    grid = PixelGrid(COARSE_M, (5e-6, 5e-6), (40, 40))  # microns away from the scan
    other = ComplexImage(np.ones(grid.shape, complex), COARSE_M, grid.origin_m)
    with pytest.raises(ValueError, match=r"covers 0 % of the scan positions.*another scan region"):
        seed_object(small_scan, other)


def test_a_mosaic_without_any_measurement_is_refused(small_scan):
    empty = ComplexImage(np.zeros((40, 40), complex), COARSE_M, (-0.8e-6, -0.8e-6))
    with pytest.raises(ValueError, match="no measured pixel"):
        seed_object(small_scan, empty)


def test_the_seed_lies_on_the_grid_epie_makes_and_epie_accepts_it(small_scan):
    from bluesky_ptychonn.recon import EPIEOptions, make_task

    truth = small_scan.ground_truth
    coarse = ComplexImage(truth.array[::4, ::4], truth.pixel_size_m * 4, truth.origin_m)
    seed = seed_object(small_scan, coarse)
    assert seed.pixel_size_m == pytest.approx(small_scan.object_pixel_size_m)
    task = make_task(small_scan, EPIEOptions(iterations=1), initial_object=seed)
    assert task.object_shape == seed.array.shape
