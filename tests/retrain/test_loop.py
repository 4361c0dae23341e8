"""The continual-learning loop, step by step and end to end, in this process (InlineExecutor).

Small simulated scans (128x128 patterns, ~40 positions), few ePIE iterations and epochs: these
tests check what the loop decides and records, what it refuses and what it leaves in service,
not how good the model gets (that is `bench continual`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scans import small_scan

from bluesky_ptychonn.retrain.gate import Gate, Mismatch, ValidatedLevel
from bluesky_ptychonn.retrain.labels import LabelSet, LabelsRefused, check_reconstruction
from bluesky_ptychonn.retrain.loop import ContinualLoop
from bluesky_ptychonn.retrain.options import GateOptions, LoopOptions

FAST = {
    "recon": {"iterations": 30},
    "train": {"epochs": 2, "threads": 1, "scratch": {"epochs": 3}},
    "promote": {"onnx": False},
}


def fast_options(**tables) -> LoopOptions:
    table = json.loads(json.dumps(FAST))
    for key, value in tables.items():
        table.setdefault(key, {}).update(value)
    return LoopOptions.from_mapping(table)


@pytest.fixture(scope="module")
def scans(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("scans")
    return [small_scan(folder / f"scan{i}.cxi", seed=i) for i in range(3)]


@pytest.fixture(scope="module")
def first_model(tmp_path_factory, scans) -> tuple[Path, dict]:
    """A loop state after one scan from scratch: (state folder, record)."""
    state = tmp_path_factory.mktemp("first")
    record = ContinualLoop(state, fast_options()).process_scan(scans[0], "scan0")
    return state, record.to_dict()


def test_first_scan_trains_a_model_from_scratch_that_serve_can_load(first_model, scans):
    from bluesky_ptychonn.model.checkpoint import load_model

    state, record = first_model
    assert record["decision"] == "train_from_scratch"
    assert record["trained"] and record["promoted"], record["promotion_reason"]
    model, sidecar = load_model(record["model_path"])
    assert sidecar.version == record["model_version"]
    assert tuple(sidecar.preprocessing.frame_shape) == (128, 128)
    assert set(record["steps"]) >= {"labels", "train", "export"}
    labels = LabelSet.load(state / "labels" / "scan0.npz")
    assert labels.labels.shape[1:] == (2, *model.config.input_shape)
    assert 0 < labels.holdout.sum() < labels.n_pairs / 4
    assert labels.lineage["scan_uid"] == "scan0"
    # the saved state is resumed by a new loop on the same folder
    resumed = ContinualLoop(state, fast_options())
    assert resumed.model_version == record["model_version"]
    validated = record["challenger"]["holdout"]["challenger"]["ssim_mean"]
    assert resumed.reference_ssim == pytest.approx(validated)
    assert [r.decision for r in resumed.records] == ["train_from_scratch"]


def test_a_model_within_tolerance_suspends_then_skips_until_the_recheck(
    first_model, scans, tmp_path
):
    _, record = first_model
    options = fast_options(gate={"tolerance_ssim": 0.9999, "recheck_interval_s": 3600})
    loop = ContinualLoop(tmp_path / "state", options, model_dir=record["model_path"])
    checked = loop.process_scan(scans[1], "scan1", now_s=1000.0)
    assert checked.decision == "suspend", checked.reason
    assert checked.mismatch is not None and not checked.trained
    assert loop.state == "suspended"
    skipped = loop.process_scan(scans[2], "scan2", now_s=1000.0 + 60)
    assert skipped.decision == "skip"
    assert skipped.steps == {}  # suspended: not even reconstructed
    rechecked = loop.process_scan(scans[2], "scan2", now_s=1000.0 + 3601)
    assert rechecked.decision == "suspend"
    assert "labels" in rechecked.steps


def test_a_challenger_that_is_not_better_is_not_promoted(first_model, scans, tmp_path):
    _, record = first_model
    options = fast_options(gate={"tolerance_ssim": 0.01}, train={"min_improvement": 0.9})
    loop = ContinualLoop(tmp_path / "state", options, model_dir=record["model_path"])
    result = loop.process_scan(scans[1], "scan1")
    assert result.decision == "fine_tune"
    assert result.trained and not result.promoted
    assert "not better on the frozen holdout" in result.promotion_reason
    assert result.model_version == record["model_version"]
    assert result.challenger["holdout"]["incumbent"]["n_pairs"] > 0


def test_challengers_that_keep_losing_make_the_model_in_service_validated(
    first_model, scans, tmp_path
):
    _, record = first_model
    options = fast_options(
        gate={"tolerance_ssim": 0.01, "max_failed_challengers": 2},
        train={"min_improvement": 0.9},  # no challenger can win
    )
    loop = ContinualLoop(tmp_path / "state", options, model_dir=record["model_path"])
    first = loop.process_scan(scans[1], "scan1")
    assert first.trained and not first.promoted and loop.reference_ssim is None
    second = loop.process_scan(scans[2], "scan2")
    assert second.trained and not second.promoted
    assert "is its validated level" in second.promotion_reason
    incumbent = second.challenger["holdout"]["incumbent"]["ssim_mean"]
    assert loop.reference_ssim == pytest.approx(incumbent)
    assert second.challenger["replayed_pairs"] > 0  # the second challenger replayed scan1


def test_labels_of_the_wrong_pattern_size_are_refused(first_model, tmp_path):
    _, record = first_model
    scan = small_scan(tmp_path / "small.cxi", frame_px=64, defocus_m=100e-6)
    loop = ContinualLoop(tmp_path / "state", fast_options(), model_dir=record["model_path"])
    result = loop.process_scan(scan, "small")
    assert result.decision == "refused"
    assert "64x64 patterns but the network takes 128x128" in result.reason
    assert result.model_version == record["model_version"] and not result.promoted
    assert loop.status()["last_decision"] == "refused"


def test_a_corrupt_model_in_service_is_refused_and_keeps_its_place(first_model, scans, tmp_path):
    import shutil

    _, record = first_model
    corrupt = tmp_path / "corrupt"
    shutil.copytree(record["model_path"], corrupt)
    weights = corrupt / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-8:] = b"\x00" * 8
    weights.write_bytes(bytes(data))
    loop = ContinualLoop(tmp_path / "state", fast_options(), model_dir=corrupt)
    result = loop.process_scan(scans[1], "scan1")
    assert result.decision == "refused"
    assert "sha256" in result.reason
    assert result.model_path == str(corrupt.resolve()) and not result.trained


def test_a_model_with_nan_weights_is_refused(scans, tmp_path):
    import torch

    from bluesky_ptychonn.model.architectures import build_model
    from bluesky_ptychonn.model.checkpoint import save_model
    from bluesky_ptychonn.model.preprocessing import Preprocessing

    model = build_model("edge", input_shape=32, base_channels=4)
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    save_model(model, tmp_path / "nan", Preprocessing((32, 32), (128, 128), "crop"))
    loop = ContinualLoop(tmp_path / "state", fast_options(), model_dir=tmp_path / "nan")
    result = loop.process_scan(scans[1], "scan1")
    assert result.decision == "refused"
    assert "NaN or infinite weights" in result.reason
    assert not result.promoted


class _Reconstruction:
    def __init__(self, history, array):
        from bluesky_ptychonn.dataset import ComplexImage

        self.error_history = np.asarray(history, dtype=float)
        self.object = ComplexImage(np.asarray(array, dtype=np.complex64), 1e-8, (0.0, 0.0))


@pytest.mark.parametrize(
    ("history", "amplitude", "message"),
    [
        ([0.1, 0.05, float("nan")], 1.0, "NaN"),
        ([0.1, 0.01, 0.05], 1.0, "grew from"),
        ([0.1, 0.05, 0.04], 12.0, "far from physical"),
    ],
)
def test_a_diverged_reconstruction_gives_no_labels(history, amplitude, message):
    with pytest.raises(LabelsRefused, match=message):
        check_reconstruction(_Reconstruction(history, np.full((8, 8), amplitude)))
    healthy = check_reconstruction(_Reconstruction([0.1, 0.05, 0.04], np.full((8, 8), 0.9)))
    assert healthy["data_error"] == pytest.approx(0.04)


def test_gate_decisions_follow_the_tolerance_and_the_recheck_interval():
    gate = Gate(GateOptions(tolerance_ssim=0.1, recheck_interval_s=100))
    near = Mismatch(0.95, 0.95, 0.05, 0.01, 10)
    far = Mismatch(0.70, 0.70, 0.30, 0.05, 10)
    assert gate.decide(None, 0).action == "train_from_scratch"
    assert gate.decide(far, 0).action == "fine_tune"
    assert gate.decide(near, 10).action == "suspend"
    assert gate.before_reconstruction(50).action == "skip"
    assert gate.before_reconstruction(111) is None
    assert gate.decide(far, 111).action == "resume"
    assert gate.suspended_until is None
    # relative to the model's validated level: 0.45 against 0.50 is a 10 % drop
    assert Mismatch(0.45, 0.45, 0.2, 0.01, 10, reference_ssim=0.5).mismatch == pytest.approx(0.1)
    fresh = Gate(GateOptions(tolerance_ssim=0.1))
    assert fresh.decide(Mismatch(0.46, 0.46, 0.2, 0.01, 10, 0.5), 200).action == "suspend"
    fresh = Gate(GateOptions(tolerance_ssim=0.1))
    assert fresh.decide(Mismatch(0.40, 0.40, 0.2, 0.01, 10, 0.5), 200).action == "fine_tune"


def test_the_validated_level_rebases_on_unseen_scans_within_tolerance():
    """The steady-state series of `bench continual`: the challenger's holdout SSIM (0.462) is
    optimistic; new scans of the same kind score 0.41-0.48, and 0.414 read against 0.462 is a
    10.3 % drop, a false retrain. Re-based on unseen scans, the same series stays suspended,
    while a real drop still trains and does not move the level."""
    steady = [0.431, 0.417, 0.414, 0.446, 0.433, 0.484, 0.469, 0.464, 0.453, 0.458, 0.462]

    def run(rebase: bool) -> list[str]:
        gate = Gate(GateOptions(tolerance_ssim=0.1, recheck_interval_s=0))
        level = ValidatedLevel()
        level.set(0.462, "holdout")
        actions = []
        for ssim in steady:
            decision = gate.decide(Mismatch(ssim, ssim, 0.1, 0.01, 40, level.ssim), 0)
            actions.append(decision.action)
            if rebase:
                level.observe(decision)
        return actions

    assert run(rebase=False).count("suspend") < len(steady)  # the old rule retrains once
    assert run(rebase=True) == ["suspend"] * len(steady)
    level = ValidatedLevel()
    level.set(0.462, "holdout")
    gate = Gate(GateOptions(tolerance_ssim=0.1, recheck_interval_s=0))
    for ssim in steady[:3]:
        level.observe(gate.decide(Mismatch(ssim, ssim, 0.1, 0.01, 40, level.ssim), 0))
    assert level.source == "unseen scans" and level.ssim == pytest.approx(0.417)
    drop = gate.decide(Mismatch(0.30, 0.30, 0.3, 0.05, 40, level.ssim), 0)
    level.observe(drop)
    assert drop.action == "resume" and level.ssim == pytest.approx(0.417)
    assert ValidatedLevel.from_dict(level.to_dict()) == level


def test_same_seed_and_data_give_the_same_weights(first_model, tmp_path):
    from bluesky_ptychonn.retrain.challenger import train_step

    state, record = first_model
    labels = str(state / "labels" / "scan0.npz")
    options = {"epochs": 2, "threads": 1, "seed": 3}
    runs = [
        train_step(
            record["model_path"],
            labels,
            [],
            [labels],
            str(tmp_path / f"m{i}"),
            options=options,
            generation=1,
        )
        for i in range(2)
    ]
    assert runs[0]["sha256"] == runs[1]["sha256"]
    other = train_step(
        record["model_path"],
        labels,
        [],
        [labels],
        str(tmp_path / "m2"),
        options={**options, "seed": 4},
        generation=1,
    )
    assert other["sha256"] != runs[0]["sha256"]


def test_bad_options_are_refused_with_their_names():
    with pytest.raises(ValueError, match="unknown continual-learning options"):
        LoopOptions.from_mapping({"gates": {}})
    with pytest.raises(ValueError, match="unknown gate options"):
        LoopOptions.from_mapping({"gate": {"tolerance": 0.1}})
    with pytest.raises(ValueError, match="tolerance_ssim"):
        LoopOptions.from_mapping({"gate": {"tolerance_ssim": 1.5}})


def test_a_scratch_network_can_bin_to_keep_epie_s_pixels(scans, tmp_path):
    from bluesky_ptychonn.retrain.challenger import scratch_preprocessing_dict
    from bluesky_ptychonn.retrain.options import ScratchModel

    with pytest.raises(ValueError, match="whole factor"):
        scratch_preprocessing_dict((128, 128), ScratchModel(input_px=48, reduce="bin"))
    with pytest.raises(ValueError, match="'crop' or 'bin'"):
        scratch_preprocessing_dict((128, 128), ScratchModel(reduce="zoom"))
    options = fast_options(train={"scratch": {"input_px": 64, "reduce": "bin", "epochs": 2}})
    record = ContinualLoop(tmp_path / "state", options).process_scan(scans[0], "scan0")
    assert record.promoted, record.promotion_reason
    labels = LabelSet.load(tmp_path / "state" / "labels" / "scan0.npz")
    lineage = labels.lineage
    assert lineage["preprocessing"]["reduce"] == "bin"
    assert labels.labels.shape[-2:] == (64, 64)
    # binning keeps the data's object pixel (lambda z / (N d)) for the labels and the live image
    from bluesky_ptychonn.storage.cxi import read_cxi

    assert labels.label_pixel_size_m == pytest.approx(read_cxi(scans[0]).object_pixel_size_m)


def test_a_challenger_of_a_model_with_the_head_is_calibrated_and_keeps_the_probe(
    first_model, tmp_path
):
    import torch

    from bluesky_ptychonn.model.architectures import ModelConfig, build_model
    from bluesky_ptychonn.model.checkpoint import (
        load_model,
        read_probe,
        resolve,
        save_model,
    )
    from bluesky_ptychonn.retrain.challenger import train_step

    state, record = first_model
    plain, sidecar = load_model(record["model_path"])
    config = ModelConfig.from_dict({**plain.config.to_dict(), "uncertainty": True})
    torch.manual_seed(0)
    probe = np.exp(1j * np.random.default_rng(0).uniform(size=(128, 128))).astype(np.complex64)
    incumbent = tmp_path / "incumbent"
    save_model(build_model(config), incumbent, sidecar.preprocessing, probe=probe)
    labels = str(state / "labels" / "scan0.npz")
    trained = train_step(
        str(incumbent), labels, [], [labels], str(tmp_path / "challenger"),
        options={"epochs": 1, "threads": 1, "seed": 3}, generation=2,
    )  # fmt: skip
    challenger, challenger_sidecar = load_model(tmp_path / "challenger")
    assert challenger.config.uncertainty
    assert challenger_sidecar.uncertainty["calibration_scale"] > 0
    assert challenger_sidecar.uncertainty["pixels"] > 0
    assert np.array_equal(read_probe(resolve(tmp_path / "challenger")), probe)
    assert trained["version"].startswith(config.name)
