"""The live mosaic: patches land where their positions say, and agree in phase."""

import numpy as np
import pytest

from bluesky_ptychonn.geometry import PixelGrid
from bluesky_ptychonn.metrics import phase_rms_error
from bluesky_ptychonn.sim import SimBeamline, SimBeamlineConfig
from bluesky_ptychonn.sim.scans import fermat_spiral
from bluesky_ptychonn.stitch import Mosaic, gaussian_weight, probe_weight


@pytest.fixture(scope="module")
def scan():
    beamline = SimBeamline(SimBeamlineConfig(field_of_view_m=(2e-6, 2e-6), sample="siemens-star"))
    positions = fermat_spiral(0.6e-6, step_m=120e-9)
    on_grid = np.round(positions / beamline.pixel_size_m) * beamline.pixel_size_m
    truth = beamline.ground_truth_patches(on_grid)
    return beamline, on_grid, truth


def without_global_phase(estimate, reference, region):
    """The estimate rotated by the one global phase that best matches the reference."""
    return estimate * np.exp(-1j * np.angle(np.vdot(reference[region], estimate[region])))


def truth_on(mosaic, beamline):
    """The sample resampled onto the mosaic's canvas (same pixel size, integer offset)."""
    offset = np.round(beamline.sample.grid.to_pixels(np.array([mosaic.grid.origin_m])))[0]
    r0, c0 = offset.astype(int)
    rows, cols = mosaic.grid.shape
    return beamline.sample.array[r0 : r0 + rows, c0 : c0 + cols]


def test_patches_with_random_phase_offsets_are_synchronised(scan):
    beamline, positions, truth = scan
    rng = np.random.default_rng(0)
    offsets = rng.uniform(-np.pi, np.pi, len(positions))
    phase = np.angle(truth * np.exp(1j * offsets)[:, None, None])
    weight = probe_weight(beamline.probe_on_readout_grid, floor=0.05)
    aligned = Mosaic.covering(positions, beamline.pixel_size_m, weight, align_phase=True)
    naive = Mosaic.covering(positions, beamline.pixel_size_m, weight, align_phase=False)
    for mosaic in (aligned, naive):
        mosaic.add(phase, np.abs(truth), positions)
    reference = truth_on(aligned, beamline)
    snapshot = aligned.snapshot()
    region = snapshot.weights > 0.2 * snapshot.weights.max()
    assert region.sum() > 8_000
    estimate = without_global_phase(snapshot.complex, reference, region)
    error = phase_rms_error(estimate, reference, mask=region, align=False)
    assert error < 0.02  # whole-pixel positions of exact patches: agreement to rounding
    naive_estimate = without_global_phase(naive.snapshot().complex, reference, region)
    naive_error = phase_rms_error(naive_estimate, reference, mask=region, align=False)
    assert naive_error > 10 * error  # without synchronisation the offsets smear the phase
    assert snapshot.frames_used == len(positions)
    amplitude_error = np.abs(snapshot.amplitude[region] - np.abs(reference[region])).max()
    assert amplitude_error < 1e-3


def test_sparse_patches_land_at_their_positions():
    grid = PixelGrid.centred((200, 200), 10e-9)
    mosaic = Mosaic(grid, np.ones((16, 16), np.float32), align_phase=False)
    mosaic.add(np.full((1, 16, 16), 0.5), None, np.array([[300e-9, -400e-9]]))
    snapshot = mosaic.snapshot()
    rows, cols = np.nonzero(snapshot.weights)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (122, 137, 52, 67)
    assert np.allclose(snapshot.phase[rows, cols], 0.5)


def test_patches_outside_the_canvas_are_counted_not_lost_silently():
    mosaic = Mosaic(PixelGrid.centred((50, 50), 10e-9), gaussian_weight((16, 16), 6))
    mosaic.add(np.zeros((2, 16, 16)), None, np.array([[0.0, 0.0], [5e-6, 5e-6]]))
    assert (mosaic.frames_used, mosaic.frames_outside) == (1, 1)


def test_bad_patches_are_refused():
    mosaic = Mosaic(PixelGrid.centred((50, 50), 10e-9), gaussian_weight((16, 16), 6))
    with pytest.raises(ValueError, match="shape"):
        mosaic.add(np.zeros((1, 8, 8)), None, np.zeros((1, 2)))
    with pytest.raises(ValueError, match="NaN"):
        mosaic.add(np.full((1, 16, 16), np.nan), None, np.zeros((1, 2)))
    with pytest.raises(ValueError, match="positions"):
        mosaic.add(np.zeros((2, 16, 16)), None, np.zeros((1, 2)))
    assert mosaic.frames_used == 0


def test_subpixel_placement_beats_nearest_pixel_for_off_grid_positions(scan):
    beamline, on_grid, _ = scan
    positions = on_grid + np.random.default_rng(1).uniform(-0.5, 0.5, on_grid.shape) * 10e-9
    truth = beamline.ground_truth_patches(positions)
    weight = probe_weight(beamline.probe_on_readout_grid, floor=0.05)
    errors = {}
    for subpixel in (False, True):
        mosaic = Mosaic.covering(positions, beamline.pixel_size_m, weight, subpixel=subpixel)
        mosaic.add(np.angle(truth), np.abs(truth), positions)
        snapshot = mosaic.snapshot()
        reference = truth_on(mosaic, beamline)
        region = snapshot.weights > 0.2 * snapshot.weights.max()
        estimate = without_global_phase(snapshot.complex, reference, region)
        errors[subpixel] = phase_rms_error(estimate, reference, mask=region, align=False)
    assert errors[True] < 0.6 * errors[False]


def reference_sums(shape, weight, batches, align):
    """`Mosaic.add` written the plain way: one patch at a time, complex128, numpy only.

    Returns the four canvas sums, the rotation of every patch, and (used, outside) counts."""
    field = np.zeros(shape, complex)
    amplitude_sum, weight_sum = np.zeros(shape), np.zeros(shape)
    rotations, used, outside = [], 0, 0
    h, w = weight.shape
    for phase, amplitude, corners in batches:
        for k, (r0, c0) in enumerate(corners):
            rows = slice(max(r0, 0), min(r0 + h, shape[0]))
            cols = slice(max(c0, 0), min(c0 + w, shape[1]))
            if rows.start >= rows.stop or cols.start >= cols.stop:
                rotations.append(0.0)
                outside += 1
                continue
            inside = slice(rows.start - r0, rows.stop - r0), slice(cols.start - c0, cols.stop - c0)
            a = 1.0 if amplitude is None else amplitude[k][inside]
            weighted = weight[inside] * a
            piece = weighted * np.exp(1j * phase[k][inside].astype(float))
            rotation = 0.0
            if align:
                overlap = np.vdot(piece, field[rows, cols])
                if abs(overlap) ** 2 > 1e-12:
                    rotation = float(np.angle(overlap))
            field[rows, cols] += piece * np.exp(1j * rotation)
            amplitude_sum[rows, cols] += weighted
            weight_sum[rows, cols] += weight[inside]
            rotations.append(rotation)
            used += 1
    sums = np.stack([field.real, field.imag, amplitude_sum, weight_sum])
    return sums, np.array(rotations), used, outside


@pytest.mark.parametrize("align", [False, True])
def test_compiled_add_matches_a_plain_reference_including_edges_and_alignment(align):
    rng = np.random.default_rng(3)
    shape, patch = (50, 64), (12, 20)  # not square: rows and columns cannot be swapped
    rows, cols = np.mgrid[: shape[0] + 40, : shape[1] + 60]
    truth = (0.5 + 0.5 * np.cos(rows / 7.0) ** 2) * np.exp(  # a smooth object
        1j * (2.0 * np.sin(rows / 9.0) + 1.5 * np.cos(cols / 11.0))
    )
    grid = PixelGrid(10e-9, (0.0, 0.0), shape)
    weight = gaussian_weight(patch, 8)
    mosaic = Mosaic(grid, weight, align_phase=align)
    batches, got = [], []
    for size, unit in ((7, False), (1, True), (12, False), (9, True)):
        # corners from 15 pixels beyond the top-left edge to beyond the bottom-right one: some
        # patches clipped at every edge, some entirely outside
        corners = np.stack(
            [rng.integers(-15, shape[0] + 2, size), rng.integers(-22, shape[1] + 2, size)], 1
        )
        patches = np.stack(
            [truth[r + 20 : r + 20 + patch[0], c + 30 : c + 30 + patch[1]] for r, c in corners]
        )
        offsets = rng.uniform(-np.pi, np.pi, size) + rng.choice([0, 40.0], size)  # big phases too
        phase = (np.angle(patches) + offsets[:, None, None]).astype(np.float32)
        amplitude = None if unit else np.abs(patches).astype(np.float32)
        batches.append((phase, amplitude, corners))
        positions = grid.to_metres(corners + np.array(patch) // 2)
        got.append(mosaic.add(phase, amplitude, positions))
    sums, rotations, used, outside = reference_sums(shape, weight, batches, align)
    assert outside > 0 and used > 20  # the draw exercises both
    assert (mosaic.frames_used, mosaic.frames_outside) == (used, outside)
    np.testing.assert_allclose(mosaic.sums, sums, rtol=0, atol=2e-5 * np.abs(sums).max())
    turn = np.angle(np.exp(1j * (np.concatenate(got) - rotations)))
    assert np.abs(turn).max() < 1e-4
    if align:
        assert np.count_nonzero(rotations) > used // 2  # most patches overlap earlier ones
    with pytest.raises(ValueError):
        mosaic.sums[0, 0, 0] = 1.0  # a read-only view


def test_infinite_amplitudes_are_refused_before_anything_is_added():
    mosaic = Mosaic(PixelGrid.centred((50, 50), 10e-9), gaussian_weight((16, 16), 6))
    amplitude = np.ones((2, 16, 16))
    amplitude[1, 3, 4] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        mosaic.add(np.zeros((2, 16, 16)), amplitude, np.zeros((2, 2)))
    assert mosaic.frames_used == 0 and not mosaic.sums.any()


def test_warm_up_loads_the_kernel_once_and_is_idempotent(monkeypatch):
    from bluesky_ptychonn.stitch import accumulate as kernel

    kernel.warm_up()
    assert kernel._warm

    def must_not_run(*args, **kwargs):
        raise AssertionError("warm_up ran the kernel a second time")

    monkeypatch.setattr(kernel, "accumulate", must_not_run)
    kernel.warm_up()  # the second call does nothing
