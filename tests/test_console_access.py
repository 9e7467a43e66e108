"""Who may use the console (streamctl.console.app.ConsoleAccess), and the commands' guards."""

from __future__ import annotations

import subprocess
import sys

from starlette.requests import Request

from streamctl.console.app import ConsoleAccess, is_loopback
from tests.listener_harness import BASE_CONFIG, ListenerProcess, write_project

TOKEN = "console-token-abcdef0123456789"


def request(client: str, method: str = "GET", headers: dict[str, str] | None = None) -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    scope = {
        "type": "http", "method": method, "path": "/console/", "query_string": b"",
        "headers": [(b"host", b"console.test"), *raw], "client": (client, 40000),
    }  # fmt: skip
    return Request(scope)


def test_without_a_token_beyond_loopback_only_loopback_clients_get_in():
    access = ConsoleAccess.for_host("0.0.0.0")
    assert access.refusal(request("127.0.0.1")) is None
    assert access.refusal(request("::1")) is None
    refused = access.refusal(request("192.0.2.10"))
    assert refused is not None and refused.status_code == 403
    assert b"STREAMCTL_CONSOLE_TOKEN" in refused.body


def test_with_a_token_every_client_needs_it_even_on_loopback():
    access = ConsoleAccess.for_host("127.0.0.1", TOKEN)
    missing = access.refusal(request("127.0.0.1"))
    assert missing is not None and missing.status_code == 401
    bearer = request("192.0.2.10", headers={"Authorization": f"Bearer {TOKEN}"})
    assert access.refusal(bearer) is None
    cookie = request("127.0.0.1", headers={"Cookie": f"streamctl_console={TOKEN}"})
    assert access.refusal(cookie) is None
    wrong = request("127.0.0.1", headers={"Authorization": "Bearer nope"})
    assert access.refusal(wrong).status_code == 401  # type: ignore[union-attr]


def test_posts_need_the_csrf_token_from_the_same_site():
    access = ConsoleAccess.for_host("127.0.0.1")
    good = {"X-CSRF-Token": access.csrf_token}
    assert access.refusal(request("127.0.0.1", "POST", good)) is None
    for headers in (
        {},
        {"X-CSRF-Token": ConsoleAccess.for_host("127.0.0.1").csrf_token},  # another process's
        {**good, "Origin": "http://elsewhere.test"},
        {**good, "Sec-Fetch-Site": "cross-site"},
    ):
        refused = access.refusal(request("127.0.0.1", "POST", headers))
        assert refused is not None and refused.status_code == 403, headers


def test_loopback_names():
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("[::1]")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4")


def test_console_command_refuses_to_serve_beyond_loopback_without_a_token(tmp_path):
    project = write_project(tmp_path / "p")
    done = subprocess.run(
        [sys.executable, "-m", "streamctl", "console", "--project", str(project),
         "--host", "0.0.0.0", "--port", "0"],
        capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)},
    )  # fmt: skip
    assert done.returncode == 2
    assert "console token" in done.stderr


def test_run_no_console_serves_no_console(tmp_path):
    import httpx

    project = write_project(tmp_path / "p", BASE_CONFIG)
    with ListenerProcess(project, "--no-console") as proc:
        assert httpx.get(f"{proc.url}/console/").status_code == 404
        assert httpx.get(f"{proc.url}/healthz").status_code == 200
