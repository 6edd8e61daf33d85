"""Every integrity rule of the schema: a violating row is refused by the named rule.

Each test inserts (or updates) one bad row on a freshly migrated database and
asserts which constraint, unique index or trigger refused it. ``covers`` records
the rules exercised here; the last test checks that the schema of migrations
0001-0004 has no rule without a test.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import asyncpg
import pytest

from abgate.migrations import load_migrations, migrate_up

from . import rows
from .catalog import integrity_rules

F = TypeVar("F", bound=Callable[..., Any])
COVERED: set[str] = set()
HEX64 = "0123456789abcdef" * 4


def covers(*names: str) -> Callable[[F], F]:
    """Declare which schema rules a test exercises."""

    def mark(test: F) -> F:
        COVERED.update(names)
        return test

    return mark


@pytest.fixture
def db(rollback_db: asyncpg.Connection) -> asyncpg.Connection:
    """Constraint tests share one migrated database; each test's writes are rolled back."""
    return rollback_db


async def violation(
    db: asyncpg.Connection, action: Awaitable[Any]
) -> asyncpg.IntegrityConstraintViolationError:
    """The integrity error ``action`` raised (the test fails if it raised none).

    The action runs in a savepoint so the test can keep using ``db`` afterwards.
    """
    with pytest.raises(asyncpg.IntegrityConstraintViolationError) as info:
        async with db.transaction():
            await action
    return info.value


def this_months_partition() -> str:
    return f"model_experiment_request_{datetime.now(UTC):%Y_%m}"


# -- model_experiment -----------------------------------------------------------


@covers("model_experiment_status_check")
async def test_experiment_status_outside_the_lifecycle_is_rejected(
    db: asyncpg.Connection,
) -> None:
    error = await violation(db, rows.experiment(db, status="running"))
    assert error.constraint_name == "model_experiment_status_check"


@pytest.mark.parametrize("status", ["draft", "active", "paused", "completed"])
async def test_experiment_accepts_each_lifecycle_status(
    db: asyncpg.Connection, status: str
) -> None:
    row = await rows.experiment(db, status=status)
    assert row["status"] == status


@covers("model_experiment_active_not_archived")
async def test_archiving_an_active_experiment_is_rejected(db: asyncpg.Connection) -> None:
    experiment = await rows.experiment(db, status="active")
    error = await violation(
        db,
        db.execute(
            "UPDATE model_experiment SET is_archived = true WHERE id = $1", experiment["id"]
        ),
    )
    assert error.constraint_name == "model_experiment_active_not_archived"


@pytest.mark.parametrize("status", ["draft", "paused", "completed"])
async def test_an_experiment_that_is_not_active_can_be_archived(
    db: asyncpg.Connection, status: str
) -> None:
    row = await rows.experiment(db, status=status, is_archived=True)
    assert row["is_archived"] is True


@covers("model_experiment_live_public_model_id")
@pytest.mark.parametrize(
    ("first", "second"),
    [("active", "active"), ("active", "paused"), ("paused", "active"), ("paused", "paused")],
)
async def test_a_second_live_experiment_on_the_same_public_id_is_rejected(
    db: asyncpg.Connection, first: str, second: str
) -> None:
    await rows.experiment(db, public_model_id="partner/preview-x", status=first)
    error = await violation(
        db, rows.experiment(db, public_model_id="partner/preview-x", status=second)
    )
    assert error.constraint_name == "model_experiment_live_public_model_id"


async def test_activating_a_draft_while_another_experiment_is_live_is_rejected(
    db: asyncpg.Connection,
) -> None:
    await rows.experiment(db, public_model_id="partner/preview-x", status="active")
    draft = await rows.experiment(db, public_model_id="partner/preview-x", status="draft")
    error = await violation(
        db, db.execute("UPDATE model_experiment SET status = 'active' WHERE id = $1", draft["id"])
    )
    assert error.constraint_name == "model_experiment_live_public_model_id"


async def test_drafts_and_completed_experiments_coexist_with_a_live_one(
    db: asyncpg.Connection,
) -> None:
    await rows.experiment(db, public_model_id="partner/preview-x", status="active")
    for status in ("draft", "draft", "completed", "completed"):
        await rows.experiment(db, public_model_id="partner/preview-x", status=status)
    count = await db.fetchval(
        "SELECT count(*) FROM model_experiment WHERE public_model_id = 'partner/preview-x'"
    )
    assert count == 5


@covers(
    "model_experiment_name_len",
    "model_experiment_description_len",
    "model_experiment_public_model_id_len",
)
@pytest.mark.parametrize(
    ("column", "value", "constraint"),
    [
        pytest.param("name", "", "model_experiment_name_len", id="empty name"),
        pytest.param("name", "n" * 201, "model_experiment_name_len", id="name of 201"),
        pytest.param(
            "description", "d" * 2001, "model_experiment_description_len", id="description of 2001"
        ),
        pytest.param("public_model_id", "", "model_experiment_public_model_id_len", id="empty id"),
        pytest.param(
            "public_model_id", "p" * 201, "model_experiment_public_model_id_len", id="id of 201"
        ),
    ],
)
async def test_experiment_text_outside_its_length_limits_is_rejected(
    db: asyncpg.Connection, column: str, value: str, constraint: str
) -> None:
    error = await violation(db, rows.experiment(db, **{column: value}))
    assert error.constraint_name == constraint


async def test_experiment_text_at_its_length_limits_is_accepted(db: asyncpg.Connection) -> None:
    row = await rows.experiment(
        db, name="n" * 200, description="d" * 2000, public_model_id="p" * 200
    )
    assert (len(row["name"]), len(row["description"])) == (200, 2000)


# -- model_experiment_variant ---------------------------------------------------


@covers("model_experiment_variant_weight_positive")
@pytest.mark.parametrize("weight", [0, -1])
async def test_variant_weight_must_be_positive(db: asyncpg.Connection, weight: int) -> None:
    error = await violation(db, rows.variant(db, weight=weight))
    assert error.constraint_name == "model_experiment_variant_weight_positive"


@covers("model_experiment_variant_label_unique")
async def test_variant_label_is_unique_within_an_experiment(db: asyncpg.Connection) -> None:
    experiment = await rows.experiment(db)
    await rows.variant(db, experiment["id"], label="A")
    error = await violation(db, rows.variant(db, experiment["id"], label="A"))
    assert error.constraint_name == "model_experiment_variant_label_unique"


async def test_the_same_label_may_be_used_in_two_experiments(db: asyncpg.Connection) -> None:
    first = await rows.variant(db, label="A")
    second = await rows.variant(db, label="A")
    assert first["experiment_id"] != second["experiment_id"]


@covers("model_experiment_variant_label_len")
@pytest.mark.parametrize("label", ["", "L" * 65], ids=["empty", "65 chars"])
async def test_variant_label_outside_1_to_64_chars_is_rejected(
    db: asyncpg.Connection, label: str
) -> None:
    error = await violation(db, rows.variant(db, label=label))
    assert error.constraint_name == "model_experiment_variant_label_len"


@pytest.mark.parametrize("label", ["L", "L" * 64], ids=["1 char", "64 chars"])
async def test_variant_label_of_1_to_64_chars_is_accepted(
    db: asyncpg.Connection, label: str
) -> None:
    assert (await rows.variant(db, label=label))["label"] == label


@covers("model_experiment_variant_experiment_id_fkey")
async def test_variant_of_an_unknown_experiment_is_rejected(db: asyncpg.Connection) -> None:
    error = await violation(db, rows.variant(db, experiment_id=uuid.uuid4()))
    assert error.constraint_name == "model_experiment_variant_experiment_id_fkey"


# -- model_experiment_variant_version ------------------------------------------


@covers("model_experiment_variant_version_no_update")
async def test_a_variant_version_cannot_be_updated(db: asyncpg.Connection) -> None:
    version = await rows.version(db)
    error = await violation(
        db,
        db.execute(
            "UPDATE model_experiment_variant_version SET upstream = $1 WHERE id = $2",
            {"internal_id": "other"},
            version["id"],
        ),
    )
    assert isinstance(error, asyncpg.RestrictViolationError)
    assert "immutable" in str(error)


async def test_deleting_an_experiment_cascades_to_its_variants_and_versions(
    db: asyncpg.Connection,
) -> None:
    experiment = await rows.experiment(db)
    variant = await rows.variant(db, experiment["id"])
    await rows.version(db, variant["id"])
    await rows.version(db, variant["id"])

    await db.execute("DELETE FROM model_experiment WHERE id = $1", experiment["id"])

    assert await db.fetchval("SELECT count(*) FROM model_experiment_variant") == 0
    assert await db.fetchval("SELECT count(*) FROM model_experiment_variant_version") == 0


@covers("model_experiment_variant_version_key_shape")
@pytest.mark.parametrize(
    "key",
    [
        pytest.param({"kid": "k1", "iv": "aXY=", "data": "ZA=="}, id="no authTag"),
        pytest.param({"iv": "aXY=", "data": "ZA==", "authTag": "dA=="}, id="no kid"),
        pytest.param("plaintext-api-key", id="a string"),
        pytest.param(["k1", "aXY=", "ZA==", "dA=="], id="an array"),
    ],
)
async def test_encrypted_api_key_must_have_the_kid_iv_data_authtag_shape(
    db: asyncpg.Connection, key: Any
) -> None:
    error = await violation(db, rows.version(db, encrypted_api_key=key))
    assert error.constraint_name == "model_experiment_variant_version_key_shape"


@covers("model_experiment_variant_version_upstream_object")
@pytest.mark.parametrize("upstream", ["https://x.example", ["a"], 1], ids=["string", "array", "n"])
async def test_upstream_must_be_a_json_object(db: asyncpg.Connection, upstream: Any) -> None:
    error = await violation(db, rows.version(db, upstream=upstream))
    assert error.constraint_name == "model_experiment_variant_version_upstream_object"


@covers("model_experiment_variant_version_variant_id_fkey")
async def test_version_of_an_unknown_variant_is_rejected(db: asyncpg.Connection) -> None:
    error = await violation(db, rows.version(db, variant_id=987654321))
    assert error.constraint_name == "model_experiment_variant_version_variant_id_fkey"


# -- routing_config_version -----------------------------------------------------


@covers("routing_config_version_pkey")
async def test_routing_version_has_one_row_per_public_id(db: asyncpg.Connection) -> None:
    sql = "INSERT INTO routing_config_version (public_model_id, version) VALUES ($1, $2)"
    await db.execute(sql, "partner/preview-x", 1)
    error = await violation(db, db.execute(sql, "partner/preview-x", 2))
    assert error.constraint_name == "routing_config_version_pkey"


# -- usage --------------------------------------------------------------------


@covers(
    "usage_input_tokens_nonneg",
    "usage_output_tokens_nonneg",
    "usage_cache_read_tokens_nonneg",
    "usage_cache_write_tokens_nonneg",
)
@pytest.mark.parametrize(
    "column", ["input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens"]
)
async def test_usage_token_counts_cannot_be_negative(db: asyncpg.Connection, column: str) -> None:
    error = await violation(db, rows.usage(db, **{column: -1}))
    assert error.constraint_name == f"usage_{column}_nonneg"


@covers("usage_pkey")
async def test_a_usage_id_is_recorded_once(db: asyncpg.Connection) -> None:
    usage = await rows.usage(db)
    error = await violation(db, rows.usage(db, id=usage["id"]))
    assert error.constraint_name == "usage_pkey"


# -- model_experiment_request ---------------------------------------------------


@pytest.mark.parametrize("column", ["system_prompt_sha256", "request_body_sha256"])
async def test_request_hash_of_64_lowercase_hex_is_accepted(
    db: asyncpg.Connection, version_id: int, column: str
) -> None:
    row = await rows.request(db, version_id, **{column: HEX64})
    assert row[column] == HEX64


@covers(
    "model_experiment_request_system_prompt_sha256_check",
    "model_experiment_request_request_body_sha256_check",
)
@pytest.mark.parametrize("column", ["system_prompt_sha256", "request_body_sha256"])
@pytest.mark.parametrize(
    "value",
    [
        pytest.param(HEX64.upper(), id="uppercase hex"),
        pytest.param(HEX64[:63], id="63 hex"),
        pytest.param(HEX64 + "0", id="65 hex"),
        pytest.param("g" * 64, id="non-hex"),
        pytest.param("", id="empty"),
        pytest.param("__unknown__", id="unknown sentinel"),
    ],
)
async def test_request_hash_that_is_neither_hex_nor_a_sentinel_is_rejected(
    db: asyncpg.Connection, version_id: int, column: str, value: str
) -> None:
    error = await violation(db, rows.request(db, version_id, **{column: value}))
    assert error.constraint_name == f"model_experiment_request_{column}_check"


@pytest.mark.parametrize("sentinel", ["__absent__", "__failed__", "__deleted__"])
async def test_system_prompt_hash_accepts_every_sentinel(
    db: asyncpg.Connection, version_id: int, sentinel: str
) -> None:
    row = await rows.request(db, version_id, system_prompt_sha256=sentinel)
    assert row["system_prompt_sha256"] == sentinel


@pytest.mark.parametrize("sentinel", ["__failed__", "__deleted__"])
async def test_request_body_hash_accepts_failed_and_deleted(
    db: asyncpg.Connection, version_id: int, sentinel: str
) -> None:
    row = await rows.request(db, version_id, request_body_sha256=sentinel)
    assert row["request_body_sha256"] == sentinel


async def test_request_body_hash_rejects_absent(db: asyncpg.Connection, version_id: int) -> None:
    error = await violation(db, rows.request(db, version_id, request_body_sha256="__absent__"))
    assert error.constraint_name == "model_experiment_request_request_body_sha256_check"


@covers("model_experiment_request_allocation_subject_check")
async def test_request_allocation_subject_must_be_user_machine_or_ip(
    db: asyncpg.Connection, version_id: int
) -> None:
    for subject in ("user", "machine", "ip"):
        await rows.request(db, version_id, allocation_subject=subject)
    error = await violation(db, rows.request(db, version_id, allocation_subject="cookie"))
    assert error.constraint_name == "model_experiment_request_allocation_subject_check"


@covers("model_experiment_request_request_kind_check")
async def test_request_kind_must_be_one_of_the_three_api_kinds(
    db: asyncpg.Connection, version_id: int
) -> None:
    for kind in ("chat_completions", "responses", "messages"):
        await rows.request(db, version_id, request_kind=kind)
    error = await violation(db, rows.request(db, version_id, request_kind="embeddings"))
    assert error.constraint_name == "model_experiment_request_request_kind_check"


@covers(
    "model_experiment_request_subject_value_len",
    "model_experiment_request_client_request_id_len",
)
@pytest.mark.parametrize("column", ["subject_value", "client_request_id"])
async def test_request_identifiers_longer_than_500_chars_are_rejected(
    db: asyncpg.Connection, version_id: int, column: str
) -> None:
    await rows.request(db, version_id, **{column: "x" * 500})
    error = await violation(db, rows.request(db, version_id, **{column: "x" * 501}))
    assert error.constraint_name == f"model_experiment_request_{column}_len"


@covers("model_experiment_request_pkey")
async def test_request_primary_key_is_usage_id_and_created_at(
    db: asyncpg.Connection, version_id: int
) -> None:
    first = await rows.request(db, version_id)
    error = await violation(
        db, rows.request(db, version_id, usage_id=first["usage_id"], created_at=first["created_at"])
    )
    # The partition's clone of the parent's primary key reports the violation.
    assert error.constraint_name == f"{this_months_partition()}_pkey"
    key = await db.fetchval(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint"
        " WHERE conname = 'model_experiment_request_pkey'"
    )
    assert key == "PRIMARY KEY (usage_id, created_at)"


@covers("model_experiment_request_usage_fk")
async def test_request_of_an_unknown_usage_row_is_rejected(
    db: asyncpg.Connection, version_id: int
) -> None:
    error = await violation(db, rows.request(db, version_id, usage_id=uuid.uuid4()))
    assert error.constraint_name == "model_experiment_request_usage_fk"


async def test_deleting_a_usage_row_deletes_its_request_row(
    db: asyncpg.Connection, version_id: int
) -> None:
    kept = await rows.request(db, version_id)
    deleted = await rows.request(db, version_id)

    await db.execute("DELETE FROM usage WHERE id = $1", deleted["usage_id"])

    remaining = await db.fetch("SELECT usage_id FROM model_experiment_request")
    assert [row["usage_id"] for row in remaining] == [kept["usage_id"]]


@covers("model_experiment_request_variant_version_id_fkey")
async def test_request_of_an_unknown_variant_version_is_rejected(
    db: asyncpg.Connection,
) -> None:
    error = await violation(db, rows.request(db, variant_version_id=987654321))
    assert error.constraint_name == "model_experiment_request_variant_version_id_fkey"


async def test_an_experiment_whose_versions_served_requests_cannot_be_deleted(
    db: asyncpg.Connection,
) -> None:
    version = await rows.version(db)
    await rows.request(db, version["id"])
    experiment_id = await db.fetchval(
        "SELECT experiment_id FROM model_experiment_variant WHERE id = $1", version["variant_id"]
    )
    error = await violation(
        db, db.execute("DELETE FROM model_experiment WHERE id = $1", experiment_id)
    )
    assert error.constraint_name == "model_experiment_request_variant_version_id_fkey"


async def test_request_row_outside_every_partition_is_rejected(
    db: asyncpg.Connection, version_id: int
) -> None:
    long_ago = datetime(2001, 1, 1, tzinfo=UTC)
    error = await violation(db, rows.request(db, version_id, created_at=long_ago))
    assert isinstance(error, asyncpg.CheckViolationError)
    assert "no partition" in str(error)


async def test_request_row_beyond_the_created_partitions_is_rejected(
    db: asyncpg.Connection, version_id: int
) -> None:
    far_ahead = datetime.now(UTC) + timedelta(days=5 * 366)
    error = await violation(db, rows.request(db, version_id, created_at=far_ahead))
    assert "no partition" in str(error)


# -- rate_card ------------------------------------------------------------------


@covers("rate_card_version_unique")
async def test_rate_card_has_one_price_per_provider_model_and_start(
    db: asyncpg.Connection,
) -> None:
    first = await rows.rate_card(db)
    error = await violation(
        db, rows.rate_card(db, model=first["model"], effective_from=first["effective_from"])
    )
    assert error.constraint_name == "rate_card_version_unique"


async def test_rate_card_accepts_a_new_price_from_a_later_date(db: asyncpg.Connection) -> None:
    first = await rows.rate_card(db)
    later = await rows.rate_card(
        db, model=first["model"], effective_from=first["effective_from"] + timedelta(days=1)
    )
    assert later["id"] != first["id"]


@covers("rate_card_insert_only")
@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE rate_card SET input_per_1m_microdollars = 0 WHERE id = $1",
        "DELETE FROM rate_card WHERE id = $1",
    ],
    ids=["update", "delete"],
)
async def test_rate_card_rows_cannot_be_changed_or_removed(
    db: asyncpg.Connection, statement: str
) -> None:
    price = await rows.rate_card(db)
    error = await violation(db, db.execute(statement, price["id"]))
    assert isinstance(error, asyncpg.RestrictViolationError)
    assert "rate_card is insert-only" in str(error)


@covers(
    "rate_card_input_nonneg",
    "rate_card_output_nonneg",
    "rate_card_cache_read_nonneg",
    "rate_card_cache_write_nonneg",
)
@pytest.mark.parametrize("kind", ["input", "output", "cache_read", "cache_write"])
async def test_rate_card_prices_cannot_be_negative(db: asyncpg.Connection, kind: str) -> None:
    error = await violation(db, rows.rate_card(db, **{f"{kind}_per_1m_microdollars": -1}))
    assert error.constraint_name == f"rate_card_{kind}_nonneg"


@covers("rate_card_provider_len", "rate_card_model_len")
@pytest.mark.parametrize("column", ["provider", "model"])
@pytest.mark.parametrize("value", ["", "m" * 201], ids=["empty", "201 chars"])
async def test_rate_card_provider_and_model_outside_1_to_200_chars_are_rejected(
    db: asyncpg.Connection, column: str, value: str
) -> None:
    error = await violation(db, rows.rate_card(db, **{column: value}))
    assert error.constraint_name == f"rate_card_{column}_len"


# -- feedback -------------------------------------------------------------------


@covers("feedback_rating_check")
@pytest.mark.parametrize("rating", [0, 2, -2])
async def test_feedback_rating_other_than_plus_or_minus_one_is_rejected(
    db: asyncpg.Connection, rating: int
) -> None:
    error = await violation(db, rows.feedback(db, rating=rating))
    assert error.constraint_name == "feedback_rating_check"


@pytest.mark.parametrize("rating", [1, -1])
async def test_feedback_rating_of_plus_or_minus_one_is_accepted(
    db: asyncpg.Connection, rating: int
) -> None:
    assert (await rows.feedback(db, rating=rating))["rating"] == rating


@covers("feedback_request_subject_unique")
async def test_one_feedback_per_request_and_subject(db: asyncpg.Connection) -> None:
    first = await rows.feedback(db)
    error = await violation(
        db, rows.feedback(db, client_request_id=first["client_request_id"], rating=-1)
    )
    assert error.constraint_name == "feedback_request_subject_unique"


async def test_another_subject_may_rate_the_same_client_request_id(
    db: asyncpg.Connection,
) -> None:
    first = await rows.feedback(db)
    other = await rows.feedback(
        db, client_request_id=first["client_request_id"], subject_value="user-2"
    )
    assert other["id"] != first["id"]


@covers(
    "feedback_allocation_subject_check",
    "feedback_client_request_id_len",
    "feedback_subject_value_len",
    "feedback_comment_len",
)
@pytest.mark.parametrize(
    ("column", "value", "constraint"),
    [
        pytest.param("allocation_subject", "cookie", "feedback_allocation_subject_check"),
        pytest.param("client_request_id", "", "feedback_client_request_id_len", id="empty id"),
        pytest.param("client_request_id", "x" * 501, "feedback_client_request_id_len"),
        pytest.param("subject_value", "x" * 501, "feedback_subject_value_len"),
        pytest.param("comment", "c" * 4001, "feedback_comment_len"),
    ],
)
async def test_feedback_field_out_of_bounds_is_rejected(
    db: asyncpg.Connection, column: str, value: str, constraint: str
) -> None:
    error = await violation(db, rows.feedback(db, **{column: value}))
    assert error.constraint_name == constraint


# -- prompt_blob ----------------------------------------------------------------


@covers("prompt_blob_sha256_check")
@pytest.mark.parametrize(
    "sha", [HEX64.upper(), HEX64[:63], "__deleted__"], ids=["uppercase", "63 hex", "sentinel"]
)
async def test_prompt_blob_key_must_be_64_lowercase_hex(db: asyncpg.Connection, sha: str) -> None:
    error = await violation(db, rows.prompt_blob(db, sha256=sha))
    assert error.constraint_name == "prompt_blob_sha256_check"


@covers("prompt_blob_pkey")
async def test_a_prompt_blob_is_stored_once_per_hash(db: asyncpg.Connection) -> None:
    blob = await rows.prompt_blob(db, content=b"You are a helpful assistant.")
    error = await violation(db, rows.prompt_blob(db, content=blob["content"]))
    assert error.constraint_name == "prompt_blob_pkey"


# -- admin_token ------------------------------------------------------------------


@covers("admin_token_role_check")
async def test_admin_token_role_must_be_admin_or_viewer(db: asyncpg.Connection) -> None:
    for role in ("admin", "viewer"):
        await rows.admin_token(db, role=role)
    error = await violation(db, rows.admin_token(db, role="owner"))
    assert error.constraint_name == "admin_token_role_check"


@covers("admin_token_sha256_check")
@pytest.mark.parametrize("sha", [HEX64.upper(), "plain-token"], ids=["uppercase", "plaintext"])
async def test_admin_token_is_stored_as_a_lowercase_sha256(
    db: asyncpg.Connection, sha: str
) -> None:
    error = await violation(db, rows.admin_token(db, token_sha256=sha))
    assert error.constraint_name == "admin_token_sha256_check"


@covers("admin_token_sha256_unique")
async def test_two_admin_tokens_cannot_share_a_hash(db: asyncpg.Connection) -> None:
    token = await rows.admin_token(db)
    error = await violation(db, rows.admin_token(db, token_sha256=token["token_sha256"]))
    assert error.constraint_name == "admin_token_sha256_unique"


@covers("admin_token_name_len")
@pytest.mark.parametrize("name", ["", "n" * 201], ids=["empty", "201 chars"])
async def test_admin_token_name_outside_1_to_200_chars_is_rejected(
    db: asyncpg.Connection, name: str
) -> None:
    error = await violation(db, rows.admin_token(db, name=name))
    assert error.constraint_name == "admin_token_name_len"


# -- audit_log ------------------------------------------------------------------


@covers("audit_log_append_only")
@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_log SET actor = 'someone else' WHERE id = $1",
        "DELETE FROM audit_log WHERE id = $1",
    ],
    ids=["update", "delete"],
)
async def test_audit_log_is_append_only(db: asyncpg.Connection, statement: str) -> None:
    entry = await rows.audit_entry(db)
    error = await violation(db, db.execute(statement, entry["id"]))
    assert isinstance(error, asyncpg.RestrictViolationError)
    assert "audit_log is append-only" in str(error)
    assert await db.fetchval("SELECT actor FROM audit_log WHERE id = $1", entry["id"]) == "token:ci"


# -- coverage -------------------------------------------------------------------


async def test_every_integrity_rule_of_migrations_0001_to_0004_has_a_test(
    empty_db: asyncpg.Connection,
) -> None:
    await migrate_up(empty_db, [m for m in load_migrations() if m.version <= 4])
    rules = await integrity_rules(empty_db)
    assert rules - COVERED == set(), "schema rules without a test"
    assert COVERED - rules == set(), "tests naming rules the schema does not have"
