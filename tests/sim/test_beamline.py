"""SimBeamline: geometry, consistency of patterns with ground truth, streaming."""

import numpy as np
import pytest

from bluesky_ptychonn.fourier import far_field
from bluesky_ptychonn.sim import SimBeamline, SimBeamlineConfig
from bluesky_ptychonn.sim.scans import scan_positions


@pytest.fixture(scope="module")
def eiger_beamline():
    return SimBeamline(SimBeamlineConfig(detector="eiger", field_of_view_m=(2e-6, 2e-6)))


def test_object_pixel_size_follows_geometry(eiger_beamline):
    bl = eiger_beamline
    expected = 1.2398419843e-6 / bl.energy_ev * bl.distance_m / (128 * 75e-6)
    assert bl.pixel_size_m == pytest.approx(expected, rel=1e-6)
    assert bl.pixel_size_m == pytest.approx(10e-9, rel=1e-6)  # the default distance's target


def test_noiseless_pattern_is_probe_times_ground_truth(eiger_beamline):
    """Patterns and ground-truth patches describe the same object at the same place.

    On whole-pixel positions the two agree to float precision; at sub-pixel positions the
    simulator shifts the (band-limited) probe while ground truth shifts the (sharp-edged)
    object, and the two discretisations differ by well under 1 % of the intensity.
    """
    bl = eiger_beamline
    whole = np.array([[0.0, 0.0], [-0.5e-6, 0.31e-6]])
    sub = np.array([[123.4e-9, -56.7e-9], [5e-9, 5e-9]])
    for positions, tolerance in ((whole, 1e-4), (sub, 1e-2)):
        patterns = bl.patterns(positions, noise=False)
        truth = bl.ground_truth_patches(positions)
        predicted = np.abs(far_field(bl.probe_on_readout_grid * truth)) ** 2
        predicted = np.minimum(predicted, bl.detector.saturation_counts)
        misfit = np.abs(patterns - predicted).sum(axis=(1, 2)) / patterns.sum(axis=(1, 2))
        assert misfit.max() < tolerance
    wrong_place = bl.ground_truth_patches(whole + 100e-9)
    predicted = np.abs(far_field(bl.probe_on_readout_grid * wrong_place)) ** 2
    misfit = np.abs(bl.patterns(whole, noise=False) - predicted).sum() / predicted.sum()
    assert misfit > 0.05  # the check above can tell places apart


def test_patterns_carry_the_requested_dose(eiger_beamline):
    bl = eiger_beamline
    free_space = bl.patterns(np.array([[0.0, 50e-6]]), noise=False)[0]  # far off the sample
    unsaturated = np.minimum(bl.expected_intensity(np.array([[0.0, 50e-6]]))[0], np.inf).sum()
    assert unsaturated == pytest.approx(bl.config.photons, rel=0.01)
    assert free_space.sum() <= unsaturated


def test_medipix_patterns_are_binned_to_128(tmp_path):
    bl = SimBeamline(
        SimBeamlineConfig(detector="medipix3", field_of_view_m=(1e-6, 1e-6), photons=1e5)
    )
    frames = bl.patterns(np.zeros((2, 2)))
    assert frames.shape == (2, 128, 128) and frames.dtype == np.uint16
    assert bl.pixel_size_m == pytest.approx(10e-9, rel=1e-6)


def test_measure_streams_every_frame_once(eiger_beamline):
    bl = eiger_beamline
    positions = scan_positions("spiral", (1e-6, 1e-6), 300e-9, 0.5)
    dataset = bl.measure(positions, batch_size=7, seed=11)
    assert dataset.patterns.shape == (positions.shape[0], 128, 128)
    again = bl.measure(positions, batch_size=50, seed=11)
    assert np.array_equal(dataset.patterns, again.patterns)  # batching changes nothing
    assert dataset.ground_truth is bl.sample
    assert dataset.object_pixel_size_m == pytest.approx(bl.pixel_size_m)


def test_bad_configuration_is_refused_before_anything_runs():
    with pytest.raises(ValueError, match="beam size"):
        SimBeamline(SimBeamlineConfig(beam_size_m=-1e-7))
    with pytest.raises(ValueError, match="unknown detector"):
        SimBeamline(SimBeamlineConfig(detector="pilatus"))
    with pytest.raises(ValueError, match="photon energy"):
        SimBeamline(SimBeamlineConfig(energy_ev=0))


def test_nan_positions_are_refused(eiger_beamline):
    with pytest.raises(ValueError, match="NaN"):
        eiger_beamline.patterns(np.array([[0.0, np.nan]]))
