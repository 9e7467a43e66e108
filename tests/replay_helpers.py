"""Shared by the end-to-end replay tests (test_dest_replay_a/_b): a one-sync project
with its NDJSON file, `streamctl replay` through the real CLI, and the outcomes the
store recorded."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from typer.testing import CliRunner

from streamctl.cli.main import app
from tests.store_rows import store_rows

# Ten events a request, two attempts, millisecond backoff: outcomes settle at once.
FAST_RETRIES = (
    "delivery: { batch_size: 10, max_attempts: 2, backoff: { initial: 10ms, max: 20ms } }"
)


def write_project(root: Path, destination: str, sync: str, events: list[dict]) -> Path:
    (root / "syncs").mkdir()
    (root / "streamctl.yaml").write_text(
        textwrap.dedent(
            """\
            version: 1
            store: .streamctl/state.db
            sources:
              web: { type: http, write_keys: [test-key] }
            destinations:
            """
        )
        + textwrap.indent(textwrap.dedent(destination), "  ")
    )
    (root / "syncs" / "sync.yaml").write_text(textwrap.dedent(sync))
    events_file = root / "events.ndjson"
    events_file.write_text("".join(json.dumps(e) + "\n" for e in events))
    return events_file


def replay(root: Path, events_file: Path) -> tuple[int, dict, str]:
    result = CliRunner().invoke(app, ["replay", str(events_file), "--project", str(root), "--json"])
    summary = json.loads(result.stdout)[0] if result.stdout.strip().startswith("[") else {}
    return result.exit_code, summary, result.stderr


def outcomes(root: Path) -> dict[str, tuple[str, str | None]]:
    """message_id -> (status, error) of every delivery recorded in the store."""
    rows = store_rows(
        root / ".streamctl" / "state.db", "SELECT message_id, status, error FROM deliveries"
    )
    return {message_id: (status, error) for message_id, status, error in rows}


def track(n: int, event: str = "Order Completed", **extra) -> dict:
    return {
        "type": "track",
        "event": event,
        "messageId": f"msg-{n}",
        "userId": f"user-{n:04d}",
        "anonymousId": f"anon-{n:04d}",
        "timestamp": "2026-11-26T09:00:00.000Z",
        "properties": {"order_id": f"o-{n}", "total": 10.5 + n, "currency": "USD"},
        **extra,
    }
