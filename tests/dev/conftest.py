"""Fixtures for the ``abgate dev`` tests: one running demo shared by a module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from dev_support import INTERACTIVE_FOOTER, DevRun, free_ports


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevRun]:
    """``abgate dev`` on a fresh data directory and free ports, ready and running."""
    data_dir: Path = tmp_path_factory.mktemp("dev") / ".abgate-dev"
    run = DevRun.start(data_dir, free_ports())
    try:
        run.wait_for_line(INTERACTIVE_FOOTER)
        yield run
    finally:
        run.stop()
