"""`${ENV_NAME}` and `${ENV_NAME:-default}` in any string value of a project file.

    result = interpolate("Bearer ${TOKEN}", {"TOKEN": "abc"})
    result.text       # "Bearer abc"
    result.secrets    # ("abc",)   values that came from the environment: never printed
    result.missing    # ()         variables with neither a value nor a default

`$${...}` is a literal `${...}`, for values that must keep the dollar sign.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

REFERENCE = re.compile(r"\$(\$?)\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass(frozen=True)
class Interpolated:
    text: str
    secrets: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    whole: bool = False  # the text was one reference and nothing else


def interpolate(text: str, env: Mapping[str, str]) -> Interpolated:
    """Replace every reference in `text` by its value from `env` (or its default)."""
    if "${" not in text:
        return Interpolated(text)
    secrets: list[str] = []
    missing: list[str] = []

    def substitute(match: re.Match[str]) -> str:
        escaped, name, default = match.group(1), match.group(2), match.group(3)
        if escaped:
            return match.group(0)[1:]
        value = env.get(name)
        if value is not None:
            secrets.append(value)
            return value
        if default is not None:
            return default
        missing.append(name)
        return ""

    whole = REFERENCE.fullmatch(text) is not None and not text.startswith("$$")
    return Interpolated(REFERENCE.sub(substitute, text), tuple(secrets), tuple(missing), whole)
