"""Top functions of a py-spy ``--format raw`` profile (collapsed stacks).

``python -m bench.profile_summary PROFILE.txt [--top 25]`` prints the functions
with the most samples on top of the stack (self) and anywhere in it
(inclusive), as a share of all samples. Idle executor threads are left out.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Profile", "function_of", "parse_collapsed", "render"]


@dataclass
class Profile:
    total: int
    self_samples: Counter[str]
    inclusive_samples: Counter[str]


# Leaf frames of threads that are only waiting (py-spy cannot always tell): the
# default executor's idle workers block here on their queue.
_IDLE_LEAVES = ("(concurrent/futures/thread.py:81)",)
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")


def function_of(frame: str) -> str:
    """``func (path/file.py:123)`` -> ``path/file.py:func`` (lines of one function merged)."""
    match = _FRAME.match(frame)
    return f"{match['file']}:{match['func']}" if match else frame


def parse_collapsed(lines: Iterable[str], by_line: bool = False) -> Profile:
    """Parse ``frame;frame;frame COUNT`` lines, per function unless ``by_line``."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        raw_frames = stack.split(";")
        if raw_frames[-1].endswith(_IDLE_LEAVES):
            continue
        frames = raw_frames if by_line else [function_of(f) for f in raw_frames]
        total += samples
        own[frames[-1]] += samples
        for frame in set(frames):
            inclusive[frame] += samples
    return Profile(total, own, inclusive)


def render(profile: Profile, top: int = 25) -> str:
    if profile.total == 0:
        return "no samples\n"
    lines = [f"{profile.total} samples", "", "self (on top of the stack):"]
    for frame, count in profile.self_samples.most_common(top):
        lines.append(f"  {count / profile.total * 100:5.1f}%  {frame}")
    lines += ["", "inclusive (anywhere in the stack):"]
    for frame, count in profile.inclusive_samples.most_common(top * 2):
        lines.append(f"  {count / profile.total * 100:5.1f}%  {frame}")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_summary",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--by-line", action="store_true", help="one entry per source line")
    args = parser.parse_args(argv)
    with args.profile.open() as handle:
        print(render(parse_collapsed(handle, args.by_line), args.top), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
