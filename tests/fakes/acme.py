"""`acme`: a made-up vendor destination with typed required fields, for config tests.

Registered only by the tests that need it (`monkeypatch.setitem(CATALOG, "acme", Acme)`),
so config checks are tested against a catalog that no real vendor module can change.
"""

from __future__ import annotations

from collections.abc import Sequence

from streamctl.destinations.base import (
    CatalogEntry,
    ConfigField,
    Destination,
    EventTypeSpec,
    FieldSpec,
    HttpRequest,
    Payload,
)


class AcmeDestination(Destination):
    catalog = CatalogEntry(
        type="acme",
        description="A made-up CRM.",
        docs="tests/fakes/acme.py",
        config=(
            ConfigField("api_key", "string", required=True, secret=True),
            ConfigField("base_url", "string", default="https://api.acme.test"),
        ),
        event_types=(
            EventTypeSpec(
                "purchase",
                required=(
                    FieldSpec("user_id", "string"),
                    FieldSpec("price", "number"),
                    FieldSpec("currency", "string"),
                ),
                optional=(FieldSpec("quantity", "integer"),),
                user_fields=False,
            ),
            EventTypeSpec("custom", required=(FieldSpec("name", "string"),)),
        ),
        batch_size=50,
        max_batch_size=100,
    )

    def build_request(self, event_type: str, payloads: Sequence[Payload]) -> HttpRequest:
        url = f"{self.config['base_url']}/track"
        return HttpRequest(
            "POST", url, {"Authorization": f"Bearer {self.config['api_key']}"}, list(payloads)
        )
