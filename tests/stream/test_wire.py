"""The wire format: round trips, and a decoder that rejects malformed input with a reason."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bluesky_ptychonn.stream.wire import Message, WireError, decode, encode


def frames_message(n=3, dtype=np.uint16):
    rng = np.random.default_rng(0)
    return Message(
        kind="frames",
        arrays={"frames": rng.integers(0, 1000, (n, 8, 8)).astype(dtype)},
        run_uid="run-1",
        seq=4,
        frame_ids=list(range(10, 10 + n)),
        positions_m=rng.normal(size=(n, 2)) * 1e-6,
        extra={"note": "test"},
    )


def as_bytes(parts):
    return [bytes(p) for p in parts]


@pytest.mark.parametrize("dtype", [np.uint16, np.uint32, np.float32, np.complex64, np.bool_])
def test_round_trip_keeps_every_field(dtype):
    message = frames_message(dtype=dtype)
    back = decode(as_bytes(encode(message)))
    assert back.kind == "frames" and back.run_uid == "run-1" and back.seq == 4
    assert back.frame_ids == message.frame_ids
    assert np.array_equal(back.positions_m, message.positions_m)
    assert back.arrays["frames"].dtype == np.dtype(dtype)
    assert np.array_equal(back.arrays["frames"], message.arrays["frames"])
    assert back.extra == {"note": "test"} and back.timestamp == message.timestamp


def test_results_carry_model_version_and_two_arrays():
    message = Message(
        kind="results",
        arrays={
            "phase": np.zeros((2, 4, 4), np.float32),
            "amplitude": np.ones((2, 4, 4), np.float32),
        },
        frame_ids=[1, 2],
        model_version="edge-3",
    )
    back = decode(as_bytes(encode(message)))
    assert back.model_version == "edge-3" and set(back.arrays) == {"phase", "amplitude"}


def test_object_arrays_are_never_sent():
    with pytest.raises(WireError, match="dtype"):
        encode(Message("frames", {"x": np.array([{"a": 1}], dtype=object)}))


def corrupt(parts, **changes):
    header = json.loads(parts[0])
    header.update(changes)
    return [json.dumps(header).encode(), *parts[1:]]


@pytest.mark.parametrize(
    ("mutation", "reason"),
    [
        (lambda p: [b"\xff\xfe", *p[1:]], "not UTF-8 JSON"),
        (lambda p: [b"[1, 2]", *p[1:]], "not a JSON object"),
        (lambda p: corrupt(p, v=99), "unsupported wire version"),
        (lambda p: p[:1], "lists 1 arrays but 0 buffers"),
        (lambda p: [p[0], p[1][:-2]], "bytes for shape"),
        (lambda p: corrupt(p, frame_ids=[1, 2]), "2 frame ids"),
        (lambda p: corrupt(p, frame_ids=["a", "b", "c"]), "frame_ids"),
        (lambda p: corrupt(p, positions_m=[[1.0, 2.0]]), "1 positions for 3"),
        (lambda p: corrupt(p, positions_m=[[1, "x"]] * 3), "positions_m"),
        (
            lambda p: corrupt(p, arrays=[{"name": "frames", "dtype": "|O", "shape": [3, 8, 8]}]),
            "bad dtype",
        ),
        (
            lambda p: corrupt(p, arrays=[{"name": "frames", "dtype": "<u2", "shape": [-3, 8, 8]}]),
            "bad shape",
        ),
        (lambda p: corrupt(p, kind=""), "kind"),
        (lambda p: corrupt(p, timestamp=True), "timestamp"),
    ],
)
def test_malformed_messages_are_rejected_with_a_reason(mutation, reason):
    parts = as_bytes(encode(frames_message()))
    with pytest.raises(WireError, match=reason):
        decode(mutation(parts))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    header=st.dictionaries(
        st.sampled_from(
            [
                "v",
                "kind",
                "run_uid",
                "seq",
                "timestamp",
                "frame_ids",
                "positions_m",
                "arrays",
                "extra",
                "model_version",
            ]
        ),
        json_values,
    ),
    buffers=st.lists(st.binary(max_size=64), max_size=3),
)
def test_decoder_never_crashes_on_arbitrary_headers(header, buffers):
    header.setdefault("v", 1)
    try:
        decode([json.dumps(header).encode(), *buffers])
    except WireError:
        pass  # rejected with a reason: the only acceptable failure


@settings(max_examples=300, deadline=None)
@given(raw=st.lists(st.binary(max_size=128), min_size=0, max_size=4))
def test_decoder_never_crashes_on_arbitrary_bytes(raw):
    try:
        decode(raw)
    except WireError:
        pass


@settings(max_examples=200, deadline=None)
@given(
    shape=st.lists(st.integers(0, 5), min_size=0, max_size=4),
    dtype=st.sampled_from(["<u2", "<f4", "<f8", "<c8", "|u1", "|b1"]),
    cut=st.integers(0, 10),
)
def test_decoder_checks_byte_counts_for_any_shape(shape, dtype, cut):
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    header = {"v": 1, "kind": "frames", "arrays": [{"name": "a", "dtype": dtype, "shape": shape}]}
    buffer = bytes(max(0, nbytes - cut))
    if cut == 0 or nbytes == 0:
        assert decode([json.dumps(header).encode(), buffer]).arrays["a"].shape == tuple(shape)
    else:
        with pytest.raises(WireError):
            decode([json.dumps(header).encode(), buffer])
