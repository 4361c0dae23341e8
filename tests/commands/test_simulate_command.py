"""`bluesky-ptychonn simulate` and `demo`: files a person and the reader can use; clear errors."""

import json
import subprocess
import sys

import numpy as np
import pytest

from bluesky_ptychonn.cli import main
from bluesky_ptychonn.storage.cxi import read_cxi

SMALL = ["--extent", "1e-6", "--overlap", "0.5"]


def test_simulate_writes_cxi_with_ground_truth_and_a_figure(tmp_path, capsys):
    out = tmp_path / "sim.cxi"
    status = main(
        [
            "simulate",
            "--sample",
            "etched",
            "--scan",
            "spiral",
            "--photons",
            "1e6",
            "--detector",
            "eiger",
            "--out",
            str(out),
            *SMALL,
        ]
    )
    assert status == 0
    summary = json.loads(capsys.readouterr().out)
    dataset = read_cxi(out)
    assert dataset.n_patterns == summary["frames"] > 5
    assert dataset.pattern_shape == (128, 128)
    assert dataset.ground_truth is not None and np.iscomplexobj(dataset.ground_truth.array)
    assert dataset.object_pixel_size_m == pytest.approx(10e-9, rel=1e-6)
    assert dataset.metadata["config"]["sample"] == "etched"
    assert summary["overlap_measured"] == pytest.approx(0.5, abs=0.01)
    totals = dataset.patterns.reshape(dataset.n_patterns, -1).sum(1)
    assert 0.8e6 < totals.mean() < 1.0e6  # about the photons asked for, less absorption
    png = tmp_path / "sim.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 50_000


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--overlap", "1.0"], "overlap ratio must be below 1"),
        (["--overlap", "1.3"], "overlap ratio must be below 1"),
        (["--beam-size=-6e-8"], "beam size must be a positive length"),
        (["--detector", "pilatus"], "unknown detector 'pilatus'"),
        (["--energy", "-1"], "photon energy must be a positive"),
        (["--sample", "image", "--sample-image", "/nonexistent.png"], "does not exist"),
    ],
)
def test_bad_input_is_named_and_nothing_is_written(tmp_path, capsys, options, message):
    out = tmp_path / "sim.cxi"
    status = main(["simulate", "--out", str(out), *SMALL[:2], *options])
    assert status == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_not_overwritten(tmp_path, capsys):
    out = tmp_path / "sim.cxi"
    out.write_bytes(b"precious")
    assert main(["simulate", "--out", str(out), *SMALL]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert out.read_bytes() == b"precious"


def test_console_script_runs_as_a_process(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bluesky_ptychonn.cli",
            "simulate",
            "--out",
            str(tmp_path / "s.cxi"),
            "--no-figure",
            "--detector",
            "medipix3",
            "--scan",
            "sparse",
            "--overlap",
            "0",
            "--extent",
            "0.4e-6",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert read_cxi(tmp_path / "s.cxi").n_patterns == json.loads(result.stdout)["frames"]
