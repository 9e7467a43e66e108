"""An event function: batch in, batch out.

Use it from a sync with `function: functions/enrich.py`. Return an event modified,
leave it out to drop it, return several to split it. `settings` is the sync's
`function_settings` mapping.
"""

from typing import Any


def transform_events(
    events: list[dict[str, Any]], settings: dict[str, Any]
) -> list[dict[str, Any]]:
    for event in events:
        traits = event.get("context", {}).get("traits", {})
        if isinstance(traits.get("email"), str):
            traits["email"] = traits["email"].strip().lower()
    return events
