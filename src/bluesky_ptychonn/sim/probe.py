"""Illumination functions: a focused zone-plate (or Airy, Gaussian) probe, defocus, size.

Probes are complex (H, W) arrays on the object-pixel grid, centred on pixel (H//2, W//2) and
normalised to unit total intensity (sum |P|^2 = 1); the forward model scales by the photon
count. Propagation uses the Fresnel transfer function of the angular spectrum, so a defocused
zone-plate probe (whose pupil is an annulus behind the central stop) turns into the "donut"
that PtychoNN's published experiments used.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import optimize, special

from ..geometry import wavelength_m

PROBE_KINDS = ("zone-plate", "airy", "gaussian")


def _frequencies(shape: tuple[int, int], pixel_size_m: float) -> tuple[np.ndarray, np.ndarray]:
    """Spatial frequency grids (cycles per metre) in unshifted FFT order."""
    fy = np.fft.fftfreq(shape[0], d=pixel_size_m)
    fx = np.fft.fftfreq(shape[1], d=pixel_size_m)
    return np.meshgrid(fy, fx, indexing="ij")


def _normalise(probe: np.ndarray) -> np.ndarray:
    norm = np.sqrt(np.sum(np.abs(probe) ** 2))
    if not norm > 0:
        raise ValueError("the probe carries no intensity")
    return (probe / norm).astype(np.complex64)


def fresnel_propagate(
    field: np.ndarray, pixel_size_m: float, energy_ev: float, distance_m: float
) -> np.ndarray:
    """Propagate a centred complex field by ``distance_m`` (m) with the Fresnel transfer function.

    Periodic boundaries: the field must stay inside the window over the distance.
    """
    if distance_m == 0:
        return field.copy()
    fy, fx = _frequencies(field.shape[-2:], pixel_size_m)
    kernel = np.exp(-1j * np.pi * wavelength_m(energy_ev) * distance_m * (fx**2 + fy**2))
    spectrum = np.fft.fft2(np.fft.ifftshift(field, axes=(-2, -1)))
    return np.fft.fftshift(np.fft.ifft2(spectrum * kernel), axes=(-2, -1))


def annular_airy_fwhm_factor(central_stop: float) -> float:
    """Focal-spot FWHM times the pupil's outer radius (in cycles per metre) for an annular pupil.

    The focal amplitude of an annulus with outer radius rho and obstruction ratio e is
    A(v) = [2 J1(v)/v - e^2 2 J1(e v)/(e v)] / (1 - e^2), v = 2 pi rho r; this returns
    FWHM * rho, so that ``rho = factor / fwhm``. 0.5145 for a clear pupil (1.029 lambda / 2NA).
    """
    if not 0 <= central_stop < 1:
        raise ValueError(f"central_stop must lie in [0, 1), got {central_stop}")

    def amplitude(v: float) -> float:
        clear = 2 * special.j1(v) / v
        blocked = 2 * special.j1(central_stop * v) / (central_stop * v) if central_stop else 1.0
        return (clear - central_stop**2 * blocked) / (1 - central_stop**2)

    v_half = optimize.brentq(lambda v: amplitude(v) ** 2 - 0.5, 1e-6, 3.0)
    return v_half / np.pi  # FWHM = 2 r_half = 2 v_half / (2 pi rho)


def focused_probe(
    shape: tuple[int, int],
    pixel_size_m: float,
    energy_ev: float,
    beam_size_m: float,
    *,
    kind: str = "zone-plate",
    central_stop: float = 0.3,
    defocus_m: float = 0.0,
) -> np.ndarray:
    """A focused probe of a given focal FWHM, optionally defocused.

    Args:
        shape: (rows, columns) of the probe array (object pixels).
        pixel_size_m: object pixel size in metres.
        energy_ev: photon energy in eV.
        beam_size_m: FWHM of the focal spot's intensity, metres.
        kind: "zone-plate" (annular pupil with a central stop), "airy" (clear circular
            pupil) or "gaussian" (Gaussian focus of that FWHM).
        central_stop: zone-plate central stop diameter over outer diameter (ignored otherwise).
        defocus_m: distance from the focus (m); a zone-plate probe becomes a ring ("donut").

    Returns:
        (rows, columns) complex64 probe with sum |P|^2 = 1, centred on (rows//2, cols//2).
    """
    if kind not in PROBE_KINDS:
        raise ValueError(f"unknown probe kind {kind!r}; known: {PROBE_KINDS}")
    if not (np.isfinite(beam_size_m) and beam_size_m > 0):
        raise ValueError(f"beam size must be a positive length in metres, got {beam_size_m!r}")
    if beam_size_m < 2 * pixel_size_m:
        raise ValueError(
            f"beam size {beam_size_m:.3g} m is below two object pixels ({pixel_size_m:.3g} m each):"
            " the probe would be undersampled"
        )
    if kind == "gaussian":
        return gaussian_probe(shape, pixel_size_m, energy_ev, beam_size_m, defocus_m=defocus_m)
    stop = central_stop if kind == "zone-plate" else 0.0
    rho_outer = annular_airy_fwhm_factor(stop) / beam_size_m  # cycles per metre
    fy, fx = _frequencies(shape, pixel_size_m)
    rho = np.hypot(fy, fx)
    if rho_outer > min(np.abs(fy).max(), np.abs(fx).max()):
        raise ValueError(
            f"beam size {beam_size_m:.3g} m needs spatial frequencies beyond the grid's Nyquist "
            "limit: use a larger beam or a smaller object pixel"
        )
    pupil = ((rho <= rho_outer) & (rho >= stop * rho_outer)).astype(np.complex128)
    kernel = np.exp(-1j * np.pi * wavelength_m(energy_ev) * defocus_m * rho**2)
    probe = np.fft.fftshift(np.fft.ifft2(pupil * kernel))
    return _normalise(probe)


def gaussian_probe(
    shape: tuple[int, int],
    pixel_size_m: float,
    energy_ev: float,
    beam_size_m: float,
    *,
    defocus_m: float = 0.0,
) -> np.ndarray:
    """A Gaussian focus of intensity FWHM ``beam_size_m`` (m), propagated by ``defocus_m`` (m)."""
    if not (np.isfinite(beam_size_m) and beam_size_m > 0):
        raise ValueError(f"beam size must be a positive length in metres, got {beam_size_m!r}")
    rows, cols = shape
    y = (np.arange(rows) - rows // 2) * pixel_size_m
    x = (np.arange(cols) - cols // 2) * pixel_size_m
    yy, xx = np.meshgrid(y, x, indexing="ij")
    sigma_amplitude = beam_size_m / (2 * np.sqrt(2 * np.log(2))) * np.sqrt(2)
    probe = np.exp(-(yy**2 + xx**2) / (2 * sigma_amplitude**2)).astype(np.complex128)
    probe = fresnel_propagate(probe, pixel_size_m, energy_ev, defocus_m)
    return _normalise(probe)


def _upsampled(probe: np.ndarray, factor: int) -> np.ndarray:
    """Band-limited (Fourier zero-padding) interpolation of a centred probe by ``factor``."""
    rows, cols = probe.shape
    spectrum = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(probe)))
    padded = np.zeros((rows * factor, cols * factor), dtype=np.complex128)
    r0, c0 = (rows * factor) // 2 - rows // 2, (cols * factor) // 2 - cols // 2
    padded[r0 : r0 + rows, c0 : c0 + cols] = spectrum
    return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(padded))) * factor


def probe_fwhm_m(probe: np.ndarray, pixel_size_m: float, *, upsample: int = 4) -> float:
    """Outer full width at half maximum (m) of a probe's intensity.

    The radially averaged intensity about the intensity centroid is searched from outside in
    for the first radius at which it reaches half of its maximum; the size is twice that
    radius. For a focused spot this is the FWHM; for a defocused ring ("donut") it is the ring's
    outer diameter at half maximum — the size that sets the overlap of neighbouring positions.
    """
    probe = np.asarray(probe)
    if probe.ndim == 3:  # modes: incoherent sum
        intensity_modes = [np.abs(_upsampled(mode, upsample)) ** 2 for mode in probe]
        intensity = np.sum(intensity_modes, axis=0)
    else:
        intensity = np.abs(_upsampled(probe, upsample)) ** 2
    fine_pixel = pixel_size_m / upsample
    total = intensity.sum()
    if not total > 0:
        raise ValueError("the probe carries no intensity")
    rows, cols = np.indices(intensity.shape)
    cy, cx = (intensity * rows).sum() / total, (intensity * cols).sum() / total
    radius = np.hypot(rows - cy, cols - cx)
    edges = np.arange(0, radius.max() + 1.0, 0.5)
    index = np.digitize(radius.ravel(), edges)
    sums = np.bincount(index, weights=intensity.ravel(), minlength=edges.size + 1)[1:]
    counts = np.bincount(index, minlength=edges.size + 1)[1:]
    profile = np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)
    centres = edges + 0.25
    half = profile.max() / 2
    outside = np.flatnonzero(profile >= half)[-1]
    if outside + 1 >= profile.size:
        return float(2 * centres[outside] * fine_pixel)
    # linear interpolation between the last bin above half maximum and the next one
    p0, p1 = profile[outside], profile[outside + 1]
    r_half = centres[outside] + (p0 - half) / (p0 - p1) * (centres[outside + 1] - centres[outside])
    return float(2 * r_half * fine_pixel)


def probe_size_m(probe: np.ndarray, pixel_size_m: float, fraction: float = 0.5) -> float:
    """Diameter (m) of the circle about the intensity centroid holding ``fraction`` of the power.

    With the default 0.5 (the half-power diameter) this equals the FWHM of a Gaussian beam and
    is within a few per cent of it for an Airy spot; unlike a FWHM it stays well defined for a
    defocused ring ("donut") with Fresnel fringes. This is the "beam size" that sets overlap.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must lie in (0, 1), got {fraction}")
    intensity = np.abs(np.asarray(probe)) ** 2
    if intensity.ndim == 3:
        intensity = intensity.sum(0)
    total = intensity.sum()
    if not total > 0:
        raise ValueError("the probe carries no intensity")
    rows, cols = np.indices(intensity.shape)
    cy, cx = (intensity * rows).sum() / total, (intensity * cols).sum() / total
    radius = np.hypot(rows - cy, cols - cx).ravel()
    order = np.argsort(radius)
    enclosed = np.cumsum(intensity.ravel()[order]) / total
    r = np.interp(fraction, enclosed, radius[order])
    # pixel centres sample the disc: half a pixel of radius is the area-equivalent correction
    return float(2 * (r + 0.5 / np.sqrt(np.pi)) * pixel_size_m)


def edge_intensity_fraction(probe: np.ndarray, border_fraction: float = 0.1) -> float:
    """Fraction of the probe's intensity within the outer ``border_fraction`` of the window.

    A large value means the probe does not fit the window: far-field patterns alias.
    """
    intensity = np.abs(np.asarray(probe)) ** 2
    if intensity.ndim == 3:
        intensity = intensity.sum(0)
    rows, cols = intensity.shape
    br, bc = max(1, int(rows * border_fraction)), max(1, int(cols * border_fraction))
    inner = intensity[br : rows - br, bc : cols - bc].sum()
    return float(1 - inner / intensity.sum())


def load_probe(path: str | Path) -> np.ndarray:
    """A probe from a ``.npy`` (complex array) or ``.npz`` (key ``probe``) file; never pickled.

    Read CXI probes with ``bluesky_ptychonn.storage.cxi.read_cxi`` instead.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"probe file {path} does not exist")
    if path.suffix == ".npy":
        probe = np.load(path, allow_pickle=False)
    elif path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            if "probe" not in archive:
                raise ValueError(f"{path} has no 'probe' array (keys: {list(archive)})")
            probe = archive["probe"]
    else:
        raise ValueError(f"unsupported probe file type {path.suffix!r}: use .npy, .npz or CXI")
    probe = np.asarray(probe)
    while probe.ndim > 2 and probe.shape[0] == 1:
        probe = probe[0]
    if probe.ndim not in (2, 3):
        raise ValueError(f"a probe must be (H, W) or (modes, H, W), got shape {probe.shape}")
    if not np.all(np.isfinite(probe)):
        raise ValueError(f"the probe in {path} contains NaN or infinite values")
    return probe.astype(np.complex64)


def fit_to_shape(probe: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Centre-crop or zero-pad a centred probe to ``shape`` (same pixel size)."""
    out = np.zeros(probe.shape[:-2] + tuple(shape), dtype=np.complex64)
    rows, cols = probe.shape[-2:]
    r = min(rows, shape[0])
    c = min(cols, shape[1])
    sr, sc = rows // 2 - r // 2, cols // 2 - c // 2
    dr, dc = shape[0] // 2 - r // 2, shape[1] // 2 - c // 2
    out[..., dr : dr + r, dc : dc + c] = probe[..., sr : sr + r, sc : sc + c]
    return out
