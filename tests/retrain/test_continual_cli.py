"""`bluesky-ptychonn continual replay`: recorded scans in, one report record per scan out."""

from __future__ import annotations

import json

import pytest
from scans import small_scan

from bluesky_ptychonn.cli import main

REQUIRED = {"scan", "decision", "reason", "mismatch", "trained", "model_version", "model_path",
            "seconds"}  # fmt: skip


def test_replay_writes_a_record_per_scan_with_a_loadable_model(tmp_path, capsys):
    from bluesky_ptychonn.model.checkpoint import load_model

    scans = [small_scan(tmp_path / f"s{i}.cxi", seed=i) for i in range(2)]
    out = tmp_path / "run"
    argv = ["continual", "replay", *map(str, scans), "--out", str(out), "--cluster", "inline",
            "--iterations", "30", "--epochs", "2", "--threads", "1",
            "--recheck-interval-s", "0"]  # fmt: skip
    assert main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    records = report["records"]
    assert [r["scan"] for r in records] == ["s0.cxi", "s1.cxi"]
    assert all(REQUIRED <= set(r) for r in records)
    assert records[0]["decision"] == "train_from_scratch" and records[0]["trained"]
    assert records[1]["decision"] in ("fine_tune", "suspend")
    assert records[1]["mismatch"]["n_pairs"] > 0
    _, sidecar = load_model(records[-1]["model_path"])
    assert sidecar.version == records[-1]["model_version"]
    assert "s0.cxi: train_from_scratch" in capsys.readouterr().out
    # the same folder again is refused unless resumed
    assert main(argv) == 2
    assert "use --resume" in capsys.readouterr().err


def test_replay_of_a_missing_file_is_one_clear_line(tmp_path, capsys):
    assert main(["continual", "replay", str(tmp_path / "nope.cxi"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(f"no such scan file: {tmp_path / 'nope.cxi'}") and "\n" not in err


@pytest.mark.parametrize("table", ["[gate]\ntolerance = 0.1\n", "[gates]\n"])
def test_a_config_with_unknown_keys_is_refused_by_name(tmp_path, capsys, table):
    config = tmp_path / "cl.toml"
    config.write_text(table)
    scan = small_scan(tmp_path / "s.cxi", seed=0)
    argv = ["continual", "replay", str(scan), "--out", str(tmp_path / "o"), "--config",
            str(config), "--cluster", "inline"]  # fmt: skip
    assert main(argv) == 2
    assert "unknown" in capsys.readouterr().err
