"""load_engine's choice of backend: TensorRT > ONNX Runtime CUDA > ONNX Runtime CPU > PyTorch."""

from __future__ import annotations

import pytest

from bluesky_ptychonn.inference import BackendUnavailable, load_engine, loader

pytest.importorskip("onnxruntime")


class FakeTensorRT:
    """Stands in for TensorRTEngine where no GPU exists: records how it was built."""

    def __init__(self, onnx_path, sidecar, **kwargs):
        self.onnx_path, self.sidecar, self.kwargs = onnx_path, sidecar, kwargs


def test_auto_prefers_tensorrt_when_usable(small_model, monkeypatch):
    folder, _ = small_model
    monkeypatch.setattr(loader, "tensorrt_usable", lambda: True)
    monkeypatch.setattr(loader, "TensorRTEngine", FakeTensorRT)
    engine = load_engine(folder)
    assert isinstance(engine, FakeTensorRT)
    assert engine.kwargs["precision"] == "fp16" and engine.kwargs["max_batch"] == 64
    assert engine.onnx_path.name == "model.onnx"


def test_auto_prefers_onnxruntime_cuda_over_cpu(monkeypatch):
    monkeypatch.setattr(loader, "tensorrt_usable", lambda: False)
    monkeypatch.setattr(loader, "cuda_provider_usable", lambda: True)
    monkeypatch.setattr(loader, "_cuda", lambda: True)
    order = [(c.backend, c.device) for c in loader.available_backends()]
    assert order[:2] == [("onnxruntime", "cuda"), ("pytorch", "cuda")]
    assert order.index(("onnxruntime", "cpu")) < order.index(("pytorch", "cpu"))


def test_cpu_only_machine_offers_onnxruntime_then_pytorch(monkeypatch):
    monkeypatch.setattr(loader, "tensorrt_usable", lambda: False)
    monkeypatch.setattr(loader, "cuda_provider_usable", lambda: False)
    monkeypatch.setattr(loader, "_cuda", lambda: False)
    choices = loader.available_backends()
    assert [(c.backend, c.device) for c in choices] == [("onnxruntime", "cpu"), ("pytorch", "cpu")]
    assert "int8" in choices[0].precisions and "bf16" in choices[1].precisions


def test_unknown_backend_and_precision_are_refused(small_model):
    folder, _ = small_model
    with pytest.raises(ValueError, match="backend must be one of"):
        load_engine(folder, "openvino")
    with pytest.raises(BackendUnavailable, match="precisions"):
        load_engine(folder, "onnxruntime", precision="fp16")
    with pytest.raises(BackendUnavailable, match="fp16 is for CUDA"):
        load_engine(folder, "pytorch", precision="fp16", device="cpu")


def test_a_weights_only_model_is_exported_on_demand_and_cached(tmp_path):
    import torch

    from bluesky_ptychonn.model import Preprocessing, build_model, save_model

    torch.manual_seed(1)
    folder = tmp_path / "weights-only"
    save_model(
        build_model("edge", base_channels=4, input_shape=32),
        folder,
        Preprocessing((32, 32), (128, 128)),
    )
    engine = load_engine(folder, "onnxruntime")
    assert engine.onnx_path.parent == tmp_path / "cache" / "onnx"
    assert load_engine(folder, "onnxruntime").onnx_path == engine.onnx_path
