"""The server-event shape Meta, Snapchat (v3) and Pinterest share, with each vendor's facts as data.

All three take a `data` array of events shaped like Meta's Conversions API:

    {"event_name": "Purchase", "event_time": 1796304437, "event_id": "<messageId>",
     "action_source": "website", "event_source_url": "https://...",
     "user_data": {"em": ["<sha256>"], "ph": ["<sha256>"], "client_ip_address": "...", ...},
     "custom_data": {"value": 42.5, "currency": "EUR", ...}}

and differ in names and rules, which a subclass states as class attributes (`meta.py`,
`snapchat.py`, `pinterest.py`): the event names of the catalog's event types, the
`action_source` values and which one means a website, which `user_data` keys are
hashed and how (`hashing.py` kinds), which are sent as they are, which event fields
stay at the top level (the rest of the `required` section goes to `custom_data`), the
oldest event the API takes, and what the API needs to match a person. A subclass adds
its URL, auth and response classification.

Mapping sections: `required` holds the event's fields, `user` is `user_data` (plain
identifiers hashed here, sent as arrays), `properties` are extra `custom_data` (nulls
left out). Defaults when not mapped: `event_id` <- messageId, `event_time` <-
timestamp, `action_source` <- the config's, `event_source_url` <- context.page.url
(website events), and the `user_data` keys of `USER_DEFAULTS` from the event's context
(IP, user agent, userId, the traits' email and phone).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from streamctl.core.events import Event
from streamctl.destinations.base import Destination, MappedEvent, Payload
from streamctl.destinations.conversions import (
    context_defaults,
    event_age_problem,
    event_time_problem,
    money_problems,
    time_and_id_defaults,
    unknown_keys,
    user_with_defaults,
)


class ServerEventsDestination(Destination):
    """A Meta-shaped server-events API; subclasses fill in the vendor's facts."""

    embeds_payloads = True  # the body is the payloads serialised as they are

    VENDOR: ClassVar[str]
    EVENT_NAMES: ClassVar[Mapping[str, str]]  # catalog event type -> event_name
    KNOWN_EVENT_NAMES: ClassVar[frozenset[str]] = frozenset()  # empty: any name
    ACTION_SOURCES: ClassVar[tuple[str, ...]]
    WEB_SOURCE: ClassVar[str]  # the action_source of website events
    USER_KINDS: ClassVar[Mapping[str, str]]  # hashed user_data key -> hashing kind
    PLAIN_USER_KEYS: ClassVar[frozenset[str]]  # user_data keys sent as they are
    # user_data key -> the context_defaults key it defaults to (the same for all three).
    USER_DEFAULTS: ClassVar[Mapping[str, str]] = {
        "client_ip_address": "ip",
        "client_user_agent": "user_agent",
        "external_id": "user_id",
        "em": "email",
        "ph": "phone",
    }
    WEB_REQUIRED_USER_KEYS: ClassVar[tuple[str, ...]] = ()
    # The user_data keys of which one lets the vendor match a person, besides IP and
    # user agent together; empty: any parameter at all (Meta). `MATCH_NAME` says whose.
    MATCH_KEYS: ClassVar[tuple[str, ...]] = ()
    MATCH_NAME: ClassVar[str] = ""
    TOP_LEVEL: ClassVar[frozenset[str]]  # required-section keys kept beside event_name
    PURCHASE_EVENT: ClassVar[str]  # the event_name that needs value and currency
    MAX_AGE_DAYS: ClassVar[int | None]  # None: the API states no age limit

    # -- shaping -----------------------------------------------------------------

    def build_payload(self, event_type: str, mapped: MappedEvent, event: Event) -> Payload:
        fields = dict(mapped.required)
        found = context_defaults(event)
        name = fields.pop("event_name", None) or self.EVENT_NAMES.get(event_type)
        payload: Payload = {"event_name": name}
        custom_data: Payload = {}
        for key, value in fields.items():
            if value is not None:
                (payload if key in self.TOP_LEVEL else custom_data)[key] = value
        custom_data.update({k: v for k, v in mapped.properties.items() if v is not None})
        time_and_id_defaults(payload, event, self.VENDOR)
        payload.setdefault("action_source", self.config.get("action_source") or self.WEB_SOURCE)
        if payload["action_source"] == self.WEB_SOURCE and "page_url" in found:
            payload.setdefault("event_source_url", found["page_url"])
        payload["user_data"] = user_with_defaults(
            found, self.USER_DEFAULTS, mapped.user, self.USER_KINDS, self.VENDOR
        )
        if custom_data:
            payload["custom_data"] = self.shape_custom_data(custom_data)
        return payload

    def shape_custom_data(self, custom_data: Payload) -> Payload:
        """The vendor's own types for custom_data values (Pinterest wants `value` as text)."""
        return custom_data

    def check_payload(self, event_type: str, payload: Payload) -> str | None:
        problems = [*self._event_problems(payload), *self._user_problems(payload)]
        if payload.get("event_name") == self.PURCHASE_EVENT:
            problems.extend(money_problems(payload.get("custom_data") or {}, self.PURCHASE_EVENT))
        return f"{self.VENDOR}: " + "; ".join(problems) if problems else None

    def max_age_days(self, action_source: Any) -> int | None:
        return self.MAX_AGE_DAYS

    def _event_problems(self, payload: Payload) -> list[str]:
        problems = []
        name = payload.get("event_name")
        if not isinstance(name, str) or not name:
            problems.append(f"`event_name` must be a non-empty string, got {name!r}")
        elif self.KNOWN_EVENT_NAMES and name not in self.KNOWN_EVENT_NAMES:
            problems.append(
                f"`event_name` {name!r} is not one of {', '.join(sorted(self.KNOWN_EVENT_NAMES))}"
            )
        source = payload.get("action_source")
        if source not in self.ACTION_SOURCES:
            problems.append(
                f"`action_source` {source!r} is not one of {', '.join(self.ACTION_SOURCES)}"
            )
        max_days = self.max_age_days(source)
        if max_days is not None:
            too_old = event_age_problem(payload.get("event_time"), max_days)
            if too_old:
                problems.append(too_old)
        elif no_time := event_time_problem(payload):
            problems.append(no_time)
        if source == self.WEB_SOURCE and not payload.get("event_source_url"):
            problems.append("website events need `event_source_url`")
        return problems

    def _user_problems(self, payload: Payload) -> list[str]:
        user_data: Mapping[str, Any] = payload.get("user_data") or {}
        problems = []
        unknown = unknown_keys(
            user_data, frozenset(self.USER_KINDS) | self.PLAIN_USER_KEYS, "user_data"
        )
        if unknown:
            problems.append(unknown)
        if payload.get("action_source") == self.WEB_SOURCE:
            problems.extend(
                f"website events need `{key}`"
                for key in self.WEB_REQUIRED_USER_KEYS
                if not user_data.get(key)
            )
        identity = self.identity_problem(user_data)
        if identity:
            problems.append(identity)
        return problems

    def identity_problem(self, user_data: Mapping[str, Any]) -> str | None:
        """Why the vendor could not match this person, or None."""
        if not self.MATCH_KEYS:
            if not user_data:
                return "`user_data` is empty; the API needs at least one customer information parameter"
            return None
        if any(user_data.get(key) for key in self.MATCH_KEYS):
            return None
        if user_data.get("client_ip_address") and user_data.get("client_user_agent"):
            return None
        keys = ", ".join(self.MATCH_KEYS)
        return f"{self.MATCH_NAME} matches on {keys}, or client_ip_address with client_user_agent; the event has none"
