"""The start document's contract: one spelling each, older spellings read with a warning."""

from __future__ import annotations

import typing
import warnings

import pytest

from bluesky_ptychonn import documents
from bluesky_ptychonn.documents import (
    DEPRECATED_START_KEYS,
    REQUIRED_START_KEYS,
    PtychographyStart,
    read_start,
)


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch):
    monkeypatch.setattr(documents, "_warned", set())


def test_older_spellings_are_read_as_the_current_ones_with_a_deprecation_warning():
    recorded = {"uid": "u", "energy_ev": 8e3, "distance_m": 1.5, "sample": "star",
                "positions_keys": {"y": "sy", "x": "sx"}}  # fmt: skip
    with pytest.warns(DeprecationWarning) as caught:
        start = read_start(recorded)
    assert start == {"uid": "u", "energy_ev": 8e3, "detector_distance_m": 1.5,
                     "sample_name": "star", "position_keys": ["sy", "sx"]}  # fmt: skip
    named = " ".join(str(w.message) for w in caught)
    for old, new in DEPRECATED_START_KEYS.items():
        assert repr(old) in named and repr(new) in named
    assert "distance_m" in recorded  # the caller's document is left alone


def test_the_current_spelling_wins_and_reads_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        start = read_start({"detector_distance_m": 2.0, "position_keys": ("y", "x")})
    assert start == {"detector_distance_m": 2.0, "position_keys": ["y", "x"]}
    with pytest.warns(DeprecationWarning):
        both = read_start({"detector_distance_m": 2.0, "distance_m": 9.0})
    assert both == {"detector_distance_m": 2.0}


def test_each_key_warns_once_per_process():
    with pytest.warns(DeprecationWarning):
        read_start({"distance_m": 1.0})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_start({"distance_m": 1.0})
        read_start({"distance_m": 1.0}, warn=False)


@pytest.mark.parametrize("keys", [["only-one"], {"y": "sy"}, ["y", 3], "yx"])
def test_bad_position_keys_are_refused(keys):
    with pytest.raises(ValueError, match="position_keys"):
        read_start({"position_keys": keys})


def test_the_typed_dict_holds_every_current_key_once_and_none_of_the_old_ones():
    hints = typing.get_type_hints(PtychographyStart)
    assert set(REQUIRED_START_KEYS) == PtychographyStart.__required_keys__
    assert not set(DEPRECATED_START_KEYS) & set(hints)
    assert set(DEPRECATED_START_KEYS.values()) <= set(hints)
