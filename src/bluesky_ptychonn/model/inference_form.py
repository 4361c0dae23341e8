"""An exact rewrite of a trained network's output stage that inference engines run faster.

Every decoder of the PtychoNN family ends in ``Upsample(x2, bilinear) -> Conv3x3(c -> k)``
with k = 1 or 2 output channels, at the full input resolution. CPU engines run that last
convolution badly: their blocked layouts pad the k output channels to the SIMD width (16 floats
on AVX-512), so the cheapest layer of the network costs as much as a 16 -> 16 convolution, plus
a layout conversion in and out; in an int8 graph, where the hidden convolutions are fast, it was
about a fifth of the time.

`FactoredOutputConv` computes the same function in a different order. A 3x3 convolution is a
sum over its 9 taps of a 1x1 convolution (channel mixing) followed by a shift. A 1x1
convolution commutes with bilinear upsampling (one mixes channels at each pixel, the other
interpolates each channel with weights that do not depend on the channel, edge clamping
included), so

    Conv3x3(Up(h)) = TapSum(Up(Mix(h))),

with ``Mix`` a 1x1 convolution c -> 9k at the *low* resolution (4x fewer pixels), ``Up`` the
same bilinear upsampling, and ``TapSum`` a zero-padded sum of 9 shifted channel slices per
output channel plus the bias. Zero padding agrees too, because ``Mix`` has no bias and maps the
zero border to zero. The outputs agree to float rounding (about 1e-6; `export_onnx` checks every
exported graph against the eager model). Nothing is retrained and the weights file does not
change: `inference_form` is applied when a graph is exported.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .architectures import PtychoNNNet


class FactoredOutputConv(nn.Module):
    """``Conv3x3(Upsample(h))`` as ``TapSum(Upsample(Conv1x1(h)))`` (module docstring).

    Args:
        conv: the decoder's output convolution (odd square kernel, stride 1, same padding).
        upsample: the bilinear upsampling that feeds it.
    """

    def __init__(self, conv: nn.Conv2d, upsample: nn.Module):
        super().__init__()
        out_channels, in_channels, kh, kw = conv.weight.shape
        if (
            kh != kw
            or kh % 2 == 0
            or conv.stride != (1, 1)
            or conv.padding != (kh // 2, kw // 2)
            or conv.groups != 1
            or conv.dilation != (1, 1)
        ):
            raise ValueError("only a stride-1, same-padded, odd square convolution can be factored")
        self.kernel = kh
        self.out_channels = out_channels
        taps = kh * kw
        self.mix = nn.Conv2d(in_channels, out_channels * taps, 1, bias=False)
        # channel o * taps + t holds tap t (row-major in the kernel) of output channel o
        weight = conv.weight.detach().permute(0, 2, 3, 1).reshape(out_channels * taps, in_channels)
        self.mix.weight.data = weight[:, :, None, None].clone()
        self.upsample = upsample
        bias = conv.bias.detach() if conv.bias is not None else torch.zeros(out_channels)
        self.register_buffer("bias", bias.reshape(1, out_channels, 1, 1).clone())

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        mixed = self.upsample(self.mix(h))
        rows, cols = mixed.shape[-2:]
        k, half = self.kernel, self.kernel // 2
        padded = nn.functional.pad(mixed, (half, half, half, half))
        taps = k * k
        out = None
        for t in range(taps):
            dy, dx = divmod(t, k)
            # output channel o's tap t lives in channel o * taps + t
            piece = padded[:, t::taps, dy : dy + rows, dx : dx + cols]
            out = piece if out is None else out + piece
        return out + self.bias


def _factored_decoder(decoder: nn.Sequential) -> nn.Sequential:
    layers = list(decoder)
    conv, upsample = layers[-1], layers[-2]
    if not isinstance(conv, nn.Conv2d) or not isinstance(upsample, nn.Upsample):
        raise ValueError("the decoder does not end in Upsample -> Conv2d")
    if upsample.mode != "bilinear" or upsample.align_corners:
        raise ValueError("only bilinear upsampling with align_corners=False commutes as needed")
    return nn.Sequential(*layers[:-2], FactoredOutputConv(conv, upsample))


def inference_form(model: PtychoNNNet) -> PtychoNNNet:
    """A copy of ``model`` (eval mode) whose decoders end in `FactoredOutputConv`.

    Same inputs, same outputs (to float rounding), same ``forward``; for export to inference
    graphs. The original model is not changed.
    """
    form = copy.deepcopy(model).eval()
    for name in ("decoder", "decoder_phase", "decoder_amplitude"):
        decoder = getattr(form, name)
        if decoder is not None:
            setattr(form, name, _factored_decoder(decoder))
    return form
