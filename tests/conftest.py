"""Shared fixtures. Area-specific fixtures live in the area's own test modules."""

from __future__ import annotations

import pytest

from tests.fakes.http import FakeServer


@pytest.fixture
def fake_server():
    """A started FakeServer answering 200 {"ok": true}; set `.answer` to change that."""
    with FakeServer() as server:
        yield server
