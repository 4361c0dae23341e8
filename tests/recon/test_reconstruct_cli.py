"""`bluesky-ptychonn reconstruct`: files in, CXI + PNG out, clear errors for bad input."""

from __future__ import annotations

import dataclasses
import json

import h5py
import numpy as np
import pytest

from bluesky_ptychonn.cli import main
from bluesky_ptychonn.storage.cxi import read_reconstruction, write_cxi


@pytest.fixture()
def scan_file(tmp_path, small_scan):
    return write_cxi(tmp_path / "scan.cxi", small_scan)


def test_reconstruct_writes_a_readable_cxi_and_a_png(tmp_path, scan_file, capsys):
    out = tmp_path / "recon.cxi"
    status = main(
        [
            "reconstruct",
            str(scan_file),
            "--algorithm",
            "epie",
            "--iterations",
            "3",
            "--batch-size",
            "16",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert status == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["iterations"] == 3
    result = read_reconstruction(out)
    assert result.algorithm == "epie"
    assert result.error_history.shape == (3,)
    assert result.probe.shape == (64, 64)
    assert result.positions_m.shape == (63, 2)
    assert result.settings["batch_size"] == 16
    with h5py.File(out) as f:
        assert "/entry_1/image_1/data" in f
    png = out.with_suffix(".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_reconstruct_ap_with_sync_and_no_probe_in_the_file(tmp_path, small_scan):
    """A CXI file with only patterns and translations reconstructs (probe from the data)."""
    source = write_cxi(tmp_path / "bare.cxi", dataclasses.replace(small_scan, probe=None))
    out = tmp_path / "ap.cxi"
    status = main(
        [
            "reconstruct",
            str(source),
            "--algorithm",
            "ap",
            "--iterations",
            "3",
            "--sync-every",
            "1",
            "--out",
            str(out),
            "--png",
            str(tmp_path / "f.png"),
            "--quiet",
        ]
    )
    assert status == 0
    result = read_reconstruction(out)
    assert result.algorithm == "ap"
    assert result.settings["run"]["probe_source"] == "data"
    assert result.settings["sync"]["every"] == 1
    assert (tmp_path / "f.png").exists()


def test_sync_with_epie_is_a_clear_error(tmp_path, scan_file, capsys):
    status = main(
        ["reconstruct", str(scan_file), "--sync-every", "2", "--out", str(tmp_path / "x.cxi")]
    )
    assert status == 2
    assert "--sync-every applies to --algorithm ap" in capsys.readouterr().err
    assert not (tmp_path / "x.cxi").exists()


def test_nan_in_the_file_is_a_clear_error(tmp_path, small_scan, capsys):
    patterns = small_scan.patterns.astype(np.float32)
    patterns[2, 0, 0] = np.nan
    source = write_cxi(tmp_path / "nan.cxi", dataclasses.replace(small_scan, patterns=patterns))
    status = main(["reconstruct", str(source), "--out", str(tmp_path / "x.cxi"), "--quiet"])
    assert status == 2
    assert "NaN" in capsys.readouterr().err


def test_existing_output_is_not_overwritten(tmp_path, scan_file, capsys):
    out = tmp_path / "taken.cxi"
    out.write_bytes(b"")
    status = main(["reconstruct", str(scan_file), "--out", str(out), "--iterations", "1"])
    assert status == 2
    assert "exists" in capsys.readouterr().err
