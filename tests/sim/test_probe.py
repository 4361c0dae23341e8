"""Probes: focal size, defocus into a ring, normalisation, files."""

import numpy as np
import pytest

from bluesky_ptychonn.sim.probe import (
    focused_probe,
    load_probe,
    probe_fwhm_m,
    probe_size_m,
)

PIXEL = 10e-9


@pytest.mark.parametrize("kind", ["zone-plate", "airy", "gaussian"])
@pytest.mark.parametrize("beam", [50e-9, 120e-9])
def test_focal_fwhm_matches_request(kind, beam):
    probe = focused_probe((256, 256), PIXEL, 10_000, beam, kind=kind)
    assert probe_fwhm_m(probe, PIXEL) == pytest.approx(beam, rel=0.03)
    assert np.sum(np.abs(probe) ** 2) == pytest.approx(1.0, rel=1e-5)


def test_gaussian_half_power_diameter_is_its_fwhm():
    probe = focused_probe((256, 256), PIXEL, 10_000, 150e-9, kind="gaussian")
    assert probe_size_m(probe, PIXEL) == pytest.approx(150e-9, rel=0.03)


def test_defocused_zone_plate_becomes_a_ring_that_grows_with_defocus():
    sizes = []
    for defocus in (0.0, 150e-6, 300e-6):
        probe = focused_probe((256, 256), PIXEL, 10_000, 60e-9, defocus_m=defocus)
        sizes.append(probe_size_m(probe, PIXEL))
    assert sizes[0] < sizes[1] < sizes[2]
    ring = np.abs(focused_probe((256, 256), PIXEL, 10_000, 60e-9, defocus_m=300e-6)) ** 2
    rows, cols = np.indices(ring.shape)
    radius = np.hypot(rows - 128, cols - 128)
    centre = ring[radius < 4].mean()  # the central stop's shadow (with its Arago spot)
    annulus = ring[(radius > 15) & (radius < 22)].mean()
    assert annulus > 1.8 * centre  # a donut, not a filled disc


def test_defocus_preserves_power():
    focus = focused_probe((128, 128), PIXEL, 10_000, 60e-9)
    far = focused_probe((128, 128), PIXEL, 10_000, 60e-9, defocus_m=200e-6)
    assert np.sum(np.abs(far) ** 2) == pytest.approx(np.sum(np.abs(focus) ** 2), rel=1e-5)


def test_bad_beam_sizes_are_refused():
    with pytest.raises(ValueError, match="positive length"):
        focused_probe((64, 64), PIXEL, 10_000, -60e-9)
    with pytest.raises(ValueError, match="undersampled"):
        focused_probe((64, 64), PIXEL, 10_000, 5e-9)
    with pytest.raises(ValueError, match="unknown probe kind"):
        focused_probe((64, 64), PIXEL, 10_000, 60e-9, kind="laser")


def test_probe_file_round_trip_without_pickle(tmp_path):
    probe = focused_probe((64, 64), PIXEL, 10_000, 60e-9)
    np.save(tmp_path / "probe.npy", probe)
    assert np.array_equal(load_probe(tmp_path / "probe.npy"), probe)
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError):
        load_probe(tmp_path / "objects.npy")
    with pytest.raises(FileNotFoundError):
        load_probe(tmp_path / "missing.npy")
