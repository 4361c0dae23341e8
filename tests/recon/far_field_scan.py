"""An independent little ptychography simulator for the robustness tests and the benchmark matrix.

Written apart from `bluesky_ptychonn.sim` on purpose (plain numpy, its own probe, object and
scan), so that the reconstruction is tried on data this package did not make, as a new user's
data would be: far-field (Fraunhofer) diffraction of probe x object windows on a square
detector, Fermat-spiral positions, Poisson noise. Probes: a Gaussian with a quadratic
(defocus) phase, a defocused zone-plate beam (an annular pupil propagated out of focus: a
donut), and a "measured-looking" probe (a Gaussian with astigmatic defocus, a phase ramp and
some speckle in its amplitude). Optionally a partially coherent beam (several incoherent
modes whose intensities add) and positions that the file gets wrong (random errors of known
size, the true ones kept in the metadata).
"""

from __future__ import annotations

import numpy as np

from bluesky_ptychonn.dataset import ComplexImage, PtychoDataset

HC_EV_M = 1.23984198e-6
ENERGY_EV = 10_000.0
DISTANCE_M = 2.0
DETECTOR_PIXEL_M = 75e-6
PROBE_KINDS = ("gaussian", "zoneplate", "measured")


def pixel_size_m(n: int) -> float:
    """Object pixel size (m) of an ``n`` x ``n`` detector in this geometry."""
    return HC_EV_M / ENERGY_EV * DISTANCE_M / (n * DETECTOR_PIXEL_M)


def half_power_diameter_px(probe: np.ndarray) -> float:
    """Diameter (px) of the smallest centred disk holding half the probe's power."""
    h, w = probe.shape
    intensity = np.abs(probe) ** 2
    rows, cols = np.indices((h, w))
    cy = float((intensity * rows).sum() / intensity.sum())
    cx = float((intensity * cols).sum() / intensity.sum())
    radius = np.hypot(rows - cy, cols - cx).ravel()
    order = np.argsort(radius)
    cumulative = np.cumsum(intensity.ravel()[order])
    return 2.0 * float(radius[order][np.searchsorted(cumulative, 0.5 * cumulative[-1])])


def _far(x: np.ndarray) -> np.ndarray:
    return np.fft.fftshift(
        np.fft.fft2(np.fft.ifftshift(x, axes=(-2, -1)), norm="ortho"), axes=(-2, -1)
    )


def _ifar(x: np.ndarray) -> np.ndarray:
    return np.fft.fftshift(
        np.fft.ifft2(np.fft.ifftshift(x, axes=(-2, -1)), norm="ortho"), axes=(-2, -1)
    )


def make_probe(
    kind: str, n: int = 64, sigma_px: float = 7.0, seed: int = 1, defocus_rad: float = 1.5
) -> np.ndarray:
    """(n, n) complex probe, unit power, beam centred on pixel (n//2, n//2).

    Args:
        kind: "gaussian" (amplitude exp(-r^2 / 2 sigma^2), defocus phase ``defocus_rad``
            at r = 2 sigma), "zoneplate" (annular pupil, outer radius n/5, inner n/10, soft
            edges, defocused so the beam is a donut about 3 sigma across) or "measured"
            (Gaussian, astigmatic defocus, a phase ramp of 0.6 rad across sigma, 20 %
            speckle on the amplitude).
        sigma_px: Gaussian width (object pixels); sets the size of every kind.
    """
    rows, cols = np.indices((n, n)) - n // 2
    r2 = rows**2 + cols**2
    if kind == "gaussian":
        probe = np.exp(-r2 / (2 * sigma_px**2)) * np.exp(1j * defocus_rad * r2 / (4 * sigma_px**2))
    elif kind == "measured":
        rng = np.random.default_rng(seed)
        speckle = 1 + 0.2 * rng.standard_normal((n, n))
        kernel = np.exp(-r2 / (2 * 1.5**2))
        speckle = np.real(_ifar(_far(speckle) * _far(kernel / kernel.sum()) * n))
        phase = 1.2 * (rows**2 * 1.3 + cols**2 * 0.7) / (4 * sigma_px**2) + 0.6 * cols / sigma_px
        probe = np.exp(-r2 / (2 * sigma_px**2)) * speckle * np.exp(1j * phase)
    elif kind == "zoneplate":
        outer, inner = n / 5, n / 10
        radius = np.sqrt(r2)
        # an annular pupil with soft (1.5 px) edges, so the beam's tails stay in the window
        pupil = 1 / (1 + np.exp((radius - outer) / 1.5)) / (1 + np.exp((inner - radius) / 1.5))
        # defocus: a quadratic pupil phase that spreads the beam to a donut ~3 sigma across
        diameter = 3.0 * sigma_px
        phase = np.pi * diameter * r2 / (2 * outer * n)
        probe = _ifar(pupil * np.exp(1j * phase))
    else:
        raise ValueError(f"probe kind must be one of {PROBE_KINDS}, got {kind!r}")
    return (probe / np.sqrt(np.sum(np.abs(probe) ** 2))).astype(np.complex128)


def coherent_modes(probe: np.ndarray, fractions: tuple[float, ...]) -> np.ndarray:
    """(M, n, n) orthogonal modes of a partially coherent beam, powers ``fractions`` x power.

    The first is ``probe``; the others are ``probe`` times x, y, x y, ... (centred on the
    beam's centre of mass), Gram-Schmidt orthogonalised: beams that broaden the first a little
    and fill in its zeros, as a source larger than the coherence length does.
    """
    n = probe.shape[0]
    weight = np.abs(probe) ** 2
    power = weight.sum()
    rows, cols = np.indices(probe.shape).astype(np.float64)
    cy, cx = (weight * rows).sum() / power, (weight * cols).sum() / power
    y, x = (rows - cy) / (n / 8), (cols - cx) / (n / 8)
    shapes = [np.ones_like(x), x, y, x * y, x * x - y * y]
    if len(fractions) > len(shapes):
        raise ValueError(f"at most {len(shapes)} modes")
    basis: list[np.ndarray] = []
    for shape in shapes[: len(fractions)]:
        mode = shape * probe
        for b in basis:
            mode = mode - b * np.vdot(b, mode)
        basis.append(mode / np.linalg.norm(mode))
    total = float(np.sum(fractions))
    return np.stack([b * np.sqrt(power * f / total) for b, f in zip(basis, fractions, strict=True)])


def fermat_positions_px(n_points: int, step_px: float) -> np.ndarray:
    """(n, 2) (row, col) Fermat-spiral offsets (px) whose neighbours sit about ``step_px`` apart."""
    k = np.arange(n_points)
    c = step_px / np.sqrt(np.pi) * 1.07
    radius = c * np.sqrt(k + 0.5)
    angle = k * np.deg2rad(137.50776)
    return np.stack([radius * np.sin(angle), radius * np.cos(angle)], axis=1)


def make_object(shape: tuple[int, int], max_phase_rad: float = 1.0, seed: int = 0) -> np.ndarray:
    """A complex test object: smooth blobs and sharp-edged disks, phase 0..``max_phase_rad``.

    Amplitude follows the phase (absorption), exp(-0.15 phase): between 0.86 and 1.
    """
    rng = np.random.default_rng(seed)
    h, w = shape
    rows, cols = np.indices(shape)
    phase = np.zeros(shape)
    for _ in range(int(h * w / 300)):
        y, x = rng.uniform(0, h), rng.uniform(0, w)
        radius = rng.uniform(2, 9)
        if rng.random() < 0.5:
            phase += rng.uniform(0.3, 1.0) * (((rows - y) ** 2 + (cols - x) ** 2) < radius**2)
        else:
            phase += rng.uniform(0.3, 1.0) * np.exp(
                -((rows - y) ** 2 + (cols - x) ** 2) / radius**2
            )
    phase = max_phase_rad * phase / phase.max()
    return np.exp(-0.15 * phase) * np.exp(1j * phase)


def simulate(
    *,
    probe_kind: str = "gaussian",
    overlap: float = 0.75,
    n_positions: int = 200,
    photons: float = 2e5,
    n: int = 64,
    sigma_px: float = 7.0,
    defocus_rad: float = 1.5,
    max_phase_rad: float = 1.0,
    seed: int = 0,
    file_probe: str | None = None,
    mode_fractions: tuple[float, ...] = (1.0,),
    position_error_px: float = 0.0,
) -> tuple[PtychoDataset, np.ndarray]:
    """A noisy far-field scan and its true probe (sqrt(photons); (M, n, n) with modes).

    The data set holds counts, positions in metres and the ground truth; no probe by default.

    Args:
        probe_kind: see `make_probe`.
        overlap: 1 - step / (half-power beam diameter).
        n_positions: scan points on the Fermat spiral.
        photons: mean total counts of a pattern (the probe's power).
        n: pattern side (px).
        file_probe: None (no probe in the file), or "wider-gaussian": a Gaussian 1.3x wider
            than ``sigma_px``, no phase, power = mean counts of a pattern (the issue's guess).
        mode_fractions: the beam's incoherent modes and their shares of the power
            (`coherent_modes`); one mode (the default) is a coherent beam.
        position_error_px: standard deviation (object pixels, per axis) of random errors of
            the positions in the file: the patterns are measured at the true positions, kept
            in ``metadata["true_positions_m"]``.
    """
    rng = np.random.default_rng(seed)
    probe = make_probe(probe_kind, n, sigma_px, seed=seed + 1, defocus_rad=defocus_rad) * np.sqrt(
        photons
    )
    step = half_power_diameter_px(probe) * (1 - overlap)
    modes = coherent_modes(probe, mode_fractions)
    positions = fermat_positions_px(n_positions, step)
    errors = rng.normal(0.0, position_error_px, positions.shape) if position_error_px else 0.0
    margin = n // 2 + 3 + int(np.ceil(4 * position_error_px))
    lo = positions.min(axis=0) - margin
    size = np.ceil(positions.max(axis=0) - lo + margin + 2).astype(int)
    obj = make_object((int(size[0]), int(size[1])), max_phase_rad, seed=seed + 2)
    px = positions - lo  # beam centres in object pixels (what the file says)
    true_px = px + errors  # where the beam was
    patterns = np.empty((n_positions, n, n), np.float32)
    grid = np.fft.fftfreq(n)
    spectra = np.fft.fft2(np.fft.ifftshift(modes, axes=(-2, -1)))
    for i, (y, x) in enumerate(true_px):
        r0, c0 = int(np.floor(y)) - n // 2, int(np.floor(x)) - n // 2
        fy, fx = y - np.floor(y), x - np.floor(x)
        ramp = np.exp(-2j * np.pi * (grid[:, None] * fy + grid[None, :] * fx))
        shifted = np.fft.ifft2(spectra * ramp)
        exit_waves = np.fft.fftshift(shifted, axes=(-2, -1)) * obj[r0 : r0 + n, c0 : c0 + n]
        expected = np.sum(np.abs(_far(exit_waves)) ** 2, axis=0)
        patterns[i] = rng.poisson(expected)
    pixel = pixel_size_m(n)
    mean_counts = float(patterns.sum(axis=(1, 2)).mean())
    guess = None
    if file_probe == "wider-gaussian":
        rows, cols = np.indices((n, n)) - n // 2
        guess = np.exp(-(rows**2 + cols**2) / (2 * (1.3 * sigma_px) ** 2)).astype(np.complex64)
        guess *= np.sqrt(mean_counts / np.sum(np.abs(guess) ** 2))
    elif file_probe not in (None, "none"):
        raise ValueError(f"unknown file_probe {file_probe!r}")
    return PtychoDataset(
        patterns=patterns,
        positions_m=px * pixel,
        energy_ev=ENERGY_EV,
        distance_m=DISTANCE_M,
        detector_pixel_size_m=DETECTOR_PIXEL_M,
        probe=guess,
        ground_truth=ComplexImage(obj.astype(np.complex64), pixel, (0.0, 0.0)),
        metadata={
            "true_probe_kind": probe_kind,
            "overlap": overlap,
            "true_positions_m": (true_px * pixel).tolist(),
        },
    ), (probe if len(mode_fractions) == 1 else modes)
