"""The session builds the live pipeline from one configuration, runs a scan whose mosaic
reaches Tiled, hands the continual-learning hook what it needs, and closes what it started."""

from __future__ import annotations

import numpy as np
import pytest

from bluesky_ptychonn.plans import spiral_scan
from bluesky_ptychonn.session import Session, SessionConfig, load_session_config
from bluesky_ptychonn.storage.tiled_results import find_reconstructions, read_live_mosaic

CONTINUAL = """
[continual]
enabled = true
state_dir = "{state}"
cluster = {{ kind = "inline" }}
recon = {{ iterations = 10 }}
quality = {{ max_noise_ratio = 1000.0 }}
train = {{ epochs = 1, threads = 1, scratch = {{ epochs = 1 }} }}
promote = {{ onnx = false, push_attempts = 1 }}
"""


def test_a_scan_of_the_session_reaches_the_live_view_and_tiled_and_close_stops_everything(
    session_file, tmp_path
):
    text = session_file.read_text() + CONTINUAL.format(state=tmp_path / "continual")
    session_file.write_text(text)
    session = Session.from_config(session_file)
    try:
        endpoint_process, tiled_server = session.endpoint_process, session.tiled_server
        assert endpoint_process.process.poll() is None and tiled_server.running
        (uid,) = session.RE(
            spiral_scan([session.detector, session.endpoint], session.stage, 0.4e-6, step_m=1e-7)
        )
        assert session.wait(timeout_s=120)
        run = session.catalog.raw[uid]
        n_points = run.metadata["start"]["num_points"]
        assert n_points > 20
        assert run["primary"]["eiger_image"].read().shape == (n_points, 128, 128)  # no frame lost
        final = session.stitcher.last_snapshot
        assert final.run_uid == uid and final.frames_used == n_points
        (node,) = find_reconstructions(session.catalog, scan_uid=uid, final=True).values()
        mosaic = read_live_mosaic(node)
        assert mosaic.metadata["frames_used"] == n_points
        assert mosaic.metadata["exit_status"] == "success"
        assert mosaic.phase.shape == final.phase.shape
        np.testing.assert_allclose(mosaic.phase, final.phase)
        assert session.live_view.png_path.read_bytes()[:4] == b"\x89PNG"
        assert session.live_view.png_path.parent == session.config.data_dir
        # N ePIE iterations from the live mosaic, on the data's (finer) object grid
        refined = session.refine_last_scan(2)
        assert refined.settings["seed"]["from"] == "mosaic"
        assert refined.error_history.size == 2
        assert refined.object.pixel_size_m < final.pixel_size_m or np.isclose(
            refined.object.pixel_size_m, final.pixel_size_m
        )
        # the continual-learning loop took the run from Tiled, and its device says so
        dispatcher = session.dispatcher
        assert dispatcher.wait_idle(timeout_s=120), dispatcher.status()
        (record,) = dispatcher.records
        assert record.scan_uid == uid and record.decision, record.reason
        assert dispatcher.loop.endpoint_control == session.endpoint.control_address
        assert dispatcher.loop.model_version == record.model_version
        device = session.namespace()["continual"]
        assert device.last_scan.get() == uid and device.last_decision.get() == record.decision
    finally:
        session.close()
    assert session.closed and not dispatcher._thread.is_alive()
    assert endpoint_process.process.poll() is not None  # stopped, not left behind
    assert not tiled_server.running
    session.close()  # idempotent


def test_a_session_without_services_builds_the_devices_and_an_idle_endpoint_device(
    session_file,
):
    with Session.from_config(session_file, start_services=False) as session:
        assert session.endpoint_process is None or session.endpoint_process.process is None
        assert session.tiled_server is None and session.stitcher is None
        assert {"stage", "eiger", "endpoint"} <= set(session.namespace())
        assert session.namespace()["RE"] is session.RE


@pytest.mark.parametrize(
    "text, match",
    [
        ("[tiled]\nurl = 'http://x'\n", r"\[tiled\]: unknown keys \['url'\]"),
        ("[endpoint]\nbatch_size = 'big'\n", r"\[endpoint\] batch_size: expected int"),
        ("[agent]\nenabled = true\n", r"\[agent\]: enabled = true needs \['region_m', 'budget"),
        ("[agent]\nenabled = true\nregion_m = [0, 1e-6, 0, 1e-6]\nbudget_points = 0\n",
         r"\[agent\]: the budget must allow at least 1 point"),
        ("[agent]\nenabled = true\nbudget = 5\n", r"\[agent\]: unknown keys \['budget'\]"),
        ("[endpoint]\ncontrol = 'tcp://edge:5562'\n", "needs frames, results and control"),
        ("[beamtime]\nx = 1\n", r"unknown settings \['beamtime'\]"),
        ("[continual]\nenabled = 'yes'\n", r"\[continual\]: enabled must be true or false"),
        ("mode = 'real'\n", "mode must be 'sim' or 'epics'"),
        ("[view]\nport = 70000\n", r"\[view\]: port must be 0-65535"),
        ("[view]\nmax_rate_hz = 0\n", r"\[view\]: max_rate_hz must be positive"),
        ("[view]\ntoken = 'abc'\n", r"\[view\]: unknown keys \['token'\]"),
    ],
)
def test_bad_configuration_is_refused_naming_the_table_and_key(tmp_path, text, match):
    path = tmp_path / "session.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        load_session_config(path)


def test_a_view_off_loopback_without_a_token_is_refused_and_nothing_is_left_running(
    session_file, monkeypatch
):
    import threading

    monkeypatch.delenv("BLUESKY_PTYCHONN_VIEW_TOKEN", raising=False)
    session_file.write_text(
        session_file.read_text().replace("[tiled]", "[tiled]\nenabled = false")
        + "\n[view]\nenabled = true\nhost = '0.0.0.0'\n"
    )
    before = set(threading.enumerate())  # other tests' stitchers may still be finishing
    with pytest.raises(ValueError, match="without a read-only token"):
        Session.from_config(session_file)
    started = set(threading.enumerate()) - before
    assert not [t for t in started if t.name.startswith(("live-", "view-"))]


def test_defaults_are_the_simulated_beamline_a_local_endpoint_and_embedded_tiled(monkeypatch):
    from bluesky_ptychonn.devices.config import ENV_VAR, SESSION_SECTIONS
    from bluesky_ptychonn.session.config import SESSION_KEYS

    monkeypatch.delenv(ENV_VAR, raising=False)
    config = load_session_config()
    assert config.beamline == {"mode": "sim"}
    assert config.endpoint.model == "demo" and not config.endpoint.remote
    assert config.tiled.uri is None and config.tiled.enabled
    assert not config.continual_enabled
    assert SESSION_KEYS == SESSION_SECTIONS  # the devices' loader skips exactly these
    remote = SessionConfig.from_dict(
        {"endpoint": {"frames": "tcp://e:1", "results": "tcp://e:2", "control": "tcp://e:3"}}
    )
    assert remote.endpoint.remote


def test_a_remote_endpoint_is_used_not_started_and_outlives_the_session(
    tmp_path, tiny_model, endpoint_factory
):
    model = tiny_model(tmp_path / "model", version="tiny", input_px=32, frame_px=128, reduce="bin")
    server = endpoint_factory(model)  # "another host": started and owned by someone else
    frames, results, control = server.addresses
    config = SessionConfig.from_dict(
        {
            "data_dir": str(tmp_path / "session"),
            "sim": {"detectors": ["eiger"], "field_of_view_m": [2e-6, 2e-6]},
            "endpoint": {"frames": frames, "results": results, "control": control},
            "tiled": {"enabled": False},
            "live_view": {"enabled": False},
        }
    )
    with Session(config) as session:
        assert session.endpoint_process is None and session.tiled_server is None
        assert session.catalog is None and session.model_dir is None
        (uid,) = session.RE(
            spiral_scan([session.detector, session.endpoint], session.stage, 0.3e-6, step_m=1e-7)
        )
        final = session.stitcher.last_snapshot
        assert final.run_uid == uid and final.model_version == "tiny"
        assert final.frames_used == session.endpoint.frames_inferred.get() > 10
    assert server.process.poll() is None  # not the session's to stop


@pytest.mark.slow  # five processes (endpoint, Tiled, proxy, callbacks, this one): ~30 s
def test_a_session_with_its_callbacks_in_another_process_gets_the_mosaic_to_tiled(
    session_file,
):
    import time

    session_file.write_text(session_file.read_text() + "\n[callbacks]\nprocess = true\n")
    session = Session.from_config(session_file)
    try:
        remote = session.remote_callbacks
        assert session.stitcher is None and remote.process.poll() is None
        (uid,) = session.RE(
            spiral_scan([session.detector, session.endpoint], session.stage, 0.4e-6, step_m=1e-7)
        )
        deadline, nodes = time.monotonic() + 90, {}
        while not nodes and time.monotonic() < deadline:
            nodes = dict(find_reconstructions(session.catalog, scan_uid=uid, final=True).items())
            time.sleep(0.5)
        (node,) = nodes.values()
        n_points = session.endpoint.frames_inferred.get()
        assert read_live_mosaic(node).metadata["frames_used"] == n_points > 20
    finally:
        session.close()
    assert remote.process.returncode == 0 and remote.proxy.poll() is not None
    assert not session.tiled_server.running  # everything the session started is stopped


def test_an_enabled_agent_table_builds_the_agent_in_the_namespace(tmp_path):
    from bluesky_ptychonn.adaptive import MosaicAgent

    path = tmp_path / "session.toml"
    path.write_text(
        f"data_dir = '{tmp_path}'\n[agent]\nenabled = true\nregion_m = [-5e-7, 5e-7, -5e-7, 5e-7]\n"
        "budget_points = 12\nmode = 'overlap'\nmin_overlap = 0.4\n"
    )
    with Session.from_config(path, start_services=False) as session:
        agent = session.namespace()["agent"]
        assert isinstance(agent, MosaicAgent)
        assert agent.options.budget_points == 12 and agent.options.mode.value == "overlap"
        assert agent.options.beam_size_m == session.stage.beam_size.get()
        assert session.endpoint.frame_number is session.detector.frame_number
        assert "adaptive agent" in session.describe()
