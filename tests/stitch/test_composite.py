"""The accumulated image of many runs and the mosaic of a scalar field (uncertainty)."""

from __future__ import annotations

import numpy as np
import pytest

from bluesky_ptychonn.geometry import PixelGrid
from bluesky_ptychonn.stitch.composite import Composite, ValueMosaic

PIXEL = 10e-9


def run_mosaic(rows, cols, value, weight=1.0):
    phase = np.full((rows, cols), value, np.float32)
    return phase, np.ones_like(phase), np.full_like(phase, weight)


def test_runs_side_by_side_grow_the_canvas_and_keep_their_values():
    composite = Composite()
    composite.add(*run_mosaic(4, 5, 0.5), PIXEL, (0.0, 0.0), run_uid="a")
    composite.add(*run_mosaic(4, 5, -0.7), PIXEL, (2 * PIXEL, 10 * PIXEL), run_uid="b")
    image = composite.image()
    assert image.runs == ["a", "b"]
    assert image.grid.shape == (6, 15) and image.grid.origin_m == (0.0, 0.0)
    np.testing.assert_allclose(image.phase[:4, :5], 0.5, atol=1e-6)
    np.testing.assert_allclose(image.phase[2:6, 10:15], -0.7, atol=1e-6)
    assert image.weights[5, 0] == 0 and image.phase[5, 0] == 0  # never measured


def test_overlapping_runs_average_as_weighted_complex_values_without_wrapping():
    composite = Composite()
    composite.add(*run_mosaic(3, 3, np.pi - 0.1, weight=1.0), PIXEL, (0.0, 0.0))
    composite.add(*run_mosaic(3, 3, -np.pi + 0.1, weight=1.0), PIXEL, (0.0, 0.0))
    # the two phases are 0.2 rad apart across the wrap: their mean is pi, not 0
    assert abs(abs(composite.image().phase[1, 1]) - np.pi) < 1e-5
    composite.add(*run_mosaic(3, 3, 0.3, weight=3.0), PIXEL, (-PIXEL, -PIXEL))
    image = composite.image()
    assert image.grid.shape == (4, 4) and image.weights[0, 0] == 3.0
    np.testing.assert_allclose(image.phase[0, 0], 0.3, atol=1e-6)


def test_another_pixel_size_starts_a_new_composite():
    composite = Composite()
    composite.add(*run_mosaic(3, 3, 0.1), PIXEL, (0.0, 0.0), run_uid="a")
    composite.add(*run_mosaic(3, 3, 0.2), 2 * PIXEL, (0.0, 0.0), run_uid="b")
    image = composite.image()
    assert image.runs == ["b"] and image.grid.pixel_size_m == 2 * PIXEL
    with pytest.raises(ValueError, match="one shape"):
        composite.add(np.zeros((3, 3)), np.zeros((3, 4)), np.zeros((3, 3)), PIXEL, (0.0, 0.0))
    assert Composite().image() is None


def test_the_value_mosaic_is_the_weighted_mean_where_patches_reach():
    grid = PixelGrid(PIXEL, (0.0, 0.0), (20, 20))
    mosaic = ValueMosaic(grid, np.ones((4, 4)))
    low = np.full((1, 4, 4), 0.1, np.float32)
    high = np.full((1, 4, 4), 0.3, np.float32)
    mosaic.add(low, np.array([[5 * PIXEL, 5 * PIXEL]]))
    mosaic.add(high, np.array([[6 * PIXEL, 6 * PIXEL]]))  # overlaps the first by 3x3
    mosaic.add(high, np.array([[-50 * PIXEL, 0.0]]))  # outside: not counted
    mean = mosaic.mean()
    assert mosaic.patches == 2
    assert mean[3, 3] == pytest.approx(0.1) and mean[7, 7] == pytest.approx(0.3)
    assert mean[5, 5] == pytest.approx(0.2)  # both patches, equal weights
    assert np.isnan(mean[0, 0])
    with pytest.raises(ValueError, match="values must be"):
        mosaic.add(np.zeros((1, 3, 3)), np.zeros((1, 2)))
