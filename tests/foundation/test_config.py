"""Settings.from_env: every variable of CONTRACT.md "Environment", defaults, and redaction."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from abgate.config import ConfigError, EncryptionKey, Settings, parse_encryption_keys

DSN = "postgresql://abgate@db.example:5432/abgate"
KEY_A = base64.b64encode(b"a" * 32).decode()
KEY_B = base64.b64encode(b"b" * 32).decode()
PEM = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA\n-----END PUBLIC KEY-----"

ALL_VARIABLES = [
    "ABGATE_DATABASE_URL",
    "ABGATE_REDIS_URL",
    "ABGATE_REDIS_NAMESPACE",
    "ABGATE_GATEWAY_URL",
    "ABGATE_ENCRYPTION_KEYS",
    "ABGATE_ADMIN_TOKEN",
    "ABGATE_JWT_SECRET",
    "ABGATE_JWT_PUBLIC_KEY",
    "ABGATE_JWT_USER_CLAIM",
    "ABGATE_USER_HEADER",
    "ABGATE_MACHINE_HEADER",
    "ABGATE_CLIENT_REQUEST_HEADER",
    "ABGATE_ALLOW_INSECURE_UPSTREAM",
    "ABGATE_MAX_BODY_BYTES",
    "ABGATE_SSE_KEEPALIVE_S",
    "ABGATE_DRAIN_S",
    "ABGATE_SPOOL_DIR",
    "ABGATE_SPOOL_MAX_BYTES",
    "ABGATE_PROMPT_STORE",
]


def settings(**env: str) -> Settings:
    return Settings.from_env({"ABGATE_DATABASE_URL": DSN} | env)


def config_error(**env: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        settings(**env)
    return info.value


# -- defaults -------------------------------------------------------------------


def test_defaults_with_only_a_database_url() -> None:
    s = settings()
    assert s.database_url == DSN
    assert s.redis_url is None
    assert s.redis_namespace == "abgate"
    assert s.gateway_url is None
    assert s.encryption_keys == []
    assert s.admin_token is None
    assert (s.jwt_secret, s.jwt_public_key, s.jwt_user_claim) == (None, None, "sub")
    assert s.user_header is None
    assert s.machine_header == "x-machine-id"
    assert s.client_request_header == "x-client-request-id"
    assert s.allow_insecure_upstream is False
    assert s.max_body_bytes == 32 * 1024 * 1024
    assert (s.sse_keepalive_s, s.drain_s) == (15.0, 30.0)
    assert (s.spool_dir, s.spool_max_bytes) == (".abgate-spool", 256 * 1024 * 1024)
    assert s.prompt_store == "postgres"


def test_empty_values_mean_the_default() -> None:
    blank = {name: "" for name in ALL_VARIABLES if name != "ABGATE_DATABASE_URL"}
    assert settings(**blank) == settings()


def test_reads_os_environ_when_no_mapping_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ABGATE_DATABASE_URL", DSN)
    monkeypatch.setenv("ABGATE_JWT_USER_CLAIM", "email")
    assert Settings.from_env().jwt_user_claim == "email"


# -- ABGATE_DATABASE_URL ----------------------------------------------------------


def test_database_url_is_required() -> None:
    with pytest.raises(ConfigError, match="ABGATE_DATABASE_URL: is required") as info:
        Settings.from_env({})
    assert info.value.variable == "ABGATE_DATABASE_URL"


def test_database_url_is_optional_when_the_command_does_not_need_it() -> None:
    assert Settings.from_env({}, require_database=False).database_url is None


@pytest.mark.parametrize(
    "url",
    [
        "postgres://abgate:pw@db.example/abgate",
        "postgresql://abgate@db.example:6543/abgate?sslmode=require",
        "postgresql://postgres@/postgres?host=/tmp/pg-socket",
        "postgresql://[::1]:5432/abgate",
    ],
)
def test_database_url_accepts_postgres_dsns(url: str) -> None:
    assert settings(ABGATE_DATABASE_URL=f"  {url} ").database_url == url


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("mysql://db.example/abgate", "scheme"),
        ("db.example:5432", "scheme"),
        ("postgresql:///abgate", "host"),
        ("postgresql://db.example:99999/abgate", "port"),
        ("postgresql://db.example:port/abgate", "port"),
        ("postgresql://[::1/abgate", "not a valid URL"),
    ],
)
def test_malformed_database_url_is_rejected(url: str, problem: str) -> None:
    error = config_error(ABGATE_DATABASE_URL=url)
    assert error.variable == "ABGATE_DATABASE_URL"
    assert problem in str(error)


def test_database_url_error_does_not_echo_the_password() -> None:
    error = config_error(ABGATE_DATABASE_URL="mysql://app:s3cret-db-pw@db.example/app")
    assert "s3cret-db-pw" not in str(error)


# -- ABGATE_REDIS_URL -----------------------------------------------------------


@pytest.mark.parametrize(
    "url", ["redis://cache.example:6379/0", "rediss://:pw@cache.example/1", "unix:///run/r.sock"]
)
def test_redis_url_accepts_redis_rediss_and_unix(url: str) -> None:
    assert settings(ABGATE_REDIS_URL=url).redis_url == url


@pytest.mark.parametrize("url", ["http://cache.example", "redis:///0", "unix://", "memcached://x"])
def test_malformed_redis_url_is_rejected(url: str) -> None:
    assert config_error(ABGATE_REDIS_URL=url).variable == "ABGATE_REDIS_URL"


# -- ABGATE_GATEWAY_URL ---------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("https://gateway.example", "https://gateway.example"),
        ("http://gateway.internal:8080/", "http://gateway.internal:8080"),
        ("http://[::1]:8080", "http://[::1]:8080"),
    ],
)
def test_gateway_url_is_an_origin_without_trailing_slash(url: str, origin: str) -> None:
    assert settings(ABGATE_GATEWAY_URL=url).gateway_url == origin


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://gateway.example", "origin"),
        ("gateway.example:8080", "origin"),
        ("https://", "origin"),
        ("https://gateway.example/v1", "without path"),
        ("https://gateway.example?x=1", "without path"),
        ("https://gateway.example#frag", "without path"),
        ("https://user:pw@gateway.example", "credentials"),
        ("https://gateway.example:99999", "port"),
        ("https://[gateway.example", "not a valid URL"),
    ],
)
def test_gateway_url_that_is_not_a_plain_origin_is_rejected(url: str, problem: str) -> None:
    error = config_error(ABGATE_GATEWAY_URL=url)
    assert error.variable == "ABGATE_GATEWAY_URL"
    assert problem in str(error)


# -- ABGATE_ENCRYPTION_KEYS -----------------------------------------------------


def test_encryption_keys_keep_their_order_so_the_first_one_encrypts() -> None:
    keys = settings(ABGATE_ENCRYPTION_KEYS=f"new:{KEY_B}, old:{KEY_A}").encryption_keys
    assert keys == [EncryptionKey("new", b"b" * 32), EncryptionKey("old", b"a" * 32)]


def test_encryption_keys_ignore_blank_entries() -> None:
    assert [k.kid for k in parse_encryption_keys(f",k1:{KEY_A},,")] == ["k1"]


def test_encryption_key_ids_may_use_letters_digits_dot_dash_underscore() -> None:
    kid = "K-2024.01_a" + "x" * 53  # 64 characters
    assert parse_encryption_keys(f"{kid}:{KEY_A}")[0].kid == kid


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        pytest.param("k1:" + base64.b64encode(b"k" * 16).decode(), "32 bytes", id="16-byte key"),
        pytest.param("k1:" + base64.b64encode(b"k" * 33).decode(), "32 bytes", id="33-byte key"),
        pytest.param("k1:not base64!", "base64", id="not base64"),
        pytest.param("k1:" + KEY_A[:-2], "base64", id="unpadded"),
        pytest.param(KEY_A, "kid:base64key", id="no kid"),
        pytest.param(f":{KEY_A}", "kid:base64key", id="empty kid"),
        pytest.param(f"{'k' * 65}:{KEY_A}", "kid:base64key", id="65-char kid"),
        pytest.param(f"my key:{KEY_A}", "kid:base64key", id="kid with a space"),
        pytest.param(f"k1\n:{KEY_A}", "kid:base64key", id="kid with a newline"),
        pytest.param(f"k1:{KEY_A},k1:{KEY_B}", "twice", id="duplicate kid"),
        pytest.param(",", "no key entries", id="only separators"),
    ],
)
def test_malformed_encryption_keys_are_rejected_without_echoing_key_material(
    raw: str, problem: str
) -> None:
    error = config_error(ABGATE_ENCRYPTION_KEYS=raw)
    assert error.variable == "ABGATE_ENCRYPTION_KEYS"
    assert problem in str(error)
    for material in (KEY_A, KEY_A[:-2], KEY_B, raw.partition(":")[2]):
        if material:
            assert material not in str(error)


# -- tokens and identity --------------------------------------------------------


def test_admin_token_is_read_and_trimmed() -> None:
    assert settings(ABGATE_ADMIN_TOKEN=" bootstrap-token\n").admin_token == "bootstrap-token"


def test_jwt_secret_is_read() -> None:
    assert settings(ABGATE_JWT_SECRET="hs256-secret").jwt_secret == "hs256-secret"


def test_jwt_public_key_accepts_a_pem() -> None:
    assert settings(ABGATE_JWT_PUBLIC_KEY=PEM).jwt_public_key == PEM


def test_jwt_public_key_that_is_not_a_pem_is_rejected() -> None:
    assert config_error(ABGATE_JWT_PUBLIC_KEY="c2VjcmV0").variable == "ABGATE_JWT_PUBLIC_KEY"


def test_jwt_user_claim_can_be_changed() -> None:
    assert settings(ABGATE_JWT_USER_CLAIM="email").jwt_user_claim == "email"


# -- headers --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "attribute"),
    [
        ("ABGATE_USER_HEADER", "user_header"),
        ("ABGATE_MACHINE_HEADER", "machine_header"),
        ("ABGATE_CLIENT_REQUEST_HEADER", "client_request_header"),
    ],
)
def test_header_names_are_stored_lowercase(variable: str, attribute: str) -> None:
    assert getattr(settings(**{variable: " X-Custom-Id "}), attribute) == "x-custom-id"


@pytest.mark.parametrize(
    "variable", ["ABGATE_USER_HEADER", "ABGATE_MACHINE_HEADER", "ABGATE_CLIENT_REQUEST_HEADER"]
)
@pytest.mark.parametrize("name", ["x user", "x-user:", "x-üser", "x(user)", "x-user\r\nx-evil"])
def test_header_name_that_is_not_an_http_token_is_rejected(variable: str, name: str) -> None:
    error = config_error(**{variable: name})
    assert error.variable == variable
    assert "header name" in str(error)


# -- booleans and numbers -------------------------------------------------------


@pytest.mark.parametrize("value", ["1", "true", "TRUE", "yes", "on", " On "])
def test_allow_insecure_upstream_true_values(value: str) -> None:
    assert settings(ABGATE_ALLOW_INSECURE_UPSTREAM=value).allow_insecure_upstream is True


@pytest.mark.parametrize("value", ["0", "false", "no", "off", ""])
def test_allow_insecure_upstream_false_values(value: str) -> None:
    assert settings(ABGATE_ALLOW_INSECURE_UPSTREAM=value).allow_insecure_upstream is False


def test_allow_insecure_upstream_rejects_anything_else() -> None:
    error = config_error(ABGATE_ALLOW_INSECURE_UPSTREAM="maybe")
    assert error.variable == "ABGATE_ALLOW_INSECURE_UPSTREAM"


def test_numeric_settings_are_parsed() -> None:
    s = settings(
        ABGATE_MAX_BODY_BYTES="1048576",
        ABGATE_SPOOL_MAX_BYTES="2048",
        ABGATE_SSE_KEEPALIVE_S="0.5",
        ABGATE_DRAIN_S="0",
    )
    assert (s.max_body_bytes, s.spool_max_bytes) == (1048576, 2048)
    assert (s.sse_keepalive_s, s.drain_s) == (0.5, 0.0)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("ABGATE_MAX_BODY_BYTES", "1023"),
        ("ABGATE_MAX_BODY_BYTES", "1.5e6"),
        ("ABGATE_MAX_BODY_BYTES", "inf"),
        ("ABGATE_MAX_BODY_BYTES", "-4096"),
        ("ABGATE_MAX_BODY_BYTES", "9" * 40),
        ("ABGATE_SPOOL_MAX_BYTES", "lots"),
        ("ABGATE_SSE_KEEPALIVE_S", "0"),
        ("ABGATE_SSE_KEEPALIVE_S", "nan"),
        ("ABGATE_SSE_KEEPALIVE_S", "inf"),
        ("ABGATE_DRAIN_S", "-1"),
        ("ABGATE_DRAIN_S", "soon"),
    ],
)
def test_out_of_range_or_non_numeric_numbers_are_rejected(variable: str, value: str) -> None:
    assert config_error(**{variable: value}).variable == variable


# -- other settings -------------------------------------------------------------


def test_redis_namespace_is_read() -> None:
    assert settings(ABGATE_REDIS_NAMESPACE="abgate:prod-1").redis_namespace == "abgate:prod-1"


@pytest.mark.parametrize("namespace", ["has space", "n" * 65, "a{b}"])
def test_malformed_redis_namespace_is_rejected(namespace: str) -> None:
    assert config_error(ABGATE_REDIS_NAMESPACE=namespace).variable == "ABGATE_REDIS_NAMESPACE"


@pytest.mark.parametrize("store", ["postgres", "off", "fs:/var/lib/abgate/prompts"])
def test_prompt_store_choices(store: str) -> None:
    assert settings(ABGATE_PROMPT_STORE=store).prompt_store == store


@pytest.mark.parametrize("store", ["s3", "fs:"])
def test_unknown_prompt_store_is_rejected(store: str) -> None:
    assert config_error(ABGATE_PROMPT_STORE=store).variable == "ABGATE_PROMPT_STORE"


def test_spool_dir_is_read() -> None:
    assert settings(ABGATE_SPOOL_DIR="/var/spool/abgate").spool_dir == "/var/spool/abgate"


# -- secrets never shown --------------------------------------------------------


def test_repr_and_str_contain_no_secret() -> None:
    s = Settings.from_env(
        {
            "ABGATE_DATABASE_URL": "postgresql://abgate:db-pw-1234@db.example/abgate",
            "ABGATE_REDIS_URL": "redis://:redis-pw-5678@cache.example/0",
            "ABGATE_ENCRYPTION_KEYS": f"k1:{KEY_A},k2:{KEY_B}",
            "ABGATE_ADMIN_TOKEN": "admin-token-abcdef",
            "ABGATE_JWT_SECRET": "jwt-secret-ghijkl",
        }
    )
    for text in (repr(s), str(s), repr(s.encryption_keys)):
        for secret in (
            "db-pw-1234",
            "redis-pw-5678",
            KEY_A,
            KEY_B,
            repr(b"a" * 32),
            "admin-token-abcdef",
            "jwt-secret-ghijkl",
        ):
            assert secret not in text


def test_encryption_key_repr_shows_only_the_kid() -> None:
    assert repr(EncryptionKey("k1", b"a" * 32)) == "EncryptionKey(kid='k1')"


@hypothesis_settings(deadline=None)  # a loaded CI machine must not turn into a failure
@given(variable=st.sampled_from(ALL_VARIABLES), value=st.text(max_size=80))
def test_any_value_yields_settings_or_a_config_error(variable: str, value: str) -> None:
    try:
        settings(**{variable: value})
    except ConfigError as error:
        assert error.variable == variable
