"""Normalise and SHA-256-hash identity fields as the ad platforms document them.

    hash_identity("email", " John_Smith@Gmail.com ")  # sha256("john_smith@gmail.com")
    hash_identity("phone", "+1 (616) 954-7888")       # sha256("16169547888")
    hash_identity("phone_e164", "+1 616 954 7888")    # sha256("+16169547888") (TikTok)
    hash_identity("email", "62a14e44...0f62f")         # a 64-hex value passes unchanged
    hash_identity("email", "  ")                      # None: nothing to send
    hash_fields({"em": "A@b.co", "fbp": "fb.1.2"}, META_USER_DATA)  # em hashed, fbp kept

A *kind* names one normalisation (email, phone, name, city, ...); `NORMALISERS` is the
table of kinds. A vendor module states which of its fields are of which kind as data
(`META_USER_DATA` below, `TIKTOK_USER` in tiktok.py ...), and `hash_fields` applies it,
so vendor differences (TikTok hashes the phone in E.164 *with* its '+', Meta and
Snapchat without) are one word in a table, never a second code path.

Rules, from the vendors' documentation:

- Meta, Customer Information Parameters,
  https://developers.facebook.com/docs/marketing-api/conversions-api/parameters/customer-information-parameters
  and the normaliser of Meta's own Business SDK
  (facebook-python-business-sdk `facebook_business/adobjects/serverside/normalize.py`):
  every value trimmed and lowercased; `em` as is; `ph` digits only with the country
  code, the leading '+' and up to two leading zeros dropped; `fn`/`ln` without
  punctuation (UTF-8 letters kept); `ct` without spaces, digits or punctuation; `st`
  the two-letter code; `zp` without spaces, US ZIP+4 cut to its first 5 digits;
  `country` ISO 3166-1 alpha-2; `ge` `f` or `m`; `db` `YYYYMMDD`; `external_id`
  trimmed and lowercased (hashing recommended). A value that already is a SHA-256
  (64 hex characters) is sent unchanged.
- Snapchat, Conversions API Parameters,
  https://developers.snap.com/api/marketing-api/Conversions-API/Parameters: the same
  rules (`Person@Example.com` -> `person@example.com`, `+44 844 412 4653` ->
  `448444124653`, the examples the tests check).
- TikTok Events API 2.0 (via the Segment and RudderStack integrations, see tiktok.py):
  email trimmed and lowercased, phone in E.164 *with* '+', external_id hashed.
- Pinterest Conversions API, `ConversionEventsUserData` (Pinterest's OpenAPI spec):
  phone "only digits with country code ... remove any symbols, letters, spaces and
  leading zeros"; gender `f`, `m` or `n`; the rest as Meta.
- Reddit Conversions API v2 (Segment's Reddit destination, see reddit.py): the email
  canonicalised (trimmed, lowercased, the local part's dots and +tag dropped), the
  phone as '+digits' without an extension, external_id, IP address and device ids
  trimmed with their case kept.

Bad values raise `IdentityFormatError` naming the kind and the value's shape, never
the value (it is personal data): the destination turns it into a mapping_error.
"""

from __future__ import annotations

import hashlib
import re
import string
import unicodedata
from collections.abc import Callable, Mapping
from datetime import date, datetime
from typing import Any

Normaliser = Callable[[str], str]

_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")
_NOT_DIGIT = re.compile(r"\D")
_US_ZIP = re.compile(r"(\d{5})(?:-?\d{4})?")
_SPACES = re.compile(r"\s+")
_DATE_FORMATS = ("%Y-%m-%d", "%Y%m%d", "%Y/%m/%d", "%m/%d/%Y", "%d.%m.%Y")
# Where a phone number's extension starts (Reddit's normaliser drops it before hashing).
_PHONE_EXTENSION = re.compile(r"(?:ext|x|anexo|#|poste|int)\.?\s*\d*$")


class IdentityFormatError(ValueError):
    """A value that cannot be normalised for its kind (a phone without digits, a date
    that is no date). The message describes the value without repeating it."""


def _is_punctuation_or_symbol(char: str) -> bool:
    return unicodedata.category(char)[0] in "PS"


# ASCII text (nearly all of it) is cleaned by one str.translate; other text char by char.
_ASCII_PUNCTUATION = str.maketrans("", "", string.punctuation)
_ASCII_PUNCTUATION_SPACE_DIGITS = str.maketrans(
    "", "", string.punctuation + string.whitespace + string.digits
)


def _without_punctuation(text: str) -> str:
    if text.isascii():
        return text.translate(_ASCII_PUNCTUATION)
    return "".join(char for char in text if not _is_punctuation_or_symbol(char))


def _email(text: str) -> str:
    if "@" not in text:
        msg = "an email address has an '@'; this value has none"
        raise IdentityFormatError(msg)
    return text


def _phone_digits(text: str) -> str:
    """Country code and number, digits only: '+' and an international '00' prefix dropped."""
    digits = _NOT_DIGIT.sub("", text).lstrip("0")
    if len(digits) < 7:
        msg = f"a phone number has its country code and 7+ digits; this value has {len(digits)} digits"
        raise IdentityFormatError(msg)
    return digits


def _phone_e164(text: str) -> str:
    return "+" + _phone_digits(_PHONE_EXTENSION.sub("", text))


def _email_canonical(text: str) -> str:
    """Reddit's canonical email: the local part without dots and without a +tag."""
    local, at, domain = _email(text).rpartition("@")
    return local.split("+", 1)[0].replace(".", "") + at + domain


def _name(text: str) -> str:
    return _SPACES.sub(" ", _without_punctuation(text)).strip()


def _city(text: str) -> str:
    if text.isascii():
        return text.translate(_ASCII_PUNCTUATION_SPACE_DIGITS)
    return "".join(
        char
        for char in text
        if not (char.isspace() or char.isdigit() or _is_punctuation_or_symbol(char))
    )


def _state(text: str) -> str:
    return _city(text)


def _zip(text: str) -> str:
    compact = _SPACES.sub("", text)
    us_zip = _US_ZIP.fullmatch(compact)
    return us_zip.group(1) if us_zip else compact


def _country(text: str) -> str:
    letters = "".join(char for char in text if char.isascii() and char.isalpha())
    if len(letters) != 2:
        msg = f"a country is an ISO 3166-1 alpha-2 code (2 letters); this value has {len(letters)}"
        raise IdentityFormatError(msg)
    return letters


def _gender(text: str) -> str:
    initial = text[:1]
    if initial not in ("f", "m"):
        msg = "a gender is f or m (female, male)"
        raise IdentityFormatError(msg)
    return initial


def _gender_with_nonbinary(text: str) -> str:
    return "n" if text[:1] == "n" else _gender(text)


def _date_of_birth(text: str) -> str:
    for fmt in _DATE_FORMATS:
        try:
            return datetime.strptime(text[:10], fmt).strftime("%Y%m%d")
        except ValueError:
            continue
    msg = "a date of birth is a date (YYYY-MM-DD or YYYYMMDD)"
    raise IdentityFormatError(msg)


def _as_is(text: str) -> str:
    return text


# kind -> how a plain value is normalised before hashing (after trim and lowercase).
NORMALISERS: Mapping[str, Normaliser] = {
    "email": _email,
    "email_canonical": _email_canonical,  # Reddit: dots and +tag of the local part dropped
    "phone": _phone_digits,  # Meta, Snapchat, Pinterest: digits with country code, no '+'
    "phone_e164": _phone_e164,  # TikTok: E.164 with its '+'
    "name": _name,
    "city": _city,
    "state": _state,
    "zip": _zip,
    "country": _country,
    "gender": _gender,
    "gender_fmn": _gender_with_nonbinary,  # Pinterest also takes n (non-binary)
    "date_of_birth": _date_of_birth,
    "external_id": _as_is,
    "ip": _as_is,
    "trimmed": _as_is,  # Reddit's external_id, ip_address, device ids: trimmed, case kept
}
# Kinds whose values keep their case (every other kind is lowercased first).
CASE_KEPT: frozenset[str] = frozenset({"trimmed"})

# Meta's user_data keys and their kinds; every other key (fbp, fbc, client_ip_address,
# client_user_agent, fb_login_id, lead_id, ...) is sent as it arrives.
META_USER_DATA: Mapping[str, str] = {
    "em": "email",
    "ph": "phone",
    "fn": "name",
    "ln": "name",
    "ge": "gender",
    "db": "date_of_birth",
    "ct": "city",
    "st": "state",
    "zp": "zip",
    "country": "country",
    "external_id": "external_id",
}


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def is_sha256_hex(value: object) -> bool:
    return isinstance(value, str) and _SHA256_HEX.fullmatch(value) is not None


def normalise_identity(kind: str, value: object) -> str | None:
    """The value normalised for `kind`, before hashing; None when there is nothing to send."""
    normaliser = NORMALISERS[kind]
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (date, datetime)):
        value = value.strftime("%Y-%m-%d")
    text = str(value).strip()
    if kind not in CASE_KEPT:
        text = text.lower()
    if not text:
        return None
    return normaliser(text) or None


def hash_identity(kind: str, value: object) -> str | None:
    """SHA-256 (lowercase hex) of the value normalised for `kind`.

    A 64-hex value is taken as already hashed and returned unchanged (lowercased: hex
    digests are compared as text). None or blank: None. Raises KeyError for an unknown
    kind, IdentityFormatError for a value the kind cannot hold.
    """
    if is_sha256_hex(value):
        return str(value).lower()
    normalised = normalise_identity(kind, value)
    return None if normalised is None else sha256_hex(normalised)


def hash_values(kind: str, value: Any) -> list[str]:
    """Every value of a field that may hold one value or a list, hashed; blanks left out."""
    values = value if isinstance(value, (list, tuple)) else [value]
    return [hashed for item in values if (hashed := hash_identity(kind, item)) is not None]


def hash_fields(
    fields: Mapping[str, Any], kinds: Mapping[str, str], *, as_list: bool = False
) -> dict[str, Any]:
    """`fields` with each key named in `kinds` hashed for its kind; other keys unchanged.

    With `as_list` a hashed field is always a list (Meta's and Snapchat's `em`, `ph`);
    without, it stays one value (the first, when a list arrives for a single-valued key).
    Fields left empty by hashing are dropped. Raises IdentityFormatError naming the key.
    """
    shaped: dict[str, Any] = {}
    for key, value in fields.items():
        kind = kinds.get(key)
        if kind is None:
            shaped[key] = value
            continue
        try:
            hashed = hash_values(kind, value)
        except IdentityFormatError as exc:
            msg = f"`{key}`: {exc}"
            raise IdentityFormatError(msg) from None
        if hashed:
            shaped[key] = hashed if as_list else hashed[0]
    return shaped
