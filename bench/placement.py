"""Keep Postgres and Redis off the core of the server under test, for one run.

On a two-core machine an unpinned Postgres backend lands on the proxy's core
now and then (the recorder's batch makes it work), and every request that
arrives meanwhile waits: the latency tail then measures the scheduler, not the
proxy. :func:`pin_services` moves the Postgres and Redis processes found in
``/proc`` (every thread; the postmaster too, so backends forked later inherit
it) to the client core; :meth:`Placement.restore` gives each back its
original CPU set. Processes that cannot be moved (another user's, without
root) are left where they are and the report says so.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Placement", "pin_services"]

_SERVICE_NAMES = frozenset({"postgres", "redis-server"})


@dataclass
class Placement:
    moved: dict[int, set[int]] = field(default_factory=dict)  # thread id -> original CPUs
    refused: int = 0
    requested: bool = False

    def describe(self, core: int) -> str:
        if not self.requested:
            return "Postgres/Redis unpinned"
        if not self.moved:
            return "Postgres/Redis unpinned (none could be moved)"
        note = f"; {self.refused} thread(s) could not be moved" if self.refused else ""
        return f"Postgres/Redis on core {core} ({len(self.moved)} threads){note}"

    def restore(self) -> None:
        for tid, cpus in self.moved.items():
            try:
                os.sched_setaffinity(tid, cpus)
            except OSError:  # exited during the run
                continue
        self.moved.clear()


def _service_threads(proc: Path = Path("/proc")) -> list[int]:
    threads = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            name = (entry / "comm").read_text().strip()
            if name in _SERVICE_NAMES:
                threads += [int(t.name) for t in (entry / "task").iterdir()]
        except OSError:  # exited while we looked
            continue
    return threads


def pin_services(core: int) -> Placement:
    """Move every Postgres and Redis thread of this machine to ``core``."""
    placement = Placement(requested=True)
    for tid in _service_threads():
        try:
            original = os.sched_getaffinity(tid)
            os.sched_setaffinity(tid, {core})
        except PermissionError:
            placement.refused += 1
            continue
        except OSError:  # exited while we looked
            continue
        placement.moved[tid] = original
    return placement
