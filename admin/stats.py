# ruff: noqa: S608 - SQL here is constant text; every value is a bound parameter.
"""Live stats of an experiment: ``GET /api/experiments/{id}/stats?since=&until=``.

Numbers come from the hourly rollup of sql/0006 (kept exact by triggers in the
recorder's own transaction), never from the raw request rows, so the answer
costs the same at a thousand or a hundred million requests. The price is the
grain: ``since`` is rounded down and ``until`` up to whole UTC hours (the
answer's ``window`` says which hours were counted). Client request ids are
counted in the hour they were first recorded for a version, and feedback with
them.

Grouping: by variant version (what actually served), each with its variant (the
stable slot) and label (display only), and each split by allocation subject
kind. Variants repeat the same numbers summed over their versions, except unique
subjects, which are counted afresh per variant (a subject served by two versions
of one variant is one subject). The sample-ratio-mismatch check compares unique
subjects per variant with the weights; each later variant is compared with the
first on error rate (errors / requests) and thumbs-up rate (up votes / distinct
client request ids), with Newcombe 95% intervals (admin/stats_math.py).

``abgate_experiment_srm_ok{experiment_id}`` is 1 while the whole experiment
passes the check and 0 when it fails; it is set by every unwindowed stats call
and by :func:`refresh_srm_gauges` (admin/maintenance.py) for live experiments.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiohttp import web
from prometheus_client import Gauge

from admin.context import context
from admin.errors import BadRequest, NotFound
from admin.evidence_openapi import error, nullable, obj, ok, op, query, ref
from admin.http import json_response
from admin.query_params import ceil_hour, floor_hour, optional_timestamp, path_uuid
from admin.stats_math import Srm, newcombe_difference, percentile, sample_ratio_mismatch

__all__ = [
    "SRM_OK",
    "SUBJECT_KINDS",
    "Window",
    "compute_stats",
    "experiment_srm",
    "parse_window",
    "refresh_srm_gauges",
    "register_routes",
]

SUBJECT_KINDS = ("user", "machine", "ip")
_LIVE = ("active", "paused")

SRM_OK = Gauge(
    "abgate_experiment_srm_ok",
    "1 while an experiment's unique subjects per variant match its weights (p >= 0.001), "
    "0 on a sample ratio mismatch",
    ["experiment_id"],
)
_gauged: set[str] = set()


@dataclass(frozen=True)
class Window:
    """Whole UTC hours [since, until); None is unbounded."""

    since: datetime | None = None
    until: datetime | None = None

    @property
    def unbounded(self) -> bool:
        return self.since is None and self.until is None

    def epoch_hours(self) -> tuple[int | None, int | None]:
        def hour(moment: datetime | None) -> int | None:
            return None if moment is None else math.floor(moment.timestamp() / 3600)

        return hour(self.since), hour(self.until)

    def to_json(self) -> dict[str, Any]:
        return {"since": self.since, "until": self.until, "grain": "hour"}


def parse_window(query: Mapping[str, str]) -> Window:
    since = optional_timestamp(query, "since")
    until = optional_timestamp(query, "until")
    window = Window(
        since=floor_hour(since) if since is not None else None,
        until=ceil_hour(until) if until is not None else None,
    )
    if window.since is not None and window.until is not None and window.since >= window.until:
        raise BadRequest("since must be before until")
    return window


# -- accumulation ------------------------------------------------------------------


@dataclass
class Tally:
    """Counts of one group (a version or variant, optionally one subject kind)."""

    requests: int = 0
    errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    market_cost_microdollars: int = 0
    client_request_ids: int = 0
    feedback_up: int = 0
    feedback_down: int = 0
    unique_subjects: int = 0
    latency: dict[int, int] = field(default_factory=dict)
    ttft: dict[int, int] = field(default_factory=dict)

    def add(self, other: Tally, *, subjects: bool = True) -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.market_cost_microdollars += other.market_cost_microdollars
        self.client_request_ids += other.client_request_ids
        self.feedback_up += other.feedback_up
        self.feedback_down += other.feedback_down
        if subjects:
            self.unique_subjects += other.unique_subjects
        for mine, theirs in ((self.latency, other.latency), (self.ttft, other.ttft)):
            for bucket, count in theirs.items():
                mine[bucket] = mine.get(bucket, 0) + count

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "unique_subjects": self.unique_subjects,
            "unique_client_request_ids": self.client_request_ids,
            "errors": self.errors,
            "error_rate": _rate(self.errors, self.requests),
            "latency_ms": _percentiles(self.latency),
            "ttft_ms": _percentiles(self.ttft),
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "market_cost_microdollars": self.market_cost_microdollars,
            "feedback": {
                "up": self.feedback_up,
                "down": self.feedback_down,
                "thumbs_up_rate": _rate(self.feedback_up, self.client_request_ids),
            },
        }


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole > 0 else None


def _percentiles(histogram: dict[int, int]) -> dict[str, int | None]:
    return {"p50": percentile(histogram, 0.5), "p95": percentile(histogram, 0.95)}


@dataclass
class Group:
    """A version or a variant: its tallies per subject kind, and overall."""

    by_kind: dict[str, Tally] = field(
        default_factory=lambda: {kind: Tally() for kind in SUBJECT_KINDS}
    )

    def kind(self, kind: str) -> Tally:
        return self.by_kind.setdefault(kind, Tally())

    def total(self) -> Tally:
        total = Tally()
        for tally in self.by_kind.values():
            total.add(tally)  # a subject's kind is part of its identity: kinds add up
        return total

    def to_json(self) -> dict[str, Any]:
        return {
            "totals": self.total().to_json(),
            "by_subject_kind": {kind: t.to_json() for kind, t in self.by_kind.items()},
        }


# -- queries -------------------------------------------------------------------------

_EXPERIMENT_SQL = "SELECT id, status FROM model_experiment WHERE id = $1"
_VARIANTS_SQL = """
SELECT id, label, weight FROM model_experiment_variant WHERE experiment_id = $1 ORDER BY id
"""
# upstream->>'internal_id' only: the encrypted key is never read here.
_VERSIONS_SQL = """
SELECT x.id, x.variant_id, x.upstream->>'internal_id' AS internal_id, x.effective_at
FROM model_experiment_variant_version x
JOIN model_experiment_variant v ON v.id = x.variant_id
WHERE v.experiment_id = $1
ORDER BY x.variant_id, x.effective_at, x.id
"""
_HOURS = (
    "hour >= coalesce($2::timestamptz, '-infinity') "
    "AND hour < coalesce($3::timestamptz, 'infinity')"
)
_TOTALS_SQL = f"""
SELECT variant_version_id, allocation_subject,
       sum(requests)::bigint AS requests, sum(errors)::bigint AS errors,
       sum(input_tokens)::bigint AS input_tokens, sum(output_tokens)::bigint AS output_tokens,
       sum(market_cost_microdollars)::bigint AS cost,
       sum(client_request_ids)::bigint AS crids,
       sum(feedback_up)::bigint AS up, sum(feedback_down)::bigint AS down
FROM request_stats_hourly
WHERE variant_version_id = ANY($1::bigint[]) AND {_HOURS}
GROUP BY 1, 2
"""
_HISTOGRAM_SQL = f"""
SELECT variant_version_id, allocation_subject, bucket,
       sum(latency_count)::bigint AS latency, sum(ttft_count)::bigint AS ttft
FROM request_latency_hourly
WHERE variant_version_id = ANY($1::bigint[]) AND {_HOURS}
GROUP BY 1, 2, 3
"""
_VERSION_SUBJECTS_SQL = """
SELECT variant_version_id, allocation_subject, count(*) AS subjects
FROM request_subject_seen
WHERE variant_version_id = ANY($1::bigint[]) AND hours && int4range($2::integer, $3::integer)
GROUP BY 1, 2
"""
_VARIANT_SUBJECTS_SQL = """
SELECT variant_id, allocation_subject, count(*) AS subjects
FROM (
    SELECT DISTINCT v.variant_id, s.allocation_subject, s.subject_value
    FROM request_subject_seen s
    JOIN unnest($1::bigint[], $2::bigint[]) AS v(version_id, variant_id)
      ON v.version_id = s.variant_version_id
    WHERE s.hours && int4range($3::integer, $4::integer)
) AS distinct_subjects
GROUP BY 1, 2
"""


@dataclass(frozen=True)
class _Shape:
    variants: list[asyncpg.Record]
    versions: list[asyncpg.Record]

    @property
    def version_ids(self) -> list[int]:
        return [v["id"] for v in self.versions]

    @property
    def version_variants(self) -> list[int]:
        return [v["variant_id"] for v in self.versions]


async def _shape(conn: asyncpg.Connection, experiment_id: uuid.UUID) -> _Shape:
    return _Shape(
        variants=list(await conn.fetch(_VARIANTS_SQL, experiment_id)),
        versions=list(await conn.fetch(_VERSIONS_SQL, experiment_id)),
    )


async def _variant_subjects(
    conn: asyncpg.Connection, shape: _Shape, window: Window
) -> dict[tuple[int, str], int]:
    first, last = window.epoch_hours()
    rows = await conn.fetch(
        _VARIANT_SUBJECTS_SQL, shape.version_ids, shape.version_variants, first, last
    )
    return {(r["variant_id"], r["allocation_subject"]): r["subjects"] for r in rows}


def _srm(shape: _Shape, subjects: Mapping[tuple[int, str], int]) -> Srm:
    observed = [
        sum(subjects.get((v["id"], kind), 0) for kind in SUBJECT_KINDS) for v in shape.variants
    ]
    return sample_ratio_mismatch(observed, [v["weight"] for v in shape.variants])


async def _version_groups(
    conn: asyncpg.Connection, shape: _Shape, window: Window
) -> dict[int, Group]:
    groups = {version_id: Group() for version_id in shape.version_ids}
    for row in await conn.fetch(_TOTALS_SQL, shape.version_ids, window.since, window.until):
        tally = groups[row["variant_version_id"]].kind(row["allocation_subject"])
        tally.requests = row["requests"]
        tally.errors = row["errors"]
        tally.input_tokens = row["input_tokens"]
        tally.output_tokens = row["output_tokens"]
        tally.market_cost_microdollars = row["cost"]
        tally.client_request_ids = row["crids"]
        tally.feedback_up = row["up"]
        tally.feedback_down = row["down"]
    for row in await conn.fetch(_HISTOGRAM_SQL, shape.version_ids, window.since, window.until):
        tally = groups[row["variant_version_id"]].kind(row["allocation_subject"])
        if row["latency"]:
            tally.latency[row["bucket"]] = row["latency"]
        if row["ttft"]:
            tally.ttft[row["bucket"]] = row["ttft"]
    first, last = window.epoch_hours()
    for row in await conn.fetch(_VERSION_SUBJECTS_SQL, shape.version_ids, first, last):
        groups[row["variant_version_id"]].kind(row["allocation_subject"]).unique_subjects = (
            row["subjects"]
        )
    return groups


def _variant_groups(
    shape: _Shape, versions: Mapping[int, Group], subjects: Mapping[tuple[int, str], int]
) -> dict[int, Group]:
    groups = {v["id"]: Group() for v in shape.variants}
    for version in shape.versions:
        for kind, tally in versions[version["id"]].by_kind.items():
            groups[version["variant_id"]].kind(kind).add(tally, subjects=False)
    for (variant_id, kind), count in subjects.items():
        groups[variant_id].kind(kind).unique_subjects = count
    return groups


def _comparisons(shape: _Shape, variants: Mapping[int, Group]) -> list[dict[str, Any]]:
    if not shape.variants:
        return []
    baseline_row = shape.variants[0]
    baseline = variants[baseline_row["id"]].total()
    comparisons = []
    for row in shape.variants[1:]:
        total = variants[row["id"]].total()
        errors = newcombe_difference(
            total.errors, total.requests, baseline.errors, baseline.requests
        )
        thumbs = newcombe_difference(
            total.feedback_up, total.client_request_ids,
            baseline.feedback_up, baseline.client_request_ids,
        )
        comparisons.append({
            "variant_id": row["id"],
            "label": row["label"],
            "baseline_variant_id": baseline_row["id"],
            "baseline_label": baseline_row["label"],
            "error_rate": errors.to_json() if errors else None,
            "thumbs_up_rate": thumbs.to_json() if thumbs else None,
        })
    return comparisons


async def compute_stats(
    conn: asyncpg.Connection, experiment_id: uuid.UUID, window: Window
) -> dict[str, Any]:
    """The stats document of one experiment; raises NotFound for an unknown id."""
    experiment = await conn.fetchrow(_EXPERIMENT_SQL, experiment_id)
    if experiment is None:
        raise NotFound("experiment not found")
    shape = await _shape(conn, experiment_id)
    versions = await _version_groups(conn, shape, window)
    subjects = await _variant_subjects(conn, shape, window)
    variants = _variant_groups(shape, versions, subjects)
    srm = _srm(shape, subjects)
    if window.unbounded:
        _set_gauge(str(experiment_id), srm)
    total_weight = sum(v["weight"] for v in shape.variants) or 1
    labels = {v["id"]: v["label"] for v in shape.variants}
    return {
        "experiment_id": str(experiment_id),
        "status": experiment["status"],
        "window": window.to_json(),
        "generated_at": datetime.now(UTC),
        "versions": [
            {
                "variant_version_id": v["id"],
                "variant_id": v["variant_id"],
                "label": labels[v["variant_id"]],
                "internal_id": v["internal_id"],
                "effective_at": v["effective_at"],
                **versions[v["id"]].to_json(),
            }
            for v in shape.versions
        ],
        "variants": [
            {
                "variant_id": v["id"],
                "label": v["label"],
                "weight": v["weight"],
                "share": v["weight"] / total_weight,
                **variants[v["id"]].to_json(),
            }
            for v in shape.variants
        ],
        "srm": {"variant_ids": [v["id"] for v in shape.variants], **srm.to_json()},
        "comparisons": _comparisons(shape, variants),
    }


async def experiment_srm(conn: asyncpg.Connection, experiment_id: uuid.UUID) -> Srm:
    """The whole experiment's sample-ratio-mismatch check (no window)."""
    shape = await _shape(conn, experiment_id)
    return _srm(shape, await _variant_subjects(conn, shape, Window()))


def _set_gauge(experiment_id: str, srm: Srm) -> None:
    SRM_OK.labels(experiment_id).set(1 if srm.ok else 0)
    _gauged.add(experiment_id)


async def refresh_srm_gauges(pool: asyncpg.Pool) -> int:
    """Recompute the gauge of every active or paused experiment; drop the others'."""
    async with pool.acquire() as conn:
        ids = [r["id"] for r in await conn.fetch(
            "SELECT id FROM model_experiment WHERE status = ANY($1::text[])", list(_LIVE)
        )]
        for experiment_id in ids:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                _set_gauge(str(experiment_id), await experiment_srm(conn, experiment_id))
    live = {str(i) for i in ids}
    for stale in _gauged - live:
        SRM_OK.remove(stale)
        _gauged.discard(stale)
    return len(ids)


async def _read(
    pool: asyncpg.Pool, experiment_id: uuid.UUID, window: Window
) -> dict[str, Any]:
    async with pool.acquire() as conn, conn.transaction(
        isolation="repeatable_read", readonly=True
    ):
        # A JIT compile costs more than these small aggregates over the rollup.
        await conn.execute("SET LOCAL jit = off")
        return await compute_stats(conn, experiment_id, window)


async def get_stats(request: web.Request) -> web.Response:
    experiment_id = path_uuid(request.match_info["id"], "experiment")
    window = parse_window(request.query)
    return json_response(await _read(context(request).pool, experiment_id, window))


def register_routes(app: web.Application) -> None:
    app.router.add_get("/api/experiments/{id}/stats", get_stats)



# -- OpenAPI (merged by admin/openapi.py) ----------------------------------------------

_COUNT: dict[str, Any] = {"type": "integer", "minimum": 0}
_RATE = nullable({"type": "number", "minimum": 0, "maximum": 1})
_PERCENTILES = obj({"p50": nullable({"type": "integer"}), "p95": nullable({"type": "integer"})})
_DIFFERENCE = nullable(obj({
    "difference": {"type": "number"},
    "ci95": {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2},
}))
_GROUP = {
    "totals": ref("StatsMetrics"),
    "by_subject_kind": obj({kind: ref("StatsMetrics") for kind in SUBJECT_KINDS}),
}
OPENAPI_SCHEMAS: dict[str, Any] = {
    "StatsMetrics": obj({
        "requests": _COUNT,
        "unique_subjects": _COUNT,
        "unique_client_request_ids": _COUNT,
        "errors": _COUNT,
        "error_rate": _RATE,
        "latency_ms": _PERCENTILES,
        "ttft_ms": _PERCENTILES,
        "input_tokens": _COUNT,
        "output_tokens": _COUNT,
        "market_cost_microdollars": {"type": "integer"},
        "feedback": obj({"up": _COUNT, "down": _COUNT, "thumbs_up_rate": _RATE}),
    }),
    "Stats": obj({
        "experiment_id": {"type": "string", "format": "uuid"},
        "status": {"type": "string"},
        "window": obj({
            "since": nullable({"type": "string", "format": "date-time"}),
            "until": nullable({"type": "string", "format": "date-time"}),
            "grain": {"type": "string", "enum": ["hour"]},
        }),
        "generated_at": {"type": "string", "format": "date-time"},
        "versions": {"type": "array", "items": obj({
            "variant_version_id": {"type": "integer"},
            "variant_id": {"type": "integer"},
            "label": {"type": "string"},
            "internal_id": nullable({"type": "string"}),
            "effective_at": {"type": "string", "format": "date-time"},
            **_GROUP,
        })},
        "variants": {"type": "array", "items": obj({
            "variant_id": {"type": "integer"},
            "label": {"type": "string"},
            "weight": {"type": "integer"},
            "share": {"type": "number"},
            **_GROUP,
        })},
        "srm": obj({
            "variant_ids": {"type": "array", "items": {"type": "integer"}},
            "ok": {"type": "boolean"},
            "p_value": nullable({"type": "number"}),
            "chi2": nullable({"type": "number"}),
            "expected": {"type": "array", "items": {"type": "number"}},
            "observed": {"type": "array", "items": {"type": "integer"}},
            "threshold": {"type": "number"},
        }),
        "comparisons": {"type": "array", "items": obj({
            "variant_id": {"type": "integer"},
            "label": {"type": "string"},
            "baseline_variant_id": {"type": "integer"},
            "baseline_label": {"type": "string"},
            "error_rate": _DIFFERENCE,
            "thumbs_up_rate": _DIFFERENCE,
        })},
    }),
}
OPENAPI_PATHS: dict[str, Any] = {
    "/api/experiments/{id}/stats": {"get": op(
        "Live stats per variant version and variant, with SRM check and comparisons",
        {"200": ok("Stats of the whole hours in the window", ref("Stats")),
         "400": error("Invalid since/until"),
         "404": error("No such experiment (also for a malformed id)")},
        params=[
            {"name": "id", "in": "path", "required": True,
             "schema": {"type": "string", "format": "uuid"}},
            query("since", {"type": "string", "format": "date-time"},
                  "rounded down to the hour; with a UTC offset"),
            query("until", {"type": "string", "format": "date-time"},
                  "rounded up to the hour; with a UTC offset"),
        ],
    )},
}
