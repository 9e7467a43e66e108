"""The one exception hierarchy of streamctl.

    StreamctlError
    ├── ConfigError          a project file is wrong (carries every Problem found)
    ├── SpecError            one YAML node cannot compile (a filter, mapping, template, schema)
    ├── UsageError           a command was called wrongly (exit code 2)
    ├── EventError           one event is malformed (bad JSON, no identity, too large)
    ├── ContractViolation    an event breaks its source's data contract
    ├── FunctionError        an event function raised, timed out or returned garbage
    ├── MappingError         a required field is missing or mistyped, a template failed
    ├── DeliveryError        a destination could not be reached or refused the data
    └── StoreError           the store could not be read or written
        └── StoreUnavailable the PostgreSQL store cannot be reached now

The CLI maps these to exit codes in exactly one place (`streamctl.cli.main`).
Messages never carry secret values: build them from names and redacted values
(`streamctl.config.secrets.redact`).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong with a project file, located as `path:line:col` (1-based)."""

    path: str
    line: int
    column: int
    message: str
    severity: Severity = "error"

    def __str__(self) -> str:
        tag = "" if self.severity == "error" else "warning: "
        return f"{self.path}:{self.line}:{self.column}: {tag}{self.message}"

    def as_json(self) -> dict[str, object]:
        return {
            "path": self.path,
            "line": self.line,
            "column": self.column,
            "message": self.message,
            "severity": self.severity,
        }


class StreamctlError(Exception):
    """Base of every error streamctl raises on purpose."""


class ConfigError(StreamctlError):
    """The project does not load; `problems` lists everything found, not only the first."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = sorted(problems)
        errors = [p for p in self.problems if p.severity == "error"]
        head = str(errors[0]) if errors else "invalid project"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(head + more)


class SpecError(StreamctlError):
    """A filter, mapping, template or schema node that cannot compile.

    `path` locates the offending node relative to the node being compiled, e.g.
    `("all", 1, "value")`, so the loader can point at its line and column.
    """

    def __init__(self, message: str, path: tuple[str | int, ...] = ()) -> None:
        self.path = path
        super().__init__(message)


class UsageError(StreamctlError):
    """A command was called with options that cannot work together."""


class EventError(StreamctlError):
    """One incoming event is malformed. `status_code` is the HTTP answer for the listener."""

    def __init__(self, message: str, status_code: int = 400) -> None:
        self.status_code = status_code
        super().__init__(message)


class ContractViolation(StreamctlError):
    """An event breaks its source's data contract and the contract blocks it."""


class FunctionError(StreamctlError):
    """An event function raised, timed out or returned something that is not a list of events."""

    def __init__(self, message: str, traceback: str = "") -> None:
        self.traceback = traceback
        super().__init__(message)


class MappingError(StreamctlError):
    """A mapped field is missing, mistyped or its template failed; never retried."""

    def __init__(self, message: str, field: str = "") -> None:
        self.field = field
        super().__init__(message)


class DeliveryError(StreamctlError):
    """A destination could not be reached or refused a request."""


class StoreError(StreamctlError):
    """The store (SQLite or PostgreSQL) could not be opened, migrated, read or written."""


class StoreUnavailable(StoreError):
    """The PostgreSQL store cannot be reached now (down, restarting, network): worth
    trying again later, unlike a refused statement. The listener answers 503."""


def suggest(word: str, choices: Iterable[str]) -> str:
    """` (did you mean 'filter'?)` when a choice is close to `word`, else ``."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
