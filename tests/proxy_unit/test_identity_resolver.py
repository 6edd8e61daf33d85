"""proxy.identity: who is bucketed, from a verified JWT down to the peer address."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from multidict import CIMultiDict

from abgate.config import ConfigError, Settings
from proxy import identity
from proxy.identity import IdentityResolver, InvalidToken, Subject

SECRET = "test-jwt-secret-with-at-least-32-bytes!!"


def pem(private_key: Any) -> str:
    return (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def settings(**fields: Any) -> Settings:
    return Settings(database_url=None, **fields)


def headers(**values: str) -> CIMultiDict[str]:
    return CIMultiDict({k.replace("_", "-"): v for k, v in values.items()})


def bearer(token: str) -> CIMultiDict[str]:
    return CIMultiDict({"Authorization": f"Bearer {token}"})


def hs256(claims: dict[str, Any], secret: str = SECRET) -> str:
    return jwt.encode(claims, secret, algorithm="HS256")


def compact(header: bytes, payload: bytes, hmac_key: bytes | None = None) -> str:
    """A JWT assembled by hand (for tokens PyJWT refuses to make)."""
    b64 = jwt.utils.base64url_encode
    signing_input = b64(header) + b"." + b64(payload)
    signature = (
        b"" if hmac_key is None else hmac.new(hmac_key, signing_input, hashlib.sha256).digest()
    )
    return (signing_input + b"." + b64(signature)).decode()


def resolve(resolver: IdentityResolver, token: str) -> Subject:
    return resolver.resolve(bearer(token), "192.0.2.1")


# --- verified JWT ------------------------------------------------------------------


def test_hs256_token_gives_the_user() -> None:
    resolver = IdentityResolver(settings(jwt_secret=SECRET))
    assert resolve(resolver, hs256({"sub": "alice"})) == Subject("user", "alice", "alice")


def test_rs256_token_gives_the_user(rsa_key: rsa.RSAPrivateKey) -> None:
    resolver = IdentityResolver(settings(jwt_public_key=pem(rsa_key)))
    token = jwt.encode({"sub": "bob"}, rsa_key, algorithm="RS256")
    assert resolve(resolver, token) == Subject("user", "bob", "bob")


def test_es256_token_gives_the_user(ec_key: ec.EllipticCurvePrivateKey) -> None:
    resolver = IdentityResolver(settings(jwt_public_key=pem(ec_key)))
    token = jwt.encode({"sub": "carol"}, ec_key, algorithm="ES256")
    assert resolve(resolver, token) == Subject("user", "carol", "carol")


def test_secret_and_public_key_can_both_be_configured(rsa_key: rsa.RSAPrivateKey) -> None:
    resolver = IdentityResolver(settings(jwt_secret=SECRET, jwt_public_key=pem(rsa_key)))
    assert resolve(resolver, hs256({"sub": "a"})).value == "a"
    assert resolve(resolver, jwt.encode({"sub": "b"}, rsa_key, algorithm="RS256")).value == "b"


def test_user_claim_is_configurable() -> None:
    resolver = IdentityResolver(settings(jwt_secret=SECRET, jwt_user_claim="uid"))
    assert resolve(resolver, hs256({"sub": "x", "uid": "u-7"})).value == "u-7"


def test_integer_user_claim_is_used_as_text() -> None:
    resolver = IdentityResolver(settings(jwt_secret=SECRET))
    assert resolve(resolver, hs256({"sub": 42})).value == "42"


def test_jwt_beats_the_trusted_user_header() -> None:
    resolver = IdentityResolver(settings(jwt_secret=SECRET, user_header="x-user"))
    h = bearer(hs256({"sub": "from-jwt"}))
    h["X-User"] = "from-header"
    assert resolver.resolve(h, None).value == "from-jwt"


def test_audience_and_issuer_are_not_required() -> None:
    resolver = IdentityResolver(settings(jwt_secret=SECRET))
    assert resolve(resolver, hs256({"sub": "a", "aud": "gateway", "iss": "idp"})).value == "a"


# --- rejected tokens --------------------------------------------------------------


def rejected(resolver: IdentityResolver, token: str, reason: str) -> None:
    with pytest.raises(InvalidToken, match=reason) as caught:
        resolve(resolver, token)
    for part in [token, *token.split(".")]:
        if len(part) >= 8:
            assert part not in str(caught.value)
            assert part not in repr(caught.value)


def test_expired_token_is_rejected() -> None:
    resolver = IdentityResolver(settings(jwt_secret=SECRET))
    rejected(resolver, hs256({"sub": "a", "exp": int(time.time()) - 120}), "expired")


def test_recently_expired_token_is_accepted_within_leeway() -> None:
    resolver = IdentityResolver(settings(jwt_secret=SECRET))
    assert resolve(resolver, hs256({"sub": "a", "exp": int(time.time()) - 5})).value == "a"


def test_token_not_valid_yet_is_rejected() -> None:
    resolver = IdentityResolver(settings(jwt_secret=SECRET))
    rejected(resolver, hs256({"sub": "a", "nbf": int(time.time()) + 600}), "not valid yet")


def test_wrong_signature_is_rejected() -> None:
    resolver = IdentityResolver(settings(jwt_secret=SECRET))
    rejected(
        resolver, hs256({"sub": "a"}, secret="another-secret-of-32-bytes-or-more!!"), "signature"
    )


def test_tampered_payload_is_rejected() -> None:
    resolver = IdentityResolver(settings(jwt_secret=SECRET))
    header, _, signature = hs256({"sub": "a"}).split(".")
    forged_payload = hs256({"sub": "admin"}).split(".")[1]
    rejected(resolver, f"{header}.{forged_payload}.{signature}", "signature")


def test_alg_none_is_rejected() -> None:
    resolver = IdentityResolver(settings(jwt_secret=SECRET))
    token = compact(b'{"alg":"none","typ":"JWT"}', b'{"sub":"a"}')
    rejected(resolver, token, "algorithm")


def test_hs256_token_is_rejected_by_an_rs256_config(rsa_key: rsa.RSAPrivateKey) -> None:
    resolver = IdentityResolver(settings(jwt_public_key=pem(rsa_key)))
    rejected(resolver, hs256({"sub": "a"}), "algorithm")


def test_hs256_token_signed_with_the_public_key_is_rejected(rsa_key: rsa.RSAPrivateKey) -> None:
    # The classic key-confusion attack: the public key used as an HMAC secret.
    resolver = IdentityResolver(settings(jwt_public_key=pem(rsa_key)))
    token = compact(b'{"alg":"HS256","typ":"JWT"}', b'{"sub":"admin"}', pem(rsa_key).encode())
    rejected(resolver, token, "algorithm")


def test_rs256_token_is_rejected_by_an_es256_config(
    rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    resolver = IdentityResolver(settings(jwt_public_key=pem(ec_key)))
    rejected(resolver, jwt.encode({"sub": "a"}, rsa_key, algorithm="RS256"), "algorithm")


def test_rs256_token_from_another_key_is_rejected(rsa_key: rsa.RSAPrivateKey) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    resolver = IdentityResolver(settings(jwt_public_key=pem(rsa_key)))
    rejected(resolver, jwt.encode({"sub": "a"}, other, algorithm="RS256"), "signature")


@pytest.mark.parametrize(
    "claims", [{}, {"sub": ""}, {"sub": "   "}, {"sub": None}, {"sub": True}, {"sub": ["a"]}]
)
def test_missing_or_unusable_user_claim_is_rejected(claims: dict[str, Any]) -> None:
    resolver = IdentityResolver(settings(jwt_secret=SECRET))
    rejected(resolver, hs256(claims), "user claim")


@pytest.mark.parametrize("token", ["sk-gateway-key-123", "a.b", "a.b.c.d"])
def test_bearer_that_is_not_a_jwt_is_rejected(token: str) -> None:
    resolver = IdentityResolver(settings(jwt_secret=SECRET))
    rejected(resolver, token, "not a JWT")


@pytest.mark.parametrize("token", ["a.b.c", "!!!.@@@.###", "e30.e30.e30"])
def test_malformed_jwt_is_rejected(token: str) -> None:
    resolver = IdentityResolver(settings(jwt_secret=SECRET))
    with pytest.raises(InvalidToken):
        resolve(resolver, token)


def test_payload_that_is_not_an_object_is_rejected() -> None:
    resolver = IdentityResolver(settings(jwt_secret=SECRET))
    token = compact(b'{"alg":"HS256"}', b'["sub"]', SECRET.encode())
    rejected(resolver, token, "invalid")


# --- configuration ------------------------------------------------------------------


def test_without_jwt_config_the_bearer_is_ignored() -> None:
    resolver = IdentityResolver(settings())
    assert not resolver.jwt_enabled
    assert resolver.resolve(bearer("sk-gateway-key"), "192.0.2.1") == Subject(
        "ip", "192.0.2.1", None
    )


def test_non_bearer_authorization_is_ignored() -> None:
    resolver = IdentityResolver(settings(jwt_secret=SECRET))
    h = CIMultiDict({"Authorization": "Basic YWxhZGRpbjpvcGVuc2VzYW1l"})
    assert resolver.resolve(h, "192.0.2.1").kind == "ip"


@pytest.mark.parametrize(
    ("make_key", "problem"),
    [
        (lambda: "-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----", "PEM"),
        (lambda: pem(ec.generate_private_key(ec.SECP384R1())), "P-256"),
        (lambda: pem(rsa.generate_private_key(public_exponent=65537, key_size=1024)), "2048"),  # noqa: S505 - must be refused
    ],
)
def test_unusable_public_key_is_a_config_error(make_key: Callable[[], str], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem) as caught:
        IdentityResolver(settings(jwt_public_key=make_key()))
    assert caught.value.variable == "ABGATE_JWT_PUBLIC_KEY"


# --- cache ---------------------------------------------------------------------------


def count_decodes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = identity.jwt.decode

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(identity.jwt, "decode", counting)
    return calls


def test_verified_token_is_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = count_decodes(monkeypatch)
    resolver = IdentityResolver(settings(jwt_secret=SECRET))
    token = hs256({"sub": "a", "exp": int(time.time()) + 3600})
    for _ in range(5):
        assert resolve(resolver, token).value == "a"
    assert len(calls) == 1


def test_cached_token_is_verified_again_after_its_expiry(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = count_decodes(monkeypatch)
    now = [time.time()]
    resolver = IdentityResolver(settings(jwt_secret=SECRET), clock=lambda: now[0])
    token = hs256({"sub": "a", "exp": int(now[0]) + 60})
    resolve(resolver, token)
    now[0] += 60 + identity.LEEWAY_S + 1
    resolve(resolver, token)
    assert len(calls) == 2


def test_tokens_without_expiry_are_cached_for_a_bounded_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = count_decodes(monkeypatch)
    now = [time.time()]
    resolver = IdentityResolver(settings(jwt_secret=SECRET), clock=lambda: now[0])
    token = hs256({"sub": "a"})
    resolve(resolver, token)
    now[0] += identity.CACHE_TTL_S + 1
    resolve(resolver, token)
    assert len(calls) == 2


def test_failed_tokens_are_not_cached() -> None:
    resolver = IdentityResolver(settings(jwt_secret=SECRET))
    token = hs256({"sub": "a"}, secret="another-secret-of-32-bytes-or-more!!")
    for _ in range(2):
        with pytest.raises(InvalidToken):
            resolve(resolver, token)


def test_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(identity, "CACHE_SIZE", 3)
    calls = count_decodes(monkeypatch)
    resolver = IdentityResolver(settings(jwt_secret=SECRET))
    tokens = [hs256({"sub": f"u{n}"}) for n in range(4)]
    for token in tokens:
        resolve(resolver, token)
    resolve(resolver, tokens[0])  # evicted as least recently used
    resolve(resolver, tokens[3])  # still cached
    assert len(calls) == 5


# --- header fallbacks ----------------------------------------------------------------


def test_trusted_user_header() -> None:
    resolver = IdentityResolver(settings(user_header="x-user"))
    h = headers(x_user="alice", x_machine_id="m1")
    assert resolver.resolve(h, "192.0.2.1") == Subject("user", "alice", "alice")


def test_user_header_is_ignored_unless_configured() -> None:
    resolver = IdentityResolver(settings())
    h = headers(x_user="alice", x_machine_id="m1")
    assert resolver.resolve(h, "192.0.2.1") == Subject("machine", "m1", None)


def test_jwt_config_without_a_bearer_falls_back_to_headers() -> None:
    resolver = IdentityResolver(settings(jwt_secret=SECRET, user_header="x-user"))
    assert resolver.resolve(headers(x_user="alice"), None).value == "alice"


def test_machine_header_name_is_configurable() -> None:
    resolver = IdentityResolver(settings(machine_header="x-device"))
    h = headers(x_device="d1", x_machine_id="m1")
    assert resolver.resolve(h, None) == Subject("machine", "d1", None)


def test_first_forwarded_for_entry_trimmed() -> None:
    resolver = IdentityResolver(settings())
    h = headers(x_forwarded_for="  203.0.113.7 , 10.0.0.1")
    assert resolver.resolve(h, "10.0.0.2") == Subject("ip", "203.0.113.7", None)


def test_peer_when_nothing_else() -> None:
    assert IdentityResolver(settings()).resolve(headers(), "10.0.0.2") == Subject(
        "ip", "10.0.0.2", None
    )


def test_unknown_when_there_is_no_peer() -> None:
    assert IdentityResolver(settings()).resolve(headers(), None) == Subject("ip", "unknown", None)


def test_empty_values_fall_through_to_the_next_source() -> None:
    resolver = IdentityResolver(settings(user_header="x-user"))
    h = headers(x_user="  ", x_machine_id="", x_forwarded_for=" , 10.0.0.1")
    assert resolver.resolve(h, " 10.0.0.9 ") == Subject("ip", "10.0.0.9", None)


@pytest.mark.parametrize(
    ("config", "name", "kind"),
    [
        ({"user_header": "x-user"}, "x-user", "user"),
        ({}, "x-machine-id", "machine"),
        ({}, "x-forwarded-for", "ip"),
    ],
)
def test_header_values_are_capped(config: dict[str, str], name: str, kind: str) -> None:
    subject = IdentityResolver(settings(**config)).resolve(CIMultiDict({name: "v" * 2000}), None)
    assert (subject.kind, subject.value) == (kind, "v" * 500)


def test_peer_and_claims_are_capped() -> None:
    resolver = IdentityResolver(settings(jwt_secret=SECRET))
    assert resolver.resolve(headers(), "p" * 900).value == "p" * 500
    assert resolve(resolver, hs256({"sub": "s" * 900})).value == "s" * 500
