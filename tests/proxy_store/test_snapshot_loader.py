"""load_snapshot / read_snapshot against real rows, and the snapshot's Redis form."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import asyncpg
import orjson
import pytest

from abgate.routing_protocol import bump_version
from abgate.upstream import parse_upstream
from proxy.snapshot_loader import (
    load_snapshot,
    read_snapshot,
    snapshot_from_json,
    snapshot_to_json,
)

from .routing_rows import ENCRYPTED_KEY, create_experiment, insert_version, upstream_json


async def test_snapshot_holds_variants_in_id_order_with_current_versions(
    db: asyncpg.Connection,
) -> None:
    experiment = await create_experiment(db, "preview/a", weights=(3, 1, 6))
    snapshot = await load_snapshot(db, "preview/a")
    assert snapshot is not None
    assert snapshot.experiment_id == str(experiment.id)
    assert snapshot.public_model_id == "preview/a"
    assert snapshot.status == "active"
    assert snapshot.version == 1
    assert snapshot.valid_until is None
    assert [v.variant_id for v in snapshot.variants] == sorted(experiment.variant_ids)
    assert [v.weight for v in snapshot.variants] == [3, 1, 6]
    assert [v.label for v in snapshot.variants] == ["label-0", "label-1", "label-2"]
    assert [v.version_id for v in snapshot.variants] == experiment.version_ids
    first = snapshot.variants[0]
    assert first.upstream == parse_upstream(upstream_json("preview/a-ckpt-0"), allow_insecure=True)
    assert first.encrypted_api_key == ENCRYPTED_KEY


async def test_paused_experiments_load_with_their_status(db: asyncpg.Connection) -> None:
    await create_experiment(db, "preview/p", status="paused")
    snapshot = await load_snapshot(db, "preview/p")
    assert snapshot is not None and snapshot.status == "paused"


@pytest.mark.parametrize("status", ["draft", "completed"])
async def test_no_live_experiment_gives_none(db: asyncpg.Connection, status: str) -> None:
    await create_experiment(db, "preview/x", status=status)
    assert await load_snapshot(db, "preview/x") is None
    assert await load_snapshot(db, "preview/unknown") is None


async def test_read_snapshot_returns_the_version_even_without_a_live_experiment(
    db: asyncpg.Connection,
) -> None:
    experiment = await create_experiment(db, "preview/x")
    async with db.transaction():
        await db.execute(
            "UPDATE model_experiment SET status = 'completed' WHERE id = $1", experiment.id
        )
        version = await bump_version(db, "preview/x")
    assert await read_snapshot(db, "preview/x") == (version, None)
    assert await read_snapshot(db, "preview/never") == (0, None)


async def test_the_newest_past_version_is_current_and_future_ones_are_ignored(
    db: asyncpg.Connection,
) -> None:
    experiment = await create_experiment(db, "preview/a")
    variant = experiment.variant_ids[0]
    newer = await insert_version(db, variant, upstream_json("newer"), ago_s=10)
    now = await db.fetchval("SELECT now()")
    await insert_version(db, variant, upstream_json("later"), effective_at=now + timedelta(hours=2))
    soon = now + timedelta(hours=1)
    await insert_version(
        db, experiment.variant_ids[1], upstream_json("soon"), effective_at=soon
    )

    snapshot = await load_snapshot(db, "preview/a")
    assert snapshot is not None
    assert snapshot.variants[0].version_id == newer
    assert snapshot.variants[0].upstream is not None
    assert snapshot.variants[0].upstream.internal_id == "newer"
    assert snapshot.variants[1].version_id == experiment.version_ids[1]
    # The earliest scheduled version among all variants bounds the snapshot's life.
    assert snapshot.valid_until == pytest.approx(soon.timestamp())


async def test_equal_effective_at_picks_the_highest_version_id(db: asyncpg.Connection) -> None:
    experiment = await create_experiment(db, "preview/a")
    variant = experiment.variant_ids[0]
    at = await db.fetchval("SELECT now() - interval '5 seconds'")
    first = await insert_version(db, variant, upstream_json("one"), effective_at=at)
    second = await insert_version(db, variant, upstream_json("two"), effective_at=at)
    assert second > first
    snapshot = await load_snapshot(db, "preview/a")
    assert snapshot is not None
    assert snapshot.variants[0].version_id == second


async def test_a_variant_with_only_a_scheduled_version_has_no_current_one(
    db: asyncpg.Connection,
) -> None:
    experiment = await create_experiment(db, "preview/a")
    variant = await db.fetchval(
        "INSERT INTO model_experiment_variant (experiment_id, label, weight)"
        " VALUES ($1, 'late', 1) RETURNING id",
        experiment.id,
    )
    at = await db.fetchval("SELECT now() + interval '1 day'")
    await insert_version(db, variant, upstream_json("late"), effective_at=at)
    snapshot = await load_snapshot(db, "preview/a")
    assert snapshot is not None
    late = snapshot.variants[-1]
    assert (late.version_id, late.upstream, late.encrypted_api_key) == (None, None, None)
    assert snapshot.valid_until == pytest.approx(at.timestamp())


async def test_a_live_experiment_without_variants_has_an_empty_snapshot(
    db: asyncpg.Connection,
) -> None:
    await create_experiment(db, "preview/empty", weights=())
    snapshot = await load_snapshot(db, "preview/empty")
    assert snapshot is not None
    assert snapshot.variants == ()
    assert snapshot.total_weight == 0


async def test_an_unparsable_stored_upstream_becomes_none(db: asyncpg.Connection) -> None:
    experiment = await create_experiment(db, "preview/a")
    await insert_version(db, experiment.variant_ids[0], {"internal_id": "x"})
    snapshot = await load_snapshot(db, "preview/a")
    assert snapshot is not None
    assert snapshot.variants[0].upstream is None
    assert snapshot.variants[0].version_id is not None  # the row is current, just unusable
    assert snapshot.variants[1].upstream is not None


async def test_redis_form_round_trips(db: asyncpg.Connection) -> None:
    experiment = await create_experiment(db, "preview/a")
    await insert_version(db, experiment.variant_ids[0], {"internal_id": "broken"})
    at = await db.fetchval("SELECT now() + interval '1 hour'")
    await insert_version(db, experiment.variant_ids[1], upstream_json("next"), effective_at=at)
    snapshot = await load_snapshot(db, "preview/a")
    assert snapshot is not None
    wire = orjson.dumps(snapshot_to_json(snapshot))
    assert snapshot_from_json(orjson.loads(wire)) == snapshot


def _valid_json() -> dict[str, Any]:
    return {
        "format": 1,
        "experiment_id": "e",
        "public_model_id": "preview/a",
        "status": "active",
        "version": 3,
        "valid_until": None,
        "variants": [
            {
                "variant_id": 1,
                "label": "a",
                "weight": 1,
                "version_id": 7,
                "upstream": upstream_json("a"),
                "encrypted_api_key": ENCRYPTED_KEY,
            }
        ],
    }


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda d: d.pop("version"),
        lambda d: d.update(format=2),
        lambda d: d.update(version="3"),
        lambda d: d.update(version=True),
        lambda d: d.update(status="draft"),
        lambda d: d.update(valid_until="soon"),
        lambda d: d.update(variants=None),
        lambda d: d["variants"][0].update(weight=None),
        lambda d: d["variants"][0].update(upstream={"internal_id": "x"}),
        lambda d: d["variants"][0].update(encrypted_api_key="plain"),
        lambda d: d["variants"][0].pop("label"),
    ],
)
def test_malformed_redis_form_raises_value_error(corrupt: Any) -> None:
    data = _valid_json()
    snapshot_from_json(data)  # the baseline is valid
    corrupt(data)
    with pytest.raises(ValueError):
        snapshot_from_json(data)


@pytest.mark.parametrize("junk", [None, [], "x", 1])
def test_non_object_redis_form_raises_value_error(junk: Any) -> None:
    with pytest.raises(ValueError):
        snapshot_from_json(junk)
