"""Global phase synchronisation of a mosaic: all patches at once, after greedy alignment."""

import numpy as np
import pytest
from scipy import ndimage

from bluesky_ptychonn.geometry import PixelGrid
from bluesky_ptychonn.stitch import Mosaic, gaussian_weight
from bluesky_ptychonn.stitch.synchronise import CHUNK_PATCHES, KeptPatches, linked_patches

PATCH = 32
PIXEL_M = 10e-9


def smooth_object(shape, rng):
    """Amplitude 0.6-1 and phase within +-2 rad, both smooth over a few pixels."""
    phase = ndimage.gaussian_filter(rng.normal(size=shape), 4)
    amplitude = 0.6 + 0.4 * ndimage.gaussian_filter(rng.uniform(size=shape), 3)
    return amplitude * np.exp(2j * phase / np.abs(phase).max())


def interleaved_raster(seed=0, side=9, noise=0.1):
    """A raster at half-patch steps, stitched in two passes: first every patch of an even row
    and column (they share no pixel: nothing relates their random phase offsets), then the
    rest. Greedy alignment cannot undo the first pass; a global synchronisation can."""
    rng = np.random.default_rng(seed)
    step = PATCH // 2
    extent = step * (side - 1) + PATCH + 8
    truth = smooth_object((extent, extent), rng)
    index = np.stack(np.meshgrid(np.arange(side), np.arange(side), indexing="ij"), -1)
    index = index.reshape(-1, 2)
    first = np.all(index % 2 == 0, axis=1)
    corners = index[np.concatenate([np.flatnonzero(first), np.flatnonzero(~first)])] * step + 4
    patches = np.stack([truth[r : r + PATCH, c : c + PATCH] for r, c in corners])
    offsets = rng.uniform(-np.pi, np.pi, len(patches))[:, None, None]
    patches = patches * np.exp(1j * (offsets + noise * rng.normal(size=patches.shape)))
    grid = PixelGrid(PIXEL_M, (0.0, 0.0), (extent, extent))
    return truth, grid, patches, grid.to_metres(corners + PATCH // 2)


def phase_error(mosaic, truth):
    """RMS phase error (rad) where the mosaic is well covered, one global phase removed."""
    snapshot = mosaic.snapshot()
    region = snapshot.weights > 0.2 * snapshot.weights.max()
    estimate, reference = snapshot.complex[region], truth[region]
    estimate = estimate * np.exp(-1j * np.angle(np.vdot(reference, estimate)))
    return float(np.sqrt(np.mean(np.angle(estimate * np.conj(reference)) ** 2)))


def stitched(grid, patches, positions, batch=16, **options):
    mosaic = Mosaic(grid, gaussian_weight((PATCH, PATCH), PATCH / 2), **options)
    for s in range(0, len(patches), batch):
        chunk = patches[s : s + batch]
        mosaic.add(np.angle(chunk), np.abs(chunk), positions[s : s + batch])
    return mosaic


@pytest.mark.parametrize("max_pixels", [1 << 22, 10_000])  # every pixel, and every 3rd
def test_global_synchronisation_fixes_what_greedy_alignment_cannot(max_pixels):
    truth, grid, patches, positions = interleaved_raster()
    mosaic = stitched(grid, patches, positions, keep_patches_bytes=1 << 26)
    greedy = phase_error(mosaic, truth)
    result = mosaic.synchronise(max_pixels=max_pixels)
    synchronised = phase_error(mosaic, truth)
    assert result.subsample == (1 if max_pixels > 1e6 else 3)
    assert synchronised < 0.1  # the noise floor: 0.1 rad per pixel, averaged over ~2 patches
    assert greedy > 5 * synchronised
    assert mosaic.frames_used == len(patches) and mosaic.patches_since_sync == 0
    # the rebuilt canvas is the sum of the kept patches at their new rotations
    rebuilt = stitched(grid, patches * np.exp(1j * mosaic.kept.rotations)[:, None, None],
                       positions, align_phase=False)  # fmt: skip
    np.testing.assert_allclose(mosaic.sums, rebuilt.sums, atol=1e-4)


def test_synchronising_again_starts_warm_and_takes_the_new_patches_in():
    truth, grid, patches, positions = interleaved_raster(seed=1)
    half = 49  # the first pass (25 lone patches) and half of the second
    mosaic = stitched(grid, patches[:half], positions[:half], keep_patches_bytes=1 << 26)
    first = mosaic.synchronise()
    assert len(first.phases) == half
    for s in range(half, len(patches), 16):
        chunk = patches[s : s + 16]
        mosaic.add(np.angle(chunk), np.abs(chunk), positions[s : s + 16])
    assert mosaic.patches_since_sync == len(patches) - half
    second = mosaic.synchronise()
    assert len(second.phases) == len(patches)
    assert phase_error(mosaic, truth) < 0.1


def test_patches_that_overlap_nothing_keep_their_phase():
    rng = np.random.default_rng(2)
    grid = PixelGrid(PIXEL_M, (0.0, 0.0), (200, 200))
    # a sparse scan (overlap 0: corners a patch apart) plus two overlapping patches
    corners = np.array([[0, 0], [0, 32], [32, 0], [64, 64], [120, 120], [120, 136]])
    patches = np.exp(1j * rng.uniform(-np.pi, np.pi, (len(corners), PATCH, PATCH)))
    positions = grid.to_metres(corners + PATCH // 2)
    mosaic = stitched(grid, patches, positions, keep_patches_bytes=1 << 26)
    assert linked_patches(corners, (PATCH, PATCH)).tolist() == [False] * 4 + [True] * 2
    before = mosaic.snapshot()
    result = mosaic.synchronise()
    after = mosaic.snapshot()
    assert np.all(np.isfinite(after.phase)) and np.all(result.phases[:4] == 0)
    lone = np.zeros(grid.shape, bool)
    lone[:96, :96] = True
    np.testing.assert_allclose(after.phase[lone], before.phase[lone], atol=1e-5)
    np.testing.assert_array_equal(after.weights, before.weights)


def test_a_sparse_scan_alone_is_left_as_it_is():
    grid = PixelGrid(PIXEL_M, (0.0, 0.0), (96, 96))
    corners = np.array([[r, c] for r in (0, 32, 64) for c in (0, 32, 64)])
    patches = np.exp(1j * np.random.default_rng(3).uniform(-3, 3, (9, PATCH, PATCH)))
    positions = grid.to_metres(corners + PATCH // 2)
    mosaic = stitched(grid, patches, positions, keep_patches_bytes=1 << 26)
    before = mosaic.sums.copy()
    result = mosaic.synchronise()
    assert result.iterations == 0 and not result.phases.any()
    np.testing.assert_allclose(mosaic.sums, before, atol=1e-6)


def test_past_the_memory_budget_the_mosaic_stays_greedy():
    truth, grid, patches, positions = interleaved_raster()
    budget = 40 * (8 * PATCH * PATCH + 24)  # room for 40 of the 81 patches
    mosaic = stitched(grid, patches, positions, keep_patches_bytes=budget)
    assert mosaic.kept.overflowed and mosaic.kept.count == 0 and not mosaic.can_synchronise
    before = mosaic.sums.copy()
    assert mosaic.synchronise() is None
    np.testing.assert_array_equal(mosaic.sums, before)
    assert mosaic.frames_used == len(patches)
    assert Mosaic(grid, np.ones((4, 4))).synchronise() is None  # keeps nothing by default


def test_kept_patches_cross_chunks_and_mix_unit_and_given_amplitudes():
    kept = KeptPatches((2, 3), max_bytes=1 << 20)
    rng = np.random.default_rng(4)
    phase = rng.uniform(-3, 3, (1500, 2, 3)).astype(np.float32)
    amplitude = rng.uniform(0.5, 1, (1500, 2, 3)).astype(np.float32)
    corners = rng.integers(0, 99, (1500, 2))
    for s, e, given in ((0, 700, False), (700, 1400, True), (1400, 1500, False)):
        kept.add(phase[s:e], amplitude[s:e] if given else None, corners[s:e], np.arange(s, e))
    assert kept.count == 1500 and CHUNK_PATCHES < 1500
    expected = amplitude.copy()
    expected[:700] = expected[1400:] = 1.0
    got = {name: [] for name in ("phase", "amplitude", "corners")}
    for _, p, a, c in kept.chunks():
        got["phase"].append(p)
        got["amplitude"].append(np.ones_like(p) if a is None else a)
        got["corners"].append(c)
    np.testing.assert_array_equal(np.concatenate(got["phase"]), phase)
    np.testing.assert_array_equal(np.concatenate(got["amplitude"]), expected)
    np.testing.assert_array_equal(np.concatenate(got["corners"]), corners)
    np.testing.assert_array_equal(kept.rotations, np.arange(1500))
    assert sum(len(p) for _, p, _, _ in kept.chunks(1100)) == 1100
