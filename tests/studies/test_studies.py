"""The quick studies: the direction of each effect the paper reports (small scans, small models
of the demo recipe at 1e6 and 1e3 photons, each trained once and cached: about 1.5 min apiece on
two idle cores the first time; afterwards the three studies take about a minute and a half)."""

from __future__ import annotations

import json

import pytest

from bluesky_ptychonn.cli import main


@pytest.fixture(scope="module")
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run_study(name: str, folder, capsys) -> dict:
    out = folder / f"{name}.json"
    capsys.readouterr()
    assert main(["study", name, "--quick", "--json", str(out), "--threads", "1"]) == 0
    record = json.loads(out.read_text())
    assert (folder / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    return record


def test_refine_ten_seeded_iterations_beat_ten_from_free_space(tmp_path, capsys, one_thread):
    record = run_study("refine", tmp_path, capsys)
    rows = {r["name"]: r for r in record["rows"]}
    network, seeded = rows["network only"], rows["network + 10 ePIE"]
    scratch = rows["ePIE 10"]
    assert seeded["nrmse_scale_free"] < scratch["nrmse_scale_free"]
    assert seeded["phase_rms_rad"] < scratch["phase_rms_rad"]
    assert seeded["nrmse_scale_free"] < rows["network + 5 ePIE"]["nrmse_scale_free"]
    assert seeded["nrmse_scale_free"] < 0.7 * network["nrmse_scale_free"]
    for row in record["rows"]:  # every score of the shared scoring code is there
        assert {"nrmse", "phase_rms_rad", "phase_ssim", "phase_ssim_gaussian",
                "frc_half_bit_resolution_px", "seconds"} <= set(row)  # fmt: skip
    weights = record["network_by_weight"]
    assert weights["dataset"]["phase_rms_rad"] < weights["gaussian"]["phase_rms_rad"]


def test_overlap_epie_loses_more_accuracy_than_the_network(tmp_path, capsys, one_thread):
    record = run_study("overlap", tmp_path, capsys)
    # on ePIE's grid (at the network's coarser pixels ePIE holds up to overlap 0 here)
    accuracy = {(r["method"], r["overlap"]): r["fine_vs_truth"]["phase_ssim_gaussian"]
                for r in record["rows"]}  # fmt: skip
    high, none = max(record["options"]["overlaps"]), 0.0
    epie_loss = accuracy[("epie", high)] - accuracy[("epie", none)]
    network_loss = accuracy[("network", high)] - accuracy[("network", none)]
    assert epie_loss > network_loss
    assert accuracy[("epie", high)] > accuracy[("epie", none)]


def test_dose_a_network_retrained_low_beats_upscaling_at_the_lowest_dose(
    tmp_path, capsys, one_thread
):
    record = run_study("dose", tmp_path, capsys)
    lowest = min(record["options"]["doses"])
    at = {r["method"]: r["vs_truth"] for r in record["rows"] if r["photons"] == lowest}
    retrained, upscaled = at["network retrained at this dose"], at["network, counts scaled up"]
    assert retrained["phase_ssim_gaussian"] > upscaled["phase_ssim_gaussian"]
    assert retrained["phase_rms_rad"] < upscaled["phase_rms_rad"]
    high = max(record["options"]["doses"])
    trained_high = [r for r in record["rows"]
                    if r["photons"] == high and r["method"] == "network as trained"]  # fmt: skip
    assert trained_high[0]["vs_truth"]["phase_ssim_gaussian"] > upscaled["phase_ssim_gaussian"]
