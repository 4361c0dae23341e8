"""Preprocessing: crop / bin to the model input, scaling, log, and refusal of wrong frames."""

from __future__ import annotations

import numpy as np
import pytest

from bluesky_ptychonn.model import Preprocessing


def test_crop_keeps_the_centre_pixel_on_the_centre():
    frames = np.zeros((2, 128, 128), dtype=np.uint16)
    frames[:, 64, 64] = 1000
    x = Preprocessing((64, 64), (128, 128), "crop", log=False).apply(frames)
    assert x.shape == (2, 1, 64, 64) and x.dtype == np.float32
    assert x[0, 0, 32, 32] == 1000 and x.sum() == 2000


def test_bin_sums_blocks_and_keeps_the_total():
    rng = np.random.default_rng(0)
    frames = rng.poisson(5, (3, 128, 128)).astype(np.uint16)
    x = Preprocessing((32, 32), (128, 128), "bin", log=False).apply(frames)
    assert x.shape == (3, 1, 32, 32)
    np.testing.assert_allclose(x.sum(axis=(1, 2, 3)), frames.sum(axis=(1, 2)))
    assert x[0, 0, 0, 0] == frames[0, :4, :4].sum()


def test_scaling_and_log_in_order():
    frames = np.full((1, 8, 8), 3, dtype=np.uint16)
    prep = Preprocessing((8, 8), (8, 8), "crop", intensity_scale=2.0, log=True, input_scale=0.5)
    np.testing.assert_allclose(prep.apply(frames), 0.5 * np.log1p(6.0), rtol=1e-6)


def test_fit_normalises_typical_peak_to_one():
    rng = np.random.default_rng(1)
    frames = rng.poisson(100, (20, 64, 64)).astype(np.uint16)
    prep = Preprocessing.fit(frames, (64, 64))
    peaks = prep.apply(frames).reshape(20, -1).max(axis=1)
    assert abs(np.median(peaks) - 1.0) < 1e-6


def test_object_patch_geometry_of_crop_and_bin():
    pixel, shape = Preprocessing((64, 64), (128, 128), "crop").object_patch_geometry(10e-9)
    assert pixel == pytest.approx(20e-9) and shape == (64, 64)
    pixel, shape = Preprocessing((64, 64), (128, 128), "bin").object_patch_geometry(10e-9)
    assert pixel == pytest.approx(10e-9) and shape == (64, 64)


@pytest.mark.parametrize(
    ("frames", "match"),
    [
        (np.zeros((2, 100, 100)), "do not fit this model"),
        (np.zeros((2, 3, 128, 128)), r"must be \(N, h, w\)"),
        (np.zeros((0, 128, 128)), "no frames"),
        (np.full((1, 128, 128), np.nan), "NaN"),
        (np.zeros((1, 128, 128), dtype=complex), "real numbers"),
    ],
)
def test_wrong_frames_are_refused_with_the_reason(frames, match):
    with pytest.raises(ValueError, match=match):
        Preprocessing((64, 64), (128, 128)).apply(frames)


def test_inconsistent_settings_are_refused():
    with pytest.raises(ValueError, match="smaller than the model input"):
        Preprocessing((128, 128), (64, 64))
    with pytest.raises(ValueError, match="integer multiple"):
        Preprocessing((48, 48), (128, 128), "bin")
    with pytest.raises(ValueError, match="reduce"):
        Preprocessing((64, 64), (128, 128), "resize")


def test_round_trip_through_dict():
    prep = Preprocessing((64, 64), (128, 128), "bin", 4.0, False, 0.25)
    assert Preprocessing.from_dict(prep.to_dict()) == prep
