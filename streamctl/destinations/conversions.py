"""What the ad platforms' server-side conversion APIs share (Meta, TikTok, Snapchat, Pinterest, Reddit).

    hashed_user(mapped.user, META_USER_DATA, "meta", as_list=True)   # plain PII hashed
    context_defaults(event)      # {"ip": ..., "user_agent": ..., "page_url": ..., "email": ...}
    user_with_defaults(found, {"em": "email"}, mapped.user, META_USER_DATA, "meta")
    epoch_seconds(payload, "event_time", "meta")   # ISO 8601 or epoch -> Unix seconds
    time_and_id_defaults(payload, event, "meta")   # event_time <- timestamp, event_id <- messageId
    money_problems(custom_data, "Purchase")        # a value that is no number, a bad currency
    event_age_problem(seconds, 7)                  # "... older than 7 days" or None

Every one of these APIs matches people on the same few identifiers (email, phone,
external id, IP, user agent, click ids) that the browser already sent to the pixel,
and wants personal ones SHA-256-hashed after normalisation (`hashing.py`). A value
the normaliser refuses (a phone without digits) becomes a MappingError naming the
field, so the event is a `mapping_error` and its plain value is never stored in a
payload nor sent.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from typing import Any

from streamctl.core.errors import MappingError
from streamctl.core.events import Event
from streamctl.core.timestamps import TimestampError, parse_timestamp
from streamctl.destinations.base import EventTypeSpec, FieldSpec, Payload
from streamctl.destinations.hashing import IdentityFormatError, hash_fields

DAY = 86_400


def hashed_user(
    user: Mapping[str, Any], kinds: Mapping[str, str], vendor: str, *, as_list: bool = False
) -> dict[str, Any]:
    """The user section with every field of `kinds` normalised and hashed (64-hex values kept)."""
    try:
        return hash_fields(user, kinds, as_list=as_list)
    except IdentityFormatError as exc:
        msg = f"{vendor}: user {exc}"
        raise MappingError(msg, field="user") from None


def context_defaults(event: Event) -> dict[str, Any]:
    """What a Segment-shaped event says about the person and the page, for identity defaults."""
    context = event.get("context")
    context = context if isinstance(context, dict) else {}
    page = context.get("page")
    page = page if isinstance(page, dict) else {}
    traits = event.get("traits") if event.get("type") == "identify" else None
    traits = traits if isinstance(traits, dict) else context.get("traits")
    traits = traits if isinstance(traits, dict) else {}
    properties = event.get("properties")
    properties = properties if isinstance(properties, dict) else {}
    found = {
        "ip": context.get("ip"),
        "user_agent": context.get("userAgent"),
        "page_url": page.get("url") or properties.get("url"),
        "referrer": page.get("referrer"),
        "locale": context.get("locale"),
        "email": traits.get("email"),
        "phone": traits.get("phone"),
        "user_id": event.get("userId"),
        "anonymous_id": event.get("anonymousId"),
    }
    return {key: value for key, value in found.items() if value not in (None, "")}


def epoch_seconds(payload: Payload, key: str, vendor: str) -> None:
    """`payload[key]` (ISO 8601 or epoch seconds/milliseconds) as Unix seconds, in place."""
    if payload.get(key) is None:
        return
    try:
        payload[key] = int(parse_timestamp(payload[key]).timestamp())
    except TimestampError as exc:
        msg = f"{vendor}: `{key}`: {exc}"
        raise MappingError(msg, field=key) from None


def time_and_id_defaults(
    payload: Payload, event: Event, vendor: str, time_key: str = "event_time"
) -> None:
    """`payload[time_key]` from the event's timestamp unless mapped, as Unix seconds, and
    `event_id` (the vendor's deduplication with its pixel) from its messageId, in place."""
    payload.setdefault(time_key, event.get("timestamp"))
    epoch_seconds(payload, time_key, vendor)
    if event.get("messageId") is not None:
        payload.setdefault("event_id", str(event["messageId"]))


def event_time_problem(payload: Payload) -> str | None:
    """Why the payload's `event_time` (APIs that state no age limit) is unusable, or None."""
    if isinstance(payload.get("event_time"), int):
        return None
    return "the event has no `event_time` (map one, or send events with a timestamp)"


def event_age_problem(seconds: Any, max_days: int, now: float | None = None) -> str | None:
    """Why an event time the vendor refuses by age is refused, or None."""
    if not isinstance(seconds, int):
        return (
            f"the event time {seconds!r} is not Unix seconds (map event_time, or send a timestamp)"
        )
    age = (time.time() if now is None else now) - seconds
    if age > max_days * DAY:
        return f"the event is {age / DAY:.1f} days old; the API refuses events older than {max_days} days"
    return None


def unknown_keys(section: Mapping[str, Any], known: frozenset[str], where: str) -> str | None:
    """A message naming the keys of `section` the vendor does not define, or None."""
    unknown = sorted(set(section) - known)
    if not unknown:
        return None
    return f"{where} has no field {', '.join(map(repr, unknown))}; its fields: {', '.join(sorted(known))}"


def event_type_spec(
    name: str,
    description: str,
    required: tuple[FieldSpec, ...],
    optional: tuple[FieldSpec, ...],
    user_keys: tuple[str, ...] = (),
) -> EventTypeSpec:
    """An event type whose optional fields are `optional` less the ones it requires."""
    named = {spec.name for spec in required}
    return EventTypeSpec(
        name,
        description,
        required=required,
        optional=tuple(spec for spec in optional if spec.name not in named),
        user_keys=user_keys,
    )


def user_with_defaults(
    found: Mapping[str, Any],
    defaults: Mapping[str, str],
    user: Mapping[str, Any],
    kinds: Mapping[str, str],
    vendor: str,
    *,
    as_list: bool = True,
) -> dict[str, Any]:
    """The mapped user fields over defaults from the event (`defaults`: the vendor's user
    key -> the `context_defaults` key it comes from), nulls left out, hashed (as arrays,
    or single values when not `as_list`)."""
    merged = {key: found[source] for key, source in defaults.items() if source in found}
    merged.update({key: value for key, value in user.items() if value is not None})
    return hashed_user(merged, kinds, vendor, as_list=as_list)


def money_problems(data: Mapping[str, Any], event_name: str) -> list[str]:
    """What a purchase's `value` and `currency` lack: a number (or numeric text, as Snap
    and Pinterest take it), an ISO 4217 code."""
    problems = []
    value = data.get("value")
    if not _is_amount(value):
        problems.append(f"{event_name} events need a numeric `value`, got {value!r}")
    currency = data.get("currency")
    if not (isinstance(currency, str) and len(currency) == 3 and currency.isalpha()):
        problems.append(
            f"{event_name} events need an ISO 4217 `currency` (e.g. USD), got {currency!r}"
        )
    return problems


def _is_amount(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return False
    try:
        return math.isfinite(float(value))
    except ValueError:
        return False


MONEY_FIELDS = (
    FieldSpec("value", "number", "order value"),
    FieldSpec("currency", "string", "ISO 4217"),
)


def conversion_event_types(
    event_names: Mapping[str, str],
    optional: tuple[FieldSpec, ...],
    custom: FieldSpec,
    custom_description: str,
    *,
    user_keys: Iterable[str],
    money: tuple[FieldSpec, ...] = MONEY_FIELDS,
    custom_optional: tuple[FieldSpec, ...] = (),
) -> tuple[EventTypeSpec, ...]:
    """A catalog's event types from its vendor's names: `purchase` requires the `money`
    fields, the others nothing, and `custom` names its event with the `custom` field;
    every type's `user` section takes `user_keys` only."""
    keys = tuple(sorted(user_keys))
    types = [
        event_type_spec(
            name,
            f"{vendor_name}: {' and '.join(f.name for f in money)} required"
            if name == "purchase"
            else vendor_name,
            money if name == "purchase" else (),
            optional,
            keys,
        )
        for name, vendor_name in event_names.items()
    ]
    types.append(
        event_type_spec("custom", custom_description, (custom,), custom_optional + optional, keys)
    )
    return tuple(types)
