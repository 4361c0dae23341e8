"""Typed wire payloads: each kind round-trips through the wire, a malformed one is named."""

from __future__ import annotations

import numpy as np
import pytest

from bluesky_ptychonn.stream.payloads import (
    FramesPayload,
    MosaicPayload,
    PayloadError,
    RejectedPayload,
    ResultsPayload,
    parse,
)
from bluesky_ptychonn.stream.wire import Message, WireError, decode, encode

RNG = np.random.default_rng(1)


def over_the_wire(message: Message) -> Message:
    return decode([bytes(part) for part in encode(message)])


def results(n: int = 3, **changes) -> ResultsPayload:
    fields = dict(
        run_uid="s", frame_ids=list(range(10, 10 + n)),
        phase=RNG.normal(size=(n, 8, 8)).astype(np.float32),
        amplitude=np.ones((n, 8, 8), np.float32), positions_m=RNG.normal(size=(n, 2)) * 1e-6,
        model_version="v2", pixel_scale=2.0, created=np.full(n, 1.7e9), endpoint="edge",
        timestamp=1.7e9,
    )  # fmt: skip
    fields.update(changes)
    return ResultsPayload(**fields)


@pytest.mark.parametrize(
    "payload",
    [
        FramesPayload("s", np.ones((2, 16, 16), np.uint16), [4, 5], np.zeros((2, 2)), 1.0, 3),
        results(),
        results(phase_uncertainty=np.full((3, 8, 8), 0.1, np.float32)),
        RejectedPayload("s", [7, 8], "frame contains NaN", dropped=False, endpoint="edge"),
        MosaicPayload("r", *(np.zeros((4, 5), np.float32) for _ in range(3)), 1e-8,
                      (0.0, -1e-6), 12, "v2", 5.0),
    ],
    ids=["frames", "results", "results+uncertainty", "rejected", "mosaic"],
)
def test_each_payload_round_trips_through_the_wire(payload):
    back = parse(over_the_wire(payload.to_message()))
    assert type(back) is type(payload)
    for name, value in vars(payload).items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(getattr(back, name), value)
        else:
            assert getattr(back, name) == value, name


def test_results_without_uncertainty_carry_none():
    assert parse(over_the_wire(results().to_message())).phase_uncertainty is None


@pytest.mark.parametrize(
    "break_it, named",
    [
        (lambda m: m.arrays.pop("phase"), "'phase' is missing"),
        (lambda m: m.arrays.__setitem__("amplitude", np.ones((3, 4, 4), np.float32)),
         "'amplitude' has shape"),
        (lambda m: m.arrays.__setitem__("phase", np.ones((3, 8, 8), np.int16)), "dtype int16"),
        (lambda m: m.arrays.__setitem__("phase_uncertainty", np.ones((2, 8, 8), np.float32)),
         "'phase_uncertainty' has shape"),
        (lambda m: m.extra.__setitem__("pixel_scale", "big"), "pixel_scale"),
        (lambda m: m.frame_ids.clear(), "no frame ids"),
    ],
)
def test_a_malformed_results_message_is_refused_naming_the_field(break_it, named):
    message = results().to_message()
    break_it(message)
    with pytest.raises(PayloadError, match="results message") as error:
        ResultsPayload.from_message(message)
    assert named in str(error.value)
    assert isinstance(error.value, WireError | ValueError)


def test_frames_need_one_2d_frame_per_id_and_positions_to_match():
    good = FramesPayload("s", np.ones((2, 4, 4), np.uint16), [1, 2]).to_message()
    flat = Message(kind="frames", arrays={"frames": np.ones((2, 16))}, frame_ids=[1, 2])
    with pytest.raises(PayloadError, match="'frames' has shape"):
        FramesPayload.from_message(flat)
    good.positions_m = np.zeros((3, 2))
    with pytest.raises(PayloadError, match="positions_m"):
        FramesPayload.from_message(good)


def test_a_rejection_needs_its_reason_and_an_unknown_kind_is_named():
    message = RejectedPayload("s", [1], "bad").to_message()
    message.extra.pop("reason")
    with pytest.raises(PayloadError, match="reason"):
        parse(message)
    with pytest.raises(PayloadError, match="unknown message kind 'telemetry'"):
        parse(Message(kind="telemetry"))
