"""Position correction: refined positions on a scan whose file gets them wrong.

The scan comes from `far_field_scan` (written apart from the package's simulator): the
patterns are measured at the true positions, the file holds positions off by random errors of
1 px RMS per axis (1.35 px RMS in distance), the true ones are in the metadata.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from far_field_scan import simulate

from bluesky_ptychonn.cli import main
from bluesky_ptychonn.recon import APOptions, EPIEOptions, PositionOptions, make_task
from bluesky_ptychonn.storage.cxi import read_reconstruction, write_cxi


@pytest.fixture(scope="module")
def misplaced_scan():
    dataset, _ = simulate(n_positions=100, overlap=0.75, position_error_px=1.0)
    return dataset


def position_error_px(dataset, positions_m: np.ndarray) -> float:
    """RMS distance (object pixels) to the true positions, their common shift removed."""
    true = np.asarray(dataset.metadata["true_positions_m"])
    d = (np.asarray(positions_m) - true) / dataset.object_pixel_size_m
    d -= d.mean(axis=0)
    return float(np.sqrt(np.mean(np.sum(d**2, axis=1))))


def test_position_correction_moves_the_positions_towards_the_truth(misplaced_scan):
    before = position_error_px(misplaced_scan, misplaced_scan.positions_m)
    options = EPIEOptions(iterations=40, positions=PositionOptions(correct=True, start_iteration=5))
    result = make_task(misplaced_scan, options).run().result()
    after = position_error_px(misplaced_scan, result.positions_m)
    # measured 1.35 -> 0.81 px
    assert before > 1.2
    assert after < 0.75 * before, (before, after)
    assert result.settings["run"]["position_correction_rms_px"] > 0.3


def test_without_correction_the_positions_are_the_files(misplaced_scan):
    result = make_task(misplaced_scan, EPIEOptions(iterations=3)).run().result()
    np.testing.assert_array_equal(result.positions_m, misplaced_scan.positions_m)
    assert "position_correction_rms_px" not in result.settings["run"]


def test_corrections_stay_within_their_bound(misplaced_scan):
    options = EPIEOptions(
        iterations=12,
        positions=PositionOptions(correct=True, start_iteration=2, max_shift_px=0.25),
    )
    task = make_task(misplaced_scan, options).run()
    shift = task.positions_px - task.nominal_px
    assert np.abs(shift).max() <= 0.25 + 1e-9
    assert np.abs(shift).max() > 0.1  # it did move


@pytest.mark.parametrize(
    "bad", [dict(step_size=0), dict(max_step_px=-1), dict(start_iteration=-1), dict(mad_clip=-1)]
)
def test_bad_position_options_are_refused(bad):
    with pytest.raises(ValueError, match="positions"):
        EPIEOptions(positions=PositionOptions(correct=True, **bad)).validate()


def test_position_correction_needs_subpixel_positions():
    with pytest.raises(ValueError, match="sub-pixel"):
        EPIEOptions(subpixel=False, positions=PositionOptions(correct=True)).validate()


def test_cli_writes_the_refined_positions(tmp_path, misplaced_scan, capsys):
    source = write_cxi(tmp_path / "scan.cxi", misplaced_scan)
    out = tmp_path / "recon.cxi"
    args = ["reconstruct", str(source), "--out", str(out), "--iterations", "8", "--quiet"]
    assert main([*args, "--correct-positions", "--position-start", "2"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["position_correction_rms_px"] > 0
    result = read_reconstruction(out)
    moved = np.abs(result.positions_m - misplaced_scan.positions_m).max()
    assert moved > 0.05 * misplaced_scan.object_pixel_size_m
    assert result.settings["positions"]["correct"] is True


def test_cli_refuses_position_correction_with_ap(tmp_path, misplaced_scan, capsys):
    source = write_cxi(tmp_path / "scan.cxi", misplaced_scan)
    args = ["reconstruct", str(source), "--out", str(tmp_path / "r.cxi"), "--algorithm", "ap"]
    assert main([*args, "--correct-positions"]) != 0
    assert "--algorithm epie" in capsys.readouterr().err
    assert not (tmp_path / "r.cxi").exists()
    assert APOptions().probe.modes == 1
