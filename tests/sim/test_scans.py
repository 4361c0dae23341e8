"""Scan trajectories: counts, extents, and the overlap ratio they promise."""

import numpy as np
import pytest

from bluesky_ptychonn.sim.scans import (
    fermat_spiral,
    nearest_neighbour_distances,
    overlap_ratio,
    raster_scan,
    scan_positions,
    sparse_grid,
    step_from_overlap,
)

BEAM = 400e-9


@pytest.mark.parametrize("overlap", [0.0, 0.3, 0.5, 0.8])
@pytest.mark.parametrize("pattern", ["spiral", "raster", "sparse"])
def test_overlap_ratio_matches_request(pattern, overlap):
    positions = scan_positions(pattern, (3e-6, 3e-6), BEAM, overlap)
    assert overlap_ratio(positions, BEAM) == pytest.approx(overlap, abs=0.01)


def test_spiral_fills_its_disc_uniformly():
    positions = fermat_spiral(2e-6, step_m=100e-9)
    radius = np.hypot(*positions.T)
    assert radius.max() <= 2e-6 + 1e-12
    # uniform density: half the points inside radius R / sqrt(2)
    assert np.mean(radius < 2e-6 / np.sqrt(2)) == pytest.approx(0.5, abs=0.02)
    distances = nearest_neighbour_distances(positions)
    assert np.percentile(distances, 5) > 0.8 * 100e-9  # no clumps


def test_spiral_by_point_count():
    positions = fermat_spiral(1e-6, n_points=500, centre_m=(1e-6, -2e-6))
    assert positions.shape == (500, 2)
    assert np.hypot(positions[:, 0] - 1e-6, positions[:, 1] + 2e-6).max() == pytest.approx(1e-6)


def test_raster_extent_order_and_snake():
    positions = raster_scan((1e-6, 2e-6), 0.5e-6)
    assert positions.shape == (3 * 5, 2)
    assert positions[:, 0].min() == pytest.approx(-0.5e-6)
    assert positions[:, 1].max() == pytest.approx(1e-6)
    assert positions[4, 1] == pytest.approx(1e-6) and positions[5, 1] == pytest.approx(1e-6)
    steps = np.hypot(*np.diff(positions, axis=0).T)
    assert steps.max() == pytest.approx(0.5e-6)  # snake: no fly-back


def test_raster_jitter_is_bounded_and_seeded():
    plain = raster_scan((2e-6, 2e-6), 200e-9)
    jittered = raster_scan((2e-6, 2e-6), 200e-9, jitter_fraction=0.2, seed=1)
    moved = np.abs(jittered - plain)
    assert moved.max() <= 0.2 * 200e-9 + 1e-15
    assert moved.mean() > 0.05 * 200e-9
    assert np.array_equal(jittered, raster_scan((2e-6, 2e-6), 200e-9, jitter_fraction=0.2, seed=1))


def test_sparse_grid_with_zero_overlap_touches():
    positions = sparse_grid((2e-6, 2e-6), BEAM, 0.0)
    assert np.median(nearest_neighbour_distances(positions)) == pytest.approx(BEAM)


@pytest.mark.parametrize("overlap", [1.0, 1.5, float("nan")])
def test_overlap_of_one_or_more_is_refused(overlap):
    with pytest.raises(ValueError, match="overlap ratio must be below 1"):
        step_from_overlap(BEAM, overlap)


@pytest.mark.parametrize("beam", [-1e-7, 0.0, float("inf")])
def test_non_positive_beam_size_is_refused(beam):
    with pytest.raises(ValueError, match="beam size must be a positive length"):
        scan_positions("spiral", (1e-6, 1e-6), beam, 0.5)


def test_unknown_pattern_and_empty_scan():
    with pytest.raises(ValueError, match="unknown scan pattern"):
        scan_positions("zigzag", (1e-6, 1e-6), BEAM, 0.5)
    with pytest.raises(ValueError, match="no points"):
        fermat_spiral(1e-6, n_points=0)
