"""A small but complete project on disk for the preview and test CLI tests.

web source with contract `web` (Order Completed: order_id + total >= 0; unknown keys omitted)
sync orders-to-hook: function enrich.py (drops "Internal Ping", raises on "Crash"),
    `purchase` for Order Completed, `custom` for Signed Up; webhook with a secret header
sync everything-to-file: every event to a file destination
"""

from __future__ import annotations

import textwrap
from pathlib import Path

HOOK_TOKEN = "tok-5ecret-value"

FILES = {
    "streamctl.yaml": """
        version: 1
        sources:
          web:
            type: http
            write_keys: ["dev-key"]
            contract: web
        destinations:
          hook:
            type: webhook
            config:
              url: http://127.0.0.1:9/hook
              headers: { Authorization: "Bearer ${HOOK_TOKEN}" }
          local-file:
            type: file
            config: { path: out/events.ndjson }
    """,
    "contracts/web.yaml": """
        name: web
        events:
          - name: Order Completed
            on_violation: block
            on_undeclared_fields: omit
            properties:
              type: object
              required: [order_id, total]
              properties:
                order_id: { type: string }
                total: { type: number, minimum: 0 }
                currency: { type: string }
          - name: Signed Up
            properties: { type: object, properties: { plan: { type: string } } }
    """,
    "functions/enrich.py": """
        def transform_events(events, settings):
            out = []
            for event in events:
                if event.get("event") == "Internal Ping":
                    continue
                if event.get("event") == "Crash":
                    raise RuntimeError("cannot enrich " + event["messageId"])
                event.setdefault("context", {})["team"] = settings["team"]
                out.append(event)
            return out
    """,
    "syncs/orders-to-hook.yaml": """
        source: web
        destination: hook
        function: { path: functions/enrich.py, settings: { team: growth } }
        event_types:
          - type: custom
            filter: { field: event, op: eq, value: Order Completed }
            mappings:
              required:
                kind: { static: purchase }
                user_id: { field: userId }
                order_id: { field: properties.order_id }
                total: { template: "{{ row.properties.total | cast: 'number' }}" }
                team: { field: context.team }
              properties:
                currency: { field: properties.currency }
          - type: custom
            filter: { field: event, op: eq, value: Signed Up }
            mappings:
              required:
                kind: { static: signup }
                user_id: { field: userId }
                plan: { template: "{{ row.properties.plan | upcase }}" }
                seats: { template: "{{ row.properties.seats | cast: 'integer' }}" }
    """,
    "syncs/everything-to-file.yaml": """
        source: web
        destination: local-file
        event_types:
          - type: custom
            mappings:
              required:
                event: { field: event }
                at: { field: timestamp }
    """,
}


def write_sample_project(root: Path, extra: dict[str, str] | None = None) -> Path:
    for relative, text in {**FILES, **(extra or {})}.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    return root
