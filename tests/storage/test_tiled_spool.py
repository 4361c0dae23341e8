"""The spool, the API key file, the server configuration and node writes: no server needed."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from bluesky_ptychonn.storage.spool import (
    SpoolDirectory,
    SpoolLockedError,
    decode_document,
    encode_document,
)
from bluesky_ptychonn.storage.tiled_catalog import NodeWrite, json_metadata, safe_key
from bluesky_ptychonn.storage.tiled_results import MosaicSnapshot, live_mosaic_write, mosaic_key
from bluesky_ptychonn.storage.tiled_server import resolve_api_key, write_server_config


def test_documents_with_arrays_survive_the_spool_codec_without_pickle():
    frame = np.arange(12, dtype="<u2").reshape(3, 4)
    structured = np.zeros(2, dtype=[("a", "<f4"), ("b", "<i8")])
    doc = {
        "data": {"eiger": frame, "x": np.float64(1.5e-7), "n": np.int32(3)},
        "table": structured,
        "big_endian": np.arange(3, dtype=">f8"),
        "nan": float("nan"),
    }
    name, back = decode_document(encode_document("event", doc))
    assert name == "event"
    assert back["data"]["eiger"].dtype == frame.dtype
    np.testing.assert_array_equal(back["data"]["eiger"], frame)
    assert back["data"]["x"] == 1.5e-7 and back["data"]["n"] == 3
    assert back["table"].dtype == structured.dtype
    assert back["big_endian"].dtype == np.dtype(">f8")
    assert np.isnan(back["nan"])


def test_object_arrays_are_refused_by_the_spool():
    with pytest.raises(TypeError, match="object arrays"):
        encode_document("event", {"data": {"x": np.array([{"a": 1}], dtype=object)}})


def test_a_spool_folder_belongs_to_one_session_at_a_time(tmp_path):
    first = SpoolDirectory(tmp_path)
    with pytest.raises(SpoolLockedError, match="in use by another session"):
        SpoolDirectory(tmp_path)
    first.close()
    SpoolDirectory(tmp_path).close()


def test_run_files_keep_order_and_skip_a_line_cut_by_a_crash(tmp_path):
    spool = SpoolDirectory(tmp_path)
    spool.append("uid-1", "start", {"uid": "uid-1", "time": 0.0})
    path = spool.append("uid-1", "descriptor", {"uid": "d", "run_start": "uid-1"})
    with open(path, "ab") as f:
        f.write(b'{"name": "event", "doc": {"tru')  # the process died mid-write
    names = [name for name, _ in SpoolDirectory.read_run(path)]
    assert names == ["start", "descriptor"]
    [run] = spool.pending_runs()
    assert run.uid == "uid-1" and run.path == path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    spool.close()


def test_node_writes_round_trip_through_the_spool_as_npy_files(tmp_path):
    spool = SpoolDirectory(tmp_path)
    write = NodeWrite(
        parent="reconstructions",
        key="abc-live-mosaic-v1",
        metadata={"scan_uid": "abc", "origin_m": (1e-6, -2e-6), "n": np.int64(3)},
        arrays={"phase": np.ones((3, 4), np.float32), "object": np.ones(2, np.complex64)},
        specs=["PtychoReconstruction"],
    )
    folder = spool.put_write(write)
    assert [p.name for p in spool.pending_writes()] == [folder.name]
    back = SpoolDirectory.read_write(folder)
    assert back.metadata == {"scan_uid": "abc", "origin_m": [1e-6, -2e-6], "n": 3}
    assert back.arrays["object"].dtype == np.complex64
    np.testing.assert_array_equal(back.arrays["phase"], write.arrays["phase"])
    spool.done(folder)
    assert spool.pending_writes() == []
    spool.close()


def test_node_writes_refuse_bad_keys_parents_and_object_arrays():
    with pytest.raises(ValueError, match="parent"):
        NodeWrite(parent="elsewhere", key="k", metadata={})
    with pytest.raises(ValueError, match="node key"):
        NodeWrite(parent="models", key="a/b", metadata={})
    with pytest.raises(TypeError, match="numbers only"):
        NodeWrite(parent="models", key="k", metadata={}, arrays={"x": np.array(["a"])})
    assert safe_key("ptychonn v1.2/ft#3") == "ptychonn_v1.2_ft_3"
    assert json_metadata({"a": (np.float32(1.5), float("inf"))}) == {"a": [1.5, None]}


def test_live_mosaic_snapshots_of_one_run_and_model_share_one_node():
    snapshot = MosaicSnapshot(
        phase=np.zeros((4, 4)),
        amplitude=np.ones((4, 4)),
        weights=np.ones((4, 4)),
        pixel_size_m=1e-8,
        origin_m=(0.0, 0.0),
        frames_used=3,
        model_version="ptychonn v2",
    )
    first = live_mosaic_write("uid-1", snapshot, snapshot_index=0, final=False)
    last = live_mosaic_write("uid-1", snapshot, snapshot_index=1, final=True)
    assert first.key == last.key == mosaic_key("uid-1", "ptychonn v2")
    assert last.metadata["final"] and last.metadata["kind"] == "live-mosaic"
    assert first.arrays["phase"].dtype == np.float32


def test_a_new_api_key_is_written_for_the_owner_only(tmp_path):
    key = resolve_api_key(tmp_path)
    path = tmp_path / "api_key"
    assert key.isalnum() and len(key) == 64
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert resolve_api_key(tmp_path) == key  # read back, not regenerated
    assert resolve_api_key(tmp_path, "given123") == "given123"


def test_api_key_from_the_environment_and_bad_keys(tmp_path, monkeypatch):
    monkeypatch.setenv("TILED_API_KEY", "fromenv42")
    assert resolve_api_key(tmp_path) == "fromenv42"
    assert not (tmp_path / "api_key").exists()
    with pytest.raises(ValueError, match="letters and digits"):
        resolve_api_key(tmp_path, "not a key!")


def test_a_key_file_readable_by_others_is_refused(tmp_path):
    path = tmp_path / "api_key"
    path.write_text("abc123\n")
    os.chmod(path, 0o644)
    with pytest.raises(PermissionError, match="chmod 600"):
        resolve_api_key(tmp_path)


def test_server_config_has_writable_tabular_storage_and_the_document_exporter(tmp_path):
    import yaml

    path = write_server_config(tmp_path, readable=[tmp_path / "detector"], live=True)
    config = yaml.safe_load(path.read_text())
    assert config["catalog"]["uri"] == f"sqlite:///{tmp_path.resolve() / 'catalog.db'}"
    assert any(s.startswith("duckdb:///") for s in config["catalog"]["writable_storage"])
    assert config["catalog"]["readable_storage"] == [str((tmp_path / "detector").resolve())]
    assert config["media_types"]["BlueskyRun"]["application/json-seq"].endswith("json_seq_exporter")
    assert config["streaming_cache"]["uri"] == "memory"
    assert "api_key" not in path.read_text()
