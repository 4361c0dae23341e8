"""ONNX export: dynamic batch axis, sidecar with sha256, metadata, checked against PyTorch."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bluesky_ptychonn.model import Preprocessing, build_model, save_model, sha256_file
from bluesky_ptychonn.model.export import ExportCheckError, check_onnx, export_onnx

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def test_export_has_a_dynamic_batch_and_matches_pytorch(tmp_path):
    torch.manual_seed(0)
    model = build_model("edge", base_channels=4, input_shape=32).eval()
    save_model(model, tmp_path, Preprocessing((32, 32), (128, 128)))
    path = export_onnx(tmp_path, tmp_path / "model.onnx")

    sidecar = json.loads((tmp_path / "model.json").read_text())
    assert set(sidecar["files"]) == {"weights", "onnx"}  # the weights' sidecar gained the graph
    assert sidecar["files"]["onnx"]["sha256"] == sha256_file(path)
    graph = onnx.load(str(path))
    meta = {p.key: p.value for p in graph.metadata_props}
    assert json.loads(meta["bluesky_ptychonn"])["architecture"]["name"] == "edge"
    (inp,), (out,) = graph.graph.input, graph.graph.output
    assert inp.name == "diffraction" and out.name == "object"
    assert inp.type.tensor_type.shape.dim[0].dim_param  # symbolic batch

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n in (1, 5):
        x = np.random.default_rng(n).uniform(0, 1, (n, 1, 32, 32)).astype(np.float32)
        (got,) = session.run(None, {"diffraction": x})
        with torch.no_grad():
            np.testing.assert_allclose(got, model(torch.from_numpy(x)).numpy(), atol=1e-4)

    assert check_onnx(path, model) < 1e-4
    with pytest.raises(ExportCheckError, match="differs from the PyTorch model"):
        check_onnx(path, build_model("edge", base_channels=4, input_shape=32))


def test_export_refuses_a_network_without_its_sidecar_and_bad_names(tmp_path):
    model = build_model("edge", base_channels=4, input_shape=32)
    with pytest.raises(ValueError, match="needs its sidecar"):
        export_onnx(model, tmp_path / "m.onnx")
    save_model(model, tmp_path, Preprocessing((32, 32), (128, 128)))
    with pytest.raises(ValueError, match="must end in .onnx"):
        export_onnx(tmp_path, tmp_path / "m.bin")


@pytest.mark.parametrize("preset", ["edge", "ptychonn"])
def test_factored_output_stage_is_the_same_function(preset):
    from bluesky_ptychonn.model.inference_form import FactoredOutputConv, inference_form

    torch.manual_seed(1)
    model = build_model(preset, base_channels=4, input_shape=32).eval()
    for module in model.modules():  # non-trivial output convs, biases included
        if isinstance(module, torch.nn.Conv2d) and module.out_channels <= 2:
            torch.nn.init.normal_(module.weight, std=0.3)
            torch.nn.init.normal_(module.bias, std=0.5)
    form = inference_form(model)
    assert sum(isinstance(m, FactoredOutputConv) for m in form.modules()) == (
        2 if preset == "ptychonn" else 1
    )
    x = torch.rand(3, 1, 32, 32) * 5
    with torch.no_grad():
        want, got = model(x), form(x)
    assert float((got - want).abs().max()) < 1e-5
    # the original network is untouched and still trains as before
    assert not any(isinstance(m, FactoredOutputConv) for m in model.modules())


def test_factoring_refuses_a_convolution_it_cannot_rewrite():
    from bluesky_ptychonn.model.inference_form import FactoredOutputConv

    strided = torch.nn.Conv2d(4, 2, 3, stride=2, padding=1)
    with pytest.raises(ValueError, match="stride-1"):
        FactoredOutputConv(strided, torch.nn.Upsample(scale_factor=2, mode="bilinear"))


def test_int8_graph_keeps_the_factored_output_stage_in_float(tmp_path):
    from bluesky_ptychonn.inference.quantize import _float_nodes

    torch.manual_seed(0)
    model = build_model("edge", base_channels=4, input_shape=32).eval()
    save_model(model, tmp_path, Preprocessing((32, 32), (128, 128)))
    path = export_onnx(tmp_path, tmp_path / "model.onnx")
    graph = onnx.load(str(path)).graph
    keep = set(_float_nodes(path))
    convs = [n for n in graph.node if n.op_type == "Conv"]
    one_by_one = {init.name for init in graph.initializer if list(init.dims[2:]) == [1, 1]}
    (mix,) = [n for n in convs if n.input[1] in one_by_one]
    assert mix.name in keep  # the output stage's channel mixing stays float
    assert sum(n.name in keep for n in convs) == 1  # and no hidden conv does
    assert {n.name for n in graph.node if n.op_type in ("Tanh", "Sigmoid")} <= keep
