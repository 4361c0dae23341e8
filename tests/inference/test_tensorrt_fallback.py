"""TensorRT 10 and 11 without a GPU: a fake `tensorrt` module stands in for its Python API.

No GPU exists here and TensorRT cannot be installed: these tests replace TensorRT's Python
API with fakes (as the issue asks) and check what the package does with each: which graph it
parses and which flags it sets per version, and that ``backend="auto"`` serves with ONNX
Runtime and logs why when TensorRT raises (as TensorRT 11 does for ``BuilderFlag.FP16``).
"""

from __future__ import annotations

import logging
import sys
import types

import numpy as np
import pytest

from bluesky_ptychonn.inference import load_engine, loader, tensorrt_engine
from bluesky_ptychonn.inference.fp16_graph import fp16_onnx

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


def fake_tensorrt(version: str, *, build_error: Exception | None = None, fp16_flag: bool = True):
    """A module with the part of TensorRT's Python API the engine builder uses; it records
    the parsed graph and the flags set, and can fail the build like a real TensorRT."""
    record: dict = {"flags": [], "parsed": None}
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.record = record

    class Logger:
        WARNING = 2

        def __init__(self, severity):
            self.severity = severity

    class Network:
        num_inputs = 1

        def get_input(self, index):
            return types.SimpleNamespace(name="diffraction")

    class Parser:
        num_errors = 0

        def __init__(self, network, logger):
            pass

        def parse(self, data):
            record["parsed"] = onnx.load_model_from_string(data)
            return True

    class Config:
        def set_memory_pool_limit(self, pool, size):
            record["workspace"] = size

        def set_flag(self, flag):
            record["flags"].append(flag)

        def add_optimization_profile(self, profile):
            record["profile"] = profile.shapes

    class Profile:
        def set_shape(self, name, low, opt, high):
            self.shapes = (low, opt, high)

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            return Network()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            if build_error is not None:
                raise build_error
            return b"PLAN"

    flags = types.SimpleNamespace(TF32="TF32")
    if fp16_flag:
        flags.FP16 = "FP16"
    trt.Logger, trt.Builder, trt.OnnxParser, trt.BuilderFlag = Logger, Builder, Parser, flags
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
    return trt


def graph_types(model) -> set[int]:
    return {init.data_type for init in model.graph.initializer}


def fp16_share(model) -> float:
    """Share of the graph's floating-point weights (by element count) stored as float16."""
    sizes = {FLOAT: 0, FLOAT16: 0}
    for init in model.graph.initializer:
        if init.data_type in sizes:
            sizes[init.data_type] += int(np.prod(init.dims))
    return sizes[FLOAT16] / max(1, sum(sizes.values()))


def io_types(model) -> list[int]:
    tensors = [*model.graph.input, *model.graph.output]
    return [t.type.tensor_type.elem_type for t in tensors]


FLOAT, FLOAT16 = 1, 10


def test_tensorrt_10_parses_the_float32_graph_and_sets_the_fp16_flag(small_model, monkeypatch):
    folder, _ = small_model
    trt = fake_tensorrt("10.13.0")
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    plan = tensorrt_engine.build_serialized_engine(folder / "model.onnx", (64, 64), max_batch=16)
    assert plan == b"PLAN"
    assert trt.record["flags"] == ["FP16"]
    assert FLOAT16 not in graph_types(trt.record["parsed"])
    assert trt.record["profile"] == ((1, 1, 64, 64), (16, 1, 64, 64), (16, 1, 64, 64))


def test_tensorrt_11_has_no_fp16_flag_and_builds_a_float16_graph(small_model, monkeypatch):
    folder, _ = small_model
    trt = fake_tensorrt("11.4.0", fp16_flag=False)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    assert tensorrt_engine.fp16_strategy(trt) == "typed-graph"
    tensorrt_engine.build_serialized_engine(folder / "model.onnx", (64, 64), precision="fp16")
    parsed = trt.record["parsed"]
    assert trt.record["flags"] == []  # no flag that TensorRT 11 removed
    assert fp16_share(parsed) > 0.99  # the weights (Resize scales must stay float32)
    assert io_types(parsed) == [FLOAT, FLOAT]  # the engine's buffers stay float32
    # fp32 on TensorRT 11 parses the original graph
    tensorrt_engine.build_serialized_engine(folder / "model.onnx", (64, 64), precision="fp32")
    assert FLOAT16 not in graph_types(trt.record["parsed"])


def test_the_float16_graph_computes_what_the_float32_graph_does(small_model, frames, tmp_path):
    import onnxruntime as ort

    folder, _ = small_model
    half = fp16_onnx(folder / "model.onnx", tmp_path)
    assert fp16_onnx(folder / "model.onnx", tmp_path) == half  # cached, not converted again
    from bluesky_ptychonn.model.checkpoint import resolve

    x = resolve(folder).sidecar.preprocessing.apply(frames[:4])
    reference = ort.InferenceSession(str(folder / "model.onnx")).run(None, {"diffraction": x})[0]
    try:
        session = ort.InferenceSession(str(half))
    except Exception as error:  # noqa: BLE001 - some CPU builds lack fp16 kernels
        pytest.skip(f"ONNX Runtime on this CPU cannot run float16 graphs: {error}")
    out = session.run(None, {"diffraction": x})[0]
    assert out.dtype == np.float32 and out.shape == reference.shape
    assert np.abs(out - reference).max() < 2e-2 * (np.abs(reference).max() + 1)


def test_auto_serves_with_onnxruntime_when_tensorrt_raises_and_says_why(
    small_model, frames, monkeypatch, caplog
):
    """The whole TensorRTEngine constructor runs against a fake TensorRT 11 (torch's CUDA
    queries answered by stubs) until the build raises as TensorRT 11 does for the FP16 flag."""
    import torch

    folder, _ = small_model
    error = AttributeError("type object 'tensorrt.BuilderFlag' has no attribute 'FP16'")
    trt = fake_tensorrt("11.0.0", build_error=error, fp16_flag=False)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(loader, "tensorrt_usable", lambda: True)
    monkeypatch.setattr(tensorrt_engine, "tensorrt_usable", lambda: True)
    monkeypatch.setattr(loader, "cuda_provider_usable", lambda: False)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "device", lambda index: _Nothing())
    gpu = types.SimpleNamespace(name="Fake GPU", major=9, minor=0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: gpu)
    with caplog.at_level(logging.WARNING, logger="bluesky_ptychonn.inference.loader"):
        engine = load_engine(folder, opt_batch=8, cache="")
    assert engine.info.backend == "onnxruntime" and engine.info.device == "cpu"
    assert trt.record["parsed"] is not None  # TensorRT really was tried first
    (reason,) = engine.info.details["fallback"]
    assert "tensorrt" in reason and "FP16" in reason
    assert any("falling back to onnxruntime" in r.getMessage() and "FP16" in r.getMessage()
               for r in caplog.records)  # fmt: skip
    out = engine.infer(frames[:2])
    assert out.shape == (2, 2, 64, 64) and np.isfinite(out).all()
    engine.close()


def test_auto_never_falls_back_over_a_tampered_model(small_model, tmp_path, monkeypatch):
    import shutil

    from bluesky_ptychonn.model.checkpoint import ModelFileError

    folder = tmp_path / "tampered"
    shutil.copytree(small_model[0], folder)
    with open(folder / "model.onnx", "ab") as f:
        f.write(b"\0")
    monkeypatch.setattr(loader, "tensorrt_usable", lambda: True)
    with pytest.raises(ModelFileError, match="sha256"):
        load_engine(folder)


class _Nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
