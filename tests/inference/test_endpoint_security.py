"""The endpoint beyond loopback: CURVE keys, allow-lists, model digests, fuzzed control traffic.

Each test runs a real endpoint (in this process, PyTorch on one thread) on free ports.
"""

from __future__ import annotations

import json
import os
import socket as pysocket
import stat
import time

import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bluesky_ptychonn.cli import main
from bluesky_ptychonn.inference.security import (
    InsecureBind,
    registry_digest,
    sidecar_digest,
)
from bluesky_ptychonn.inference.server import EndpointClient, EndpointConfig, EndpointServer
from bluesky_ptychonn.stream.security import (
    KEYS_ENV,
    ClientKeys,
    KeyFileError,
    authorize,
    client_keys,
    init_key_folder,
    is_loopback,
    read_secret,
    write_keypair,
)
from bluesky_ptychonn.stream.sockets import (
    FrameSender,
    ResultCollector,
    ResultSubscriber,
    free_tcp_port,
)
from bluesky_ptychonn.stream.wire import Message

FRAME = (32, 32)
SHORT_S = 1.0  # how long an unanswered control request waits before it counts as unanswered


@pytest.fixture
def models(tmp_path, tiny_model):
    return tiny_model(tmp_path / "model-a", version="tiny-a").parent, tiny_model(
        tmp_path / "model-b", seed=1, version="tiny-b"
    ).parent


@pytest.fixture
def keys(tmp_path):
    folder = tmp_path / "keys"
    init_key_folder(folder)
    return folder


def serve(model, *, host="127.0.0.1", keys=None, **options) -> EndpointServer:
    config = EndpointConfig(
        model=str(model), backend="pytorch", threads=1, batch_size=8, host=host, keys=keys,
        frames_port=free_tcp_port(), results_port=free_tcp_port(), control_port=free_tcp_port(),
        **options,
    )  # fmt: skip
    return EndpointServer(config).start()


def loopback(server: EndpointServer, role: str) -> str:
    port = getattr(server.config, f"{role}_port")
    return f"tcp://127.0.0.1:{port}"


def round_trip(server, keys, ids, timeout_s=30.0) -> dict[int, np.ndarray]:
    """Send frames with ``keys`` and return the answered phase patches by frame id.

    A PUSH socket whose handshake never completes has no peer and would block on send: here
    a send gives up after 1 s (nothing delivered).
    """
    sender = FrameSender(loopback(server, "frames"), resend_after_s=3.0, keys=keys)
    sender.socket.setsockopt(zmq.SNDTIMEO, 1000)
    subscriber = ResultSubscriber(loopback(server, "results"), keys=keys)
    collector, answered = ResultCollector(), {}
    try:
        time.sleep(0.3)  # the subscription reaches the endpoint
        frames = np.random.default_rng(0).poisson(3.0, (len(ids), *FRAME)).astype(np.uint16)
        try:
            sender.send(Message("frames", {"frames": frames}, run_uid="r", frame_ids=list(ids)))
        except zmq.Again:
            return answered
        deadline = time.monotonic() + timeout_s
        while len(answered) < len(ids) and time.monotonic() < deadline:
            message = subscriber.receive(timeout_s=0.2)
            if message is None:
                try:
                    sender.resend_overdue()
                except zmq.Again:
                    pass
                continue
            sender.acknowledge(message.frame_ids)
            for index in collector.new_indices(message):
                answered[message.frame_ids[index]] = message.arrays["phase"][index]
    finally:
        sender.close()
        subscriber.close()
    return answered


def test_loopback_is_told_apart_from_other_interfaces():
    assert is_loopback("127.0.0.1") and is_loopback("127.3.2.1") and is_loopback("::1")
    assert is_loopback("localhost")
    for host in ("0.0.0.0", "*", "10.0.0.5", "eth0", "beamline-gpu.example.org", "::"):
        assert not is_loopback(host), host


def test_key_files_are_private_and_never_overwritten(tmp_path):
    public, secret = write_keypair(tmp_path / "k", "edge")
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o700
    assert b"secret-key" not in public.read_bytes()
    with pytest.raises(FileExistsError):
        write_keypair(tmp_path / "k", "edge")
    pub, sec = read_secret(secret)
    assert len(pub) == len(sec) == 40
    os.chmod(secret, 0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        read_secret(secret)


def test_clients_take_their_keys_from_the_environment(keys, monkeypatch):
    monkeypatch.delenv(KEYS_ENV, raising=False)
    assert client_keys() is None
    monkeypatch.setenv(KEYS_ENV, str(keys))
    found = client_keys()
    assert found == ClientKeys.from_folder(keys)
    assert found.server_public == read_secret(keys / "server.key_secret")[0]


def test_serve_beyond_loopback_without_keys_refuses_with_one_line(models, capsys):
    ports = [str(free_tcp_port()) for _ in range(3)]
    code = main(["serve", "--model", str(models[0]), "--host", "0.0.0.0", "--backend", "pytorch",
                 "--frames-port", ports[0], "--results-port", ports[1],
                 "--control-port", ports[2]])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "without CURVE keys" in err and "--keys" in err
    with pytest.raises(InsecureBind):
        EndpointServer(EndpointConfig(model=str(models[0]), host="10.1.2.3"))


def test_curve_endpoint_answers_only_authorised_clients_and_keeps_serving(models, keys, tmp_path):
    server = serve(models[0], host="0.0.0.0", keys=str(keys))
    try:
        # a stranger: its own pair, the right server key, not on any allow-list
        write_keypair(tmp_path / "stranger", "client")
        (tmp_path / "stranger" / "server.key").write_text((keys / "server.key").read_text())
        stranger = ClientKeys.from_folder(tmp_path / "stranger")
        for client_keys_ in (stranger, None):  # and one without CURVE at all
            client = EndpointClient(loopback(server, "control"), timeout_s=SHORT_S,
                                    keys=client_keys_)  # fmt: skip
            with pytest.raises(TimeoutError):
                client.request("shutdown")
            with pytest.raises(TimeoutError):
                client.load_model(str(models[1]), timeout_s=SHORT_S)
            client.close()
        # a data-only client: frames and results yes, control no
        write_keypair(tmp_path / "detector", "client")
        (tmp_path / "detector" / "server.key").write_text((keys / "server.key").read_text())
        authorize(tmp_path / "detector" / "client.key", keys / "authorized")
        server.stop()
        server = serve(models[0], host="0.0.0.0", keys=str(keys))
        detector = ClientKeys.from_folder(tmp_path / "detector")
        with pytest.raises(TimeoutError):
            EndpointClient(loopback(server, "control"), timeout_s=SHORT_S,
                           keys=detector).status()  # fmt: skip
        assert sorted(round_trip(server, detector, range(5))) == list(range(5))

        operator = EndpointClient(loopback(server, "control"), keys=keys)
        status = operator.status()
        assert status["ok"] and status["model_version"] == "tiny-a"
        assert status["frames_inferred"] == 5
        refused = status["security"]["refused"]
        assert status["security"]["curve"] and refused.get("control_unknown_key", 0) >= 1
        assert sum(v for k, v in refused.items() if k.startswith("control_handshake")) >= 1
        operator.close()
    finally:
        server.stop()


def test_a_plain_client_gets_nothing_from_a_curve_endpoint(models, keys):
    server = serve(models[0], keys=str(keys))
    try:
        assert round_trip(server, None, range(3), timeout_s=3.0) == {}
        assert sorted(round_trip(server, keys, range(3))) == [0, 1, 2]
    finally:
        server.stop()


def test_a_model_is_loaded_only_with_its_sidecar_sha256(models, keys):
    server = serve(models[0], keys=str(keys))
    client = EndpointClient(loopback(server, "control"), keys=keys, timeout_s=60)
    try:
        wrong = client.load_model(str(models[1]), sha256="0" * 64)
        assert not wrong["ok"] and "sha256" in wrong["error"]
        bare = client.request("load_model", path=str(models[1]))  # no digest at all
        assert not bare["ok"] and "sha256" in bare["error"]
        assert client.status()["model_version"] == "tiny-a"
        entry = {"sidecar_file": {"sha256": sidecar_digest(models[1])}}  # as the registry has it
        swapped = client.load_model(str(models[1]), sha256=registry_digest(entry))
        assert swapped["ok"] and swapped["model_version"] == "tiny-b"
        # the default digest is that of the sidecar the operator points at
        assert client.load_model(str(models[0]))["model_version"] == "tiny-a"
        # a sidecar changed after it was registered is refused
        sidecar = models[1] / "model.json"
        registered = sidecar_digest(models[1])
        sidecar.write_text(json.dumps({**json.loads(sidecar.read_text()), "version": "evil"}))
        refused = client.load_model(str(models[1]), sha256=registered)
        assert not refused["ok"] and client.status()["model_version"] == "tiny-a"
    finally:
        client.close()
        server.stop()


def test_a_server_started_with_the_wrong_model_digest_refuses(models):
    with pytest.raises(ValueError, match="sha256"):
        serve(models[0], model_sha256=sidecar_digest(models[1]))


@pytest.fixture
def fuzz_target(tmp_path, tiny_model):
    model = tiny_model(tmp_path / "m", version="fuzz").parent
    keys = tmp_path / "fuzz-keys"
    init_key_folder(keys)
    server = serve(model, keys=str(keys))
    yield server, keys
    server.stop()


json_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
requests = st.one_of(
    st.binary(max_size=200).map(lambda b: [b]),
    st.lists(st.binary(max_size=30), min_size=2, max_size=4),  # multipart
    json_values.map(lambda v: [json.dumps(v).encode()]),
    st.fixed_dictionaries(
        {"command": st.sampled_from(["status", "load_model", "run_start", "run_stop", "nope"])},
        optional={
            "path": json_values,
            "sha256": json_values,
            "timeout_s": json_values,
            "run_uid": json_values,
        },
    ).map(lambda d: [json.dumps(d).encode()]),
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(parts=requests)
def test_fuzzed_control_requests_are_refused_and_never_stop_the_endpoint(fuzz_target, parts):
    server, keys = fuzz_target
    context = zmq.Context.instance()
    sock = context.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    ClientKeys.from_folder(keys).apply(sock)
    sock.connect(loopback(server, "control"))
    try:
        sock.send_multipart(parts)
        assert sock.poll(20_000), "the endpoint stopped answering"
        reply = json.loads(sock.recv())
        assert isinstance(reply, dict) and "ok" in reply
        if reply["ok"]:
            request = json.loads(parts[0])
            assert request["command"] in ("status", "run_start", "run_stop")
    finally:
        sock.close(linger=0)
    assert server._threads and all(t.is_alive() for t in server._threads)
    assert server.model_version == "fuzz"


def test_garbage_on_every_socket_is_counted_and_the_endpoint_keeps_serving(fuzz_target):
    server, keys = fuzz_target
    rng = np.random.default_rng(7)
    for role in ("frames", "results", "control"):
        for size in (1, 10, 64, 300, 5000):
            with pysocket.create_connection(
                ("127.0.0.1", getattr(server.config, f"{role}_port"))
            ) as s:
                s.sendall(rng.bytes(size))
                time.sleep(0.02)
    before = EndpointClient(loopback(server, "control"), keys=keys).status()
    assert sorted(round_trip(server, keys, range(4))) == [0, 1, 2, 3]
    client = EndpointClient(loopback(server, "control"), keys=keys)
    status = client.status()
    client.close()
    refused = status["security"]["refused"]
    failed = sum(v for k, v in refused.items() if "handshake_failed" in k)
    assert failed >= 3, refused  # at least one per socket
    assert status["frames_inferred"] >= before["frames_inferred"] + 4


def test_the_continual_loop_pushes_to_a_keyed_endpoint_beyond_loopback(
    models, keys, endpoint_factory, monkeypatch
):
    from bluesky_ptychonn.retrain.options import PromoteOptions
    from bluesky_ptychonn.retrain.promote import PushFailed, push

    monkeypatch.delenv(KEYS_ENV, raising=False)
    endpoint = endpoint_factory(models[0], keys=keys, host="0.0.0.0")
    control = endpoint.addresses[2]
    options = PromoteOptions(push_attempts=1, push_timeout_s=2.0)
    with pytest.raises(PushFailed, match="did not take"):  # no keys: no answer at all
        push(control, models[1], options)
    assert push(control, models[1], options, keys=keys)["model_version"] == "tiny-b"
    monkeypatch.setenv(KEYS_ENV, str(keys))  # what a session with [endpoint] keys sets
    assert push(control, models[0], options)["model_version"] == "tiny-a"


def test_the_keys_command_makes_a_folder_and_never_overwrites_it(tmp_path, capsys):
    folder = tmp_path / "beamline-keys"
    assert main(["keys", "init", str(folder)]) == 0
    made = json.loads(capsys.readouterr().out)
    assert ClientKeys.from_folder(folder).server_public == read_secret(made["server_secret"])[0]
    assert main(["keys", "new", str(folder), "--name", "detector"]) == 0
    capsys.readouterr()
    assert main(["keys", "authorize", str(folder), str(folder / "detector.key")]) == 0
    assert (folder / "authorized" / "detector.key").is_file()
    assert not (folder / "control" / "detector.key").exists()  # data only unless --control
    assert main(["keys", "init", str(folder)]) == 2  # existing keys are kept
    assert "never overwritten" in capsys.readouterr().err


wire_dtypes = st.sampled_from(["<u2", "<u4", "<f4", "<f8", "|u1", "<i4"])


@st.composite
def frame_messages(draw):
    """Well-formed wire messages with arbitrary content: kinds, shapes, dtypes, ids, values."""
    n = draw(st.integers(1, 3))  # (wire.encode cannot encode a zero-length batch)
    shape = draw(
        st.sampled_from([(n, *FRAME), (n, 16, 16), (n, 32), (n, *FRAME, 1), (n + 1, *FRAME)])
    )
    dtype = draw(wire_dtypes)
    fill = draw(st.sampled_from([0.0, 3.0, np.nan, np.inf, -1.0, 1e30]))
    frames = np.full(shape, fill if np.dtype(dtype).kind == "f" else 3, dtype=dtype)
    arrays = draw(st.sampled_from([{"frames": frames}, {"other": frames}, {}]))
    ids = draw(st.lists(st.integers(-(2**40), 2**40), min_size=n, max_size=n))
    positions = draw(st.sampled_from([None, np.zeros((n, 2))]))
    return Message(
        draw(st.sampled_from(["frames", "results", "rejected", "control", "x" * 40])), arrays,
        run_uid=draw(st.text(max_size=30)), frame_ids=ids, positions_m=positions,
        extra=draw(st.dictionaries(st.text(max_size=5), st.integers(), max_size=3)),
    )  # fmt: skip


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(message=frame_messages())
def test_fuzzed_frame_messages_never_stop_the_endpoint(fuzz_target, message):
    from bluesky_ptychonn.stream.wire import encode

    server, keys = fuzz_target
    sock = zmq.Context.instance().socket(zmq.PUSH)
    sock.setsockopt(zmq.LINGER, 1000)
    ClientKeys.from_folder(keys).apply(sock)
    sock.connect(loopback(server, "frames"))
    try:
        sock.send_multipart(encode(message))
    finally:
        sock.close(linger=1000)
    client = EndpointClient(loopback(server, "control"), keys=keys, timeout_s=20)
    try:
        assert client.status()["ok"]
    finally:
        client.close()
    assert all(t.is_alive() for t in server._threads)
