"""Event functions: `transform_events(events, settings) -> events` (SPEC §2 "functions/NAME.py").

TODO(issue 3): loading, running with a timeout that really stops a hung function,
errors as FunctionError with the traceback.
"""

from __future__ import annotations

from streamctl.config.model import FunctionRef
from streamctl.events import Event


def check_function(ref: FunctionRef) -> str | None:
    """Why the file cannot serve as a function (missing, syntax error, no transform_events), or None."""
    raise NotImplementedError


def run_function(ref: FunctionRef, events: list[Event]) -> list[Event]:
    """Run the function on one batch; raises FunctionError (message + traceback)."""
    raise NotImplementedError
