"""Phase synchronisation: Gramian structure, eigenvector, frame agreement, use inside AP."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse

from bluesky_ptychonn.recon import (
    APOptions,
    ObjectOptions,
    ProbeOptions,
    SyncOptions,
    make_task,
    synchronise_exit_waves,
    synchronise_frames,
)
from bluesky_ptychonn.recon.phase_sync import leading_eigenvector, overlap_gramian


def _grid_case(grid: int = 6, n: int = 16, step: int = 5, seed: int = 0):
    rng = np.random.default_rng(seed)
    size = (grid - 1) * step + n
    obj = rng.uniform(0.5, 1.0, (size, size)) * np.exp(
        1j * rng.uniform(-np.pi, np.pi, (size, size))
    )
    corners = np.stack(
        np.meshgrid(np.arange(grid) * step, np.arange(grid) * step, indexing="ij"), -1
    ).reshape(-1, 2)
    patches = np.stack([obj[r : r + n, c : c + n] for r, c in corners])
    return obj, corners, patches


def _spread(phases: np.ndarray) -> float:
    """Largest deviation (rad) of wrapped phases from their circular mean."""
    mean = np.angle(np.mean(np.exp(1j * phases)))
    return float(np.max(np.abs(np.angle(np.exp(1j * (phases - mean))))))


def test_random_frame_phases_are_removed_to_1e_6():
    obj, corners, patches = _grid_case()
    theta = np.random.default_rng(1).uniform(-np.pi, np.pi, len(corners))
    frames = patches * np.exp(1j * theta)[:, None, None]
    result = synchronise_frames(frames, corners + 8, iterations=5000, tol=1e-12)
    synced = frames * np.exp(1j * result.phases)[:, None, None]
    # one global phase is left: the synchronised frames agree with the truth times exp(i c)
    residual = theta + result.phases
    assert _spread(residual) < 1e-6
    c = np.exp(1j * residual[0])
    assert np.max(np.abs(synced - patches * c)) < 1e-6
    assert _spread(theta) > 1.0  # the frames really were out of phase


def test_exit_waves_with_a_probe_are_synchronised():
    obj, corners, patches = _grid_case(grid=5, seed=2)
    n = patches.shape[-1]
    rows, cols = np.indices((n, n)) - n // 2
    probe = np.exp(-(rows**2 + cols**2) / 30.0) * np.exp(0.2j * rows)
    theta = np.random.default_rng(3).uniform(-np.pi, np.pi, len(corners))
    waves = probe * patches * np.exp(1j * theta)[:, None, None]
    result = synchronise_exit_waves(
        waves, corners, probe, obj.shape, iterations=5000, tol=1e-12, support_threshold=1e-4
    )
    assert _spread(theta + result.phases) < 1e-6


def test_gramian_is_hermitian_psd_with_entries_for_overlapping_pairs_only():
    rng = np.random.default_rng(4)
    corners = np.array([[0, 0], [0, 8], [0, 30], [20, 30]])
    a = rng.normal(size=(4, 16, 16)) + 1j * rng.normal(size=(4, 16, 16))
    gram = overlap_gramian(a, corners, (40, 50), np.ones(4), np.full((40, 50), 2.0))
    dense = gram.toarray()
    np.testing.assert_allclose(dense, dense.conj().T, atol=1e-12)
    assert np.linalg.eigvalsh(dense).min() > -1e-9
    pattern = np.abs(dense) > 0
    expected = np.array(
        [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=bool
    )  # frames 2 and 3 are 20 rows apart: no overlap
    np.testing.assert_array_equal(pattern, expected)
    # H_01 = <a_0, N^-1 a_1> over the shared 16x8 columns 8..15
    h01 = np.sum(np.conj(a[0][:, 8:]) * a[1][:, :8]) / 2.0
    assert dense[0, 1] == pytest.approx(h01)


def test_power_iteration_finds_the_leading_eigenvector():
    rng = np.random.default_rng(5)
    m = rng.normal(size=(30, 30)) + 1j * rng.normal(size=(30, 30))
    h = m @ m.conj().T
    v, done, residual = leading_eigenvector(sparse.csr_matrix(h), iterations=2000, tol=1e-12)
    w, vecs = np.linalg.eigh(h)
    assert abs(np.vdot(vecs[:, -1], v)) == pytest.approx(1.0, abs=1e-9)
    assert residual < 1e-10 and done < 2000


def test_bad_sync_inputs_are_refused():
    with pytest.raises(ValueError):
        synchronise_frames(np.ones((3, 8)), np.zeros((3, 2)))
    with pytest.raises(ValueError):
        synchronise_frames(np.ones((3, 8, 8)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="non-negative"):
        synchronise_frames(np.ones((2, 8, 8)), np.zeros((2, 2)), weights=-np.ones((8, 8)))
    with pytest.raises(ValueError, match="outside"):
        overlap_gramian(np.ones((1, 8, 8)), np.array([[5, 5]]), (10, 10), np.ones(1))


def test_synchronised_alternating_projections_converge_in_fewer_iterations():
    """The seed's effect on a small noiseless grid: sync every iteration beats no sync."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from sync_case import make_case, run_case

    dataset = make_case(8)
    synced = run_case(dataset, 1, target=1e-3, max_iterations=150, power_iterations=20)
    plain = run_case(dataset, 0, target=1e-3, max_iterations=150)
    assert synced.iterations is not None  # about 95 iterations
    assert plain.iterations is None and plain.final_error > 1.2e-3  # not within 150


def test_sync_option_runs_inside_the_ap_task(noiseless_scan):
    options = APOptions(
        iterations=3,
        object=ObjectOptions(margin_px=0),
        probe=ProbeOptions(update=False),
        sync=SyncOptions(every=1, power_iterations=3),
    )
    task = make_task(noiseless_scan, options).run()
    assert task.sync_iterations == [3, 3, 3]
    assert task.sync_vector.shape == (noiseless_scan.n_patterns,)
    assert np.linalg.norm(task.sync_vector) == pytest.approx(1.0)
    assert np.all(np.isfinite(task.error_history))
