"""Every module of the package imports. mypy is configured with ignore_missing_imports
(for third-party packages without types), so it says nothing about an import of a
streamctl module that no longer exists (a merge across a rename): this does."""

from __future__ import annotations

import importlib
import pkgutil

import streamctl


def test_every_streamctl_module_imports() -> None:
    failures = {}
    for module in pkgutil.walk_packages(streamctl.__path__, "streamctl."):
        if module.name.endswith("__main__"):
            continue  # runs the CLI
        try:
            importlib.import_module(module.name)
        except Exception as exc:  # every failure listed, not only the first
            failures[module.name] = repr(exc)
    assert failures == {}
