"""The worker process that runs one function file: `python -m streamctl.functions.worker PATH DUMP`.

It imports the file once, then answers one frame per batch (see `protocol`). Running
user code in its own process is what lets the parent really stop a function that
hangs (kill the process) and keeps a crashing function from taking the pipeline down.

The protocol travels on private copies of stdin/stdout: the function's own `print`
goes to stderr and its `input()` reads nothing. On SIGUSR1 the worker writes the
stack of whatever it is running to DUMP, so a timeout can say where it was stuck.
"""

from __future__ import annotations

import faulthandler
import importlib.util
import inspect
import os
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from streamctl.functions.protocol import WorkerGone, read_frame, write_frame

ENTRY_POINT = "transform_events"


def main(argv: list[str]) -> int:
    path, dump_path = Path(argv[1]), argv[2]
    proto_in, proto_out = _private_pipes()
    with open(dump_path, "w") as dump:  # faulthandler needs a real file object
        if hasattr(signal, "SIGUSR1"):
            faulthandler.register(signal.SIGUSR1, file=dump, all_threads=False, chain=False)
        try:
            settings = read_frame(proto_in, None)["settings"]
        except WorkerGone:
            return 0
        try:
            transform = _load(path)
        except BaseException as exc:  # the module's own code failed while importing
            write_frame(
                proto_out, _error(f"importing {path.name} failed: {_describe(exc)}", exc), None
            )
            return 1
        call = _caller(transform, settings)
        write_frame(proto_out, {"ready": True}, None)
        return _serve(call, proto_in, proto_out)


def _serve(call: Callable[[list[Any]], Any], proto_in: int, proto_out: int) -> int:
    while True:
        try:
            request = read_frame(proto_in, None)
        except WorkerGone:
            return 0
        try:
            reply: dict[str, Any] = {"events": call(request["events"])}
        except BaseException as exc:  # SystemExit too: a function must not end its worker
            reply = _error(_describe(exc), exc)
        try:
            write_frame(proto_out, reply, None)
        except TypeError as exc:  # orjson cannot serialise what the function returned
            write_frame(proto_out, _error(f"returned a value that is not JSON: {exc}", None), None)
        except WorkerGone:
            return 0


def _load(path: Path) -> Callable[..., Any]:
    # Let a function import helpers that sit next to it (functions/common.py).
    sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(f"streamctl_function_{path.stem}", path)
    if spec is None or spec.loader is None:
        msg = f"cannot import {path}"
        raise ImportError(msg)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    transform = getattr(module, ENTRY_POINT, None)
    if not callable(transform):
        msg = f"{path.name} defines no callable {ENTRY_POINT}(events, settings)"
        raise TypeError(msg)
    return transform  # type: ignore[no-any-return]


def _caller(transform: Callable[..., Any], settings: Any) -> Callable[[list[Any]], Any]:
    """`transform(events, settings)`, or `transform(events)` for a function that takes no settings."""
    try:
        positional = [
            p for p in inspect.signature(transform).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
        ]  # fmt: skip
    except (TypeError, ValueError):
        positional = []
    if len(positional) == 1 and positional[0].kind is not inspect.Parameter.VAR_POSITIONAL:
        return lambda events: transform(events)
    return lambda events: transform(events, settings)


def _private_pipes() -> tuple[int, int]:
    proto_in, proto_out = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return proto_in, proto_out


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _error(message: str, exc: BaseException | None) -> dict[str, str]:
    if exc is None:
        return {"error": message, "traceback": ""}
    # Start the traceback at the user's code: the worker's own frames explain nothing.
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    return {"error": message, "traceback": "".join(traceback.format_exception(type(exc), exc, tb))}


if __name__ == "__main__":
    sys.exit(main(sys.argv))
