"""The PtychoNN family: encoder-decoder CNNs from one diffraction pattern to one object patch.

Every model maps a (N, 1, H, W) float32 diffraction pattern (preprocessed, see
`preprocessing`) to one (N, 2, H, W) tensor on the object grid: channel 0 the phase in radians
(``pi * tanh``, so in (-pi, pi)), channel 1 the amplitude (``sigmoid``, dimensionless, in
(0, 1)). Patch pixel (H // 2, W // 2) is where the beam centre sits (see `geometry`). A model
built with ``uncertainty=True`` adds channel 2: one standard deviation of the phase in radians,
per pixel, uncalibrated (a Laplace scale head; `uncertainty` holds the likelihood and the
calibration, whose factor the engines apply from the sidecar).

Two presets, one generic builder (`ModelConfig` -> `PtychoNNNet`):

* ``"ptychonn"``: the original network of Cherukara et al., Appl. Phys. Lett. 117, 044103
  (2020): an encoder of 3 blocks (conv3x3-ReLU-conv3x3-ReLU-maxpool2) of 32/64/128 channels
  and *two* decoders (amplitude, phase) of 3 blocks (conv-ReLU-conv-ReLU-bilinear upsample x2)
  of 128/64/64 channels, each closed by a conv3x3 to one channel. 64x64 input,
  1,247,074 parameters.
* ``"edge"`` ("PtychoNN 2.0", the model the seeds ran at kHz on the edge): an encoder of 4
  blocks of 16/32/64/128 channels and one decoder of 4 blocks of 128/64/32/16 channels,
  128x128 input. The published phase-only network (``ReconSmallPhaseModel`` of the PtychoNN
  repository) has exactly the encoder + this decoder + a conv3x3 to one channel: 733,921
  parameters. Here the decoder's last conv emits two channels (phase and amplitude share the
  decoder), which adds 145 parameters (734,066 in all) and no measurable cost. With
  ``separate_decoders=True`` the amplitude gets its own decoder (1,174,610 parameters), like
  the original PtychoNN.

The input size is configurable (any multiple of ``2 ** depth``); parameter counts do not depend
on it. Nothing here downloads anything.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

MODEL_NAMES = ("ptychonn", "edge")

_PRESETS: dict[str, dict[str, Any]] = {
    "ptychonn": {
        "input_shape": (64, 64),
        "encoder_channels": (32, 64, 128),
        "decoder_channels": (128, 64, 64),
        "separate_decoders": True,
    },
    "edge": {
        "input_shape": (128, 128),
        "encoder_channels": (16, 32, 64, 128),
        "decoder_channels": (128, 64, 32, 16),
        "separate_decoders": False,
    },
}
_BASE_CHANNELS = {"ptychonn": 32, "edge": 16}


@dataclass
class ModelConfig:
    """The architecture of a PtychoNN-family network; JSON-serialisable (goes in the sidecar).

    Attributes:
        name: the family member, ``"ptychonn"`` or ``"edge"`` (a label; the fields below are
            what builds the network).
        input_shape: (H, W) pixels of the preprocessed diffraction pattern and of the output
            object patch; each a multiple of ``2 ** len(encoder_channels)``.
        encoder_channels: output channels of each down block (one 2x max-pool per block).
        decoder_channels: output channels of each up block (one 2x bilinear upsample per
            block); as many blocks as the encoder so the output has the input's size.
        separate_decoders: True gives phase and amplitude one decoder each (original
            PtychoNN); False shares one decoder whose last conv emits both channels.
        batch_norm: a BatchNorm after every hidden conv (the published edge code's
            ``use_batch_norm`` option): trains faster from scratch, and folds into the convs
            for inference (ONNX Runtime and TensorRT fuse it), so it costs nothing there.
        uncertainty: the phase decoder's last conv emits one more channel, the per-pixel
            phase uncertainty (`uncertainty`: a Laplace scale head), and the output grows to
            (N, 3, H, W). False keeps the original two-channel network.
    """

    name: str = "edge"
    input_shape: tuple[int, int] = (128, 128)
    encoder_channels: tuple[int, ...] = (16, 32, 64, 128)
    decoder_channels: tuple[int, ...] = (128, 64, 32, 16)
    separate_decoders: bool = False
    batch_norm: bool = False
    uncertainty: bool = False

    def __post_init__(self) -> None:
        self.input_shape = (int(self.input_shape[0]), int(self.input_shape[1]))
        self.encoder_channels = tuple(int(c) for c in self.encoder_channels)
        self.decoder_channels = tuple(int(c) for c in self.decoder_channels)
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first inconsistent field."""
        if not self.encoder_channels:
            raise ValueError("encoder_channels is empty: a PtychoNN needs at least one block")
        if len(self.decoder_channels) != len(self.encoder_channels):
            raise ValueError(
                f"{len(self.encoder_channels)} encoder blocks but {len(self.decoder_channels)} "
                "decoder blocks: the output would not have the input's size"
            )
        if any(c < 1 for c in self.encoder_channels + self.decoder_channels):
            raise ValueError("channel counts must be positive")
        step = 2 ** len(self.encoder_channels)
        h, w = self.input_shape
        if h < step or w < step or h % step or w % step:
            raise ValueError(
                f"input_shape {self.input_shape} must be positive multiples of {step} "
                f"(2 ** {len(self.encoder_channels)} blocks)"
            )

    @property
    def depth(self) -> int:
        return len(self.encoder_channels)

    @classmethod
    def preset(
        cls,
        name: str,
        *,
        input_shape: int | tuple[int, int] | None = None,
        base_channels: int | None = None,
        separate_decoders: bool | None = None,
        batch_norm: bool = False,
        depth: int | None = None,
        uncertainty: bool = False,
    ) -> ModelConfig:
        """A family member by name, optionally resized.

        Args:
            name: ``"ptychonn"`` or ``"edge"``.
            input_shape: (H, W) or one side in pixels; default the preset's (64 / 128).
            base_channels: channels of the first block; the others scale with it (default 32
                for ``"ptychonn"``, 16 for ``"edge"``). Smaller widths make fast test models.
            separate_decoders: override the preset's decoder layout.
            batch_norm: add BatchNorm after the hidden convs.
            depth: keep only the first ``depth`` down blocks and the last ``depth`` up blocks
                (a shallower member: e.g. depth 3 on a 32-pixel input keeps a 4x4 bottleneck
                instead of 2x2); default the preset's (3 / 4).
            uncertainty: add the phase-uncertainty channel (`ModelConfig.uncertainty`).
        """
        if name not in _PRESETS:
            raise ValueError(f"unknown model {name!r}; known: {list(MODEL_NAMES)}")
        spec = dict(_PRESETS[name])
        if input_shape is not None:
            spec["input_shape"] = (
                (int(input_shape), int(input_shape))
                if isinstance(input_shape, int)
                else tuple(input_shape)
            )
        if base_channels is not None:
            if base_channels < 1:
                raise ValueError(f"base_channels must be positive, got {base_channels}")
            ratio = base_channels / _BASE_CHANNELS[name]
            for key in ("encoder_channels", "decoder_channels"):
                spec[key] = tuple(max(1, round(c * ratio)) for c in spec[key])
        if separate_decoders is not None:
            spec["separate_decoders"] = bool(separate_decoders)
        if depth is not None:
            full = len(spec["encoder_channels"])
            if not 1 <= depth <= full:
                raise ValueError(f"depth must lie in 1..{full} for {name!r}, got {depth}")
            spec["encoder_channels"] = spec["encoder_channels"][:depth]
            spec["decoder_channels"] = spec["decoder_channels"][full - depth :]
        return cls(name=name, batch_norm=bool(batch_norm), uncertainty=bool(uncertainty), **spec)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        d["encoder_channels"] = list(self.encoder_channels)
        d["decoder_channels"] = list(self.decoder_channels)
        if not self.uncertainty:
            del d["uncertainty"]  # a model without the field writes the sidecar it always did
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        known = {
            "name",
            "input_shape",
            "encoder_channels",
            "decoder_channels",
            "separate_decoders",
            "batch_norm",
            "uncertainty",
        }
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown architecture fields {sorted(unknown)}")
        return cls(**d)


def _conv_relu(c_in: int, c_out: int, batch_norm: bool) -> list[nn.Module]:
    conv = [nn.Conv2d(c_in, c_out, 3, padding=1)]
    if batch_norm:
        conv.append(nn.BatchNorm2d(c_out))
    return conv + [nn.ReLU(inplace=True)]


def _down_block(c_in: int, c_out: int, batch_norm: bool) -> list[nn.Module]:
    return [
        *_conv_relu(c_in, c_out, batch_norm),
        *_conv_relu(c_out, c_out, batch_norm),
        nn.MaxPool2d(2),
    ]


def _up_block(c_in: int, c_out: int, batch_norm: bool) -> list[nn.Module]:
    return [
        *_conv_relu(c_in, c_out, batch_norm),
        *_conv_relu(c_out, c_out, batch_norm),
        nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
    ]


def _decoder(c_in: int, channels: tuple[int, ...], n_out: int, batch_norm: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for c_out in channels:
        layers += _up_block(c_in, c_out, batch_norm)
        c_in = c_out
    layers.append(nn.Conv2d(c_in, n_out, 3, padding=1))
    return nn.Sequential(*layers)


class PtychoNNNet(nn.Module):
    """A PtychoNN-family network built from a `ModelConfig`.

    ``forward(x)``: x (N, 1, H, W) float preprocessed pattern -> (N, 2, H, W): channel 0 phase
    in radians (pi * tanh), channel 1 amplitude (sigmoid).
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        c_in = 1
        for c_out in config.encoder_channels:
            layers += _down_block(c_in, c_out, config.batch_norm)
            c_in = c_out
        self.encoder = nn.Sequential(*layers)
        extra = 1 if config.uncertainty else 0  # the phase-uncertainty channel
        if config.separate_decoders:
            self.decoder_phase = _decoder(
                c_in, config.decoder_channels, 1 + extra, config.batch_norm
            )
            self.decoder_amplitude = _decoder(c_in, config.decoder_channels, 1, config.batch_norm)
            self.decoder = None
        else:
            self.decoder = _decoder(c_in, config.decoder_channels, 2 + extra, config.batch_norm)
            self.decoder_phase = None
            self.decoder_amplitude = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He (Kaiming) normal initialisation of the hidden convs, zero biases.

        PyTorch's default conv initialisation shrinks the signal by about sqrt(3) per layer;
        through the 16 to 18 convs of these networks the output starts out constant and the
        first epochs are lost. He initialisation keeps the activations' variance and the
        network learns from the first epoch. The output convs keep a small initialisation.
        """
        convs = [m for m in self.modules() if isinstance(m, nn.Conv2d)]
        heads = [
            seq[-1]
            for seq in (self.decoder, self.decoder_phase, self.decoder_amplitude)
            if seq is not None
        ]
        for conv in convs:
            if any(conv is h for h in heads):
                nn.init.normal_(conv.weight, std=0.01)
            else:
                nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        code = self.encoder(x)
        if self.decoder is not None:
            out = self.decoder(code)
            phase, amplitude, scale = out[:, 0:1], out[:, 1:2], out[:, 2:3]
        else:
            out = self.decoder_phase(code)
            phase, scale = out[:, 0:1], out[:, 1:2]
            amplitude = self.decoder_amplitude(code)
        fields = [math.pi * torch.tanh(phase), torch.sigmoid(amplitude)]
        if self.config.uncertainty:
            fields.append(uncertainty_from_logit(scale))
        return torch.cat(fields, dim=1)

    def phase_head_parameters(self) -> int:
        """Parameters of the phase path alone (encoder + phase decoder), the published count.

        With a shared decoder the last conv's amplitude filter (and bias) is left out.
        """
        encoder = count_parameters(self.encoder)
        if self.decoder is not None:
            last = self.decoder[-1]
            amplitude_filter = last.weight[1:].numel() + last.bias[1:].numel()
            return encoder + count_parameters(self.decoder) - amplitude_filter
        return encoder + count_parameters(self.decoder_phase)


MIN_SIGMA_RAD = 1e-3
"""Smallest phase uncertainty the scale head can state (rad): keeps the likelihood finite."""


def uncertainty_from_logit(raw: torch.Tensor) -> torch.Tensor:
    """The scale head's raw output -> one standard deviation of the phase in radians.

    ``sqrt(2) * (softplus(raw) + MIN_SIGMA_RAD / sqrt(2))``: the standard deviation of a
    Laplace distribution whose scale is ``softplus(raw)`` (floored), uncalibrated (the
    calibration factor lives in the sidecar; `uncertainty`).
    """
    return math.sqrt(2.0) * torch.nn.functional.softplus(raw) + MIN_SIGMA_RAD


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def build_model(config: ModelConfig | str, **preset_options: Any) -> PtychoNNNet:
    """A freshly initialised network from a config or a preset name (see `ModelConfig.preset`)."""
    if isinstance(config, str):
        config = ModelConfig.preset(config, **preset_options)
    elif preset_options:
        raise TypeError("preset options apply only to a preset name, not to a ModelConfig")
    return PtychoNNNet(config)
