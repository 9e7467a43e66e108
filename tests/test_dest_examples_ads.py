"""The ad-platform example projects (examples/meta, ...) validate and deliver.

Each example is replayed, unchanged, with the first 30 events of examples/events.ndjson
into its fake vendor (the `base_url` comes from the environment, as the example says).
The ad platforms refuse events older than a week (Meta: 7 days), so the events'
timestamps are moved to the last minutes first, as a live stream would have them.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.fakes.ad_platforms import FakeMeta, FakePinterest, FakeReddit, FakeSnapchat, FakeTikTok
from tests.fakes.vendors_a import serve
from tests.test_dest_examples_a import EXAMPLES, copy_example, run

CASES = {
    "meta": (
        lambda: FakeMeta("1234567890", "meta-example-token"),
        {"META_PIXEL_ID": "1234567890", "META_ACCESS_TOKEN": "meta-example-token"},
        "META_BASE_URL",
        lambda fake: {event["event_name"] for event in fake.events},
        {"Purchase", "CompleteRegistration", "Lead", "PageView", "ViewContent"},
    ),
    "tiktok": (
        lambda: FakeTikTok("C0EXAMPLEPIXEL", "tiktok-example-token"),
        {"TIKTOK_PIXEL_CODE": "C0EXAMPLEPIXEL", "TIKTOK_ACCESS_TOKEN": "tiktok-example-token"},
        "TIKTOK_BASE_URL",
        lambda fake: {event["event"] for event in fake.events},
        {"Purchase", "CompleteRegistration", "Lead", "ViewContent"},
    ),
    "snapchat": (
        lambda: FakeSnapchat("snap-example-pixel", "snap-example-token"),
        {"SNAP_PIXEL_ID": "snap-example-pixel", "SNAP_ACCESS_TOKEN": "snap-example-token"},
        "SNAP_BASE_URL",
        lambda fake: {event["event_name"] for event in fake.events},
        {"PURCHASE", "SIGN_UP", "PAGE_VIEW", "VIEW_CONTENT"},
    ),
    "pinterest": (
        lambda: FakePinterest("549755885175", "pina-example-token"),
        {"PINTEREST_AD_ACCOUNT_ID": "549755885175", "PINTEREST_ACCESS_TOKEN": "pina-example-token"},
        "PINTEREST_BASE_URL",
        lambda fake: {event["event_name"] for event in fake.events},
        {"checkout", "signup", "lead", "page_visit", "view_content"},
    ),
    "reddit": (
        lambda: FakeReddit("t2_example", "reddit-example-token"),
        {"REDDIT_ACCOUNT_ID": "t2_example", "REDDIT_CONVERSION_TOKEN": "reddit-example-token"},
        "REDDIT_BASE_URL",
        lambda fake: {event["event_type"]["tracking_type"] for event in fake.events},
        {"Purchase", "SignUp", "Lead", "PageVisit", "ViewContent"},
    ),
}


@pytest.fixture
def recent_events(tmp_path) -> Path:
    lines = (EXAMPLES / "events.ndjson").read_text().splitlines()[:30]
    start = datetime.now(UTC) - timedelta(minutes=30)
    events = [json.loads(line) for line in lines]
    for n, event in enumerate(events):
        event["timestamp"] = (start + timedelta(seconds=n)).isoformat()
    path = tmp_path / "events.ndjson"
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return path


@pytest.mark.parametrize("name", sorted(CASES))
def test_example_validates_and_replays_into_the_vendor(
    name, tmp_path, module_fake_server, recent_events, monkeypatch
):
    make_fake, env, base_url_variable, names_of, names = CASES[name]
    fake = make_fake()
    server = serve(module_fake_server, fake)
    for variable, value in {**env, base_url_variable: server.url}.items():
        monkeypatch.setenv(variable, value)
    project = copy_example(name, tmp_path)

    checked = run("validate", "--project", str(project))
    assert checked.exit_code == 0, checked.stderr

    result = run("replay", str(recent_events), "--project", str(project), "--json")
    assert result.exit_code == 0, result.stderr
    (summary,) = json.loads(result.stdout)
    (counts,) = summary["syncs"]
    assert set(counts) <= {"sync", "delivered", "filtered"}, counts  # nothing refused
    assert fake.problems == []
    assert counts["delivered"] == len(fake.events) > 0
    assert names_of(fake) == names  # every event type of the example was sent
    for secret in env.values():
        if "token" in secret or "key" in secret:
            assert secret not in result.stdout + result.stderr
