"""examples/scale-out: the project validates, and run.sh brings up a broker, two ingest
nodes and two workers on the suite's PostgreSQL and gets every event it sends into the
warehouse table (the script checks that itself and exits non-zero otherwise)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.services import PASSWORD, free_port

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "scale-out"


def test_the_scale_out_example_validates(postgres_url: str) -> None:
    checked = subprocess.run(
        [sys.executable, "-m", "streamctl", "validate", "--project", str(EXAMPLE)],
        capture_output=True,
        text=True,
        env={**os.environ, "DATABASE_URL": postgres_url},
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.timeout(300)
def test_the_scale_out_script_delivers_what_both_ingest_nodes_accepted(postgres_url: str) -> None:
    env = {
        **os.environ,
        "DATABASE_URL": postgres_url,
        "BROKER_PORT": str(free_port()),
        "INGEST_PORTS": f"{free_port()} {free_port()}",
        "EVENTS": "50",
    }
    ran = subprocess.run(
        ["bash", str(EXAMPLE / "run.sh")], capture_output=True, text=True, env=env, timeout=280
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr[-3000:]
    assert ran.stdout.count(": 200 (50 events)") == 2
    assert "all 100 events are rows of analytics.tracks" in ran.stdout
    assert PASSWORD not in ran.stdout + ran.stderr
