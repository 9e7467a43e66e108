"""An event function: batch in, batch out.

Use it from a sync with `function: functions/enrich.py`. Return an event modified,
leave it out to drop it, return several to split it. `settings` is the sync's
`function_settings` mapping.
"""


def transform_events(events: list[dict], settings: dict) -> list[dict]:
    for event in events:
        traits = event.get("context", {}).get("traits", {})
        if isinstance(traits.get("email"), str):
            traits["email"] = traits["email"].strip().lower()
    return events
