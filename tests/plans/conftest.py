"""A RunEngine whose documents are validated against event-model's schemas.

The simulated hutch and its twins (``hutch``, ``stage``, ``eiger``) are in tests/conftest.py.
"""

from __future__ import annotations

import pytest
from bluesky import RunEngine
from event_model import DocumentNames, schema_validators


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
