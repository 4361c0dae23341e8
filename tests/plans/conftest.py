"""A RunEngine whose documents are validated against event-model's schemas, and sim devices."""

from __future__ import annotations

import pytest
from bluesky import RunEngine
from event_model import DocumentNames, schema_validators

from bluesky_ptychonn.devices import SimEiger, SimStage
from bluesky_ptychonn.ioc import SimHutch
from bluesky_ptychonn.sim import SimBeamlineConfig


class Documents(list):
    """(name, doc) pairs of the last run(s), each validated when it arrives."""

    __hash__ = object.__hash__  # the RunEngine keeps callbacks in a registry

    def __call__(self, name, doc):
        schema_validators[DocumentNames(name)].validate(doc)
        self.append((name, doc))

    def of(self, name):
        return [doc for kind, doc in self if kind == name]

    @property
    def start(self):
        (start,) = self.of("start")
        return start


@pytest.fixture
def documents():
    return Documents()


@pytest.fixture
def RE(documents):
    engine = RunEngine({})
    engine.subscribe(documents)
    return engine


@pytest.fixture(scope="module")
def hutch():
    with SimHutch(SimBeamlineConfig(field_of_view_m=(3e-6, 3e-6)), detectors=("eiger",)) as h:
        yield h


@pytest.fixture(scope="module")
def stage(hutch):
    return SimStage(hutch)


@pytest.fixture(scope="module")
def eiger(hutch):
    return SimEiger(hutch)


@pytest.fixture(autouse=True)
def files_in_tmp_path(request, tmp_path):
    """Fly scans write their HDF5 files under the test's temporary folder."""
    if "eiger" in request.fixturenames:
        eiger = request.getfixturevalue("eiger")
        previous, eiger.file_directory = eiger.file_directory, str(tmp_path)
        yield
        eiger.file_directory = previous
    else:
        yield
