"""Tests for bluesky_ptychonn.metrics: gauge-invariant comparison of complex images, FRC."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage
from skimage.metrics import structural_similarity

from bluesky_ptychonn import metrics
from bluesky_ptychonn.dataset import ComplexImage

N = 128
SHIFT = (2.3, -1.7)  # px (row, col): displacement of the estimate's content
RAMP = (0.05, -0.03)  # rad/px (row, col): 6 rad across the image, so the phase wraps
PHASE = 2.0  # rad


def random_object(rng: np.random.Generator, n: int = N) -> np.ndarray:
    """Smooth periodic complex object: phase within +-1 rad, amplitude in 0.5..1."""
    phase = ndimage.gaussian_filter(rng.standard_normal((n, n)), 3, mode="wrap")
    phase /= np.abs(phase).max()
    amp = ndimage.gaussian_filter(rng.standard_normal((n, n)), 2, mode="wrap")
    amp = 0.5 + 0.5 * (amp - amp.min()) / np.ptp(amp)
    return amp * np.exp(1j * phase)


def ramp(shape: tuple[int, int], a: float, b: float, c: float = 0.0) -> np.ndarray:
    rows, cols = np.indices(shape)
    return np.exp(1j * (a * rows + b * cols + c))


def complex_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Circular complex Gaussian noise with E|n|^2 = sigma^2."""
    return sigma / np.sqrt(2) * (rng.standard_normal(shape) + 1j * rng.standard_normal(shape))


def border_mask(shape: tuple[int, int], width: int) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[width:-width, width:-width] = True
    return mask


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    return random_object(np.random.default_rng(0))


@pytest.fixture(scope="module")
def gauged(reference: np.ndarray) -> np.ndarray:
    """The reference moved by every gauge freedom: shift, linear ramp, global phase."""
    return metrics.fourier_shift(reference, SHIFT) * ramp(reference.shape, *RAMP, PHASE)


# ------------------------------------------------------------------------------------------
# Gauge invariance
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mask_width", [10, None])
def test_alignment_recovers_gauge(reference, gauged, mask_width):
    mask = None if mask_width is None else border_mask(reference.shape, mask_width)
    res = metrics.align_to_reference(gauged, reference, mask)
    assert res.aligned.shape == reference.shape
    np.testing.assert_allclose(res.shift_px, [-SHIFT[0], -SHIFT[1]], atol=0.05)
    np.testing.assert_allclose(res.ramp_rad_per_px, RAMP, atol=1e-3)
    # est(r + s) = ref(r) exp(i (k.(r + s) + c)): the constant left is c + k.s
    expected_phase = PHASE + RAMP[0] * SHIFT[0] + RAMP[1] * SHIFT[1]
    assert abs(np.angle(np.exp(1j * (res.global_phase_rad - expected_phase)))) < 0.01
    # the region drops the rows/columns the shift wrapped around, never adds pixels: the
    # applied shift (-2.3, +1.7) wraps the bottom rows and the left columns
    if mask is None:
        assert not res.region[-4:, :].any() and not res.region[:, :3].any()
        assert res.region[:-4, 3:].all()
    else:
        assert np.array_equal(res.region, mask)


@pytest.mark.parametrize("mask_width", [10, None])
def test_metrics_invariant_to_gauge(reference, gauged, mask_width):
    mask = None if mask_width is None else border_mask(reference.shape, mask_width)
    assert metrics.phase_rms_error(gauged, reference, mask) < 0.02
    assert metrics.phase_ssim(gauged, reference, mask) > 0.99
    assert metrics.nrmse(gauged, reference, mask) < 0.02


def test_alignment_result_decomposes(reference, gauged):
    """aligned == shift(est) * exp(-i (ramp . r + phase)) away from the edges."""
    res = metrics.align_to_reference(gauged, reference, border_mask(reference.shape, 10))
    rebuilt = (
        metrics.fourier_shift(gauged, res.shift_px)
        * ramp(reference.shape, *res.ramp_rad_per_px, res.global_phase_rad).conj()
    )
    inner = border_mask(reference.shape, 16)
    np.testing.assert_allclose(rebuilt[inner], res.aligned[inner], atol=0.02)


def test_without_alignment_the_error_is_large(reference, gauged):
    mask = border_mask(reference.shape, 10)
    assert metrics.phase_rms_error(gauged, reference, mask, align=False) > 0.3
    assert metrics.nrmse(gauged, reference, mask, align=False) > 0.3
    assert metrics.phase_ssim(gauged, reference, mask, align=False) < 0.5


def test_different_object_stays_different(reference):
    other = random_object(np.random.default_rng(1))
    mask = border_mask(reference.shape, 10)
    assert metrics.phase_rms_error(other, reference, mask) > 0.25
    assert metrics.nrmse(other, reference, mask) > 0.25
    assert metrics.phase_ssim(other, reference, mask) < 0.2


def test_shift_only_and_ramp_only(reference):
    mask = border_mask(reference.shape, 12)
    moved = metrics.fourier_shift(reference, (1.5, 2.5)) * 1j
    res = metrics.align_to_reference(moved, reference, mask, ramp=False)
    np.testing.assert_allclose(res.shift_px, (-1.5, -2.5), atol=0.02)
    assert res.ramp_rad_per_px == (0.0, 0.0)
    assert res.global_phase_rad == pytest.approx(np.pi / 2, abs=1e-3)

    ramped = reference * ramp(reference.shape, 0.1, 0.2, 0.3)
    res = metrics.align_to_reference(ramped, reference, mask, shift=False)
    assert res.shift_px == (0.0, 0.0)
    np.testing.assert_allclose(res.ramp_rad_per_px, (0.1, 0.2), atol=1e-6)
    assert res.global_phase_rad == pytest.approx(0.3, abs=1e-6)
    assert metrics.phase_rms_error(ramped, reference, mask) < 1e-6


# ------------------------------------------------------------------------------------------
# Noise and scale
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sigma", [0.02, 0.1])
def test_nrmse_matches_noise_level(reference, sigma):
    rng = np.random.default_rng(5)
    mask = border_mask(reference.shape, 10)
    noisy = reference + complex_noise(rng, reference.shape, sigma)
    expected = sigma / np.sqrt(np.mean(np.abs(reference[mask]) ** 2))
    assert metrics.nrmse(noisy, reference, mask) == pytest.approx(expected, rel=0.2)
    assert metrics.nrmse(noisy, reference, mask, align=False) == pytest.approx(expected, rel=0.2)


def test_nrmse_scale_choice(reference):
    mask = border_mask(reference.shape, 10)
    dimmer = 0.8 * reference * np.exp(0.4j)
    assert metrics.nrmse(dimmer, reference, mask) == pytest.approx(0.2, abs=1e-3)
    assert metrics.nrmse(dimmer, reference, mask, scale_invariant=True) < 1e-6


# ------------------------------------------------------------------------------------------
# Phase ramps
# ------------------------------------------------------------------------------------------


def test_fit_phase_ramp_handles_wrapping():
    rng = np.random.default_rng(2)
    amplitude = rng.uniform(0.5, 1.0, (64, 96))
    a, b, c = metrics.fit_phase_ramp(amplitude * ramp(amplitude.shape, 0.3, -2.0, 1.0))
    assert (a, b, c) == pytest.approx((0.3, -2.0, 1.0), abs=1e-6)


def test_fit_phase_ramp_ignores_pixels_outside_mask():
    rng = np.random.default_rng(3)
    image = ramp((80, 80), -0.2, 0.15, -0.5)
    mask = border_mask(image.shape, 20)
    image[~mask] = np.exp(1j * rng.uniform(-np.pi, np.pi, np.count_nonzero(~mask)))
    assert metrics.fit_phase_ramp(image, mask) == pytest.approx((-0.2, 0.15, -0.5), abs=1e-6)
    weights = mask.astype(float)
    assert metrics.fit_phase_ramp(image, weights=weights) == pytest.approx(
        (-0.2, 0.15, -0.5), abs=1e-6
    )


def test_remove_phase_ramp_is_gauge_covariant(reference):
    flat = metrics.remove_phase_ramp(reference)
    also_flat = metrics.remove_phase_ramp(reference * ramp(reference.shape, 0.07, -0.11, 1.3))
    np.testing.assert_allclose(also_flat, flat, atol=1e-6)
    assert abs(np.angle(np.sum(flat))) < 1e-6  # the constant is removed too


# ------------------------------------------------------------------------------------------
# SSIM region handling
# ------------------------------------------------------------------------------------------


def test_phase_ssim_on_rectangular_mask_matches_skimage(reference):
    rng = np.random.default_rng(4)
    noisy = reference * np.exp(1j * 0.1 * rng.standard_normal(reference.shape))
    mask = np.zeros(reference.shape, dtype=bool)
    mask[20:100, 30:90] = True
    ref_phase = np.angle(reference[20:100, 30:90])
    est_phase = ref_phase + np.angle(noisy[20:100, 30:90] * np.conj(reference[20:100, 30:90]))
    expected = structural_similarity(est_phase, ref_phase, data_range=np.ptp(ref_phase))
    got = metrics.phase_ssim(noisy, reference, mask, align=False)
    assert got == pytest.approx(expected, abs=1e-12)
    assert metrics.phase_ssim(noisy, reference, mask, align=False, data_range=2 * np.pi) > got


# ------------------------------------------------------------------------------------------
# Fourier ring correlation
# ------------------------------------------------------------------------------------------


def band_limited(rng: np.random.Generator, n: int, cutoff: float) -> np.ndarray:
    """Complex white noise low-passed to |f| <= cutoff (fraction of Nyquist), unit RMS."""
    spectrum = np.fft.fft2(complex_noise(rng, (n, n), 1.0))
    radius = np.hypot(np.fft.fftfreq(n)[:, None], np.fft.fftfreq(n)[None, :]) / 0.5
    spectrum[radius > cutoff] = 0
    z = np.fft.ifft2(spectrum)
    return z / np.sqrt(np.mean(np.abs(z) ** 2))


def test_half_bit_threshold_values():
    t = metrics.half_bit_threshold(np.array([0, 1, 10_000_000_000]))
    assert np.isnan(t[0])
    assert t[1] == pytest.approx(1.0, abs=1e-3)
    assert t[2] == pytest.approx(0.2071 / 1.2071, abs=1e-4)


def test_frc_with_itself_is_one():
    rng = np.random.default_rng(6)
    image = complex_noise(rng, (128, 128), 1.0)
    res = metrics.fourier_ring_correlation(image, image)
    assert res.frequency[0] == 0 and res.frequency[-1] == 1
    np.testing.assert_allclose(res.frc, 1.0, atol=1e-9)
    assert res.crossing_frequency() is None and res.resolution(1e-8) is None


def test_frc_of_two_noisy_copies_finds_the_band_limit():
    rng = np.random.default_rng(7)
    n, cutoff, pixel_size_m = 256, 0.4, 10e-9
    signal = band_limited(rng, n, cutoff)
    one = signal + complex_noise(rng, (n, n), 0.5)
    two = signal + complex_noise(rng, (n, n), 0.5)
    res = metrics.fourier_ring_correlation(one, two)
    assert np.mean(res.frc[res.frequency < 0.3]) > 0.75  # SNR 4 -> FRC 0.8 below the cutoff
    assert np.mean(np.abs(res.frc[res.frequency > 0.55])) < 0.1  # noise floor above it
    crossing = res.crossing_frequency()
    assert crossing is not None and 0.37 < crossing < 0.47
    assert res.resolution_px() == pytest.approx(1 / crossing)
    assert res.resolution(pixel_size_m) == pytest.approx(pixel_size_m / crossing)
    freq_per_m = res.spatial_frequency_per_m(pixel_size_m)
    assert freq_per_m[-1] == pytest.approx(0.5 / pixel_size_m)  # Nyquist


def test_frc_of_independent_noise_is_zero():
    rng = np.random.default_rng(8)
    one = complex_noise(rng, (256, 256), 1.0)
    two = complex_noise(rng, (256, 256), 1.0)
    res = metrics.fourier_ring_correlation(one, two)
    assert np.mean(np.abs(res.frc)) < 0.1
    assert res.crossing_frequency() is None


def test_frc_rectangular_and_bins():
    rng = np.random.default_rng(9)
    image = complex_noise(rng, (60, 100), 1.0)
    res = metrics.fourier_ring_correlation(image, image, n_bins=10)
    assert res.frc.shape == (11,) and np.all(res.n_pixels > 0)
    with pytest.raises(ValueError, match="n_bins"):
        metrics.fourier_ring_correlation(image, image, n_bins=31)


# ------------------------------------------------------------------------------------------
# compare() and inputs
# ------------------------------------------------------------------------------------------


def test_compare_returns_json_ready_floats(reference, gauged):
    mask = border_mask(reference.shape, 10)
    out = metrics.compare(gauged, reference, mask)
    assert set(out) == {
        "phase_rms_rad",
        "nrmse",
        "phase_ssim",
        "phase_ssim_gaussian",
        "shift_px_row",
        "shift_px_col",
        "frc_half_bit_resolution_px",
    }
    assert all(isinstance(v, float) for v in out.values())
    json.dumps(out)
    assert out["phase_rms_rad"] < 0.02 and out["nrmse"] < 0.02 and out["phase_ssim"] > 0.99
    assert out["shift_px_row"] == pytest.approx(-SHIFT[0], abs=0.05)
    assert out["shift_px_col"] == pytest.approx(-SHIFT[1], abs=0.05)


def _wang_ssim(x: np.ndarray, y: np.ndarray, data_range: float) -> float:
    """SSIM written out as Wang et al. (2004) define it: Gaussian window sigma 1.5 (11x11),
    population moments, K1 = 0.01, K2 = 0.03, mean of the map 5 px inside the edges."""

    def f(z):
        return ndimage.gaussian_filter(z, 1.5, truncate=3.5, mode="reflect")

    mx, my = f(x), f(y)
    sxx, syy, sxy = f(x * x) - mx**2, f(y * y) - my**2, f(x * y) - mx * my
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    ssim = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return float(ssim[5:-5, 5:-5].mean())


def test_gaussian_ssim_is_wang_et_al_2004(reference):
    rng = np.random.default_rng(3)
    phase = np.angle(reference)
    noisy = phase + 0.1 * rng.standard_normal(phase.shape)
    expected = _wang_ssim(noisy, phase, float(np.ptp(phase)))
    got = metrics.phase_ssim_gaussian(np.exp(1j * noisy), np.exp(1j * phase), align=False)
    assert got == pytest.approx(expected, rel=1e-9)
    assert got != pytest.approx(metrics.phase_ssim(np.exp(1j * noisy), np.exp(1j * phase)))


def test_compare_frc_is_nyquist_limited_for_a_faithful_estimate_and_coarser_for_a_blurred_one(
    reference,
):
    rng = np.random.default_rng(4)
    mask = border_mask(reference.shape, 10)
    close = reference * np.exp(0.5j)  # identical up to the gauge: the FRC is 1 everywhere
    blurred = ndimage.gaussian_filter(reference.real, 3) + 1j * ndimage.gaussian_filter(
        reference.imag, 3
    )
    blurred = blurred + complex_noise(rng, reference.shape, 0.02)
    sharp = metrics.compare(close, reference, mask)["frc_half_bit_resolution_px"]
    soft = metrics.compare(blurred, reference, mask)["frc_half_bit_resolution_px"]
    assert sharp == 1.0  # was NaN: the FRC never falls below the threshold
    assert np.isfinite(soft) and soft > 2 * sharp


def test_compare_without_alignment_keeps_a_shift_as_error(reference, gauged):
    mask = border_mask(reference.shape, 10)
    kept = metrics.compare(gauged, reference, mask, align=False)
    removed = metrics.compare(gauged, reference, mask)
    assert kept["shift_px_row"] == 0.0 and kept["shift_px_col"] == 0.0
    assert kept["phase_rms_rad"] > 10 * removed["phase_rms_rad"]


def test_accepts_complex_image(reference, gauged):
    est = ComplexImage(gauged, pixel_size_m=1e-8)
    ref = ComplexImage(reference, pixel_size_m=1e-8)
    assert metrics.phase_rms_error(est, ref, border_mask(reference.shape, 10)) < 0.02


def test_shape_mismatch_raises(reference):
    with pytest.raises(ValueError, match=r"shape mismatch.*\(128, 128\).*\(128, 127\)"):
        metrics.align_to_reference(reference, reference[:, :-1])
    with pytest.raises(ValueError, match="shape mismatch"):
        metrics.phase_rms_error(reference, reference[:-1])
    with pytest.raises(ValueError, match="shape mismatch"):
        metrics.fourier_ring_correlation(reference, reference[:-1])
    with pytest.raises(ValueError, match="mask shape"):
        metrics.nrmse(reference, reference, np.ones((10, 10), dtype=bool))
    with pytest.raises(ValueError, match="2-D"):
        metrics.nrmse(reference[None], reference[None])


def test_nan_raises(reference):
    bad = reference.copy()
    bad[5, 7] = np.nan
    with pytest.raises(ValueError, match="estimate contains 1 NaN"):
        metrics.align_to_reference(bad, reference)
    with pytest.raises(ValueError, match="reference contains 1 NaN"):
        metrics.compare(reference, bad)
    with pytest.raises(ValueError, match="NaN"):
        metrics.fit_phase_ramp(bad)


def test_empty_or_tiny_mask_raises(reference):
    with pytest.raises(ValueError, match="mask selects only 0 pixels"):
        metrics.align_to_reference(reference, reference, np.zeros(reference.shape, dtype=bool))
    tiny = np.zeros(reference.shape, dtype=bool)
    tiny[60:63, 60:63] = True
    with pytest.raises(ValueError, match="mask selects only 9 pixels"):
        metrics.phase_rms_error(reference, reference, tiny)
    with pytest.raises(ValueError, match="mask selects only 9 pixels"):
        metrics.remove_phase_ramp(reference, tiny)
    line = np.zeros(reference.shape, dtype=bool)
    line[64, :100] = True
    with pytest.raises(ValueError, match="bounding box"):
        metrics.phase_ssim(reference, reference, line, align=False)
