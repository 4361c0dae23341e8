"""Phase synchronisation of overlapping frames: sparse Gramian and its leading eigenvector.

Frames that tile an object (exit waves in alternating projections, or stitched CNN patches)
each carry an arbitrary phase factor exp(i theta_k). With Q_k the illumination of frame k,
``a_k = conj(Q_k) z_k`` its contribution to the object and ``N = sum_k |Q_k|^2`` the summed
illumination on the object grid, the Gramian

    H_jk = <a_j, N^-1 a_k> / (|z_j| |z_k|)        (only frames whose windows overlap)

is Hermitian positive semi-definite, and for consistent frames H = D* C D with
D = diag(exp(i theta)) and C >= 0. Its leading eigenvector v therefore has
``v_k = exp(-i theta_k) u_k`` with u_k > 0: multiplying frame k by ``v_k / |v_k|`` removes all
relative phases at once (Marchesini, Tu & Wu, "Alternating projection, ptychographic imaging
and phase synchronization", ACHA 2016; Ni & Marchesini). A few power iterations started from
the previous eigenvector's modulus are enough inside an iterative loop.

Pure numpy/scipy (no torch, no engine state): `synchronise_frames` works on plain lists of
(patch, position) as a live stitcher has them; `synchronise_exit_waves` is the form the
alternating-projections engine calls. Corners and positions are object-grid pixels
(row, column); a window's pixel [0, 0] sits at its corner.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse
from threadpoolctl import threadpool_limits

from ..geometry import patch_corners

__all__ = [
    "SyncResult",
    "leading_eigenvector",
    "overlap_gramian",
    "synchronise_exit_waves",
    "synchronise_frames",
]

TINY = 1e-30


@dataclass
class SyncResult:
    """Outcome of one synchronisation.

    Attributes:
        phases: (F,) radians; multiply frame k by exp(i phases[k]) to synchronise it.
        eigenvector: (F,) complex leading eigenvector of the Gramian (warm start for the next
            call: pass ``abs(eigenvector)`` once the frames have been rotated).
        iterations: power iterations run.
        residual: ||H v - (v^H H v) v|| / ||H v|| at the end (0 for an exact eigenvector).
    """

    phases: np.ndarray
    eigenvector: np.ndarray
    iterations: int
    residual: float


def _window_indices(corners: np.ndarray, frame_shape: tuple[int, int], width: int) -> np.ndarray:
    h, w = frame_shape
    rows = corners[:, 0, None] + np.arange(h)
    cols = corners[:, 1, None] + np.arange(w)
    return (rows[:, :, None] * width + cols[:, None, :]).reshape(corners.shape[0], h * w)


def overlap_gramian(
    contributions: np.ndarray,
    corners: np.ndarray,
    object_shape: tuple[int, int],
    norms: np.ndarray,
    object_weight: np.ndarray | None = None,
    pixel_mask: np.ndarray | None = None,
) -> sparse.csr_matrix:
    """The normalised Gramian ``H_jk = <a_j, N^-1 a_k> / (|z_j| |z_k|)`` as a sparse matrix.

    Only pairs of frames that share object pixels get an entry (the sparse product
    ``A^H N^-1 A`` of the pixels-by-frames matrix A generates exactly those).

    Args:
        contributions: (F, h, w) complex a_k, each frame's contribution to the object.
        corners: (F, 2) int (row, col) of each window's pixel [0, 0] on the object grid.
        object_shape: (rows, cols) of the object grid; every window must lie inside.
        norms: (F,) |z_k| (frame norms); zero norms are treated as tiny.
        object_weight: (rows, cols) N > 0 where frames land; None uses ones.
        pixel_mask: (h, w) bool, frame pixels to use (e.g. where the probe is not negligible).

    Returns:
        (F, F) complex128 Hermitian positive semi-definite CSR matrix.
    """
    contributions = np.asarray(contributions)
    f, h, w = contributions.shape
    corners = np.asarray(corners, dtype=np.int64)
    if corners.shape != (f, 2):
        raise ValueError(f"corners must have shape ({f}, 2), got {corners.shape}")
    rows, cols = object_shape
    if (
        corners.min(initial=0) < 0
        or np.any(corners[:, 0] + h > rows)
        or np.any(corners[:, 1] + w > cols)
    ):
        raise ValueError("a frame's window lies outside the object grid")
    index = _window_indices(corners, (h, w), cols)
    values = contributions.reshape(f, h * w)
    if pixel_mask is not None:
        keep = np.asarray(pixel_mask, bool).reshape(-1)
        index, values = index[:, keep], values[:, keep]
    k = index.shape[1]
    values = values.astype(np.complex128)
    weighted = values
    if object_weight is not None:
        weight = np.asarray(object_weight, dtype=np.float64).reshape(-1)
        weighted = values / np.maximum(weight[index], TINY)
    indptr = np.arange(f + 1, dtype=np.int64) * k
    shape = (rows * cols, f)
    a = sparse.csc_matrix((values.ravel(), index.ravel(), indptr), shape=shape)
    wa = sparse.csc_matrix((weighted.ravel(), index.ravel(), indptr), shape=shape)
    gram = (a.conj().T @ wa).tocsr()
    scale = 1.0 / np.maximum(np.asarray(norms, dtype=np.float64), TINY)
    diag = sparse.diags(scale)
    return (diag @ gram @ diag).tocsr()


def leading_eigenvector(
    gram: sparse.spmatrix | np.ndarray,
    start: np.ndarray | None = None,
    iterations: int = 5,
    tol: float | None = None,
) -> tuple[np.ndarray, int, float]:
    """Leading eigenvector of a Hermitian PSD matrix by power iteration.

    Args:
        gram: (F, F) Hermitian positive semi-definite matrix (sparse or dense).
        start: (F,) warm start; default all ones.
        iterations: the most power iterations to run.
        tol: stop early once the eigen-residual ||H v - rho v|| / ||H v|| drops below it.

    Returns:
        (v with ||v|| = 1, iterations run, final residual).
    """
    n = gram.shape[0]
    v = np.ones(n, dtype=np.complex128) if start is None else np.asarray(start, np.complex128)
    if v.shape != (n,):
        raise ValueError(f"start must have shape ({n},), got {v.shape}")
    norm = np.linalg.norm(v)
    if norm == 0:
        raise ValueError("the start vector is zero")
    v = v / norm
    # each step is a sparse mat-vec and a few vector reductions of F elements: threaded BLAS
    # only adds wake-up costs there (10x slower on a busy 2-core machine), so use one thread
    with threadpool_limits(limits=1, user_api="blas"):
        return _power_iteration(gram, v, iterations, tol)


def _power_iteration(
    gram: sparse.spmatrix | np.ndarray, v: np.ndarray, iterations: int, tol: float | None
) -> tuple[np.ndarray, int, float]:
    residual = np.inf
    done = 0
    while done < iterations:
        done += 1
        hv = gram @ v
        hv_norm = np.linalg.norm(hv)
        if hv_norm == 0:
            raise ValueError("the Gramian annihilates the start vector (frames carry no signal?)")
        rho = np.vdot(v, hv).real
        residual = float(np.linalg.norm(hv - rho * v) / hv_norm)
        v = hv / hv_norm
        if tol is not None and residual < tol:
            break
    return v, done, residual


def _phases(v: np.ndarray) -> np.ndarray:
    return np.angle(v)


def synchronise_exit_waves(
    exit_waves: np.ndarray,
    corners: np.ndarray,
    probes: np.ndarray,
    object_shape: tuple[int, int],
    *,
    object_weight: np.ndarray | None = None,
    start: np.ndarray | None = None,
    iterations: int = 5,
    tol: float | None = None,
    support_threshold: float = 0.0,
) -> SyncResult:
    """Synchronise exit waves z_k = Q_k O_k exp(i theta_k) (alternating projections' frames).

    Args:
        exit_waves: (F, h, w) complex frames.
        corners: (F, 2) int window corners on the object grid (pixels).
        probes: (h, w) or (F, h, w) complex illumination Q_k of each frame.
        object_shape: (rows, cols) of the object grid.
        object_weight: (rows, cols) summed illumination N; default computed from ``probes``.
        start: warm start of the eigenvector (e.g. ``abs`` of the previous one).
        iterations, tol: power iteration budget and early stop (see `leading_eigenvector`).
        support_threshold: ignore frame pixels where |Q|^2 < threshold * max |Q|^2.

    Returns:
        A `SyncResult`; ``exit_waves * exp(1j * phases)[:, None, None]`` are synchronised.
    """
    z = np.asarray(exit_waves)
    q = np.asarray(probes)
    intensity = np.abs(q) ** 2
    if object_weight is None:
        object_weight = _accumulate(np.broadcast_to(intensity, z.shape), corners, object_shape)
    mask = None
    if support_threshold > 0:
        ref = intensity if intensity.ndim == 2 else intensity.max(axis=0)
        mask = ref >= support_threshold * ref.max()
    gram = overlap_gramian(
        np.conj(q) * z,
        corners,
        object_shape,
        np.linalg.norm(z.reshape(z.shape[0], -1), axis=1),
        object_weight,
        mask,
    )
    v, n, res = leading_eigenvector(gram, start, iterations, tol)
    return SyncResult(_phases(v), v, n, res)


def _accumulate(values: np.ndarray, corners: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    out = np.zeros(shape[0] * shape[1], dtype=np.float64)
    index = _window_indices(np.asarray(corners, np.int64), values.shape[-2:], shape[1])
    np.add.at(out, index.ravel(), np.asarray(values, np.float64).reshape(-1))
    return out.reshape(shape)


def synchronise_frames(
    frames: np.ndarray | list[np.ndarray],
    positions_px: np.ndarray,
    weights: np.ndarray | None = None,
    *,
    iterations: int = 1000,
    tol: float = 1e-10,
    start: np.ndarray | None = None,
) -> SyncResult:
    """Relative phases that make overlapping object patches agree (e.g. CNN patches to stitch).

    Patch k (an object estimate p_k, phase offset unknown) contributes ``a_k = w_k p_k`` with
    weights w (e.g. the probe intensity, or ones), ``N = sum w`` and ``|z_k| = ||sqrt(w) p_k||``.

    Args:
        frames: F patches of one shape (h, w), complex.
        positions_px: (F, 2) (row, col) positions in pixels of a common grid (any origin) of
            each patch's pixel (h//2, w//2); fractional values are rounded.
        weights: (h, w) or (F, h, w) non-negative weights; default ones.
        iterations, tol: power iteration budget and stopping residual.
        start: warm start of the eigenvector.

    Returns:
        A `SyncResult`: multiply patch k by exp(1j * phases[k]); one global phase stays free.
    """
    p = np.asarray(frames)
    if p.ndim != 3:
        raise ValueError(f"frames must be F patches of one (h, w) shape, got shape {p.shape}")
    f, h, w = p.shape
    corners, _ = patch_corners(positions_px, (h, w))
    if corners.shape[0] != f:
        raise ValueError(f"{f} frames but {corners.shape[0]} positions")
    corners = corners - corners.min(axis=0)
    shape = (int(corners[:, 0].max()) + h, int(corners[:, 1].max()) + w)
    wt = np.ones((h, w)) if weights is None else np.asarray(weights, dtype=np.float64)
    if np.any(wt < 0) or not np.all(np.isfinite(wt)):
        raise ValueError("weights must be finite and non-negative")
    wt = np.broadcast_to(wt, p.shape)
    weight = _accumulate(wt, corners, shape)
    norms = np.sqrt(np.sum(wt * np.abs(p) ** 2, axis=(1, 2)))
    gram = overlap_gramian(wt * p, corners, shape, norms, weight)
    v, n, res = leading_eigenvector(gram, start, iterations, tol)
    return SyncResult(_phases(v), v, n, res)
