"""The PtychoNN family: published parameter counts, output contract, configurable input size."""

from __future__ import annotations

import math

import pytest
import torch

from bluesky_ptychonn.model import ModelConfig, build_model, count_parameters

# Cherukara et al. 2020 (PtychoNN): encoder 32/64/128, two decoders 128/64/64, 64x64 input.
PTYCHONN_PARAMETERS = 1_247_074
# PtychoNN 2.0 edge network (ReconSmallPhaseModel, nconv=16, no batch norm): phase path only.
EDGE_PHASE_HEAD_PARAMETERS = 733_921
# ... plus the amplitude filter of the shared decoder's last conv (16 * 9 weights + 1 bias).
EDGE_PARAMETERS = EDGE_PHASE_HEAD_PARAMETERS + 145
EDGE_SEPARATE_DECODERS_PARAMETERS = 1_174_610


def test_ptychonn_has_the_published_parameter_count_and_64px_input():
    model = build_model("ptychonn")
    assert model.config.input_shape == (64, 64)
    assert count_parameters(model) == PTYCHONN_PARAMETERS
    assert math.isclose(count_parameters(model), 1.2e6, rel_tol=0.05)


def test_edge_model_phase_head_matches_ptychonn_2_count():
    model = build_model("edge")
    assert model.config.input_shape == (128, 128)
    assert model.phase_head_parameters() == EDGE_PHASE_HEAD_PARAMETERS
    assert count_parameters(model) == EDGE_PARAMETERS
    assert math.isclose(model.phase_head_parameters(), 0.73e6, rel_tol=0.01)


def test_edge_model_with_separate_amplitude_decoder():
    model = build_model("edge", separate_decoders=True)
    assert count_parameters(model) == EDGE_SEPARATE_DECODERS_PARAMETERS
    assert model.phase_head_parameters() == EDGE_PHASE_HEAD_PARAMETERS


@pytest.mark.parametrize("name", ["ptychonn", "edge"])
def test_output_is_one_tensor_phase_in_radians_and_amplitude_in_0_1(name):
    torch.manual_seed(0)
    model = build_model(name).eval()
    h, w = model.config.input_shape
    with torch.no_grad():
        out = model(torch.rand(3, 1, h, w) * 10)
    assert out.shape == (3, 2, h, w)
    assert out.dtype == torch.float32
    assert torch.all(out[:, 0].abs() < math.pi)
    assert torch.all((out[:, 1] > 0) & (out[:, 1] < 1))


@pytest.mark.parametrize(("name", "size"), [("edge", 64), ("edge", 256), ("ptychonn", 128)])
def test_input_size_is_configurable_and_does_not_change_parameter_count(name, size):
    default = count_parameters(build_model(name))
    model = build_model(name, input_shape=size).eval()
    assert count_parameters(model) == default
    with torch.no_grad():
        assert model(torch.zeros(1, 1, size, size)).shape == (1, 2, size, size)


def test_input_size_must_be_a_multiple_of_the_pooling():
    with pytest.raises(ValueError, match="multiples of 16"):
        ModelConfig.preset("edge", input_shape=100)
    with pytest.raises(ValueError, match="unknown model"):
        ModelConfig.preset("resnet")


def test_reduced_width_scales_every_block():
    config = ModelConfig.preset("edge", base_channels=8, input_shape=64)
    assert config.encoder_channels == (8, 16, 32, 64)
    assert config.decoder_channels == (64, 32, 16, 8)
    assert count_parameters(build_model(config)) < EDGE_PARAMETERS / 3


def test_config_round_trips_through_json_dict():
    config = ModelConfig.preset("ptychonn", input_shape=(128, 64), batch_norm=True)
    again = ModelConfig.from_dict(config.to_dict())
    assert again == config
    with pytest.raises(ValueError, match="unknown architecture fields"):
        ModelConfig.from_dict({**config.to_dict(), "dropout": 0.1})


def test_a_shallower_member_keeps_the_outer_blocks_and_refuses_a_bad_depth():
    config = ModelConfig.preset("edge", input_shape=32, base_channels=8, depth=3)
    assert config.encoder_channels == (8, 16, 32)
    assert config.decoder_channels == (32, 16, 8)
    out = build_model(config)(torch.zeros(2, 1, 32, 32))
    assert out.shape == (2, 2, 32, 32)
    with pytest.raises(ValueError, match="depth must lie in 1..4"):
        ModelConfig.preset("edge", depth=5)
