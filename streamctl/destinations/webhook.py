"""`webhook`: any HTTP endpoint that takes JSON (SPEC §6).

One event type, `custom`, with an open field list. With the default batch size of 1
the body is the payload object; when the sync's `delivery.batch_size` is larger the
body is a JSON array of payload objects, even for a batch of one (the loader sets
`array_body` from the syncs that deliver here).

    destinations:
      audit:
        type: webhook
        config: { url: "https://hooks.example.com/events", headers: { Authorization: "Bearer ${TOKEN}" } }
"""

from __future__ import annotations

from collections.abc import Sequence

import httpx

from streamctl.destinations.base import (
    BatchResult,
    CatalogEntry,
    ConfigField,
    Destination,
    EventTypeSpec,
    HttpRequest,
    Payload,
)

GENERIC_CUSTOM = EventTypeSpec(
    name="custom",
    description="Any JSON object: the required section's fields at the top level, "
    '`user` under "user" and `properties` under "properties".',
    open_fields=True,
)


class WebhookDestination(Destination):
    embeds_payloads = True  # the body is the payloads serialised as they are
    catalog = CatalogEntry(
        type="webhook",
        description="Generic HTTP: POST each payload (or a JSON array of payloads) to a URL.",
        docs="docs/configuration.md#generic-destinations",
        config=(
            ConfigField("url", "string", required=True, description="Where requests go."),
            ConfigField("method", "string", default="POST", description="HTTP method."),
            ConfigField(
                "headers",
                "object",
                secret=True,
                description="Extra request headers; values are secrets (tokens, signatures).",
            ),
            ConfigField(
                "array_body",
                "boolean",
                description="Body is a JSON array of payloads, even of one. Default: set when "
                "the syncs delivering here have delivery.batch_size > 1.",
            ),
            ConfigField(
                "timeout",
                "number",
                description="Seconds per request (default: the sync's delivery.timeout).",
            ),
        ),
        event_types=(GENERIC_CUSTOM,),
        batch_size=1,
        max_batch_size=1000,
    )

    def build_request(self, event_type: str, payloads: Sequence[Payload]) -> HttpRequest:
        headers = {"Content-Type": "application/json", **dict(self.config.get("headers") or {})}
        # Unbatched syncs send the plain object most webhook receivers expect; batching
        # syncs always send an array, even when a batch happens to hold one payload.
        array = self.config.get("array_body")
        single = len(payloads) == 1 and not array
        body: object = payloads[0] if single else list(payloads)
        return HttpRequest(
            str(self.config["method"]).upper(), str(self.config["url"]), headers, json=body
        )

    async def send(
        self,
        client: httpx.AsyncClient,
        event_type: str,
        payloads: Sequence[Payload],
        timeout: float = 30.0,
    ) -> BatchResult:
        configured = self.config.get("timeout")
        return await super().send(client, event_type, payloads, float(configured or timeout))
