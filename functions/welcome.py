"""Keep only "Signed Up" events and add a greeting (syncs/signups-to-console.yaml).

streamctl calls `transform_events` with a batch of events and the sync's
`function_settings`; whatever it returns is what the sync goes on with: leave an
event out to drop it, return several to split one.
"""


def transform_events(events: list[dict], settings: dict) -> list[dict]:
    greeting = settings.get("greeting", "Welcome")
    kept = []
    for event in events:
        if event.get("type") != "track" or event.get("event") != "Signed Up":
            continue
        name = event.get("context", {}).get("traits", {}).get("email", event.get("userId"))
        event["properties"] = {**event.get("properties", {}), "greeting": f"{greeting}, {name}!"}
        kept.append(event)
    return kept
