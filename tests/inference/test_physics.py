"""The physics check: predicted patches give predicted patterns; the residual is low where the
patch explains the measured pattern and high where it does not."""

import numpy as np
import pytest

from bluesky_ptychonn.inference.physics import PhysicsCheck
from bluesky_ptychonn.model import Preprocessing, simulate_training_set


def with_amplitude(labels: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(labels, dtype=np.float32)


@pytest.fixture(scope="module")
def etched():
    prep = Preprocessing((32, 32), (128, 128), "crop")
    return prep, simulate_training_set(48, prep, n_samples=2, seed=11)


def test_true_patches_explain_their_patterns_better_than_other_patches(etched):
    prep, data = etched
    check = PhysicsCheck(data.probe, prep)
    right = check.residuals(data.frames, with_amplitude(data.labels))
    wrong = check.residuals(data.frames, with_amplitude(np.roll(data.labels, 7, axis=0)))
    assert np.median(wrong) > 1.5 * np.median(right)
    assert np.mean(wrong > right) > 0.8
    assert np.all(right >= 0)


def test_a_featureless_patch_scores_about_one_and_blank_frames_score_zero(etched):
    prep, data = etched
    check = PhysicsCheck(data.probe, prep)
    flat = np.zeros((len(data.frames), 2, 32, 32), np.float32)
    flat[:, 1] = 1.0
    assert np.allclose(check.residuals(data.frames, flat), 1.0, atol=0.05)
    # no structure to explain (the probe in free space): nothing unexplained
    blank = np.random.default_rng(0).poisson(check._featureless * 50).astype(np.float32)
    frames = np.zeros((1, 128, 128), np.float32)
    frames[0, 48:80, 48:80] = blank
    assert check.residuals(frames, flat[:1])[0] < 0.1


def test_a_drifted_probe_raises_the_residual_of_true_patches(etched):
    prep, data = etched
    check = PhysicsCheck(data.probe, prep)  # the probe the network was trained with
    drifted = simulate_training_set(48, prep, n_samples=2, seed=11, defocus_m=450e-6)
    same = check.residuals(data.frames, with_amplitude(data.labels))
    moved = check.residuals(drifted.frames, with_amplitude(drifted.labels))
    assert np.median(moved) > 1.3 * np.median(same)


def test_binning_models_are_checked_on_the_binned_pattern():
    prep = Preprocessing((32, 32), (64, 64), "bin")
    probe = np.zeros((64, 64), np.complex64)
    probe[28:36, 28:36] = 1.0
    check = PhysicsCheck(probe, prep)
    patch = np.zeros((2, 2, 32, 32), np.float32)
    patch[:, 1] = 1.0
    patch[1, 0, 12:20, 12:16] = 1.0  # a phase step inside the beam
    predicted = check.predicted_patterns(patch)
    assert predicted.shape == (2, 32, 32)
    frames = np.stack([np.kron(p, np.ones((2, 2))) / 4 * 1e4 for p in predicted])
    residual = check.residuals(frames.astype(np.float32), patch)
    assert residual[0] < 0.05 and residual[1] < 0.05
    # the other patch's pattern is not explained by this one
    swapped = check.residuals(frames[::-1].astype(np.float32), patch)
    assert swapped[1] > 0.5
