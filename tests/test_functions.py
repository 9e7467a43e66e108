from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from streamctl.core.errors import FunctionError
from streamctl.core.model import FunctionRef
from streamctl.functions import check_function, close_functions, run_function


@pytest.fixture(autouse=True)
def _stop_workers():
    yield
    close_functions()


@pytest.fixture
def write(tmp_path):
    folder = tmp_path / "functions"
    folder.mkdir()

    def write(name: str, source: str, **ref) -> FunctionRef:
        path = folder / name
        path.write_text(textwrap.dedent(source))
        return FunctionRef(path=path, **ref)

    return write


def events(*names):
    return [
        {"type": "track", "event": n, "userId": "u", "messageId": f"m{i}"}
        for i, n in enumerate(names)
    ]


def test_modify_drop_and_split_with_settings(write):
    ref = write(
        "shape.py",
        """
        def transform_events(events, settings):
            out = []
            for event in events:
                if event["event"] == "drop me":
                    continue
                if event["event"] == "split me":
                    out += [{**event, "messageId": event["messageId"] + f"-{i}"} for i in range(2)]
                    continue
                event["properties"] = {"label": settings["label"]}
                print("functions may print; it goes to stderr")
                out.append(event)
            return out
        """,
        settings={"label": "L"},
    )
    result = run_function(ref, events("keep", "drop me", "split me"))
    assert [(e["messageId"], e.get("properties")) for e in result] == [
        ("m0", {"label": "L"}),
        ("m2-0", None),
        ("m2-1", None),
    ]


def test_a_function_without_settings_parameter_is_called_with_events_only(write):
    ref = write("one.py", "def transform_events(events):\n    return events[:1]\n")
    assert run_function(ref, events("a", "b")) == events("a")


def test_a_hung_function_is_stopped_and_the_next_batch_runs_in_a_fresh_worker(write, tmp_path):
    pid_file = tmp_path / "pid"
    ref = write(
        "hang.py",
        f"""
        import os, time
        from pathlib import Path

        def transform_events(events, settings):
            if events[0]["event"] == "hang":
                Path({str(pid_file)!r}).write_text(str(os.getpid()))
                while True:
                    time.sleep(0.01)
            return events
        """,
        timeout=0.5,
    )
    with pytest.raises(
        FunctionError, match=r"functions/hang.py timed out after 0.5 s on a batch of 1 events"
    ) as caught:
        run_function(ref, events("hang"))
    assert "hang.py" in caught.value.traceback  # where it was stuck
    hung_pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(hung_pid, 0)
    assert run_function(ref, events("fine")) == events("fine")


def test_an_exception_is_a_function_error_with_the_users_traceback(write):
    ref = write(
        "boom.py",
        """
        def transform_events(events, settings):
            return [explode(e) for e in events]

        def explode(event):
            raise ValueError(f"cannot handle {event['event']}")
        """,
    )
    with pytest.raises(
        FunctionError, match=r"functions/boom\.py raised ValueError: cannot handle x"
    ) as caught:
        run_function(ref, events("x"))
    assert 'boom.py", line 6, in explode' in caught.value.traceback
    assert "worker.py" not in caught.value.traceback


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("return None", "returned null, not a list of events"),
        ("return {'events': events}", "returned dict, not a list of events"),
        ("return [1]", "output item 0 is int, not an event object"),
        ("return [{'messageId': 'x'}]", "output event 0 has type None"),
        ("return [dict(events[0], messageId='')]", "output event 0 has no messageId"),
        ("return [dict(events[0], tags={1, 2})]", "returned a value that is not JSON"),
    ],
)
def test_bad_return_values_are_function_errors(write, body, message):
    ref = write("bad.py", f"def transform_events(events, settings):\n    {body}\n")
    with pytest.raises(FunctionError, match=message):
        run_function(ref, events("x"))


def test_sys_exit_in_a_function_does_not_end_the_worker(write):
    ref = write(
        "exit.py",
        """
        import sys

        def transform_events(events, settings):
            if events[0]["event"] == "exit":
                sys.exit(3)
            return events
        """,
    )
    with pytest.raises(FunctionError, match="raised SystemExit: 3"):
        run_function(ref, events("exit"))
    assert run_function(ref, events("ok")) == events("ok")


def test_a_worker_killed_mid_batch_is_reported_and_replaced(write):
    ref = write(
        "die.py",
        """
        import os

        def transform_events(events, settings):
            if events[0]["event"] == "die":
                os._exit(9)
            return events
        """,
    )
    with pytest.raises(FunctionError, match=r"exited \(code 9\) while running a batch"):
        run_function(ref, events("die"))
    assert run_function(ref, events("ok")) == events("ok")


def test_an_import_error_is_reported_with_its_traceback(write):
    ref = write(
        "imp.py",
        "import no_such_module_here\ndef transform_events(events, settings):\n    return events\n",
    )
    with pytest.raises(
        FunctionError, match=r"importing imp\.py failed: ModuleNotFoundError"
    ) as caught:
        run_function(ref, events("x"))
    assert "no_such_module_here" in caught.value.traceback


def test_an_edited_file_is_picked_up(write):
    ref = write("edit.py", "def transform_events(events, settings):\n    return []\n")
    assert run_function(ref, events("x")) == []
    ref.path.write_text("def transform_events(events, settings):\n    return events\n")
    stat = ref.path.stat()
    os.utime(ref.path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert run_function(ref, events("x")) == events("x")


def test_functions_may_import_helpers_next_to_them(write):
    write("helpers.py", "def tag(event):\n    return {**event, 'tagged': True}\n")
    ref = write(
        "uses.py",
        "from helpers import tag\ndef transform_events(events, settings):\n    return [tag(e) for e in events]\n",
    )
    assert run_function(ref, events("x"))[0]["tagged"] is True


def test_an_empty_batch_never_starts_a_worker(tmp_path):
    assert run_function(FunctionRef(path=tmp_path / "missing.py"), []) == []


def test_check_function(write, tmp_path):
    assert (
        check_function(
            write("good.py", "def transform_events(events, settings):\n    return events\n")
        )
        is None
    )
    assert check_function(write("alias.py", "from json import loads as transform_events\n")) is None
    assert (
        check_function(FunctionRef(path=tmp_path / "functions" / "nope.py"))
        == "functions/nope.py: file not found"
    )
    assert check_function(
        write("syntax.py", "def transform_events(events, settings)\n    return events\n")
    ) == ("functions/syntax.py:1:39: syntax error: expected ':'")
    assert check_function(write("none.py", "def transform(events):\n    return events\n")) == (
        "functions/none.py: defines no function transform_events(events, settings)"
    )
    assert "must be a plain def" in str(
        check_function(write("async.py", "async def transform_events(e, s):\n    return e\n"))
    )


def test_workers_of_one_file_with_different_settings_are_separate(write):
    source = "def transform_events(events, settings):\n    return [dict(e, label=settings['label']) for e in events]\n"
    first = write("label.py", source, settings={"label": "a"})
    second = FunctionRef(path=Path(first.path), settings={"label": "b"})
    assert run_function(first, events("x"))[0]["label"] == "a"
    assert run_function(second, events("x"))[0]["label"] == "b"
