"""CPU time and memory of a process tree, read from ``/proc`` (Linux only)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["ProcessSample", "core_busy_seconds", "cpu_seconds", "cpu_seconds_named", "descendants",
           "parse_core_busy_ticks", "parse_stat_cpu_ticks", "parse_status_kb",
           "reset_peak_rss", "sample"]

_PROC = Path("/proc")
_TICKS = os.sysconf("SC_CLK_TCK")


def parse_stat_cpu_ticks(stat: str) -> int:
    """utime + stime (clock ticks) from the text of ``/proc/PID/stat``.

    The command name (field 2) may contain spaces and parentheses, so fields
    are counted from the last ``)``: utime and stime are fields 14 and 15.
    """
    rest = stat[stat.rindex(")") + 2:].split()
    return int(rest[11]) + int(rest[12])


def parse_status_kb(status: str, key: str) -> int:
    """A ``kB`` value (``VmHWM``, ``VmRSS``) from the text of ``/proc/PID/status``."""
    for line in status.splitlines():
        name, _, value = line.partition(":")
        if name == key:
            return int(value.split()[0])
    raise KeyError(f"{key} not in /proc status")


def descendants(pid: int) -> list[int]:
    """``pid`` and every live descendant (via ``/proc/PID/task/*/children``)."""
    found: list[int] = []
    pending = [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        try:
            tasks = list((_PROC / str(current) / "task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                pending.extend(int(c) for c in (task / "children").read_text().split())
            except OSError:
                continue
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by ``pid`` and its live descendants."""
    ticks = 0
    for member in descendants(pid):
        try:
            ticks += parse_stat_cpu_ticks((_PROC / str(member) / "stat").read_text())
        except (OSError, ValueError, IndexError):
            continue  # exited between listing and reading
    return ticks / _TICKS


def cpu_seconds_named(name: str, proc: Path = _PROC) -> float:
    """User + system CPU seconds used so far by the live processes whose ``comm`` is ``name``.

    Postgres' share of a benchmark run: its backends live as long as the
    proxy's pool, so the difference of two samples is the work done between them.
    """
    ticks = 0
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() == name:
                ticks += parse_stat_cpu_ticks((entry / "stat").read_text())
        except (OSError, ValueError, IndexError):
            continue  # exited while we looked
    return ticks / _TICKS


def reset_peak_rss(pid: int) -> bool:
    """Reset ``VmHWM`` of the tree to the current RSS, so the next peak is one run's.

    Writes 5 to ``/proc/PID/clear_refs`` (Linux >= 4.0; our own children). False
    when the kernel refused: the peak then covers the process's whole life.
    """
    done = True
    for member in descendants(pid):
        try:
            (_PROC / str(member) / "clear_refs").write_text("5")
        except OSError:
            done = False
    return done


class ProcessSample:
    """CPU seconds, current RSS and peak RSS (largest process of the tree), in MB."""

    __slots__ = ("cpu_s", "peak_rss_mb", "rss_mb")

    def __init__(self, cpu_s: float, rss_mb: float, peak_rss_mb: float) -> None:
        self.cpu_s = cpu_s
        self.rss_mb = rss_mb
        self.peak_rss_mb = peak_rss_mb


def sample(pid: int) -> ProcessSample:
    rss = peak = 0
    for member in descendants(pid):
        try:
            status = (_PROC / str(member) / "status").read_text()
            rss = max(rss, parse_status_kb(status, "VmRSS"))
            peak = max(peak, parse_status_kb(status, "VmHWM"))
        except (OSError, KeyError):
            continue
    return ProcessSample(cpu_seconds(pid), rss / 1024, peak / 1024)


def parse_core_busy_ticks(proc_stat: str, core: int) -> int:
    """Busy ticks of one core (user, nice, system, irq, softirq, steal) from ``/proc/stat``."""
    prefix = f"cpu{core} "
    for line in proc_stat.splitlines():
        if line.startswith(prefix):
            fields = [int(x) for x in line.split()[1:]]
            user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
            return user + nice + system + irq + softirq + steal
    raise KeyError(f"core {core} not in /proc/stat")


def core_busy_seconds(core: int) -> float:
    """CPU seconds core ``core`` has spent busy since boot, whoever ran on it."""
    return parse_core_busy_ticks((_PROC / "stat").read_text(), core) / _TICKS
