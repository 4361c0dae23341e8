"""Stitching weights that follow the probe on the network's patch grid."""

from __future__ import annotations

import numpy as np
import pytest

from bluesky_ptychonn.stitch.weights import default_weight, probe_patch_weight


def gaussian_probe(n: int, fwhm_px: float) -> np.ndarray:
    rows, cols = np.indices((n, n)) - n // 2
    sigma = fwhm_px / (2 * np.sqrt(2 * np.log(2)))
    return np.exp(-(rows**2 + cols**2) / (4 * sigma**2)).astype(complex)  # |P|^2: that sigma


def half_max_width(weight: np.ndarray) -> int:
    return int(np.count_nonzero(weight[weight.shape[0] // 2] >= 0.5))


def test_a_cropping_networks_weight_is_the_probe_intensity_on_its_coarser_pixels():
    probe = gaussian_probe(128, fwhm_px=36.0)  # 36 readout px = 9 patch px at 4x coarser
    weight = probe_patch_weight(probe, (32, 32), pixel_scale=4)
    assert weight.shape == (32, 32) and weight.max() == pytest.approx(1.0)
    assert 8 <= half_max_width(weight) <= 10
    assert half_max_width(default_weight((32, 32))) >= 16  # the old default: twice as wide


def test_a_binning_networks_weight_is_the_central_probe_intensity():
    probe = gaussian_probe(128, fwhm_px=12.0)
    weight = probe_patch_weight(probe, (32, 32), pixel_scale=1)
    assert weight.shape == (32, 32)
    assert 11 <= half_max_width(weight) <= 13


def test_a_probe_that_fits_neither_way_is_refused():
    with pytest.raises(ValueError, match="does not fit 32x32 patches"):
        probe_patch_weight(gaussian_probe(100, 10.0), (32, 32), pixel_scale=4)
