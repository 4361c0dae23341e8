"""Beamline analysis code reads the package's raw runs with plain databroker 2.x.

A spiral scan is written by bluesky-tiled-plugins' `TiledWriter` (as a session writes it) into
the storage tests' Tiled server, then read back as databroker 2 users do: a Tiled client whose
runs are `databroker.client.BlueskyRun` objects. (databroker's v1 compatibility API,
`databroker.v1.Broker`, needs its server extras — humanize and more — and is not covered.)
"""

from __future__ import annotations

import numpy as np
import pytest
from bluesky import RunEngine
from bluesky_tiled_plugins import TiledWriter
from tiled.client import from_uri
from tiled_helpers import DocumentRecorder, SimPtychoBeamline

databroker = pytest.importorskip("databroker", reason="pip install 'bluesky-ptychonn[databroker]'")


@pytest.fixture(scope="module")
def written(tiled_server):
    sim = SimPtychoBeamline(n_points=20)
    recorder = DocumentRecorder()
    RE = RunEngine()
    RE.subscribe(recorder)
    RE.subscribe(TiledWriter(tiled_server.connect().raw, batch_size=10))
    (uid,) = RE(sim.spiral_scan(sample="letters-db"))
    return {"uid": uid, "sim": sim, "recorder": recorder}


def test_databroker_is_version_2():
    assert int(databroker.__version__.split(".")[0]) == 2


def test_databroker_v2_reads_the_spiral_scan_frames_as_written(tiled_server, written):
    from databroker.client import BlueskyRun

    client = from_uri(tiled_server.uri, api_key=tiled_server.api_key)
    run = client["raw"][written["uid"]]
    assert isinstance(run, BlueskyRun)
    frames = run["primary"]["eiger"].read()
    np.testing.assert_array_equal(frames, np.stack(written["recorder"].frames))
    assert frames.dtype == np.uint16
    assert run.start["sample"] == "letters-db" and run.stop["exit_status"] == "success"
