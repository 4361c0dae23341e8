"""Detector model: counting statistics, saturation, masks, crop and binning."""

import numpy as np
import pytest

from bluesky_ptychonn.sim.detector import DetectorModel, detector_preset


def test_presets_match_data_sheets():
    eiger = detector_preset("eiger")
    assert eiger.readout_shape == (128, 128)
    assert eiger.pixel_size_m == 75e-6 and eiger.max_frame_rate_hz == 2000
    assert eiger.readout_valid_mask.all()  # the 128 crop avoids the chip gaps
    assert not eiger.sensor_valid_mask[:, 256].any()
    medipix = detector_preset("medipix3")
    assert medipix.shape_px == (516, 516)
    assert medipix.readout_shape == (128, 128)
    assert medipix.readout_pixel_size_m == pytest.approx(220e-6)


def test_unknown_detector_is_refused():
    with pytest.raises(ValueError, match="unknown detector 'pilatus'"):
        detector_preset("pilatus")


def test_poisson_mean_equals_variance_at_given_dose():
    detector = detector_preset("eiger")
    rng = np.random.default_rng(0)
    dose = np.full((400, 128, 128), 7.5, dtype=np.float32)
    frames = detector.read_out(dose, rng).astype(np.float64)
    mean, variance = frames.mean(), frames.var()
    assert mean == pytest.approx(7.5, rel=0.01)
    assert variance == pytest.approx(mean, rel=0.02)


def test_binned_counting_keeps_poisson_statistics():
    detector = detector_preset("medipix3")
    rng = np.random.default_rng(1)
    dose = np.full((20, 512, 512), 0.5, dtype=np.float32)
    frames = detector.read_out(dose, rng).astype(np.float64)  # 16 pixels of 0.5 per bin
    assert frames.mean() == pytest.approx(8.0, rel=0.01)
    assert frames.var() == pytest.approx(8.0, rel=0.03)


def test_saturation_clips_each_native_pixel_before_binning():
    detector = detector_preset("medipix3")
    dose = np.zeros((1, 512, 512), dtype=np.float32)
    dose[0, :4, :4] = 1e6  # one binned pixel, every native pixel far beyond 4095
    frame = detector.read_out(dose, np.random.default_rng(2))[0]
    assert frame[0, 0] == 16 * 4095
    assert frame.dtype == np.uint16


def test_dead_pixels_and_gaps_read_zero_and_are_masked():
    detector = DetectorModel(
        name="test",
        shape_px=(64, 64),
        pixel_size_m=75e-6,
        max_frame_rate_hz=100,
        saturation_counts=10_000,
        crop_px=32,
        bin_factor=2,
        gap_rows=(30,),
        dead_pixel_fraction=0.05,
    )
    frames = detector.read_out(np.full((5, 32, 32), 50.0), np.random.default_rng(3))
    mask = detector.readout_valid_mask
    assert not mask[(30 - 16) // 2].any()  # the gap row, binned
    assert 0.5 < mask.mean() < 0.95
    assert frames[:, mask].min() > 100  # fully valid bins count ~200
    crop_mask = detector.crop_valid_mask
    assert (~crop_mask).sum() > 0
    noiseless = detector.read_out(np.full((1, 32, 32), 50.0), None)[0]
    expected = 50.0 * crop_mask.reshape(16, 2, 16, 2).sum(axis=(1, 3))
    assert np.allclose(noiseless, expected)


def test_crop_outside_the_sensor_is_refused():
    with pytest.raises(ValueError, match="leaves the"):
        detector_preset("eiger", beam_centre_px=(10, 10))


def test_wrong_input_shape_is_refused():
    with pytest.raises(ValueError, match=r"expects \(128, 128\) crops"):
        detector_preset("eiger").read_out(np.zeros((2, 64, 64)), None)
