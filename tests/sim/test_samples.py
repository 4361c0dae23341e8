"""Samples: phase and absorption from one material, every kind, reproducibility."""

import numpy as np
import pytest

from bluesky_ptychonn.geometry import wavelength_m
from bluesky_ptychonn.sim.materials import MATERIALS
from bluesky_ptychonn.sim.samples import SAMPLE_KINDS, make_sample


@pytest.mark.parametrize("kind", sorted(SAMPLE_KINDS))
def test_every_kind_gives_phase_and_absorption_of_its_material(kind):
    thickness = 400e-9
    sample = make_sample(kind, (96, 96), 10e-9, 10_000, material_name="gold", thickness_m=thickness)
    gold = MATERIALS["gold"]
    k = 2 * np.pi / wavelength_m(10_000)
    phase, amplitude = np.angle(sample.array), np.abs(sample.array)
    assert phase.min() == pytest.approx(-k * gold.delta * thickness, rel=0.02)
    assert phase.max() <= 1e-6  # material retards: phase <= 0
    assert amplitude.min() == pytest.approx(np.exp(-k * gold.beta * thickness), rel=0.01)
    # phase and absorption come from the same thickness map
    material = phase < -0.05
    assert np.allclose(
        np.log(amplitude[material]) / phase[material], gold.beta / gold.delta, rtol=1e-3
    )
    assert 0.05 < np.mean(phase < -0.5 * k * gold.delta * thickness) < 0.95  # has structure


def test_random_samples_are_reproducible_and_seed_dependent():
    a = make_sample("etched", (64, 64), 10e-9, 10_000, seed=3)
    b = make_sample("etched", (64, 64), 10e-9, 10_000, seed=3)
    c = make_sample("etched", (64, 64), 10e-9, 10_000, seed=4)
    assert np.array_equal(a.array, b.array)
    assert not np.array_equal(a.array, c.array)


def test_sample_grid_is_centred_on_zero():
    sample = make_sample("siemens-star", (101, 80), 20e-9, 10_000)
    assert sample.grid.to_pixels(np.zeros((1, 2)))[0].tolist() == [50, 40]


def test_image_sample_from_file(tmp_path):
    picture = np.zeros((40, 40))
    picture[10:30, 10:30] = 1.0
    np.save(tmp_path / "square.npy", picture)
    sample = make_sample("image", (64, 64), 10e-9, 10_000, image=tmp_path / "square.npy")
    phase = np.angle(sample.array)
    assert phase[32, 32] < phase[2, 2]


def test_unknown_kind_and_material_are_refused():
    with pytest.raises(ValueError, match="unknown sample kind"):
        make_sample("cheese", (64, 64), 10e-9, 10_000)
    with pytest.raises(ValueError, match="unknown material"):
        make_sample("etched", (64, 64), 10e-9, 10_000, material_name="unobtainium")
