"""Runs, reconstructions, training pairs and models through a real Tiled server process.

The session's server (``tiled_server`` in conftest.py) serves the whole module.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from datetime import date, timedelta

import event_model
import h5py
import httpx
import numpy as np
import pytest
from bluesky import RunEngine
from bluesky_tiled_plugins import TiledWriter
from tiled.client import from_uri
from tiled.queries import Key
from tiled_helpers import DocumentRecorder, GroundTruthMosaic, SimPtychoBeamline

from bluesky_ptychonn.callbacks.tiled_mosaic import LiveMosaicWriter
from bluesky_ptychonn.callbacks.tiled_writer import SpooledTiledWriter
from bluesky_ptychonn.dataset import ComplexImage, Reconstruction
from bluesky_ptychonn.storage.cxi import write_cxi
from bluesky_ptychonn.storage.tiled_catalog import TiledAuthError, connect
from bluesky_ptychonn.storage.tiled_models import (
    ModelRegistryError,
    fetch_model,
    find_models,
    register_model,
)
from bluesky_ptychonn.storage.tiled_results import (
    TrainingPairs,
    find_reconstructions,
    find_training_pairs,
    live_mosaic_write,
    read_live_mosaic,
    read_reconstruction,
    read_training_pairs,
    reconstruction_write,
    save_reconstruction_for_dataset,
    training_pairs_write,
)
from bluesky_ptychonn.storage.tiled_runs import (
    add_source_arguments,
    dataset_from_args,
    dataset_from_run,
    find_runs,
    load_dataset,
)


@pytest.fixture(scope="module")
def server(tiled_server):
    return tiled_server


@pytest.fixture(scope="module")
def catalog(server):
    return server.connect()


@pytest.fixture(scope="module")
def spiral_run(server, catalog):
    """A spiral scan written by bluesky-tiled-plugins' TiledWriter, with its live mosaic."""
    sim = SimPtychoBeamline(n_points=24)
    recorder = DocumentRecorder()
    stitcher = GroundTruthMosaic(sim.beamline, model_version="ptychonn-gt-1")
    RE = RunEngine()
    RE.subscribe(recorder)
    RE.subscribe(stitcher)
    RE.subscribe(TiledWriter(catalog.raw, batch_size=10))
    mosaic_writer = LiveMosaicWriter(stitcher, catalog, period_s=0.05)
    RE.subscribe(mosaic_writer)
    (uid,) = RE(sim.spiral_scan(sample="siemens-star-7", step_delay_s=0.01))
    return {
        "uid": uid,
        "sim": sim,
        "recorder": recorder,
        "stitcher": stitcher,
        "mosaic_writer": mosaic_writer,
    }


def test_spiral_scan_written_by_tiled_writer_reads_back_with_a_plain_client(server, spiral_run):
    recorder = spiral_run["recorder"]
    client = from_uri(server.uri, api_key=server.api_key)  # a plain Tiled client
    run = client["raw"][spiral_run["uid"]]
    primary = run["primary"]
    frames = primary["eiger"].read()
    assert frames.dtype == np.uint16  # dtype_numpy kept the detector's dtype
    np.testing.assert_array_equal(frames, np.stack(recorder.frames))
    positions = np.stack([primary["stage_y"].read(), primary["stage_x"].read()], axis=1)
    np.testing.assert_array_equal(positions, np.array(recorder.positions))
    np.testing.assert_allclose(positions, spiral_run["sim"].positions_m, atol=1e-15)
    assert run.metadata["start"]["sample"] == "siemens-star-7"
    assert run.metadata["stop"]["exit_status"] == "success"
    replayed = [name for name, _ in run.documents()]  # the json-seq exporter is configured
    assert replayed.count("start") == 1 and replayed.count("stop") == 1


def test_a_run_becomes_a_dataset_with_geometry_from_the_start_document(catalog, spiral_run):
    sim = spiral_run["sim"]
    dataset = dataset_from_run(catalog.raw[spiral_run["uid"]])
    np.testing.assert_array_equal(dataset.patterns, np.stack(spiral_run["recorder"].frames))
    np.testing.assert_allclose(dataset.positions_m, sim.positions_m, atol=1e-15)
    assert dataset.energy_ev == sim.beamline.energy_ev
    assert dataset.object_pixel_size_m == pytest.approx(sim.beamline.pixel_size_m, rel=1e-9)
    assert dataset.metadata["sample"] == "siemens-star-7"
    assert dataset.metadata["tiled"]["scan_uid"] == spiral_run["uid"]
    flipped = dataset_from_run(catalog.raw[spiral_run["uid"]], translation_sign=-1)
    np.testing.assert_allclose(flipped.positions_m, -dataset.positions_m)


def test_runs_are_found_by_sample_plan_and_date(catalog, spiral_run):
    uid = spiral_run["uid"]
    today = date.today()
    assert uid in find_runs(catalog, sample="siemens-star-7", plan="list_scan", since=today)
    assert uid in find_runs(catalog, since=today.isoformat(), until=today + timedelta(days=1))
    assert uid not in find_runs(catalog, until=today)
    assert uid not in find_runs(catalog, sample="another-sample")
    assert uid in find_runs(catalog, scan_pattern="spiral")


def test_commands_load_a_run_from_a_tiled_uri_or_uri_and_uid_like_a_cxi_file(
    server, catalog, spiral_run, tmp_path
):
    uid = spiral_run["uid"]
    run_uri = catalog.raw[uid].uri
    assert run_uri == f"{server.uri}/api/v1/metadata/raw/{uid}"
    by_uri = load_dataset(run_uri, api_key=server.api_key)
    by_uid = load_dataset(server.uri, run=uid[:8], api_key=server.api_key)
    latest = load_dataset(server.uri, run="-1", api_key=server.api_key)
    np.testing.assert_array_equal(by_uri.patterns, by_uid.patterns)
    assert latest.n_patterns == by_uri.n_patterns
    parser = argparse.ArgumentParser()
    add_source_arguments(parser)
    for argv in (
        ["--tiled-uri", server.uri, "--run", uid, "--api-key", server.api_key],
        [run_uri, "--api-key", server.api_key],
    ):
        from_args = dataset_from_args(parser.parse_args(argv))
        np.testing.assert_array_equal(from_args.patterns, by_uri.patterns)
    with pytest.raises(ValueError, match="--run"):
        dataset_from_args(parser.parse_args(["--tiled-uri", server.uri]))
    write_cxi(tmp_path / "scan.cxi", by_uri)
    from_cxi = dataset_from_args(parser.parse_args([str(tmp_path / "scan.cxi")]))
    np.testing.assert_array_equal(from_cxi.patterns, by_uri.patterns)
    np.testing.assert_allclose(from_cxi.positions_m, by_uri.positions_m)


def test_a_reconstruction_of_a_dataset_from_tiled_is_saved_next_to_its_run(server, spiral_run):
    dataset = load_dataset(server.uri, run=spiral_run["uid"], api_key=server.api_key)
    result = Reconstruction(
        object=ComplexImage(np.ones((8, 8), np.complex64), 1e-8), algorithm="ap"
    )
    key = save_reconstruction_for_dataset(
        dataset, result, metrics={"error": 0.5}, api_key=server.api_key
    )
    catalog = server.connect()
    [found] = find_reconstructions(catalog, scan_uid=spiral_run["uid"], kind="ap")
    assert found == key
    assert dict(catalog.reconstructions[key].metadata)["frames_used"] == 24


def test_live_mosaic_is_written_during_the_scan_and_found_by_model_version(catalog, spiral_run):
    uid = spiral_run["uid"]
    assert spiral_run["mosaic_writer"].written >= 2  # periodic snapshots, then the final one
    [node] = find_reconstructions(catalog, scan_uid=uid, model_version="ptychonn-gt-1").values()
    mosaic = read_live_mosaic(node)
    expected = spiral_run["stitcher"].snapshot()
    np.testing.assert_allclose(mosaic.phase, expected.phase, atol=1e-6)
    np.testing.assert_array_equal(mosaic.weights, expected.weights)
    assert mosaic.metadata["final"] is True
    assert mosaic.metadata["frames_used"] == 24
    assert mosaic.metadata["exit_status"] == "success"
    assert mosaic.pixel_size_m == spiral_run["sim"].beamline.pixel_size_m
    assert mosaic.metadata["sample"] == "siemens-star-7"
    assert not find_reconstructions(catalog, scan_uid=uid, model_version="other")


def test_epie_result_is_written_and_found_by_metadata_search(catalog, spiral_run):
    uid = spiral_run["uid"]
    sim = spiral_run["sim"].beamline
    rng = np.random.default_rng(1)
    obj = np.exp(1j * rng.uniform(-1, 0, (80, 90))).astype(np.complex64)
    reconstruction = Reconstruction(
        object=ComplexImage(obj, sim.pixel_size_m, (-4e-7, -4.5e-7)),
        probe=sim.probe_on_readout_grid,
        positions_m=spiral_run["sim"].positions_m,
        error_history=np.geomspace(1.0, 0.01, 30),
        algorithm="epie",
        settings={"iterations": 30, "alpha": 1.0, "beta": 0.9, "batch_size": 8},
    )
    metrics = {"phase_rmse_rad": 0.05, "frc_resolution_m": 2.1e-8}
    catalog.put(
        reconstruction_write(
            uid, reconstruction, metrics=metrics, key=f"{uid}-epie-t1", sample="siemens-star-7"
        )
    )

    found = find_reconstructions(catalog, scan_uid=uid, kind="epie")
    assert list(found) == [f"{uid}-epie-t1"]
    assert list(catalog.reconstructions.search(Key("metrics.phase_rmse_rad") < 0.1)) == [
        f"{uid}-epie-t1"
    ]
    back = read_reconstruction(found[f"{uid}-epie-t1"])
    np.testing.assert_array_equal(back.object.array, obj)
    assert back.object.origin_m == (-4e-7, -4.5e-7)
    np.testing.assert_allclose(back.probe, sim.probe_on_readout_grid, rtol=1e-6)
    np.testing.assert_array_equal(back.error_history, reconstruction.error_history)
    np.testing.assert_array_equal(back.positions_m, reconstruction.positions_m)
    assert back.algorithm == "epie" and back.settings["beta"] == 0.9
    assert dict(found[f"{uid}-epie-t1"].metadata)["iterations"] == 30


def test_training_pairs_keep_their_provenance(catalog, spiral_run):
    uid = spiral_run["uid"]
    sim = spiral_run["sim"]
    patches = sim.beamline.ground_truth_patches(sim.positions_m[:5])
    pairs = TrainingPairs(
        patterns=np.stack(spiral_run["recorder"].frames[:5]),
        phase=np.angle(patches),
        amplitude=np.abs(patches),
        positions_m=sim.positions_m[:5],
        frame_indices=np.arange(5),
        scan_uid=uid,
        reconstruction=f"{uid}-epie-t1",
        reconstruction_kind="epie",
        pixel_size_m=sim.beamline.pixel_size_m,
        provenance={"label_source": "ground truth", "model_mismatch_rad": 0.3},
    )
    catalog.put(training_pairs_write(pairs))
    [node] = find_training_pairs(catalog, scan_uid=uid).values()
    back = read_training_pairs(node)
    np.testing.assert_array_equal(back.patterns, pairs.patterns)
    np.testing.assert_array_equal(back.positions_m, pairs.positions_m)
    np.testing.assert_array_equal(back.frame_indices, np.arange(5))
    assert back.reconstruction == f"{uid}-epie-t1"
    assert back.provenance["model_mismatch_rad"] == 0.3


def _fake_model(folder, version="ptychonn-test-1", weights=b"\x00weights" * 1000):
    folder.mkdir(parents=True, exist_ok=True)
    files = {"weights": ("model.safetensors", weights), "onnx": ("model.onnx", b"onnx" * 777)}
    sidecar = {
        "format": "bluesky-ptychonn-model",
        "format_version": 1,
        "version": version,
        "files": {},
        "training": {"parent_version": "ptychonn-test-0"},
    }
    for role, (name, data) in files.items():
        (folder / name).write_bytes(data)
        sidecar["files"][role] = {
            "path": name,
            "sha256": hashlib.sha256(data).hexdigest(),
            "format": name.split(".")[-1],
        }
    (folder / "model.json").write_text(json.dumps(sidecar, indent=2))
    return folder / "model.json"


def test_a_model_is_registered_and_fetched_back_with_matching_sha256(catalog, tmp_path):
    sidecar = _fake_model(tmp_path / "trained")
    register_model(catalog, sidecar, metrics={"val_phase_mae_rad": 0.07})
    [node] = find_models(catalog, version="ptychonn-test-1").values()
    metadata = dict(node.metadata)
    assert metadata["metrics"]["val_phase_mae_rad"] == 0.07
    assert metadata["parent_version"] == "ptychonn-test-0"
    assert metadata["sidecar"]["files"]["onnx"]["path"] == "model.onnx"

    fetched = fetch_model(catalog, "ptychonn-test-1", tmp_path / "endpoint")
    for name in ("model.json", "model.safetensors", "model.onnx"):
        original = (tmp_path / "trained" / name).read_bytes()
        copy = (tmp_path / "endpoint" / name).read_bytes()
        assert hashlib.sha256(copy).hexdigest() == hashlib.sha256(original).hexdigest()
    assert fetched == tmp_path / "endpoint" / "model.json"
    assert fetch_model(catalog, None, tmp_path / "latest").name == "model.json"
    with pytest.raises(FileExistsError):
        fetch_model(catalog, "ptychonn-test-1", tmp_path / "endpoint")


def test_a_model_whose_file_changed_is_not_registered(catalog, tmp_path):
    sidecar = _fake_model(tmp_path / "m", version="ptychonn-test-2")
    (tmp_path / "m" / "model.onnx").write_bytes(b"tampered")
    with pytest.raises(ModelRegistryError, match="sha256"):
        register_model(catalog, sidecar)
    other = _fake_model(tmp_path / "m2", version="ptychonn-test-1", weights=b"other")
    with pytest.raises(FileExistsError, match="new version"):
        register_model(catalog, other)  # same version as the registered one, other files


def test_writes_without_the_api_key_are_refused(server, catalog, spiral_run):
    with pytest.raises(TiledAuthError, match="requires an API key"):
        connect(server.uri, api_key=None)
    with pytest.raises(TiledAuthError, match="refused the API key"):
        connect(server.uri, api_key="wrongkey0123")
    url = f"{server.uri}/api/v1/metadata/reconstructions"
    for headers in ({}, {"Authorization": "Apikey wrongkey0123"}):
        response = httpx.post(
            url, json={"structure_family": "container", "key": "no"}, headers=headers, timeout=10
        )
        assert response.status_code == 401
    assert "no" not in catalog.reconstructions
    # a catalog whose client lost its key is refused with a clear error, too
    reader = connect(server.uri, api_key=server.api_key)
    reader.root.context.api_key = None
    with pytest.raises(TiledAuthError, match="needs the API key"):
        reader.put(
            reconstruction_write(
                spiral_run["uid"],
                Reconstruction(object=ComplexImage(np.ones((4, 4)), 1e-8)),
                key="not-allowed",
            )
        )
    assert "not-allowed" not in catalog.reconstructions


def test_fly_scan_frames_in_external_hdf5_reach_tiled_through_the_spool(server, tmp_path):
    """Frames written by the detector to HDF5 travel as StreamResource/StreamDatum."""
    sim = SimPtychoBeamline(n_points=12, seed=3)
    frames = sim.beamline.patterns(sim.positions_m)
    h5 = server.readable[0] / "fly_0001.h5"
    with h5py.File(h5, "w", libver="latest") as f:
        f.create_dataset("/entry/data/data", data=frames, chunks=(1, *frames.shape[1:]))
    # the devices' plans spell some keys differently: distance_m, sample_name, positions_keys
    start = sim.start_metadata()
    start["distance_m"] = start.pop("detector_distance_m")
    del start["sample"]
    start.update(
        sample_name="fly-sample",
        frames_key="eiger",
        plan_name="fly",
        positions_keys=["stage_y", "stage_x"],
        motors=[],
    )
    bundle = event_model.compose_run(metadata=start)
    data_keys = {
        "eiger": {
            "source": "sim",
            "dtype": "array",
            "shape": list(frames.shape[1:]),
            "dtype_numpy": frames.dtype.str,
            "external": "STREAM:",
        },
        "stage_y": {"source": "sim", "dtype": "number", "shape": [], "units": "um"},
        "stage_x": {"source": "sim", "dtype": "number", "shape": [], "units": "um"},
    }
    descriptor = bundle.compose_descriptor(name="primary", data_keys=data_keys)
    resource = bundle.compose_stream_resource(
        mimetype="application/x-hdf5",
        uri=f"file://localhost{h5}",
        data_key="eiger",
        parameters={"dataset": "/entry/data/data", "chunk_shape": [1, *frames.shape[1:]]},
    )
    n = len(frames)
    positions_um = sim.positions_m * 1e6
    page = descriptor.compose_event_page(
        data={"stage_y": list(positions_um[:, 0]), "stage_x": list(positions_um[:, 1])},
        timestamps={"stage_y": [0.0] * n, "stage_x": [0.0] * n},
        seq_num=list(range(1, n + 1)),
        time=[1.0] * n,
        validate=False,
    )
    datum = resource.compose_stream_datum(
        indices={"start": 0, "stop": n}, descriptor=descriptor.descriptor_doc
    )
    documents = [
        ("start", bundle.start_doc),
        ("descriptor", descriptor.descriptor_doc),
        ("stream_resource", resource.stream_resource_doc),
        ("event_page", page),
        ("stream_datum", datum),
        ("stop", bundle.compose_stop()),
    ]

    writer = SpooledTiledWriter(server.uri, api_key=server.api_key, spool_dir=tmp_path / "spool")
    for name, doc in documents:
        writer(name, doc)
    assert writer.close(timeout_s=60)
    assert writer.stats.docs_delivered == len(documents)

    dataset = load_dataset(server.uri, run=bundle.start_doc["uid"], api_key=server.api_key)
    np.testing.assert_array_equal(dataset.patterns, frames)
    np.testing.assert_allclose(dataset.positions_m, sim.positions_m, rtol=1e-12)  # um -> m
    assert dataset.metadata["sample"] == "fly-sample"
    assert bundle.start_doc["uid"] in find_runs(server.connect(), sample="fly-sample")


def test_a_mosaic_with_its_phase_uncertainty_reads_back_with_it(catalog):
    from bluesky_ptychonn.stitch.mosaic import MosaicSnapshot

    rng = np.random.default_rng(0)
    sigma = rng.uniform(0.05, 0.4, (16, 20)).astype(np.float32)
    sigma[0, :] = np.nan  # unmeasured
    snapshot = MosaicSnapshot(
        phase=rng.normal(size=(16, 20)), amplitude=np.ones((16, 20)), weights=np.ones((16, 20)),
        pixel_size_m=4e-8, origin_m=(0.0, 0.0), frames_used=3, model_version="head-1",
        phase_uncertainty=sigma,
    )  # fmt: skip
    catalog.put(live_mosaic_write("uid-sigma", snapshot, snapshot_index=0, final=True))
    [node] = find_reconstructions(catalog, scan_uid="uid-sigma").values()
    mosaic = read_live_mosaic(node)
    np.testing.assert_array_equal(mosaic.phase_uncertainty, sigma)
    plain = MosaicSnapshot(
        phase=snapshot.phase, amplitude=snapshot.amplitude, weights=snapshot.weights,
        pixel_size_m=4e-8, origin_m=(0.0, 0.0), frames_used=3, model_version="plain-1",
    )  # fmt: skip
    catalog.put(live_mosaic_write("uid-plain", plain, snapshot_index=0, final=True))
    [node] = find_reconstructions(catalog, scan_uid="uid-plain").values()
    assert read_live_mosaic(node).phase_uncertainty is None
