"""Mixed-state probes (partial coherence): the modes' start and their orthogonalisation.

A partially coherent beam is modelled as M mutually incoherent probe modes P_m (Thibault &
Menzel 2013): a pattern is the sum of the modes' far-field intensities, sum_m |F[P_m O]|^2.
Only the sum sum_m P_m P_m^* is determined by the data, so the modes are kept orthogonal and
sorted by power (the eigenmodes of that sum), as PtychoShelves and pty-chi do.

`initial_modes` adds modes to a single probe as pty-chi's ``generate_initial_modes`` does
(the primary probe times Hermite-like polynomials x^i y^j under a Gaussian envelope,
Gram-Schmidt orthogonalised, each extra mode holding a small share of the power);
`orthogonalise_modes` is pty-chi's SVD orthogonalisation (the eigenvectors of the M x M
Gram matrix of the modes), which leaves the summed intensity sum_m |P_m|^2 unchanged at every
pixel, so the model of the data is unchanged. Pure torch (numpy in, numpy out for the start).
"""

from __future__ import annotations

import math

import numpy as np
import torch


def initial_modes(probe: np.ndarray, n_modes: int, extra_power: float = 0.02) -> np.ndarray:
    """(n_modes, H, W) complex64 modes built from a probe, its total power kept.

    Args:
        probe: (H, W) probe, or (M', H, W) modes (the first ``n_modes`` are kept, modes are
            added when M' < ``n_modes``), in sqrt(photons).
        n_modes: number of modes wanted (>= 1).
        extra_power: power of each added mode as a fraction of the total (dimensionless, in
            [0, 1 / n_modes)); pty-chi's ``secondary_mode_energy`` (0.02).
    """
    probe = np.asarray(probe)
    modes = probe[None] if probe.ndim == 2 else probe
    total = float(np.sum(np.abs(modes) ** 2))
    if modes.shape[0] >= n_modes:
        kept = modes[:n_modes].astype(np.complex64)
        power = float(np.sum(np.abs(kept) ** 2))
        return (kept * math.sqrt(total / power)).astype(np.complex64) if power > 0 else kept
    primary = modes[0].astype(np.complex128)
    h, w = primary.shape
    weight = np.abs(primary) ** 2
    norm = weight.sum()
    yy, xx = np.indices((h, w), dtype=np.float64)
    cy, cx = (weight * yy).sum() / norm, (weight * xx).sum() / norm
    vy = max((weight * (yy - cy) ** 2).sum() / norm, 1.0)
    vx = max((weight * (xx - cx) ** 2).sum() / norm, 1.0)
    envelope = np.exp(-((xx - cx) ** 2) / (2 * vx) - (yy - cy) ** 2 / (2 * vy))
    basis = [m / np.linalg.norm(m) for m in modes.astype(np.complex128)]
    order = 1
    while len(basis) < n_modes:  # x, y, x^2, xy, y^2, ... times the primary
        for i in range(order, -1, -1):
            j = order - i
            if len(basis) >= n_modes:
                break
            candidate = ((xx - cx) ** i) * ((yy - cy) ** j) * primary * envelope
            for b in basis:
                candidate = candidate - b * np.vdot(b, candidate)
            size = np.linalg.norm(candidate)
            if size > 1e-12 * math.sqrt(norm):
                basis.append(candidate / size)
        order += 1
    n_given = modes.shape[0]
    out = np.empty((n_modes, h, w), dtype=np.complex128)
    out[:n_given] = modes
    given_share = 1.0 - extra_power * (n_modes - n_given)
    out[:n_given] *= math.sqrt(given_share)
    for k in range(n_given, n_modes):
        out[k] = basis[k] * math.sqrt(extra_power * total)
    return out.astype(np.complex64)


def orthogonalise_modes(modes: torch.Tensor) -> torch.Tensor:
    """(M, H, W) modes rotated into orthogonal ones sorted by power (descending).

    The unitary M x M mix that diagonalises the modes' Gram matrix G_jk = <P_j, P_k>
    (pty-chi's ``orthogonalize_svd``): sum_m |P_m|^2 is unchanged at every pixel. One mode is
    returned as it is.
    """
    if modes.shape[0] < 2:
        return modes
    m = modes.shape[0]
    flat = modes.reshape(m, -1).to(torch.complex128)
    gram = flat.conj() @ flat.T  # G_jk = <P_j, P_k>
    _, vectors = torch.linalg.eigh(gram)  # ascending eigenvalues
    vectors = vectors.flip(-1)
    mixed = vectors.T @ flat  # new_k = sum_j V_jk P_j
    return mixed.reshape(modes.shape).to(modes.dtype)


def mode_powers(modes: np.ndarray) -> np.ndarray:
    """(M,) power sum |P_m|^2 of each mode (photons); a 2-D probe counts as one mode."""
    modes = np.asarray(modes)
    modes = modes[None] if modes.ndim == 2 else modes
    return np.sum(np.abs(modes) ** 2, axis=(-2, -1))
