"""Physics of the forward model: energy conservation, the shift theorem, exit waves."""

import numpy as np
import pytest

from bluesky_ptychonn.fourier import far_field, fourier_shift
from bluesky_ptychonn.geometry import PixelGrid
from bluesky_ptychonn.sim.forward import FarFieldModel
from bluesky_ptychonn.sim.probe import focused_probe


def random_field(shape, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype(np.complex64)


@pytest.mark.parametrize("shape", [(64, 64), (128, 128), (62, 66), (3, 32, 32)])
def test_far_field_conserves_energy(shape):
    field = random_field(shape)
    spectrum = far_field(field.copy())
    assert np.allclose(
        np.sum(np.abs(spectrum) ** 2, axis=(-2, -1)),
        np.sum(np.abs(field) ** 2, axis=(-2, -1)),
        rtol=1e-5,
    )


@pytest.mark.parametrize("shape", [(64, 64), (62, 66)])
def test_far_field_is_centred_fft(shape):
    field = random_field(shape, seed=1)
    reference = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(field), norm="ortho"))
    assert np.allclose(far_field(field.copy()), reference, atol=1e-4)


def test_plane_wave_focuses_on_the_centre_pixel():
    shape = (64, 64)
    spectrum = far_field(np.ones(shape, dtype=np.complex64))
    peak = np.unravel_index(np.argmax(np.abs(spectrum)), shape)
    assert peak == (32, 32)


def test_two_half_pixel_shifts_make_one_whole_pixel_shift():
    image = random_field((64, 64), seed=2)
    twice = fourier_shift(fourier_shift(image, (0.5, -0.5)), (0.5, -0.5))
    assert np.allclose(twice, np.roll(image, (1, -1), axis=(0, 1)), atol=1e-4)


def test_sub_pixel_shift_moves_a_smooth_peak_by_the_fraction():
    rows, cols = np.indices((64, 64))
    blob = np.exp(-((rows - 32.0) ** 2 + (cols - 32.0) ** 2) / 20.0)
    moved = np.abs(fourier_shift(blob.astype(np.complex128), (0.3, -0.7)))
    centroid = np.array([(moved * rows).sum(), (moved * cols).sum()]) / moved.sum()
    assert np.allclose(centroid, [32.3, 31.3], atol=1e-6)


def test_shift_theorem_pattern_invariant_on_uniform_object():
    """On a uniform object a sub-pixel probe move changes no diffraction intensity."""
    probe = focused_probe((64, 64), 10e-9, 10_000, 80e-9)
    grid = PixelGrid.centred((256, 256), 10e-9)
    model = FarFieldModel(np.full((256, 256), 0.8 * np.exp(0.3j)), grid, probe)
    intensities = model.intensities(np.array([[0.0, 0.0], [3.3e-9, -4.1e-9], [1e-8, 2.5e-8]]))
    assert np.allclose(intensities[1], intensities[0], atol=1e-6 * intensities[0].max())
    assert np.allclose(intensities[2], intensities[0], atol=1e-6 * intensities[0].max())


def test_sub_pixel_position_equals_object_shifted_the_other_way():
    """Probe at p + s over object O gives the same pattern as probe at p over O(r + s)."""
    rng = np.random.default_rng(3)
    obj = np.exp(1j * rng.uniform(-1, 1, (200, 200))).astype(np.complex64)
    probe = focused_probe((64, 64), 10e-9, 10_000, 100e-9, kind="gaussian")
    grid = PixelGrid.centred((200, 200), 10e-9)
    model = FarFieldModel(obj, grid, probe)
    offset_px = np.array([0.4, -0.25])
    at_fraction = model.intensities(offset_px[None] * 10e-9)[0]
    shifted_obj = fourier_shift(obj, -offset_px)  # out(r) = obj(r + s)
    centred = FarFieldModel(shifted_obj, grid, probe).intensities(np.zeros((1, 2)))[0]
    inner = (slice(16, 48), slice(16, 48))  # Fourier-shift wrap only touches far corners
    assert np.allclose(at_fraction[inner], centred[inner], rtol=2e-3, atol=1e-5)


def test_exit_wave_is_probe_times_patch():
    obj = random_field((100, 100), seed=4)
    probe = random_field((32, 32), seed=5)
    grid = PixelGrid.centred((100, 100), 1e-8)
    wave = FarFieldModel(obj, grid, probe).exit_waves(np.array([[2e-8, -3e-8]]))[0]
    r0, c0 = 50 + 2 - 16, 50 - 3 - 16
    assert np.allclose(wave, probe * obj[r0 : r0 + 32, c0 : c0 + 32], atol=1e-5)


def test_positions_outside_the_object_see_free_space():
    probe = focused_probe((32, 32), 10e-9, 10_000, 60e-9)
    grid = PixelGrid.centred((64, 64), 10e-9)
    obj = np.full((64, 64), 0.5, dtype=np.complex64)
    far_away = FarFieldModel(obj, grid, probe).exit_waves(np.array([[5e-6, 5e-6]]))[0]
    assert np.allclose(far_away, probe, atol=1e-6)
