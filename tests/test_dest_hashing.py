"""Identity hashing against the examples the vendors publish."""

from __future__ import annotations

import hashlib

import pytest

from streamctl.destinations.hashing import (
    META_USER_DATA,
    IdentityFormatError,
    hash_fields,
    hash_identity,
    normalise_identity,
)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# Meta, Customer Information Parameters: input -> expected SHA-256, as printed there.
@pytest.mark.parametrize(
    ("kind", "value", "expected"),
    [
        (
            "email",
            "John_Smith@gmail.com",
            "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f",
        ),
        (
            "phone",
            "+1 (650)555-1212",
            "e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176",
        ),
        ("name", "Mary", "6915771be1c5aa0c886870b6951b03d7eafc121fea0e80a5ea83beb7c449f4ec"),
        ("name", "정", "8fa8cd9c440be61d0151429310034083132b35975c4bea67fdd74158eb51db14"),
        ("name", "Valéry", "08e1996b5dd49e62a4b4c010d44e4345592a863bb9f8e3976219bac29417149c"),
        (
            "date_of_birth",
            "2/16/1997",
            "01acdbf6ec7b4f478a225f1a246e5d6767eeab1a7ffa17f025265b5b94f40f0c",
        ),
        ("country", "US", "79adb2a2fce5c6ba215fe5f27f532d4e7edbac4b6a5e09e1ef3a08084a904621"),
        # Snapchat, Conversions API Parameters.
        (
            "email",
            "Person@Example.com",
            "542d240129883c019e106e3b1b2d3f3cb3537c43c425364de8e951d5a3083345",
        ),
        (
            "phone",
            "+44 844 412 4653",
            "dc008fda46e2e64002cf2f82a4906236282d431c4f75e5b60bfe79fc48546383",
        ),
    ],
)
def test_vendor_documented_examples(kind, value, expected):
    assert hash_identity(kind, value) == expected


@pytest.mark.parametrize(
    ("kind", "value", "normalised"),
    [
        ("email", "  Jane.Doe@Example.COM ", "jane.doe@example.com"),
        ("phone", "0044 20 7946 0958", "442079460958"),  # international 00 prefix dropped
        ("phone_e164", "1 (616) 954-7888", "+16169547888"),  # TikTok keeps the '+'
        ("name", " O'Brien-Smith ", "obriensmith"),
        ("city", "Menlo Park", "menlopark"),
        ("city", "St. Louis", "stlouis"),
        ("state", "CA", "ca"),
        ("zip", "94035-1234", "94035"),  # US ZIP+4: the first five digits
        ("zip", "M1 1AE", "m11ae"),  # UK: area, district, sector without the space
        ("zip", "1987", "1987"),
        ("country", " gb ", "gb"),
        ("gender", "Female", "f"),
        ("gender", "M", "m"),
        ("gender_fmn", "nonbinary", "n"),
        ("date_of_birth", "1997-02-16", "19970216"),
        ("date_of_birth", "1997-02-16T00:00:00Z", "19970216"),
        ("external_id", " User-42 ", "user-42"),
    ],
)
def test_normalisation_rules(kind, value, normalised):
    assert normalise_identity(kind, value) == normalised
    assert hash_identity(kind, value) == sha(normalised)


def test_already_hashed_values_pass_unchanged():
    digest = sha("someone@example.com")
    assert hash_identity("email", digest) == digest
    assert hash_identity("phone", digest.upper()) == digest  # hex compared as lowercase text


@pytest.mark.parametrize("blank", [None, "", "   ", False])
def test_blank_values_are_left_out(blank):
    assert hash_identity("email", blank) is None


@pytest.mark.parametrize(
    ("kind", "value", "words"),
    [
        ("email", "not-an-email", "'@'"),
        ("phone", "call me", "0 digits"),
        ("country", "United States", "alpha-2"),
        ("gender", "x", "f or m"),
        ("date_of_birth", "last spring", "date of birth"),
    ],
)
def test_bad_values_raise_without_repeating_them(kind, value, words):
    with pytest.raises(IdentityFormatError) as caught:
        hash_identity(kind, value)
    assert words in str(caught.value)
    assert value not in str(caught.value)


def test_unknown_kind_is_a_programming_error():
    with pytest.raises(KeyError):
        hash_identity("shoe_size", "44")


def test_hash_fields_hashes_named_keys_and_keeps_the_rest():
    shaped = hash_fields(
        {
            "em": ["A@B.co", " a@b.co "],
            "ph": "+1 650 555 1212",
            "fbp": "fb.1.1596403881668.1116446470",
            "client_ip_address": "168.212.226.204",
            "fn": "   ",
        },
        META_USER_DATA,
        as_list=True,
    )
    assert shaped == {
        "em": [sha("a@b.co"), sha("a@b.co")],
        "ph": [sha("16505551212")],
        "fbp": "fb.1.1596403881668.1116446470",
        "client_ip_address": "168.212.226.204",
    }
    assert hash_fields({"email": ["X@Y.z"]}, {"email": "email"}) == {"email": sha("x@y.z")}


def test_hash_fields_names_the_key_of_a_bad_value():
    with pytest.raises(IdentityFormatError, match=r"`ph`: a phone number"):
        hash_fields({"ph": "n/a"}, META_USER_DATA)


@pytest.mark.parametrize(
    ("kind", "value", "normalised"),
    [
        # Reddit (Segment's Reddit destination): canonical email, '+digits' phone, case kept.
        ("email_canonical", " John.Smith+ads@Example.COM ", "johnsmith@example.com"),
        ("phone_e164", "+1 (650) 555-1212 ext. 42", "+16505551212"),
        ("trimmed", " User-ABC ", "User-ABC"),
    ],
)
def test_reddit_kinds(kind, value, normalised):
    assert normalise_identity(kind, value) == normalised
    assert hash_identity(kind, value) == sha(normalised)
