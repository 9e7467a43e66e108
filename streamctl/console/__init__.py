"""The web console: Overview, Syncs, Errors, Debugger and Alerts (docs/console.md).

    console = Console(ConsoleSource(lambda: project, store_path, live=True),
                      ConsoleAccess.for_host(host, token))
    app = console.mount(ingest_app)           # what `streamctl run` serves

`streamctl console` serves it from the store alone; `streamctl report --html` renders
its Overview and Errors into one file (streamctl.console.report).
"""

from __future__ import annotations

from streamctl.console.app import Console, ConsoleAccess, ConsoleSource, keep_rolling_up

__all__ = ["Console", "ConsoleAccess", "ConsoleSource", "keep_rolling_up"]
