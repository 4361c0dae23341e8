"""`bluesky-ptychonn bench adaptive` runs (small) and writes the records the issue names."""

import json

import numpy as np
from PIL import Image

from bluesky_ptychonn.cli import main

STRATEGIES = {"adaptive", "uniform", "random", "spiral", "dense_raster"}


def run(tmp_path, *options):
    out = tmp_path / "adaptive.json"
    assert (
        main(
            [
                "bench",
                "adaptive",
                "--json",
                str(out),
                "--quick",
                "--field-um",
                "2.5",
                "--fractions",
                "0.1,0.25",
                *options,
            ]
        )
        == 0
    )
    return json.loads(out.read_text())


def check(records, sample):
    scans = [r for r in records if "record" not in r]
    assert {r["strategy"] for r in scans} == STRATEGIES
    for r in scans:
        assert r["sample"] == sample and r["points"] >= 1
        assert 0 <= r["phase_rms_rad"] < np.pi and -1 <= r["ssim"] <= 1
        assert r["dose_photons"] == r["points"] * r["photons_per_point"]
    dense = next(r for r in scans if r["strategy"] == "dense_raster")
    for n in {r["points"] for r in scans if r["strategy"] == "uniform"}:  # equal points
        same = {r["strategy"] for r in scans if r["points"] == n}
        assert {"uniform", "random", "spiral"} <= same
    assert all(r["points"] < dense["points"] for r in scans if r is not dense)
    summaries = [r for r in records if r.get("record") == "summary"]
    assert {r["strategy"] for r in summaries} == STRATEGIES - {"dense_raster"}
    (timing,) = [r for r in records if r.get("record") == "suggest_timing"]
    assert timing["points"] == 64 and timing["ms_median"] > 0
    adaptive = [r for r in scans if r["strategy"] == "adaptive"]
    assert all(sum(r["reasons"].values()) == r["points"] for r in adaptive)


def test_bench_adaptive_on_the_circuit_sample(tmp_path):
    check(run(tmp_path, "--sample", "circuit"), "circuit")


def test_bench_adaptive_on_a_sample_read_from_an_image(tmp_path):
    picture = np.zeros((64, 64), np.uint8)
    picture[10:30, 8:50] = 255  # one bright block on an empty field
    Image.fromarray(picture).save(tmp_path / "sample.png")
    check(
        run(tmp_path, "--sample", "image", "--sample-image", str(tmp_path / "sample.png")), "image"
    )
