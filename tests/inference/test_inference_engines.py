"""Engines behind one interface: same outputs as PyTorch eager fp32, clear errors on bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from bluesky_ptychonn.inference import (
    BackendUnavailable,
    EngineInputError,
    available_backends,
    load_engine,
)
from bluesky_ptychonn.inference.tensorrt_engine import tensorrt_usable
from bluesky_ptychonn.model import ModelFileError, patch_phase_ssim, sha256_file

pytest.importorskip("onnxruntime")


def ssim_batch(a: np.ndarray, b: np.ndarray) -> float:
    """Mean per-patch phase SSIM of two (N, 2, H, W) outputs."""
    return float(np.mean(patch_phase_ssim(a, b)))


def reference(model, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def test_pytorch_reference_engine_equals_the_model(small_model, frames):
    folder, model = small_model
    engine = load_engine(folder, "pytorch", device="cpu")
    assert engine.info.details["reference"] and engine.precision == "fp32"
    x = engine.preprocessing.apply(frames)
    np.testing.assert_array_equal(engine.run(x), reference(model, x))
    np.testing.assert_array_equal(engine.infer(frames), reference(model, x))


def test_onnxruntime_fp32_matches_pytorch_at_any_batch(small_model, frames):
    folder, model = small_model
    engine = load_engine(folder, "onnxruntime", precision="fp32", threads=1)
    for n in (1, 3, 8):
        x = engine.preprocessing.apply(frames[:n])
        out = engine.run(x)
        assert out.shape == (n, 2, 64, 64) and out.dtype == np.float32
        np.testing.assert_allclose(out, reference(model, x), atol=2e-4)


def test_auto_picks_onnxruntime_on_a_cpu_machine(small_model):
    folder, _ = small_model
    engine = load_engine(folder)
    if tensorrt_usable():
        assert engine.info.backend == "tensorrt"
    else:
        assert engine.info.backend == "onnxruntime"
        assert available_backends()[0].backend in ("onnxruntime", "pytorch")


def test_tensorrt_is_refused_clearly_without_tensorrt_or_gpu(small_model):
    if tensorrt_usable():
        pytest.skip("TensorRT and a GPU are present")
    folder, _ = small_model
    with pytest.raises(BackendUnavailable, match="TensorRT"):
        load_engine(folder, "tensorrt")


def test_bf16_engine_keeps_the_phase(small_model, frames):
    folder, model = small_model
    engine = load_engine(folder, "pytorch", precision="bf16")
    x = engine.preprocessing.apply(frames)
    out = engine.run(x)
    assert out.dtype == np.float32
    assert ssim_batch(out, reference(model, x)) > 0.97


def test_int8_engine_is_calibrated_cached_and_keeps_the_phase(small_model, frames, tmp_path):
    folder, model = small_model
    engine = load_engine(folder, "onnxruntime", precision="int8")
    assert engine.precision == "int8"
    x = engine.preprocessing.apply(frames)
    out = engine.run(x)
    assert ssim_batch(out, reference(model, x)) > 0.95
    cached = list((tmp_path / "cache" / "int8").glob("*.onnx"))
    assert len(cached) == 1
    again = load_engine(folder, "onnxruntime", precision="int8")
    assert again.onnx_path == engine.onnx_path


def test_int8_float_input_convs_keep_the_first_convs_in_float(small_model, frames, tmp_path):
    import onnx

    folder, model = small_model
    plain = load_engine(folder, "onnxruntime", precision="int8", int8_float_input_convs=0)
    first = load_engine(folder, "onnxruntime", precision="int8")  # the default keeps 3
    assert first.onnx_path != plain.onnx_path  # cached separately

    def ops(path):
        return [n.op_type for n in onnx.load(str(path)).graph.node]

    plain_ops, first_ops = ops(plain.onnx_path), ops(first.onnx_path)
    assert first_ops.count("QLinearConv") == plain_ops.count("QLinearConv") - 3
    assert first_ops.count("Conv") == plain_ops.count("Conv") + 3
    # the input conv is one of them: the graph input goes straight into a float Conv
    graph = onnx.load(str(first.onnx_path)).graph
    assert any(n.op_type == "Conv" and graph.input[0].name in n.input for n in graph.node)
    x = first.preprocessing.apply(frames)
    assert ssim_batch(first.run(x), reference(model, x)) > 0.95


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (np.zeros((2, 1, 32, 32), np.float32), r"expected \(N, 1, 64, 64\)"),
        (np.zeros((2, 64, 64), np.float32), r"expected \(N, 1, 64, 64\)"),
        (np.zeros((65, 1, 64, 64), np.float32), "1 to 64"),
        (np.zeros((0, 1, 64, 64), np.float32), "1 to 64"),
        (np.zeros((1, 1, 64, 64), np.complex64), "not a real number"),
        ([[0.0]], "numpy array"),
    ],
)
@pytest.mark.parametrize("backend", ["pytorch", "onnxruntime"])
def test_wrong_input_gives_a_clear_error(small_model, backend, bad, match):
    folder, _ = small_model
    engine = load_engine(folder, backend)
    with pytest.raises(EngineInputError, match=match):
        engine.run(bad)


def test_wrong_frames_give_a_clear_error(small_model):
    folder, _ = small_model
    engine = load_engine(folder, "onnxruntime")
    with pytest.raises(EngineInputError, match="do not fit this model"):
        engine.infer(np.zeros((2, 100, 100), np.uint16))
    out = engine.infer(np.zeros((100, 128, 128), np.uint16))  # longer than one batch
    assert out.shape == (100, 2, 64, 64)


def onnx_only(folder, tmp_path):
    """A copy of the model's graph as an ONNX-only model (graph + its own sidecar)."""
    sidecar = json.loads((folder / "model.json").read_text())
    shutil.copy(folder / "model.onnx", tmp_path / "edge.onnx")
    sidecar["files"] = {"onnx": {**sidecar["files"]["onnx"], "path": "edge.onnx"}}
    (tmp_path / "edge.json").write_text(json.dumps(sidecar))
    return tmp_path / "edge.onnx"


def test_exported_onnx_alone_runs_and_tampering_is_refused(small_model, tmp_path):
    folder, model = small_model
    onnx_path = onnx_only(folder, tmp_path)
    sidecar = json.loads(onnx_path.with_suffix(".json").read_text())
    assert sidecar["files"]["onnx"]["sha256"] == sha256_file(onnx_path)
    engine = load_engine(onnx_path, "onnxruntime")
    assert engine.info.details["graph"] == "edge.onnx"
    with pytest.raises(BackendUnavailable, match="no weights"):
        load_engine(onnx_path, "pytorch")
    data = bytearray(onnx_path.read_bytes())
    data[len(data) // 2] ^= 0x01
    onnx_path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="sha256"):
        load_engine(onnx_path, "onnxruntime")


def test_a_pickle_posing_as_onnx_never_reaches_the_runtime(small_model, tmp_path):
    folder, model = small_model
    onnx_path = onnx_only(folder, tmp_path)
    torch.save(model, onnx_path)  # a pickle, sidecar updated to vouch for it
    sidecar = json.loads(onnx_path.with_suffix(".json").read_text())
    sidecar["files"]["onnx"]["sha256"] = sha256_file(onnx_path)
    onnx_path.with_suffix(".json").write_text(json.dumps(sidecar))
    with pytest.raises(ModelFileError, match="could not load"):
        load_engine(onnx_path, "onnxruntime")


def test_onnxruntime_workers_split_batches_and_agree_with_one_session(small_model, frames):
    folder, _ = small_model
    one = load_engine(folder, "onnxruntime", threads=2)
    two = load_engine(folder, "onnxruntime", threads=2, workers=2, micro_batch=3)
    assert two.info.details["workers"] == 2 and two.info.details["micro_batch"] == 3
    for n in (1, 3, 8):  # 1 frame: the all-threads session; 3: 2 + 1; 8: 4 + 4 in pieces 3 + 1
        np.testing.assert_allclose(two.infer(frames[:n]), one.infer(frames[:n]), atol=1e-5)
    two.close()
