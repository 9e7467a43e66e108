"""Consoles for the CLI: people read stderr, programs read stdout (SPEC §3)."""

from __future__ import annotations

from rich.console import Console

stderr = Console(stderr=True)
stdout = Console(highlight=False)
