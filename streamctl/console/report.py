"""`streamctl report --html FILE`: the Overview and Errors as one self-contained file.

    with closing(open_console_store(project)) as store:    # SQLite or PostgreSQL
        html = render_report(project, store, since=time.time() - 86400)

Charts included: uPlot, the console's script and styles are inlined, the data sits in
the page, so the file opens anywhere (an incident ticket, a laptop offline) and makes
no request at all. The store's rollups are brought up to date first.
"""

from __future__ import annotations

import time

from streamctl.config.secrets import redact
from streamctl.console import views
from streamctl.console.app import STATIC, templates
from streamctl.core.model import Project
from streamctl.core.timestamps import iso
from streamctl.store.base import ConsoleStore
from streamctl.store.queries import ErrorFilter

BUCKETS = {60: "minute", 600: "10 minutes", 3600: "hour"}


def render_report(
    project: Project, store: ConsoleStore, since: float, now: float | None = None
) -> str:
    now = time.time() if now is None else now
    store.refresh_rollups(now)
    window = views.window_for(now - since)
    data = views.overview(store, project, window, None)
    rows = views.errors(store, project, ErrorFilter(since=since))
    inline = {
        "uplot_css": (STATIC / "uPlot-1.6.32.min.css").read_text(),
        "console_css": (STATIC / "console.css").read_text(),
        "uplot_js": (STATIC / "uPlot-1.6.32.iife.min.js").read_text(),
        "console_js": (STATIC / "console.js").read_text(),
    }
    html = (
        templates()
        .get_template("report.html")
        .render(
            inline=inline,
            csrf="",
            path="",
            live=False,
            project_name=project.root.name,
            data=data,
            rows=rows,
            bucket=BUCKETS[window.width],
            generated=iso(now),
        )
    )
    return redact(html, project.secrets)
