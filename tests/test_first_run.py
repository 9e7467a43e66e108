"""First-run papercuts, each as a newcomer meets it: the README tour against the
bundled project, out-of-range ports, `errors` and `top` at 80 columns, `top` piped,
Ctrl-C, a missing environment variable, references to docs users have, `explain`
of a file delivery and of a drop, the sparkline header."""

from __future__ import annotations

import base64
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from rich.console import Console
from typer.testing import CliRunner

from streamctl.cli.errors import error_lines
from streamctl.cli.main import app
from streamctl.cli.top import render_top
from streamctl.monitoring.sparkline import minutes_per_char, trend_header
from streamctl.monitoring.top import Rate, TopRow
from tests.listener_harness import ListenerProcess, ListenerThread
from tests.store_rows import store_rows

REPOSITORY = Path(__file__).resolve().parent.parent


@pytest.fixture
def bundled_project(tmp_path: Path) -> Path:
    """A copy of the repository's own default project (what the README tour runs)."""
    root = tmp_path / "project"
    root.mkdir()
    shutil.copy(REPOSITORY / "streamctl.yaml", root)
    for folder in ("syncs", "contracts", "functions"):
        shutil.copytree(REPOSITORY / folder, root / folder)
    return root


def tour_requests() -> list[list[str]]:
    """The `curl` commands of the README's tour, as their words."""
    readme = (REPOSITORY / "README.md").read_text()
    tour = readme.split("## A tour", 1)[1].split("```", 2)[1]
    joined = tour.replace("\\\n", " ")
    return [
        shlex.split(line, comments=True) for line in joined.splitlines() if line.startswith("curl")
    ]


def as_request(words: list[str], base_url: str) -> httpx.Request:
    headers: dict[str, str] = {}
    body, url = "", ""
    options = iter(words[1:])
    for word in options:
        if word == "-u":
            user = next(options)
            headers["Authorization"] = "Basic " + base64.b64encode(user.encode()).decode()
        elif word == "-d":
            body = next(options)
        elif word == "-H":
            name, value = next(options).split(":", 1)
            headers[name.strip()] = value.strip()
        else:
            url = word.replace("http://127.0.0.1:8080", base_url)
    return httpx.Request("POST" if body else "GET", url, headers=headers, content=body)


def test_the_readme_tour_request_reaches_the_console(bundled_project, capfd):
    requests = tour_requests()
    assert requests, "the README tour has no curl request"
    with ListenerThread(bundled_project) as listener, httpx.Client() as http:
        for words in requests:
            assert http.send(as_request(words, listener.url)).status_code == 200
        store = listener.store_path

        def welcomed() -> list[tuple[str, str]]:
            return store_rows(
                store, "SELECT status, stage FROM deliveries WHERE sync = 'signups-to-console'"
            )

        deadline = time.monotonic() + 20
        while welcomed() != [("delivered", "delivery")] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert welcomed() == [("delivered", "delivery")]
    assert "Welcome aboard, u2!" in capfd.readouterr().out


@pytest.mark.parametrize("port", ["70000", "-1", "65536"])
def test_an_out_of_range_port_is_a_usage_error(bundled_project, port):
    result = CliRunner().invoke(app, ["run", "--project", str(bundled_project), "--port", port])
    assert result.exit_code == 2
    assert "--port" in result.output
    assert "Errno" not in result.output


def test_ctrl_c_stops_run_cleanly_with_130(bundled_project):
    with ListenerProcess(bundled_project) as proc:
        assert proc.terminate(signal.SIGINT) == 130
        assert "Traceback" not in proc.stderr


def test_top_prints_plain_tables_when_piped_and_ctrl_c_exits_130(bundled_project):
    replay = CliRunner().invoke(
        app,
        [
            "replay",
            str(REPOSITORY / "examples" / "events.ndjson"),
            "--project",
            str(bundled_project),
        ],
    )
    assert replay.exit_code == 0, replay.output
    top = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamctl",
            "top",
            "--project",
            str(bundled_project),
            "--interval",
            "0.05",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert top.stdout is not None
    titles = 0
    deadline = time.monotonic() + 30
    while titles < 2 and time.monotonic() < deadline:
        line = top.stdout.readline()
        titles += line.startswith("streamctl top")
        assert "events-to-file" in line or "\x1b[?1049h" not in line  # never a screen
    top.send_signal(signal.SIGINT)
    assert top.wait(30) == 130
    assert titles == 2


def rate(total: int, per_second: float | None) -> Rate:
    return Rate(total=total, per_second=per_second)


def test_top_fits_80_columns_with_whole_headers():
    rows = [
        TopRow(
            sync="purchases-to-braze",
            received=rate(1_234_567, 812.5),
            delivered=rate(1_200_001, 790.0),
            filtered=rate(30_000, 20.0),
            failed=rate(4_567, 3.5),
            archived=rate(12, 0.0),
            retrying=321,
            queued=4_000,
            error_rate=0.0123,
            latency_p95_ms=245.0,
        )
    ]
    screen = render_top(rows, since=0.0, now=60.0, width=80)
    console = Console(width=80, record=True, color_system=None)
    console.print(screen)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    header = next(line for line in text.splitlines() if line.startswith("sync"))
    for heading in ("in", "delivered", "failed", "archived", "error rate"):
        assert re.search(rf"(^|\s){heading}(\s|$)", header), header
    assert "1,234,567" in text and "812.5/s" in text


def test_errors_fit_80_columns_and_show_message_ids_whole():
    rows = [
        {
            "id": 1000 + n,
            "message_id": f"6f1c2a9e-4b7d-4c1e-9a3f-{n:012d}",
            "sync": "purchases-to-braze-production-eu",
            "event_type": "purchase",
            "stage": "delivery",
            "status": "archived",
            "attempts": 37,
            "status_code": 400,
            "error": "HTTP 400: "
            + "the field 'external_id' must be a string of at most 512 characters " * 3,
            "first_attempt_at": "2026-12-03T13:00:00.000Z",
            "last_attempt_at": "2026-12-03T13:32:00.414Z",
            "next_attempt_at": None,
        }
        for n in range(3)
    ]
    lines = error_lines(rows, 80, frozenset())
    assert max(len(line) for line in lines) <= 80
    for row in rows:
        assert any(row["message_id"] in line for line in lines)
    assert len(lines) == 2 + 2 * len(rows)  # a title, the headings, two lines an error


def test_a_missing_environment_variable_is_reported_alone(tmp_path):
    (tmp_path / "streamctl.yaml").write_text(
        "version: 1\ndestinations:\n  crm:\n    type: webhook\n    config:\n      url: ${CRM_URL}\n"
    )
    result = CliRunner().invoke(
        app, ["validate", "--project", str(tmp_path)], env={"CRM_URL": None}
    )
    assert result.exit_code == 1
    assert "environment variable CRM_URL is not set" in result.stdout + result.stderr
    assert "needs config key" not in result.stdout + result.stderr


def test_docs_point_to_the_repository_not_to_a_spec_users_do_not_have():
    result = CliRunner().invoke(app, ["destinations", "show", "file"])
    assert result.exit_code == 0
    assert "SPEC" not in result.stdout
    assert "docs/configuration.md#generic-destinations" in result.stdout
    assert "## Generic destinations" in (REPOSITORY / "docs" / "configuration.md").read_text()
    for page in [REPOSITORY / "README.md", *(REPOSITORY / "docs").rglob("*.md")]:
        if page.name != "DEVELOPING.md":  # for contributors, who have the SPEC
            assert "SPEC §" not in page.read_text(), page


def test_explain_shows_no_http_for_a_file_and_a_reason_for_a_drop(bundled_project, tmp_path):
    events = tmp_path / "one.ndjson"
    events.write_text('{"type":"page","name":"Pricing","userId":"u1","messageId":"m-page"}\n')
    runner = CliRunner()
    assert (
        runner.invoke(app, ["replay", str(events), "--project", str(bundled_project)]).exit_code
        == 0
    )
    result = runner.invoke(app, ["explain", "m-page", "--project", str(bundled_project)])
    assert result.exit_code == 0, result.output
    assert "HTTP" not in result.stdout  # a file destination answers no HTTP status
    assert re.search(r"attempt 1 at \S+: delivered in [\d.]+ ms", result.stdout)
    assert "reason: the function left the event out" in result.stdout
    assert "error:" not in result.stdout


def test_a_day_of_sparkline_reads_per_hour():
    assert minutes_per_char(24 * 60 + 1, 30) == 60
    assert trend_header("volume", minutes_per_char(24 * 60, 30)) == "volume/h"
    assert trend_header("errors", minutes_per_char(45, 30)) == "errors/2min"
    assert trend_header("volume", minutes_per_char(7 * 24 * 60, 30)) == "volume/6h"
