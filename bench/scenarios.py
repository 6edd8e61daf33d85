"""What a benchmark run measures: scenario groups, their load combinations, the targets.

A *group* shares one mock upstream configuration (fast, paced, slow) and runs
every *combo* (streaming or not, body size, concurrency) against every
*target* (the mock directly, the bare reference proxy, abgate's passthrough
and experiment routes, LiteLLM), interleaved so drift hits all of them alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["GROUPS", "TARGETS", "Combo", "Group", "plan"]

TARGETS = ("direct", "bare", "passthrough", "experiment", "litellm")
GROUPS = ("fast", "paced", "memory", "profile")
DEFAULT_GROUPS = ("fast", "paced", "memory")
KB = 1024


@dataclass(frozen=True)
class Combo:
    stream: bool
    body_bytes: int
    concurrency: int

    @property
    def key(self) -> str:
        size = f"{self.body_bytes // KB}KB" if self.body_bytes >= KB else f"{self.body_bytes}B"
        return f"{'stream' if self.stream else 'json'}-{size}-c{self.concurrency}"


@dataclass(frozen=True)
class Group:
    name: str
    description: str
    mock_args: tuple[str, ...]  # flags of `abgate mock-upstream` besides host/port
    chunks: int
    targets: tuple[str, ...]
    combos: tuple[Combo, ...]
    duration_s: float
    warmup_s: float
    repeats: int

    @property
    def public_model_id(self) -> str:
        return f"bench/preview-{self.name}"


def _fast(quick: bool) -> Group:
    combos: tuple[Combo, ...]
    if quick:
        combos = (Combo(False, KB, 1), Combo(False, KB, 16), Combo(True, KB, 16),
                  Combo(False, 200 * KB, 16))
    else:
        combos = tuple(Combo(stream, body, conc) for stream in (False, True)
                       for body in (KB, 200 * KB) for conc in (1, 16, 64))
    return Group("fast", "mock answers at once, 20 chunks", ("--chunks", "20"), 20, TARGETS,
                 combos, 3.0 if quick else 10.0, 0.5 if quick else 1.0, 1 if quick else 3)


def _paced(quick: bool) -> Group:
    combos = (Combo(True, KB, 16),) if quick else (Combo(True, KB, 1), Combo(True, KB, 16))
    return Group("paced", "mock: 20 ms to first token, a chunk every 5 ms, 20 chunks",
                 ("--chunks", "20", "--latency-ms", "20", "--chunk-interval-ms", "5"), 20,
                 TARGETS, combos, 3.0 if quick else 10.0, 0.5 if quick else 1.0,
                 1 if quick else 3)


def _memory(quick: bool) -> Group:
    interval = "200" if quick else "500"
    return Group("memory",
                 f"1,000 concurrent open streams, a chunk every {interval} ms, 20 chunks; "
                 "three consecutive runs on the same proxy process",
                 ("--chunks", "20", "--chunk-interval-ms", interval), 20,
                 ("bare", "experiment"), (Combo(True, KB, 1000),),
                 8.0 if quick else 60.0, 0.0, 3)


def _profile(quick: bool) -> Group:
    return Group("profile", "abgate under py-spy (not a measurement)",
                 ("--chunks", "20"), 20, ("bare", "passthrough", "experiment"),
                 (Combo(False, KB, 16), Combo(True, KB, 16), Combo(False, 200 * KB, 16)),
                 8.0 if quick else 20.0, 1.0, 1)


_BUILDERS = {"fast": _fast, "paced": _paced, "memory": _memory, "profile": _profile}


def plan(groups: Sequence[str], targets: Sequence[str], quick: bool) -> list[Group]:
    """The groups to run, each limited to the requested targets (unknown names raise)."""
    unknown = [g for g in groups if g not in _BUILDERS] + [t for t in targets if t not in TARGETS]
    if unknown:
        raise ValueError(f"unknown scenario group or target: {', '.join(unknown)}")
    selected = []
    for name in groups:
        group = _BUILDERS[name](quick)
        kept = tuple(t for t in group.targets if t in targets)
        if kept:
            selected.append(Group(**{**group.__dict__, "targets": kept}))
    return selected
