"""The real EPICS device classes over Channel Access against the simulated IOC subprocess."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from bluesky import RunEngine
from event_model import DocumentNames, schema_validators

from bluesky_ptychonn.devices import (
    EigerDetector,
    Medipix3Detector,
    SampleStage,
    SimEiger,
    SimMedipix3,
    SimStage,
    connect,
)
from bluesky_ptychonn.ioc import SimHutch
from bluesky_ptychonn.ioc.hdf5 import UNIQUE_ID_PATH
from bluesky_ptychonn.plans import fly_scan, raster_scan, sparse_scan, spiral_scan
from bluesky_ptychonn.sim import SimBeamline, SimBeamlineConfig
from bluesky_ptychonn.sim import scans as trajectories


def beamline_config(ioc, kind):
    config = dict(ioc["detectors"][kind]["beamline"]["config"])
    config["field_of_view_m"] = tuple(config["field_of_view_m"])
    return SimBeamlineConfig(**config)


@pytest.fixture(scope="module")
def devices(ioc, tmp_path_factory):
    eiger_beamline = ioc["detectors"]["eiger"]["beamline"]
    medipix_beamline = ioc["detectors"]["medipix3"]["beamline"]
    stage = SampleStage(
        ioc["stage"]["prefix"],
        name="stage",
        egu=ioc["stage"]["egu"],
        beam_size_m=eiger_beamline["beam_size_on_sample_m"],
        sample_name="IOC test sample",
    )
    files = str(tmp_path_factory.mktemp("ioc-files"))
    eiger = EigerDetector(ioc["detectors"]["eiger"]["prefix"], name="eiger", file_directory=files)
    medipix = Medipix3Detector(
        ioc["detectors"]["medipix3"]["prefix"],
        name="medipix3",
        distance_m=medipix_beamline["config"]["distance_m"],
    )
    connect(stage, eiger, medipix, timeout=30)
    return {"stage": stage, "eiger": eiger, "medipix3": medipix}


@pytest.fixture
def RE():
    engine = RunEngine({})
    engine.documents = []

    def keep(name, doc):
        schema_validators[DocumentNames(name)].validate(doc)
        engine.documents.append((name, doc))

    engine.subscribe(keep)
    return engine


def of(RE, name):
    return [doc for kind, doc in RE.documents if kind == name]


def _keys(description):
    return {
        key: (value["dtype"], list(value["shape"]), value.get("dtype_numpy"))
        for key, value in description.items()
    }


def test_real_devices_describe_like_their_simulated_twins(devices, small_hutch):
    """Same read, describe and configuration keys (and dtypes, shapes) over CA as in process."""
    twins = {
        "stage": SimStage(small_hutch),
        "eiger": SimEiger(small_hutch),
        "medipix3": SimMedipix3(small_hutch),
    }
    for name, real in devices.items():
        twin = twins[name]
        assert _keys(real.describe()) == _keys(twin.describe()), name
        assert _keys(real.describe_configuration()) == _keys(twin.describe_configuration()), name
        assert set(real.read()) == set(twin.read()), name
        assert set(real.read_configuration()) == set(twin.read_configuration()), name
        assert real.hints == twin.hints, name


@pytest.fixture(scope="module")
def small_hutch():
    config = SimBeamlineConfig(field_of_view_m=(3e-6, 3e-6))
    with SimHutch(config, detectors=("eiger", "medipix3")) as hutch:
        yield hutch


def _positions(RE):
    return np.array(
        [[e["data"]["stage_beam_y"], e["data"]["stage_beam_x"]] for e in of(RE, "event")]
    )


@pytest.mark.parametrize(
    "make_plan, expected",
    [
        (
            lambda d, s: spiral_scan(d, s, 0.3e-6, step_m=0.15e-6),
            lambda beam: trajectories.fermat_spiral(0.3e-6, step_m=0.15e-6),
        ),
        (
            lambda d, s: raster_scan(d, s, (0.2e-6, 0.4e-6), 0.2e-6),
            lambda beam: trajectories.raster_scan((0.2e-6, 0.4e-6), 0.2e-6),
        ),
        (
            lambda d, s: sparse_scan(d, s, (0.6e-6, 0.6e-6), 0.25),
            lambda beam: trajectories.sparse_grid((0.6e-6, 0.6e-6), beam, 0.25),
        ),
    ],
    ids=["spiral", "raster", "sparse"],
)
def test_step_plans_run_over_channel_access(RE, devices, ioc, make_plan, expected):
    stage, eiger = devices["stage"], devices["eiger"]
    beam = stage.beam_size.get()
    RE(make_plan([eiger], stage))
    positions = _positions(RE)
    np.testing.assert_allclose(positions, expected(beam), atol=1e-12)
    start = of(RE, "start")[0]
    assert start["simulated"] is False and start["detector_name"] == "eiger"
    local = SimBeamline(beamline_config(ioc, "eiger"))
    assert start["object_pixel_size_m"] == pytest.approx(local.pixel_size_m)
    frames = [e["data"]["eiger_image"] for e in of(RE, "event")]
    numbers = [e["data"]["eiger_frame_number"] for e in of(RE, "event")]
    assert np.all(np.diff(numbers) == 1)
    # the IOC's frames are the simulated beamline's patterns at the motors' positions
    for frame, position in zip(frames[:2], positions[:2], strict=True):
        expected_frame = local.patterns(position[None], noise=False)[0]
        frame = np.asarray(frame, dtype=float)
        assert frame.shape == (128, 128)
        assert np.abs(frame - expected_frame).sum() / expected_frame.sum() < 0.05


def test_medipix3_scans_over_channel_access(RE, devices):
    RE(sparse_scan([devices["medipix3"]], devices["stage"], (0.4e-6, 0.4e-6), 0.0))
    start = of(RE, "start")[0]
    assert start["detector_name"] == "medipix3"
    assert start["detector_pixel_size_m"] == pytest.approx(220e-6)
    assert start["energy_ev"] == pytest.approx(10_000.0)
    frames = [np.asarray(e["data"]["medipix3_image"]) for e in of(RE, "event")]
    assert len(frames) == 4 and all(f.shape == (128, 128) and f.sum() > 0 for f in frames)


def test_fly_scan_over_channel_access(RE, devices):
    stage, eiger = devices["stage"], devices["eiger"]
    n = 300
    RE(fly_scan(eiger, stage, "spiral", (1.2e-6, 1.2e-6), n_points=n, flush_period_s=0.05))
    assert of(RE, "stop")[0]["exit_status"] == "success"
    pages, datums = of(RE, "event_page"), of(RE, "stream_datum")
    numbers = np.concatenate([p["data"]["eiger_frame_number"] for p in pages])
    assert len(numbers) == n and np.all(np.diff(numbers) == 1)
    assert datums[-1]["indices"]["stop"] == n
    positions = np.concatenate(
        [np.stack([p["data"]["stage_beam_y"], p["data"]["stage_beam_x"]], 1) for p in pages]
    )
    np.testing.assert_allclose(
        positions, trajectories.fermat_spiral(0.6e-6, n_points=n), atol=1e-12
    )
    (resource,) = of(RE, "stream_resource")
    with h5py.File(resource["uri"].removeprefix("file://localhost"), "r") as f:
        np.testing.assert_array_equal(f[UNIQUE_ID_PATH][:], numbers)


def test_bad_plan_moves_no_motor(RE, devices):
    stage, eiger = devices["stage"], devices["eiger"]
    stage.set((0.1e-6, 0.1e-6)).wait(10)
    before = (stage.y.user_setpoint.get(), stage.x.user_setpoint.get())
    with pytest.raises(ValueError, match="outside the limits"):
        RE(spiral_scan([eiger], stage, 20e-6, step_m=1e-6))
    assert of(RE, "start") == []
    assert (stage.y.user_setpoint.get(), stage.x.user_setpoint.get()) == before


def test_disconnected_pv_is_a_timeout_naming_it(ioc):
    stage = SampleStage("PTYNOWHERE:", name="lost_stage")
    with pytest.raises(
        TimeoutError, match=r"lost_stage: no answer within 1 s from PV PTYNOWHERE:Y\."
    ):
        connect(stage, timeout=1)
    # a Medipix3 prefix given to the Eiger class: the Eiger-only PVs are missing
    wrong = EigerDetector(ioc["detectors"]["medipix3"]["prefix"], name="wrong")
    with pytest.raises(TimeoutError, match=r"MPX:cam1:(NumTriggers|PhotonEnergy)"):
        connect(wrong, timeout=2)
