"""The labels' ePIE seeded by the run's live mosaic: placement, refusal, and the dispatcher path."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from test_loop import fast_options

from bluesky_ptychonn.dataset import ComplexImage
from bluesky_ptychonn.recon import options_from_dict
from bluesky_ptychonn.recon.quality import reference_on_grid
from bluesky_ptychonn.retrain.dispatcher import RetrainDispatcher
from bluesky_ptychonn.retrain.labels import seed_from_mosaic
from bluesky_ptychonn.retrain.loop import ContinualLoop
from bluesky_ptychonn.retrain.mosaics import StitcherMosaics, seed_image
from bluesky_ptychonn.sim import SimBeamline, SimBeamlineConfig
from bluesky_ptychonn.sim.scans import scan_positions
from bluesky_ptychonn.storage.cxi import write_cxi

COARSE = 4  # a 32-pixel crop network's mosaic on 128-pixel patterns


@pytest.fixture(scope="module")
def scan():
    beamline = SimBeamline(SimBeamlineConfig(sample="etched", seed=5, photons=1e6))
    positions = scan_positions(
        "spiral", (0.8e-6, 0.8e-6), beamline.beam_size_on_sample_m, overlap=0.7, seed=5
    )
    return beamline.measure(positions)


def coarse_mosaic(truth: ComplexImage, factor: int, shift_m=(0.0, 0.0)) -> ComplexImage:
    """The truth block-averaged by ``factor``, on a grid whose pixel centres are where the
    blocks' centres are (as a cropping network's stitched patches lie)."""
    a = np.asarray(truth.array)
    h, w = (s // factor * factor for s in a.shape)
    blocks = a[:h, :w].reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3))
    centre = (factor - 1) / 2 * truth.pixel_size_m
    origin = (truth.origin_m[0] + centre + shift_m[0], truth.origin_m[1] + centre + shift_m[1])
    return ComplexImage(blocks, truth.pixel_size_m * factor, origin)


def phase_rms_over_scan(seed: ComplexImage, truth: ComplexImage) -> float:
    on_grid = reference_on_grid(truth, seed)
    # the scanned area, away from the grid's margin
    h, w = seed.array.shape
    core = (slice(h // 4, 3 * h // 4), slice(w // 4, 3 * w // 4))
    diff = np.angle(seed.array[core] * np.conj(on_grid[core]))
    return float(np.sqrt(np.mean((diff - diff.mean()) ** 2)))


def test_a_coarse_mosaic_lands_on_the_epie_grid_where_the_truth_is(scan):
    options = options_from_dict({"iterations": 10})
    truth = scan.ground_truth
    seed, note = seed_from_mosaic(coarse_mosaic(truth, COARSE), scan, options)
    assert seed is not None, note
    assert seed.pixel_size_m == pytest.approx(scan.object_pixel_size_m)
    placed = phase_rms_over_scan(seed, truth)
    # the same mosaic put one coarse pixel off: the placement is what makes the seed good
    off = seed_from_mosaic(
        coarse_mosaic(truth, COARSE, shift_m=(COARSE * truth.pixel_size_m, 0.0)), scan, options
    )[0]
    flat = ComplexImage(np.ones_like(seed.array), seed.pixel_size_m, seed.origin_m)
    assert placed < 0.8 * phase_rms_over_scan(off, truth)
    assert placed < 0.5 * phase_rms_over_scan(flat, truth)
    assert "seeded by the live mosaic" in note


def test_a_mosaic_of_another_region_is_ignored_with_a_reason(scan):
    options = options_from_dict({"iterations": 10})
    elsewhere = coarse_mosaic(scan.ground_truth, COARSE, shift_m=(50e-6, 50e-6))
    seed, note = seed_from_mosaic(elsewhere, scan, options)
    assert seed is None and "another scan region" in note
    bad = ComplexImage(np.full((8, 8), np.nan, dtype=np.complex64), 4e-8, (0.0, 0.0))
    assert seed_from_mosaic(bad, scan, options)[0] is None


def test_seed_image_fades_unmeasured_pixels_to_free_space():
    phase = np.full((6, 6), 0.5)
    amplitude = np.full((6, 6), 0.8)
    weights = np.zeros((6, 6))
    weights[1:5, 1:5] = 1.0
    image = seed_image(phase, amplitude, weights, 1e-8, (0.0, 0.0))
    assert image.array[0, 0] == pytest.approx(1.0)
    assert np.angle(image.array[2, 2]) == pytest.approx(0.5, abs=1e-6)
    with pytest.raises(ValueError, match="no measured pixel"):
        seed_image(phase, amplitude, np.zeros((6, 6)), 1e-8, (0.0, 0.0))


class _Snapshot:
    def __init__(self, run_uid: str, image: ComplexImage):
        self.run_uid = run_uid
        self.phase = np.angle(image.array)
        self.amplitude = np.abs(image.array)
        self.weights = np.ones(image.array.shape)
        self.pixel_size_m = image.pixel_size_m
        self.origin_m = image.origin_m


def test_the_dispatcher_seeds_the_labels_with_the_runs_live_mosaic(scan, tmp_path):
    path = write_cxi(tmp_path / "scan.cxi", scan, overwrite=True)
    mosaics = StitcherMosaics(wait_s=5)
    options = fast_options(seed={"iterations": 7})
    loop = ContinualLoop(tmp_path / "state", options)

    def source(uid: str, out: Path) -> Path:
        out.write_bytes(Path(path).read_bytes())
        return out

    dispatcher = RetrainDispatcher(loop, source, mosaic_source=mosaics)
    try:
        for uid, mosaic in (
            ("seeded", coarse_mosaic(scan.ground_truth, COARSE)),
            ("elsewhere", coarse_mosaic(scan.ground_truth, COARSE, shift_m=(50e-6, 0.0))),
        ):
            started = time.perf_counter()
            dispatcher("start", {"uid": uid, "energy_ev": 1e4, "detector_distance_m": 2.0})
            dispatcher("stop", {"run_start": uid, "exit_status": "success"})
            assert time.perf_counter() - started < 0.05  # the RunEngine never waits
            mosaics.take(_Snapshot(uid, mosaic))  # the stitcher finishes after the stop
            assert dispatcher.wait_idle(timeout_s=300), dispatcher.status()
    finally:
        dispatcher.close()
    lineage = {
        uid: json.loads((loop.state_dir / "labels" / f"{uid}.json").read_text())["reconstruction"]
        for uid in ("seeded", "elsewhere")
    }
    assert lineage["seeded"]["seeded_by_mosaic"] is True
    assert lineage["seeded"]["settings"]["iterations"] == 7
    assert lineage["elsewhere"]["seeded_by_mosaic"] is False
    assert "another scan region" in lineage["elsewhere"]["seed"]
    assert lineage["elsewhere"]["settings"]["iterations"] == options.recon["iterations"]
    refused = [r.reason for r in dispatcher.records if r.decision == "refused"]
    assert len(dispatcher.records) == 2 and not refused, refused


def test_a_seeded_reconstruction_that_fails_its_check_starts_again_bare(
    scan, tmp_path, monkeypatch
):
    from bluesky_ptychonn.dataset import Reconstruction
    from bluesky_ptychonn.retrain import labels as labels_module
    from bluesky_ptychonn.storage.cxi import write_reconstruction

    path = write_cxi(tmp_path / "scan.cxi", scan, overwrite=True)
    seed_path = tmp_path / "seed.cxi"
    write_cxi(seed_path, scan, overwrite=True)
    write_reconstruction(
        seed_path, Reconstruction(coarse_mosaic(scan.ground_truth, COARSE), algorithm="live")
    )
    real = labels_module._reconstruct_and_check
    seen = []

    def refuse_seeded(dataset, options, initial_object, quality, scan_uid):
        seen.append(initial_object is not None)
        if initial_object is not None:  # as a seed far from the object would
            raise labels_module.LabelsRefused("the data error is 13 times the Poisson floor")
        return real(dataset, options, initial_object, quality, scan_uid)

    monkeypatch.setattr(labels_module, "_reconstruct_and_check", refuse_seeded)
    out = labels_module.labels_step(
        str(path),
        str(tmp_path / "labels" / "scan"),
        preprocessing={"input_shape": [32, 32], "frame_shape": [128, 128], "reduce": "crop"},
        recon={"iterations": 20, "progress": False},
        holdout_fraction=0.1,
        seed=0,
        scan_uid="scan",
        quality={"max_noise_ratio": 20},
        initial_object_path=str(seed_path),
        seeded_iterations=5,
    )
    assert seen == [True, False]
    reconstruction = out["lineage"]["reconstruction"]
    assert reconstruction["seeded_by_mosaic"] is False
    assert "reconstructed from scratch" in reconstruction["seed"]
    assert reconstruction["settings"]["iterations"] == 20  # the unseeded count, not 5
