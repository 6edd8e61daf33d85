"""Rate cards: insert-only API, validation, and the market cost the recorder writes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from evidence_helpers import VIEWER_TOKEN, auth, body_for, experiment, record, write

from abgate.pricing import RateCard, card_in_force, market_cost_microdollars, provider_of

CARD = {"provider": "api.partner.example", "model": "ckpt-0",
        "effective_from": "2025-01-01T00:00:00Z",
        "input_per_1m_microdollars": 3_000_000, "output_per_1m_microdollars": 15_000_000,
        "cache_read_per_1m_microdollars": 300_000, "cache_write_per_1m_microdollars": 3_750_000}


@dataclass
class Tokens:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0


def _card(**prices: int) -> RateCard:
    return RateCard("p", "m", datetime(2025, 1, 1, tzinfo=UTC), **{
        "input_per_1m_microdollars": 0, "output_per_1m_microdollars": 0, **prices})


def test_cost_prices_each_token_kind_separately() -> None:
    card = _card(input_per_1m_microdollars=3_000_000, output_per_1m_microdollars=15_000_000,
                 cache_read_per_1m_microdollars=300_000, cache_write_per_1m_microdollars=3_750_000)
    usage = Tokens(input_tokens=1000, output_tokens=200, cache_read_tokens=10_000,
                   cache_write_tokens=2000)
    # 3000 + 3000 + 3000 + 7500 microdollars
    assert market_cost_microdollars(card, usage) == 16_500


def test_cost_rounds_half_up_to_whole_microdollars() -> None:
    card = _card(input_per_1m_microdollars=1)
    assert market_cost_microdollars(card, Tokens(input_tokens=499_999)) == 0
    assert market_cost_microdollars(card, Tokens(input_tokens=500_000)) == 1


def test_the_card_in_force_is_the_newest_effective_one() -> None:
    old = _card(input_per_1m_microdollars=1)
    new = RateCard("p", "m", datetime(2025, 6, 1, tzinfo=UTC), 2, 0)
    cards = [new, old]
    assert card_in_force(cards, datetime(2025, 3, 1, tzinfo=UTC)) is old
    assert card_in_force(cards, datetime(2025, 7, 1, tzinfo=UTC)) is new
    assert card_in_force(cards, datetime(2024, 1, 1, tzinfo=UTC)) is None


def test_provider_is_the_lowercase_upstream_host() -> None:
    assert provider_of("https://API.Partner.example:8443/v1") == "api.partner.example"


async def test_cards_are_created_listed_and_audited(admin: TestClient,
                                                    db: asyncpg.Connection) -> None:
    response = await admin.post("/api/rate-cards", json=CARD, headers=auth())
    assert response.status == 201, await response.text()
    created = await response.json()
    assert created["created_by"] == "bootstrap"
    listed = await (await admin.get("/api/rate-cards?model=ckpt-0", headers=auth())).json()
    assert [c["id"] for c in listed["rate_cards"]] == [created["id"]]
    assert await db.fetchval("SELECT count(*) FROM audit_log WHERE action = "
                             "'rate_card.create'") == 1


async def test_a_duplicate_card_is_409_and_cards_cannot_change(
    admin: TestClient, db: asyncpg.Connection
) -> None:
    assert (await admin.post("/api/rate-cards", json=CARD, headers=auth())).status == 201
    again = await admin.post("/api/rate-cards", json=CARD, headers=auth())
    assert again.status == 409
    assert (await again.json())["error"]["code"] == "CONFLICT"
    with pytest.raises(asyncpg.RestrictViolationError):
        await db.execute("UPDATE rate_card SET input_per_1m_microdollars = 0")


async def test_viewers_cannot_create_cards(admin: TestClient) -> None:
    response = await admin.post("/api/rate-cards", json=CARD, headers=auth(VIEWER_TOKEN))
    assert response.status == 403


@pytest.mark.parametrize("change", [
    {"provider": ""}, {"model": 7}, {"input_per_1m_microdollars": -1},
    {"output_per_1m_microdollars": 1.5}, {"cache_read_per_1m_microdollars": True},
    {"effective_from": "2025-01-01T00:00:00"}, {"effective_from": "soon"}, {"colour": "red"},
    {"input_per_1m_microdollars": 10**13},
])
async def test_invalid_cards_are_400(admin: TestClient, change: dict) -> None:
    response = await admin.post("/api/rate-cards", json={**CARD, **change}, headers=auth())
    assert response.status == 400
    assert (await response.json())["error"]["code"] == "BAD_REQUEST"


async def test_the_recorder_writes_the_market_cost_of_the_card_in_force(
    db: asyncpg.Connection, pool: asyncpg.Pool, spool_dir: Path
) -> None:
    setup = await experiment(db)
    now = datetime.now(UTC)
    await db.execute(
        "INSERT INTO rate_card (provider, model, effective_from, input_per_1m_microdollars, "
        "output_per_1m_microdollars) VALUES ('api.partner.example', 'ckpt-0', $1, 1000000, "
        "2000000), ('api.partner.example', 'ckpt-0', $2, 9000000, 9000000)",
        now - timedelta(days=1), now + timedelta(days=1))
    item = record("responses", body_for("responses", None, "q"), setup.version_ids[0],
                  input_tokens=1000, output_tokens=500)
    unpriced = record("responses", body_for("responses", None, "q"), setup.version_ids[1],
                      input_tokens=1000)
    await write(pool, [item, unpriced], spool_dir)
    costs = dict(await db.fetch("SELECT id, market_cost_microdollars FROM usage"))
    assert costs == {item.usage_id: 2000, unpriced.usage_id: 0}
    assert await db.fetchval("SELECT sum(cost_microdollars) FROM usage") == 0
    assert await db.fetchval("SELECT sum(market_cost_microdollars) FROM "
                             "request_stats_hourly") == 2000
