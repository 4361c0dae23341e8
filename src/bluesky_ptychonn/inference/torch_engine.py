"""PyTorch engine: eager fp32 (the reference), channels-last, bf16 on CPU, fp16 + CUDA graphs.

Precisions and devices:

* ``fp32`` on CPU or CUDA: the trained weights as they are. With ``channels_last=False`` this
  is *the reference* every other engine is compared with (plain eager PyTorch).
* ``bf16`` on CPU: weights and activations in bfloat16 (oneDNN kernels; fast on CPUs with
  AVX512-BF16 or AMX), output cast back to float32.
* ``fp16`` on CUDA: half precision, channels-last, and (``cuda_graphs=True``) one CUDA graph
  captured per batch size, replayed with the input copied into a static buffer: the Python
  and kernel-launch overhead of ~40 layers disappears. ``compile=True`` uses
  ``torch.compile(mode="max-autotune-no-cudagraphs")`` instead of graphs.
"""

from __future__ import annotations

import numpy as np
import torch

from ..model.architectures import PtychoNNNet
from ..model.checkpoint import Sidecar
from .engine import MAX_BATCH, BackendUnavailable, InferenceEngine

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class TorchEngine(InferenceEngine):
    """Run a `PtychoNNNet` with PyTorch.

    Args:
        model: the network (its weights are copied; the original is left alone).
        sidecar: the model's sidecar (preprocessing, version).
        device: "cpu", "cuda" or "cuda:N".
        precision: "fp32", "bf16" (CPU) or "fp16" (CUDA).
        channels_last: NHWC memory layout (faster convolutions on CPU and tensor cores).
        cuda_graphs: capture one CUDA graph per batch size (CUDA only).
        compile: use ``torch.compile`` (CUDA; slower start, sometimes faster kernels).
        max_batch: largest batch accepted.
    """

    backend = "pytorch"

    def __init__(
        self,
        model: PtychoNNNet,
        sidecar: Sidecar,
        *,
        device: str = "cpu",
        precision: str = "fp32",
        channels_last: bool = False,
        cuda_graphs: bool = True,
        compile: bool = False,
        max_batch: int = MAX_BATCH,
    ):
        if precision not in PRECISIONS:
            raise BackendUnavailable(
                f"PyTorch engine precision must be one of {sorted(PRECISIONS)}, got {precision!r}"
            )
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailable("PyTorch sees no CUDA device")
        if dev.type not in ("cpu", "cuda"):
            raise BackendUnavailable(f"PyTorch engine runs on cpu or cuda, not {device!r}")
        if dev.type == "cpu" and precision == "fp16":
            raise BackendUnavailable("fp16 is for CUDA; use bf16 on CPU")
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        super().__init__(sidecar, precision, str(dev), max_batch)
        self._device = dev
        self._dtype = PRECISIONS[precision]
        self._layout = torch.channels_last if channels_last else torch.contiguous_format
        net = PtychoNNNet(model.config)
        net.load_state_dict(model.state_dict())
        net = net.eval().to(dev, self._dtype).to(memory_format=self._layout)
        for p in net.parameters():
            p.requires_grad_(False)
        self._net = net
        self._forward = net
        if compile:
            self._forward = torch.compile(net, mode="max-autotune-no-cudagraphs", dynamic=False)
        self._graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]] = {}
        self._use_graphs = cuda_graphs and dev.type == "cuda" and not compile
        self.info.details.update(
            {
                "channels_last": channels_last,
                "cuda_graphs": self._use_graphs,
                "compile": compile,
                "threads": torch.get_num_threads(),
                "torch": torch.__version__,
                "reference": precision == "fp32"
                and not channels_last
                and not compile
                and dev.type == "cpu",
            }
        )
        if dev.type == "cuda":
            self.info.details["gpu"] = torch.cuda.get_device_name(dev)

    def _to_device(self, x: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(x)
        if self._device.type == "cuda":
            t = t.pin_memory().to(self._device, non_blocking=True)
        return t.to(self._dtype).contiguous(memory_format=self._layout)

    @torch.inference_mode()
    def _run(self, x: np.ndarray) -> np.ndarray:
        if self._use_graphs:
            return self._run_graph(x)
        out = self._forward(self._to_device(x))
        return out.float().cpu().numpy()

    def _run_graph(self, x: np.ndarray) -> np.ndarray:
        n = x.shape[0]
        if n not in self._graphs:
            self._capture(n)
        graph, static_in, static_out = self._graphs[n]
        static_in.copy_(self._to_device(x))
        graph.replay()
        return static_out.float().cpu().numpy()

    def _capture(self, n: int) -> None:
        h, w = self.input_shape
        static_in = torch.zeros((n, 1, h, w), device=self._device, dtype=self._dtype)
        static_in = static_in.contiguous(memory_format=self._layout)
        stream = torch.cuda.Stream(self._device)
        stream.wait_stream(torch.cuda.current_stream(self._device))
        with torch.cuda.stream(stream):
            for _ in range(3):  # warm up cuDNN's algorithm choice outside the graph
                self._net(static_in)
        torch.cuda.current_stream(self._device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = self._net(static_in)
        self._graphs[n] = (graph, static_in, static_out)

    def close(self) -> None:
        self._graphs.clear()
        if self._device.type == "cuda":
            torch.cuda.empty_cache()
