"""The uncertainty head: one more output channel, trained with a Laplace likelihood, calibrated
on held-out pairs; models without it are unchanged."""

import math

import numpy as np
import pytest
import torch

from bluesky_ptychonn import intervals
from bluesky_ptychonn.model import ModelConfig, build_model, load_model
from bluesky_ptychonn.model.checkpoint import read_probe, resolve
from bluesky_ptychonn.model.data import illuminated_mask
from bluesky_ptychonn.model.evaluate import predict
from bluesky_ptychonn.model.uncertainty import laplace_nll, phase_errors


@pytest.fixture(scope="module")
def head(trained_head):
    return trained_head


@pytest.mark.parametrize("separate", [False, True])
def test_the_head_adds_a_positive_third_channel(separate):
    config = ModelConfig.preset(
        "edge", input_shape=32, base_channels=4, depth=2, separate_decoders=separate,
        uncertainty=True,
    )  # fmt: skip
    out = build_model(config).eval()(torch.randn(3, 1, 32, 32))
    assert out.shape == (3, 3, 32, 32)
    assert bool((out[:, 2] > 0).all())
    plain = build_model(ModelConfig.preset("edge", input_shape=32, base_channels=4, depth=2))
    assert plain.eval()(torch.randn(3, 1, 32, 32)).shape == (3, 2, 32, 32)


def test_a_model_without_the_head_writes_the_sidecar_it_always_did():
    config = ModelConfig.preset("edge", input_shape=32, base_channels=4)
    assert "uncertainty" not in config.to_dict()
    assert ModelConfig.from_dict(config.to_dict()) == config
    with_head = ModelConfig.preset("edge", input_shape=32, base_channels=4, uncertainty=True)
    assert ModelConfig.from_dict(with_head.to_dict()).uncertainty


def test_laplace_nll_is_smallest_when_sigma_states_the_error():
    error = torch.full((1,), 0.3)
    sigmas = torch.linspace(0.05, 1.5, 300)
    nll = laplace_nll(error.expand_as(sigmas), sigmas)
    best = float(sigmas[int(torch.argmin(nll))])
    assert best == pytest.approx(math.sqrt(2) * 0.3, rel=0.02)  # b = |e|, sigma = sqrt(2) b


def test_calibration_is_written_and_holds_on_other_held_out_pairs(head):
    model, sidecar = load_model(head.folder)
    assert model.config.uncertainty
    section = sidecar.uncertainty
    assert section["calibration_scale"] > 0 and section["pixels"] > 1000
    assert set(section["coverage_after"]) == {f"{p:g}" for p in intervals.LEVELS}
    # a different held-out set of the training kind: the stated 90 % interval holds
    out = predict(model, head.preprocessing.apply(head.test.frames))
    mask = illuminated_mask(head.test.weights)
    errors = phase_errors(out, head.test.labels)[:, mask]
    sigma = out[:, 2][:, mask] * sidecar.uncertainty_scale
    got = intervals.coverage(errors, sigma)
    fitted = section["coverage_after"]
    for level in ("0.5", "0.68", "0.9", "0.95"):  # the calibration carries over
        assert got[level] == pytest.approx(fitted[level], abs=0.05), (got, fitted)
    assert got["0.68"] == pytest.approx(0.68, abs=0.06)
    assert intervals.spearman(sigma, np.abs(errors)) > 0.2  # sigma follows the error
    assert read_probe(resolve(head.folder)).shape == (128, 128)
