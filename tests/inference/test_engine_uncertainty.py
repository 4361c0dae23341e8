"""Engines return the calibrated phase uncertainty of a model that has it (ONNX Runtime fp32
and int8, PyTorch), the endpoint publishes it with the physics residual, and a model without
the head serves exactly as before."""

import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bluesky_ptychonn import intervals
from bluesky_ptychonn.inference import load_engine
from bluesky_ptychonn.inference.quality import frame_summaries, result_fields
from bluesky_ptychonn.model import load_model
from bluesky_ptychonn.model.data import illuminated_mask
from bluesky_ptychonn.model.evaluate import predict
from bluesky_ptychonn.model.uncertainty import phase_errors

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from uncertainty_helpers import noise_frames  # noqa: E402


@pytest.fixture(scope="module")
def head(trained_head):
    return trained_head


@pytest.mark.parametrize(
    "backend,precision", [("pytorch", "fp32"), ("onnxruntime", "fp32"), ("onnxruntime", "int8")]
)
def test_engines_state_the_calibrated_uncertainty(head, backend, precision):
    model, sidecar = load_model(head.folder)
    engine = load_engine(head.folder, backend, precision=precision, threads=1)
    assert engine.has_uncertainty
    frames = head.test.frames
    out = engine.infer(frames)
    assert out.shape == (len(frames), 3, 32, 32)
    eager = predict(model, head.preprocessing.apply(frames))
    scale = sidecar.uncertainty_scale
    assert scale != 1.0
    if precision == "fp32":
        assert np.allclose(out[:, 2], eager[:, 2] * scale, rtol=1e-3, atol=1e-4)
    # measured again on the engine's own output, not assumed: int8 keeps the calibration
    mask = illuminated_mask(head.test.weights)
    errors = phase_errors(out, head.test.labels)[:, mask]
    got = intervals.coverage(errors, out[:, 2][:, mask])
    reference = intervals.coverage(
        phase_errors(eager, head.test.labels)[:, mask], eager[:, 2][:, mask] * scale
    )
    for level in ("0.68", "0.9"):
        assert got[level] == pytest.approx(reference[level], abs=0.03), (got, reference)
    engine.close()


def test_a_model_without_the_head_returns_two_channels(tmp_path, tiny_model):
    tiny_model(tmp_path / "plain")
    engine = load_engine(tmp_path / "plain", "onnxruntime", threads=1)
    assert not engine.has_uncertainty
    frames = np.random.default_rng(0).poisson(3.0, (4, 32, 32)).astype(np.uint16)
    out = engine.infer(frames)
    assert out.shape == (4, 2, 32, 32)
    arrays, extra = result_fields(out, frames, None)
    assert set(arrays) == {"phase", "amplitude"} and extra == {}
    assert frame_summaries(arrays, extra) == {"uncertainty_mean_rad": [], "physics_residual": []}


def test_noise_gives_a_higher_residual_than_the_training_kind(head):
    from bluesky_ptychonn.inference.physics import PhysicsCheck
    from bluesky_ptychonn.model.checkpoint import read_probe, resolve

    engine = load_engine(head.folder, "onnxruntime", threads=1)
    check = PhysicsCheck(read_probe(resolve(head.folder)), engine.preprocessing)
    data = head.test.frames[:64]
    noise = noise_frames(data, 64)
    arrays, extra = result_fields(engine.infer(data), data, check)
    _, extra_noise = result_fields(engine.infer(noise), noise, check)
    assert "phase_uncertainty" in arrays
    assert np.median(extra_noise["physics_residual"]) > np.median(extra["physics_residual"]) + 0.1
    summaries = frame_summaries(arrays, extra)
    assert len(summaries["uncertainty_mean_rad"]) == len(summaries["physics_residual"]) == 64


def test_the_endpoint_publishes_uncertainty_and_residual(head, endpoint_factory):
    from bluesky_ptychonn.inference.server import EndpointClient
    from bluesky_ptychonn.stream.sockets import FrameSender, ResultSubscriber
    from bluesky_ptychonn.stream.wire import Message

    endpoint = endpoint_factory(head.folder, backend="onnxruntime")
    sender = FrameSender(endpoint.addresses[0], resend_after_s=5.0)
    subscriber = ResultSubscriber(endpoint.addresses[1])
    client = EndpointClient(endpoint.addresses[2])
    try:
        time.sleep(0.3)
        client.run_start("run")
        frames = head.test.frames[:12]
        positions = np.zeros((12, 2))
        sender.send(Message("frames", {"frames": frames}, run_uid="run",
                            frame_ids=list(range(12)), positions_m=positions))  # fmt: skip
        got = {}
        deadline = time.monotonic() + 60
        while len(got) < 12 and time.monotonic() < deadline:
            message = subscriber.receive(timeout_s=0.1)
            if message is None or message.kind != "results":
                continue
            sender.acknowledge(message.frame_ids)
            residuals = message.extra["physics_residual"]
            for i, frame_id in enumerate(message.frame_ids):
                got[frame_id] = (message.arrays["phase_uncertainty"][i], residuals[i])
        assert len(got) == 12
        assert all(s.shape == (32, 32) and float(s.min()) > 0 for s, _ in got.values())
        quality = client.status()["quality"]
        assert quality["uncertainty_mean_rad"] > 0 and quality["physics_residual"] >= 0
    finally:
        sender.close()
        subscriber.close()
        client.close()
