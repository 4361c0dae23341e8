"""Mixed-state probes: the modes' algebra, the modal ePIE on partially coherent data, CXI.

The partially coherent scans come from `far_field_scan` (written apart from the package's
simulator): three incoherent modes holding 60, 25 and 15 % of the power, whose intensities
add on the detector.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from far_field_scan import simulate

from bluesky_ptychonn.cli import main
from bluesky_ptychonn.recon import (
    APOptions,
    EPIEOptions,
    ObjectOptions,
    ProbeOptions,
    ReconstructionDiverged,
    make_task,
)
from bluesky_ptychonn.recon.assessment import assess_reconstruction
from bluesky_ptychonn.recon.modes import initial_modes, mode_powers, orthogonalise_modes
from bluesky_ptychonn.storage.cxi import read_reconstruction, write_cxi

FRACTIONS = (0.6, 0.25, 0.15)


@pytest.fixture(scope="module")
def partially_coherent_scan():
    return simulate(n_positions=100, overlap=0.75, mode_fractions=FRACTIONS)


def _random_modes(m: int = 3, n: int = 16, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((m, n, n)) + 1j * rng.standard_normal((m, n, n))
    return torch.from_numpy(z.astype(np.complex64))


def test_orthogonalised_modes_keep_the_summed_intensity_and_are_orthogonal_sorted():
    modes = _random_modes()
    out = orthogonalise_modes(modes)
    before = (modes.abs() ** 2).sum(0)
    after = (out.abs() ** 2).sum(0)
    assert torch.allclose(before, after, rtol=1e-4, atol=1e-4)
    flat = out.reshape(3, -1).to(torch.complex128)
    gram = flat.conj() @ flat.T
    off = gram - torch.diag(torch.diagonal(gram))
    assert float(off.abs().max()) < 1e-4 * float(gram.abs().max())
    powers = torch.diagonal(gram).real
    assert bool(torch.all(powers[:-1] >= powers[1:]))


def test_initial_modes_keep_the_power_and_give_each_added_mode_its_share():
    rows, cols = np.indices((32, 32)) - 16
    probe = np.exp(-(rows**2 + cols**2) / 50.0 + 0.3j * rows).astype(np.complex64) * 30
    modes = initial_modes(probe, 4, extra_power=0.05)
    powers = mode_powers(modes)
    total = float(np.sum(np.abs(probe) ** 2))
    assert modes.shape == (4, 32, 32)
    assert powers.sum() == pytest.approx(total, rel=1e-5)
    assert powers[1:] == pytest.approx([0.05 * total] * 3, rel=1e-4)
    flat = modes.reshape(4, -1).astype(np.complex128)
    gram = flat.conj() @ flat.T
    assert np.abs(gram - np.diag(np.diag(gram))).max() < 1e-4 * np.abs(gram).max()
    # more modes given than wanted: the first ones, the power kept
    assert initial_modes(modes, 2).shape == (2, 32, 32)
    assert mode_powers(initial_modes(modes, 2)).sum() == pytest.approx(total, rel=1e-5)


def test_modes_fit_partially_coherent_data_better_than_one_probe(partially_coherent_scan):
    dataset, _ = partially_coherent_scan
    ratios = {}
    for modes in (1, 3):
        options = EPIEOptions(iterations=40, probe=ProbeOptions(modes=modes, mode_power=0.25))
        task = make_task(dataset, options).run()
        ratios[modes] = assess_reconstruction(dataset, task, half_scan=False).noise_ratio
        if modes == 3:
            powers = task.settings()["run"]["mode_powers"]
            # the weaker modes carry power (the data need it), sorted strongest first
            assert powers == sorted(powers, reverse=True)
            assert min(powers) > 0.05 * sum(powers)
    assert ratios[3] < 0.92 * ratios[1], ratios


def test_the_true_modes_are_a_fixed_point(partially_coherent_scan):
    dataset, true_modes = partially_coherent_scan
    options = EPIEOptions(iterations=10, probe=ProbeOptions(modes=3, trial_iterations=0))
    task = make_task(dataset, options, initial_probe=true_modes.astype(np.complex64)).run()
    powers = np.array(task.settings()["run"]["mode_powers"])
    assert powers / powers.sum() == pytest.approx(FRACTIONS, abs=0.03)
    assert assess_reconstruction(dataset, task, half_scan=False).noise_ratio < 1.8


def test_a_diverging_run_with_modes_is_still_refused(partially_coherent_scan):
    dataset, _ = partially_coherent_scan
    options = EPIEOptions(
        iterations=30, object=ObjectOptions(step_size=3.0), probe=ProbeOptions(modes=2)
    )
    with pytest.raises(ReconstructionDiverged, match=r"diverged at iteration \d+"):
        make_task(dataset, options).run()


def test_alternating_projections_refuse_modes():
    with pytest.raises(ValueError, match="needs ePIE"):
        APOptions(probe=ProbeOptions(modes=2)).validate()


@pytest.mark.parametrize("bad", [dict(modes=0), dict(modes=2, mode_power=0.5)])
def test_bad_mode_options_are_refused(bad):
    with pytest.raises(ValueError, match="probe mode"):
        ProbeOptions(**bad).validate()


def test_cli_writes_the_probe_modes_to_cxi(tmp_path, partially_coherent_scan, capsys):
    dataset, _ = partially_coherent_scan
    source = write_cxi(tmp_path / "scan.cxi", dataset)
    out = tmp_path / "recon.cxi"
    args = ["reconstruct", str(source), "--out", str(out), "--iterations", "6", "--quiet"]
    assert main([*args, "--probe-modes", "2"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["probe_modes"] == 2
    result = read_reconstruction(out)
    assert result.probe.shape == (2, 64, 64)
    assert result.settings["probe"]["modes"] == 2
    powers = mode_powers(result.probe)
    assert powers[0] > powers[1] > 0
