"""Training pairs: label geometry (beam centre on the patch centre), phase gauge, sources."""

from __future__ import annotations

import numpy as np
import pytest

from bluesky_ptychonn.dataset import ComplexImage, PtychoDataset, Reconstruction
from bluesky_ptychonn.geometry import PixelGrid
from bluesky_ptychonn.model import (
    Preprocessing,
    remove_phase_offset,
    simulate_training_set,
    training_set_from_reconstruction,
)

PIXEL_M = 10e-9


def bump_object(centre_m: tuple[float, float], shape=(400, 400)) -> ComplexImage:
    """Unit-amplitude object with a smooth phase bump (sigma 6 px, 0.5 rad) at centre_m."""
    grid = PixelGrid.centred(shape, PIXEL_M)
    rows, cols = np.indices(shape)
    y = grid.origin_m[0] + rows * PIXEL_M - centre_m[0]
    x = grid.origin_m[1] + cols * PIXEL_M - centre_m[1]
    phase = 0.5 * np.exp(-(x**2 + y**2) / (2 * (6 * PIXEL_M) ** 2))
    return ComplexImage(np.exp(1j * phase).astype(np.complex64), PIXEL_M, grid.origin_m)


def dataset_for(positions_m: np.ndarray, frame: int = 128) -> PtychoDataset:
    # geometry with lambda z / (N d) = 10 nm at 10 keV, N = 128, d = 75 um
    wavelength = 1.23984e-10
    distance = PIXEL_M * frame * 75e-6 / wavelength
    return PtychoDataset(
        patterns=np.zeros((len(positions_m), frame, frame), dtype=np.uint16),
        positions_m=positions_m,
        energy_ev=10_000.0,
        distance_m=distance,
        detector_pixel_size_m=75e-6,
    )


def centroid(phase: np.ndarray) -> np.ndarray:
    w = np.clip(phase - np.median(phase), 0, None)
    rows, cols = np.indices(phase.shape)
    return np.array([np.sum(w * rows), np.sum(w * cols)]) / np.sum(w)


@pytest.mark.parametrize("reduce", ["crop", "bin"])
def test_labels_put_the_beam_centre_on_the_patch_centre(reduce):
    feature = (123.4e-9, -56.7e-9)  # sub-pixel on purpose
    positions = np.array([feature, feature])
    prep = Preprocessing((64, 64), (128, 128), reduce)
    ts = training_set_from_reconstruction(
        Reconstruction(bump_object(feature)), dataset_for(positions), prep
    )
    assert ts.labels.shape == (2, 2, 64, 64)
    np.testing.assert_allclose(centroid(ts.labels[0, 0]), [32, 32], atol=0.1)
    expected_pixel = 20e-9 if reduce == "crop" else 10e-9
    assert ts.label_pixel_size_m == pytest.approx(expected_pixel)


def test_label_moves_opposite_to_the_beam():
    feature = (0.0, 0.0)
    positions = np.array([[0.0, 0.0], [0.0, 50e-9]])  # beam 5 px to the right of the feature
    prep = Preprocessing((128, 128), (128, 128))
    ts = training_set_from_reconstruction(
        Reconstruction(bump_object(feature)), dataset_for(positions), prep
    )
    shift = centroid(ts.labels[1, 0]) - centroid(ts.labels[0, 0])
    np.testing.assert_allclose(shift, [0, -5], atol=0.1)


def test_phase_offset_is_removed_with_the_weights():
    rng = np.random.default_rng(0)
    patches = np.exp(
        1j * (rng.uniform(-0.3, 0.3, (4, 16, 16)) + np.array([0, 1, 2, -2])[:, None, None])
    )
    weights = rng.uniform(0, 1, (16, 16))
    out = remove_phase_offset(patches, weights)
    np.testing.assert_allclose(np.angle(np.einsum("bij,ij->b", out, weights)), 0, atol=1e-12)
    np.testing.assert_allclose(np.abs(out), np.abs(patches))


def test_reconstruction_labels_with_a_constant_phase_offset_equal_the_truth():
    positions = np.array([[0.0, 0.0], [30e-9, -40e-9]])
    obj = bump_object((10e-9, 0.0))
    prep = Preprocessing((64, 64), (128, 128), "crop")
    data = dataset_for(positions)
    truth = training_set_from_reconstruction(Reconstruction(obj), data, prep)
    shifted = ComplexImage(obj.array * np.exp(1.3j) * 0.9, obj.pixel_size_m, obj.origin_m)
    again = training_set_from_reconstruction(Reconstruction(shifted), data, prep)
    np.testing.assert_allclose(again.labels[:, 0], truth.labels[:, 0], atol=1e-4)
    np.testing.assert_allclose(again.labels[:, 1], 0.9 * truth.labels[:, 1], atol=1e-4)


def test_reconstruction_of_another_geometry_is_refused():
    positions = np.zeros((1, 2))
    obj = bump_object((0.0, 0.0))
    wrong = ComplexImage(obj.array, 2 * PIXEL_M, obj.origin_m)
    with pytest.raises(ValueError, match="pixel size"):
        training_set_from_reconstruction(
            Reconstruction(wrong), dataset_for(positions), Preprocessing((64, 64), (128, 128))
        )
    with pytest.raises(ValueError, match="expects"):
        training_set_from_reconstruction(
            Reconstruction(obj), dataset_for(positions, 64), Preprocessing((64, 64), (128, 128))
        )


def test_simulated_set_is_reproducible_and_shaped_for_the_model():
    prep = Preprocessing((64, 64), (128, 128), "crop")
    a = simulate_training_set(6, prep, n_samples=2, seed=3, field_of_view_m=(1e-6, 1e-6))
    b = simulate_training_set(6, prep, n_samples=2, seed=3, field_of_view_m=(1e-6, 1e-6))
    assert a.frames.shape == (6, 128, 128) and a.labels.shape == (6, 2, 64, 64)
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert np.all(np.abs(a.labels[:, 0]) < np.pi) and np.all(a.labels[:, 1] <= 1.05)
    assert a.weights.max() == pytest.approx(1.0) and a.weights.shape == (64, 64)
    assert a.metadata["source"] == "simulation" and a.metadata["sample"] == "etched"
