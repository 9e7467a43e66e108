"""Consoles for the CLI: people read stderr, programs read stdout (SPEC §3)."""

from __future__ import annotations

from rich.console import Console, RenderableType

# soft_wrap: a `path:line:col: message` line stays one line, whatever the terminal width.
stderr = Console(stderr=True, soft_wrap=True)
stdout = Console(highlight=False)


def table_console() -> Console:
    """stdout for tables: the terminal's width, or 200 columns when piped (never cut numbers)."""
    return stdout if stdout.is_terminal else Console(highlight=False, width=200)


def natural_width(renderable: RenderableType) -> int:
    """Columns a table takes when nothing is wrapped or squeezed (to pick a layout that fits)."""
    return Console(width=10_000).measure(renderable).maximum
