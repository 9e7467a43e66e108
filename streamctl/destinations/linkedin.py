"""LinkedIn Conversions API: conversions streamed to a conversion rule, matched by hashed email.

Follows LinkedIn's Conversions API documentation
(https://learn.microsoft.com/en-us/linkedin/marketing/integrations/ads-reporting/conversions-api):

- `POST https://api.linkedin.com/rest/conversionEvents` with `Authorization: Bearer
  <OAuth 2.0 access token>` (scope `rw_conversions`, granted by a member with a role
  on the ad account), `LinkedIn-Version: YYYYMM` and `X-Restli-Protocol-Version:
  2.0.0` on every request. Many events in one request: `X-RestLi-Method:
  BATCH_CREATE` and `{"elements": [...]}`; the answer names each element's outcome in
  order, `{"elements": [{"status": 201}, {"status": 400, "error": {...}}]}`, so only
  the refused ones are archived.
- An element: `conversion` (the rule's URN, `urn:lla:llaPartnerConversion:{id}`),
  `conversionHappenedAt` (epoch milliseconds, within the past 90 days),
  `conversionValue` `{"currencyCode", "amount"}` (the amount as a string; mapped as
  `value` and `currency`, as for the other conversion APIs), `eventId`
  (deduplicates against the Insight Tag; default: the messageId), and `user`:
  `userIds` `[{"idType", "idValue"}]` with `SHA256_EMAIL` (the SHA-256 of the
  lowercased, trimmed email: hashed here when it arrives in plain text),
  `LINKEDIN_FIRST_PARTY_ADS_TRACKING_UUID` (the `li_fat_id` click id), `ACXIOM_ID`,
  `ORACLE_MOAT_ID`, `PLAINTEXT_IP_ADDRESS`, `GOOGLE_AID`; and `userInfo`
  `{"firstName", "lastName", "companyName", "title", "countryCode"}`.
- Limits, from Salesforce's LinkedIn CAPI connector page (LinkedIn's own page was not
  read for them), https://developer.salesforce.com/docs/data/data-cloud-int/guide/c360-a-linkedincapi-connector.html:
  up to 5,000 events per batch, 600 requests per minute, 300,000 per day; events
  older than 90 days are rejected (Segment's action checks the same 90 days).

Segment's LinkedIn Conversions action (segmentio/action-destinations,
destinations/linkedin-conversions/api/index.ts, functions.ts, constants.ts) was read
for the element shape, the id types, the email normalisation (lowercase) and the
rule "at least one user identifier"; its `versioning-info.ts` for the version
(202505). The batch answer's shape comes from LinkedIn's Postman collection as
published by qodex.ai ("Stream multiple conversion events": `{"elements":
[{"status": 201}, ...]}`); an element's error object follows Rest.li's batch format.

Event types name the conversion rule's type (purchase, lead, sign up, ...): LinkedIn
knows the type from the rule, so every type shares one shape and the mapping names
the rule's id in `conversion`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from streamctl.core.errors import MappingError
from streamctl.core.events import Event
from streamctl.destinations.base import (
    BatchResult,
    CatalogEntry,
    ConfigField,
    Destination,
    EventTypeSpec,
    FieldSpec,
    HttpRequest,
    ItemResult,
    ItemStatus,
    MappedEvent,
    Payload,
    excerpt,
    is_retryable_status,
    parse_retry_after,
)
from streamctl.destinations.conversions import MONEY_FIELDS, event_age_problem, money_problems
from streamctl.destinations.hashing import IdentityFormatError, hash_identity
from streamctl.destinations.timestamps import epoch_millis
from streamctl.destinations.vendor import base_url, json_object, whole_batch_outcome

HOST = "https://api.linkedin.com/rest"
API_VERSION = "202505"
RULE_URN = "urn:lla:llaPartnerConversion:"
MAX_EVENTS = 5000
MAX_AGE_DAYS = 90
# Mapped field -> LinkedIn's idType; `email` is hashed for the user.
ID_TYPES = {
    "email": "SHA256_EMAIL",
    "li_fat_id": "LINKEDIN_FIRST_PARTY_ADS_TRACKING_UUID",
    "acxiom_id": "ACXIOM_ID",
    "oracle_moat_id": "ORACLE_MOAT_ID",
    "ip_address": "PLAINTEXT_IP_ADDRESS",
    "google_aid": "GOOGLE_AID",
}
USER_INFO = {
    "first_name": "firstName",
    "last_name": "lastName",
    "company_name": "companyName",
    "title": "title",
    "country_code": "countryCode",
}
FIELDS = (
    FieldSpec("email", "string", "plain or SHA-256: sent as SHA256_EMAIL (hashed here)"),
    FieldSpec("li_fat_id", "string", "LinkedIn's click id (first-party ads tracking UUID)"),
    FieldSpec("acxiom_id", "string", "Acxiom id"),
    FieldSpec("oracle_moat_id", "string", "Oracle Moat id"),
    FieldSpec("ip_address", "string", "the visitor's IP address"),
    FieldSpec("google_aid", "string", "Google advertising id"),
    FieldSpec("first_name", "string", "userInfo.firstName (with last_name)"),
    FieldSpec("last_name", "string", "userInfo.lastName (with first_name)"),
    FieldSpec("company_name", "string", "userInfo.companyName"),
    FieldSpec("title", "string", "userInfo.title (job title)"),
    FieldSpec("country_code", "string", "userInfo.countryCode, ISO 3166-1 alpha-2"),
    *MONEY_FIELDS,  # value and currency, named as the other conversion APIs name them
    FieldSpec("event_id", "string", "deduplication id; default: the messageId"),
)


def _conversion_type(name: str, rule_type: str) -> EventTypeSpec:
    return EventTypeSpec(
        name,
        f"a conversion of a {rule_type} rule",
        required=(
            FieldSpec("conversion", "string", "the conversion rule's id (or its URN)"),
            FieldSpec("conversionHappenedAt", "string", "when (within 90 days); epoch ms sent"),
        ),
        optional=FIELDS,
        user_fields=False,
        properties=False,
    )


class LinkedInDestination(Destination):
    catalog = CatalogEntry(
        type="linkedin",
        description="LinkedIn Conversions API: conversions to a rule, matched by hashed email.",
        docs="https://learn.microsoft.com/en-us/linkedin/marketing/integrations/ads-reporting/conversions-api",
        config=(
            ConfigField(
                "access_token",
                required=True,
                secret=True,
                description="OAuth 2.0 access token with rw_conversions (Authorization: Bearer)",
            ),
            ConfigField("api_version", default=API_VERSION, description="LinkedIn-Version YYYYMM"),
            ConfigField("base_url", description="replaces https://api.linkedin.com/rest (tests)"),
        ),
        event_types=(
            _conversion_type("purchase", "PURCHASE"),
            _conversion_type("lead", "LEAD"),
            _conversion_type("sign_up", "SIGN_UP"),
            _conversion_type("add_to_cart", "ADD_TO_CART"),
            _conversion_type("key_page_view", "KEY_PAGE_VIEW"),
            _conversion_type("custom", "OTHER (or any other type)"),
        ),
        batch_size=100,
        max_batch_size=MAX_EVENTS,
        # 600 requests per minute is 10 per second; counted in events of batches of 100.
        rate_limit=1000.0,
        identity="one of email (hashed), li_fat_id, acxiom_id, oracle_moat_id, ip_address, google_aid",
    )

    # -- shaping -----------------------------------------------------------------

    def build_payload(self, event_type: str, mapped: MappedEvent, event: Event) -> Payload:
        fields = {k: v for k, v in mapped.required.items() if v is not None and v != ""}
        rule = str(fields.get("conversion", ""))
        element: Payload = {
            "conversion": rule if rule.startswith("urn:") else RULE_URN + rule,
            "conversionHappenedAt": epoch_millis(
                fields.get("conversionHappenedAt"), field="conversionHappenedAt"
            ),
        }
        if "value" in fields:
            element["conversionValue"] = {
                "currencyCode": str(fields.get("currency") or "USD"),
                "amount": str(fields["value"]),
            }
        event_id = fields.get("event_id") or event.get("messageId")
        if event_id:
            element["eventId"] = str(event_id)
        user: Payload = {"userIds": _user_ids(fields)}
        info = {USER_INFO[k]: str(v) for k, v in fields.items() if k in USER_INFO}
        if info:
            user["userInfo"] = info
        element["user"] = user
        return element

    def check_payload(self, event_type: str, payload: Payload) -> str | None:
        problems = []
        if payload["conversion"] == RULE_URN:
            problems.append("`conversion` (the conversion rule's id) is empty")
        too_old = event_age_problem(payload["conversionHappenedAt"] // 1000, MAX_AGE_DAYS)
        if too_old:
            problems.append(too_old)
        if not payload["user"]["userIds"]:
            problems.append(
                "LinkedIn needs a user id: map email, li_fat_id, acxiom_id, oracle_moat_id,"
                " ip_address or google_aid"
            )
        info = payload["user"].get("userInfo") or {}
        if info and not (info.get("firstName") and info.get("lastName")):
            problems.append("userInfo needs both first_name and last_name")
        value = payload.get("conversionValue")
        if value is not None:
            money = {"value": value["amount"], "currency": value["currencyCode"]}
            problems.extend(money_problems(money, event_type))
        return "; ".join(f"linkedin: {p}" for p in problems) or None

    # -- sending -----------------------------------------------------------------

    def build_request(self, event_type: str, payloads: Sequence[Payload]) -> HttpRequest:
        return HttpRequest(
            "POST",
            base_url(self.config, HOST) + "/conversionEvents",
            {
                "Content-Type": "application/json",
                "Authorization": f"Bearer {self.config['access_token']}",
                "LinkedIn-Version": str(self.config.get("api_version") or API_VERSION),
                "X-Restli-Protocol-Version": "2.0.0",
                "X-RestLi-Method": "BATCH_CREATE",
            },
            json={"elements": list(payloads)},
        )

    def classify(self, response: httpx.Response, payloads: Sequence[Payload]) -> BatchResult:
        code = response.status_code
        body = json_object(response) or {}
        if 200 <= code < 300:
            elements = body.get("elements")
            if isinstance(elements, list) and len(elements) == len(payloads):
                return BatchResult(tuple(_element_outcome(response, e) for e in elements))
            return BatchResult.same(len(payloads), ItemResult(ItemStatus.DELIVERED, code))
        detail = body.get("message") or response.reason_phrase
        return whole_batch_outcome(
            response,
            len(payloads),
            f"linkedin: HTTP {code} {body.get('code') or ''} {detail}".replace("  ", " "),
            split=code not in (401, 403),
        )


def _user_ids(fields: Mapping[str, Any]) -> list[dict[str, str]]:
    ids = []
    for key, id_type in ID_TYPES.items():
        value = fields.get(key)
        if value is None:
            continue
        if key == "email":
            try:
                value = hash_identity("email", value)
            except IdentityFormatError as exc:
                msg = f"linkedin: `email`: {exc}"
                raise MappingError(msg, field="email") from None
            if value is None:
                continue
        ids.append({"idType": id_type, "idValue": str(value).strip()})
    return ids


def _element_outcome(response: httpx.Response, element: Any) -> ItemResult:
    """One element of a BATCH_CREATE answer: `{"status": 201}` or `{"status", "error"}`."""
    element = element if isinstance(element, Mapping) else {}
    status = element.get("status")
    status = status if isinstance(status, int) else response.status_code
    if 200 <= status < 300:
        return ItemResult(ItemStatus.DELIVERED, status)
    error = element.get("error")
    message = error.get("message") if isinstance(error, Mapping) else None
    return ItemResult(
        ItemStatus.RETRY if is_retryable_status(status) else ItemStatus.FAILED,
        status,
        f"linkedin: element HTTP {status}: {message or 'refused'}",
        retry_after=parse_retry_after(response.headers.get("retry-after")),
        response=excerpt(response),
    )
