"""Shared fixtures. Area-specific fixtures live in the area's own test modules."""

from __future__ import annotations

import pytest

from tests.fakes.http import FakeServer

pytest_plugins = ["tests.services"]  # postgres, postgres_url, kafka_broker: real servers


@pytest.fixture
def fake_server():
    """A started FakeServer answering 200 {"ok": true}; set `.answer` to change that."""
    with FakeServer() as server:
        yield server


@pytest.fixture(scope="module")
def module_fake_server():
    """One FakeServer for a whole test module; each test sets `.answer` to its fake.

    Starting is cheap but every shutdown waits out the server's 0.5 s poll, so modules
    with many HTTP tests share one.
    """
    with FakeServer() as server:
        yield server


@pytest.fixture
def sink():
    """A webhook destination counting the messageIds it is sent (tests.fakes.sink.Sink)."""
    from tests.fakes.sink import Sink

    box = Sink()
    with FakeServer(box.answer) as server:
        box.url = server.url
        yield box
    box.release()
