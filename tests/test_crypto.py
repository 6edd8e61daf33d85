"""abgate.crypto: AES-256-GCM envelope for upstream API keys."""

from __future__ import annotations

import base64
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from abgate.config import EncryptionKey, parse_encryption_keys
from abgate.crypto import (
    CryptoError,
    KeyRing,
    NoEncryptionKeyError,
    generate_key_entry,
)

KEY_A = bytes(range(32))
KEY_B = bytes(range(100, 132))
SECRET = "sk-live-THIS-IS-THE-PLAINTEXT-api-key-0123456789"


def ring(*pairs: tuple[str, bytes]) -> KeyRing:
    return KeyRing([EncryptionKey(kid, key) for kid, key in pairs])


def flip(b64: str, index: int = 0) -> str:
    raw = bytearray(base64.b64decode(b64))
    raw[index] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


@pytest.fixture
def keys() -> KeyRing:
    return ring(("a", KEY_A))


def test_round_trip(keys: KeyRing) -> None:
    assert keys.decrypt(keys.encrypt(SECRET)) == SECRET


def test_round_trip_of_empty_and_unicode_plaintext(keys: KeyRing) -> None:
    for text in ("", "ключ-🔑-\u00e9"):
        assert keys.decrypt(keys.encrypt(text)) == text


def test_blob_has_exactly_the_stored_fields_in_standard_base64(keys: KeyRing) -> None:
    blob = keys.encrypt(SECRET)
    assert set(blob) == {"kid", "iv", "data", "authTag"}
    assert blob["kid"] == "a"
    for name in ("iv", "data", "authTag"):
        assert re.fullmatch(r"[A-Za-z0-9+/]*={0,2}", blob[name])
    assert len(base64.b64decode(blob["iv"])) == 12
    assert len(base64.b64decode(blob["authTag"])) == 16
    assert len(base64.b64decode(blob["data"])) == len(SECRET.encode())


def test_each_encryption_uses_a_fresh_iv(keys: KeyRing) -> None:
    first, second = keys.encrypt(SECRET), keys.encrypt(SECRET)
    assert first["iv"] != second["iv"]
    assert first["data"] != second["data"]


@pytest.mark.parametrize("field", ["data", "iv", "authTag"])
def test_tampered_field_is_rejected(keys: KeyRing, field: str) -> None:
    blob = keys.encrypt(SECRET)
    blob[field] = flip(blob[field])
    with pytest.raises(CryptoError, match="ciphertext failed authentication"):
        keys.decrypt(blob)


def test_tampered_last_tag_byte_is_rejected(keys: KeyRing) -> None:
    blob = keys.encrypt(SECRET)
    blob["authTag"] = flip(blob["authTag"], index=15)
    with pytest.raises(CryptoError, match="failed authentication"):
        keys.decrypt(blob)


def test_unknown_kid_is_rejected_with_a_clear_error(keys: KeyRing) -> None:
    blob = keys.encrypt(SECRET)
    blob["kid"] = "x"
    with pytest.raises(CryptoError) as info:
        keys.decrypt(blob)
    assert str(info.value) == "unknown key id 'x'"


def test_decrypts_under_old_key_after_a_new_key_is_prepended() -> None:
    old_blob = ring(("old", KEY_A)).encrypt(SECRET)
    rotated = ring(("new", KEY_B), ("old", KEY_A))
    assert rotated.decrypt(old_blob) == SECRET
    assert rotated.encrypt(SECRET)["kid"] == "new"


def test_needs_rekey_is_true_only_for_non_primary_kid() -> None:
    rotated = ring(("new", KEY_B), ("old", KEY_A))
    assert rotated.primary_kid == "new"
    assert rotated.needs_rekey(ring(("old", KEY_A)).encrypt(SECRET)) is True
    assert rotated.needs_rekey(rotated.encrypt(SECRET)) is False


def test_rekey_re_encrypts_under_the_primary_key() -> None:
    rotated = ring(("new", KEY_B), ("old", KEY_A))
    fresh = rotated.rekey(ring(("old", KEY_A)).encrypt(SECRET))
    assert fresh["kid"] == "new"
    assert ring(("new", KEY_B)).decrypt(fresh) == SECRET


def test_relabelled_kid_is_rejected_even_with_identical_key_bytes() -> None:
    twins = ring(("a", KEY_A), ("b", KEY_A))
    blob = twins.encrypt(SECRET)
    blob["kid"] = "b"
    with pytest.raises(CryptoError, match="ciphertext failed authentication"):
        twins.decrypt(blob)


def test_relabelled_kid_is_rejected_with_different_keys() -> None:
    both = ring(("a", KEY_A), ("b", KEY_B))
    blob = both.encrypt(SECRET)
    blob["kid"] = "b"
    with pytest.raises(CryptoError, match="ciphertext failed authentication"):
        both.decrypt(blob)


def test_wrong_key_with_same_kid_is_rejected() -> None:
    blob = ring(("a", KEY_A)).encrypt(SECRET)
    with pytest.raises(CryptoError, match="ciphertext failed authentication"):
        ring(("a", KEY_B)).decrypt(blob)


@pytest.mark.parametrize("field", ["kid", "iv", "data", "authTag"])
def test_missing_field_is_named(keys: KeyRing, field: str) -> None:
    blob = keys.encrypt(SECRET)
    del blob[field]
    with pytest.raises(CryptoError) as info:
        keys.decrypt(blob)
    assert str(info.value) == f"malformed encrypted key: missing field {field!r}"


@pytest.mark.parametrize("field", ["kid", "iv", "data", "authTag"])
def test_non_string_field_is_rejected(keys: KeyRing, field: str) -> None:
    blob: dict[str, Any] = dict(keys.encrypt(SECRET))
    blob[field] = 12
    with pytest.raises(CryptoError, match=f"field '{field}' must be a string"):
        keys.decrypt(blob)


@pytest.mark.parametrize("field", ["iv", "data", "authTag"])
def test_invalid_base64_is_rejected(keys: KeyRing, field: str) -> None:
    blob = keys.encrypt(SECRET)
    blob[field] = "not*base64!"
    with pytest.raises(CryptoError, match=f"field '{field}' is not valid base64"):
        keys.decrypt(blob)


@pytest.mark.parametrize(("field", "size"), [("iv", 12), ("authTag", 16)])
def test_wrong_length_iv_or_tag_is_rejected(keys: KeyRing, field: str, size: int) -> None:
    blob = keys.encrypt(SECRET)
    blob[field] = base64.b64encode(b"\x00" * (size - 1)).decode()
    with pytest.raises(CryptoError, match=f"field '{field}' must decode to {size} bytes"):
        keys.decrypt(blob)


@pytest.mark.parametrize("blob", [None, "text", ["kid"], 5])
def test_non_object_blob_is_rejected(keys: KeyRing, blob: Any) -> None:
    with pytest.raises(CryptoError, match="malformed encrypted key: expected an object"):
        keys.decrypt(blob)


def test_extra_blob_fields_are_ignored(keys: KeyRing) -> None:
    blob: dict[str, Any] = dict(keys.encrypt(SECRET))
    blob["v"] = 1
    assert keys.decrypt(blob) == SECRET


def test_encrypt_with_empty_ring_raises_no_encryption_key_error() -> None:
    with pytest.raises(NoEncryptionKeyError) as info:
        KeyRing([]).encrypt(SECRET)
    assert str(info.value) == "ABGATE_ENCRYPTION_KEYS is not configured"
    assert isinstance(info.value, CryptoError)


def test_decrypt_with_empty_ring_raises_no_encryption_key_error(keys: KeyRing) -> None:
    with pytest.raises(NoEncryptionKeyError, match="ABGATE_ENCRYPTION_KEYS is not configured"):
        KeyRing([]).decrypt(keys.encrypt(SECRET))


def test_primary_kid_of_empty_ring_raises_no_encryption_key_error() -> None:
    with pytest.raises(NoEncryptionKeyError):
        _ = KeyRing([]).primary_kid


def test_empty_ring_is_falsy_and_configured_ring_truthy(keys: KeyRing) -> None:
    assert not KeyRing([])
    assert keys
    assert ring(("n", KEY_B), ("o", KEY_A)).kids == ("n", "o")


def test_duplicate_kid_is_rejected() -> None:
    with pytest.raises(CryptoError, match="appears twice"):
        ring(("a", KEY_A), ("a", KEY_B))


@pytest.mark.parametrize("size", [0, 16, 24, 31, 33])
def test_key_of_wrong_length_is_rejected_without_echoing_it(size: int) -> None:
    key = b"\xab" * size
    with pytest.raises(CryptoError, match="must be 32 bytes") as info:
        ring(("a", key))
    if key:
        assert key.hex() not in str(info.value)


def _secret_forms(key: bytes, blob: dict[str, str]) -> list[str]:
    return [
        SECRET,
        key.hex(),
        base64.b64encode(key).decode(),
        repr(key)[2:-1],
        blob["data"],
        blob["authTag"],
    ]


def test_error_messages_and_reprs_never_contain_key_plaintext_or_ciphertext() -> None:
    keys = ring(("a", KEY_A), ("b", KEY_B))
    blob = keys.encrypt(SECRET)
    failures: list[dict[str, Any]] = []
    for field in ("data", "iv", "authTag"):
        failures.append({**blob, field: flip(blob[field])})
    failures += [
        {**blob, "kid": "b"},
        {**blob, "kid": "zzz"},
        {k: v for k, v in blob.items() if k != "iv"},
        {**blob, "data": blob["data"] + "*"},
    ]
    seen: list[str] = [repr(keys), str(keys)]
    for bad in failures:
        with pytest.raises(CryptoError) as info:
            keys.decrypt(bad)
        exc = info.value
        seen += [str(exc), repr(exc), str(exc.__cause__), repr(exc.args)]
    with pytest.raises(NoEncryptionKeyError) as empty:
        KeyRing([]).encrypt(SECRET)
    seen += [str(empty.value), repr(empty.value), repr(KeyRing([]))]
    forbidden = _secret_forms(KEY_A, blob) + _secret_forms(KEY_B, blob)
    for text in seen:
        for secret in forbidden:
            assert secret not in text


def test_keyring_repr_lists_only_kids() -> None:
    assert repr(ring(("a", KEY_A), ("b", KEY_B))) == "KeyRing(kids=['a', 'b'])"


def test_unknown_kid_in_error_is_bounded() -> None:
    keys = ring(("a", KEY_A))
    blob = keys.encrypt(SECRET)
    blob["kid"] = "k" * 10_000
    with pytest.raises(CryptoError) as info:
        keys.decrypt(blob)
    assert len(str(info.value)) < 120


def test_works_with_keys_parsed_from_the_environment() -> None:
    raw = f"new:{base64.b64encode(KEY_B).decode()},old:{base64.b64encode(KEY_A).decode()}"
    keys = KeyRing(parse_encryption_keys(raw))
    assert keys.primary_kid == "new"
    assert keys.decrypt(ring(("old", KEY_A)).encrypt(SECRET)) == SECRET


def test_generate_key_entry_default_kid_is_k_date_and_hex() -> None:
    kid, _, _ = generate_key_entry().partition(":")
    assert re.fullmatch(r"k\d{8}[0-9a-f]{4}", kid)


def test_generate_key_entry_parses_as_a_32_byte_key() -> None:
    (entry,) = parse_encryption_keys(generate_key_entry())
    assert len(entry.key) == 32
    assert KeyRing([entry]).decrypt(KeyRing([entry]).encrypt(SECRET)) == SECRET


def test_generate_key_entry_uses_a_given_kid() -> None:
    (entry,) = parse_encryption_keys(generate_key_entry("prod-2"))
    assert entry.kid == "prod-2"


def test_generate_key_entry_makes_a_different_key_each_time() -> None:
    assert generate_key_entry("a") != generate_key_entry("a")


@pytest.mark.parametrize("kid", ["", "a:b", "a,b", "sp ace", "x" * 65, "new\n"])
def test_generate_key_entry_rejects_an_invalid_kid(kid: str) -> None:
    with pytest.raises(ValueError, match="key id"):
        generate_key_entry(kid)


@given(st.text())
def test_property_round_trip(plaintext: str) -> None:
    keys = ring(("a", KEY_A), ("b", KEY_B))
    assert keys.decrypt(keys.encrypt(plaintext)) == plaintext


_json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40)


@given(
    st.dictionaries(
        st.sampled_from(["kid", "iv", "data", "authTag", "x"]),
        _json_scalars | st.sampled_from(["a", "AAAAAAAAAAAAAAAA", "AAAAAAAAAAAAAAAAAAAAAA=="]),
    )
    | _json_scalars
)
def test_property_decrypt_raises_only_crypto_error_on_garbage(blob: Any) -> None:
    keys = ring(("a", KEY_A))
    with pytest.raises(CryptoError):
        keys.decrypt(blob)
