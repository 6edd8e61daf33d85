"""Background upkeep run by the admin app.

* daily: create the request partitions for this month and the next three
  (``abgate.migrations.ensure_partitions``), and, when
  ``ABGATE_RETENTION_MONTHS`` is set (a whole number >= 1), apply retention
  (admin/cli_evidence.py ``retention``). With several admin replicas only the
  one holding a session advisory lock runs retention at a time; partition
  creation is idempotent anyway.
* every minute: the ``abgate_experiment_srm_ok`` gauge of live experiments.

A failing run is logged and retried at the next period; it never stops the app.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Mapping

from aiohttp import web

from abgate.config import ConfigError
from abgate.migrations import ensure_partitions
from abgate.prompt_store import open_blob_store
from admin.cli_evidence import retention
from admin.context import CONTEXT, AdminContext
from admin.stats import refresh_srm_gauges

__all__ = ["DAILY_S", "GAUGE_S", "register", "retention_months", "run_daily"]

log = logging.getLogger("abgate.admin.maintenance")

DAILY_S = 24 * 3600.0
GAUGE_S = 60.0
PARTITIONS_AHEAD = 3
_RETENTION_LOCK = 0x4A_B6_7E_7E_01


def retention_months(env: Mapping[str, str]) -> int | None:
    """``ABGATE_RETENTION_MONTHS``: None when unset, else a whole number >= 1."""
    value = env.get("ABGATE_RETENTION_MONTHS", "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ConfigError("ABGATE_RETENTION_MONTHS", "must be a whole number of months >= 1")
    return int(value)


async def run_daily(ctx: AdminContext, months: int | None) -> None:
    async with ctx.pool.acquire() as conn:
        names = await ensure_partitions(conn, ahead=PARTITIONS_AHEAD)
        log.info("request partitions ready: %s", ", ".join(names))
        if months is None:
            return
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", _RETENTION_LOCK):
            return  # another admin replica is applying retention
        try:
            result = await retention(conn, months, open_blob_store(ctx.settings.prompt_store))
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _RETENTION_LOCK)
        if result.dropped:
            log.info("retention dropped %s; %d usage rows, %d blobs",
                     ", ".join(result.dropped), result.usage_rows, result.blobs)


async def _loop(app: web.Application, months: int | None) -> None:
    next_daily = 0.0
    while True:
        ctx = app[CONTEXT]
        now = time.monotonic()
        if now >= next_daily:
            next_daily = now + DAILY_S
            try:
                await run_daily(ctx, months)
            except Exception:
                log.exception("daily maintenance failed; retrying tomorrow")
                next_daily = now + GAUGE_S * 10  # sooner than a day after a failure
        try:
            await refresh_srm_gauges(ctx.pool)
        except Exception:
            log.exception("refreshing the SRM gauges failed")
        await asyncio.sleep(GAUGE_S)


def register(app: web.Application) -> None:
    """Run the upkeep while the app runs (after its resources exist)."""
    months = retention_months(os.environ)  # a bad value stops start-up (exit 2)

    async def background(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(_loop(app, months), name="abgate-admin-maintenance")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app.cleanup_ctx.append(background)
