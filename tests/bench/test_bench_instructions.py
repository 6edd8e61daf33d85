"""bench.instructions: reading callgrind's dump and the report table."""

from __future__ import annotations

import pytest

from bench.instructions import Count, render, total_instructions

DUMP = """# callgrind format
version: 1
creator: callgrind-3.19.0
events: Ir
fn=(1) main
0 5
summary: 1278900
totals: 1278900
"""


def test_the_total_comes_from_the_summary_line() -> None:
    assert total_instructions(DUMP) == 1_278_900


def test_a_dump_without_totals_is_an_error() -> None:
    with pytest.raises(ValueError, match="no summary or totals"):
        total_instructions("events: Ir\nfn=(1) main\n0 5\n")


def test_the_table_gives_each_target_its_ratio_to_bare_of_the_same_kind() -> None:
    table = render([
        Count("bare", "json", 600_000, 0),
        Count("bare", "stream", 700_000, 0),
        Count("experiment", "json", 900_000, 0),
        Count("experiment", "stream", 1_400_000, 2),
    ])
    assert "| experiment | json | 900.0 | 1.50x | 0 |" in table
    assert "| experiment | stream | 1,400.0 | 2.00x | 2 |" in table
    assert "| bare | json | 600.0 | 1.00x | 0 |" in table


def test_without_a_bare_count_there_is_no_ratio() -> None:
    table = render([Count("experiment", "json", 900_000, 0)])
    assert "| experiment | json | 900.0 | - | 0 |" in table
