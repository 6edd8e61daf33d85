"""The heap trimmer: glibc's malloc_trim now and then, nothing where there is none."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from proxy.heap import HeapTrimmer, malloc_trim


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_malloc_trim_is_found_in_the_c_library_on_linux() -> None:
    assert malloc_trim is not None
    assert malloc_trim() in (0, 1)


async def test_the_trimmer_trims_once_per_interval_until_cancelled() -> None:
    calls: list[int] = []
    trimmer = HeapTrimmer(lambda: calls.append(1) or 1, every_s=0.01)
    task = asyncio.create_task(trimmer.run())
    await asyncio.sleep(0.1)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert 3 <= len(calls) == trimmer.trims
    await asyncio.sleep(0.05)
    assert len(calls) == trimmer.trims  # nothing after the cancel


async def test_without_malloc_trim_the_trimmer_returns_at_once() -> None:
    trimmer = HeapTrimmer(None, every_s=0.01)
    assert not trimmer.enabled
    await asyncio.wait_for(trimmer.run(), timeout=1.0)


async def test_a_failing_trim_stops_trimming_without_raising(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken() -> int:
        raise OSError("no")

    trimmer = HeapTrimmer(broken, every_s=0.01)
    await asyncio.wait_for(trimmer.run(), timeout=1.0)
    assert trimmer.trims == 0
    assert "malloc_trim failed" in caplog.text


# Run apart: it sets the allocator's thresholds, which would outlive the test.
_FRAGMENTED_HEAP = """
import ctypes, ctypes.util
from proxy.heap import malloc_trim
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.mallopt(-3, 16 * 1024 * 1024)  # M_MMAP_THRESHOLD: 200 KB blocks come from the heap
libc.mallopt(-1, 1 << 30)           # M_TRIM_THRESHOLD: free() never trims by itself
def rss():
    with open("/proc/self/status") as status:
        return next(int(l.split()[1]) // 1024 for l in status if l.startswith("VmRSS:"))
# Bodies of 200 KB interleaved with small objects that stay: the heap cannot
# shrink from its top, so freeing the bodies alone returns nothing.
bodies, kept = [], []
for i in range(500):
    bodies.append(b"x" * (200_000 + i % 7 * 512))
    kept.append(b"y" * 700)
bodies.clear()
before = rss()
malloc_trim()
print(before, rss())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_a_trim_hands_memory_freed_in_the_middle_of_the_heap_back() -> None:
    result = subprocess.run([sys.executable, "-c", _FRAGMENTED_HEAP], capture_output=True,
                            text=True, check=True)
    before, after = map(int, result.stdout.split())
    assert before > 100  # the freed bodies were still held
    assert after < before - 80
