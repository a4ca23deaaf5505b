"""Tables fit the terminal they are printed on (issue 28): fixed columns, the last one
takes what is left, and no line is wider than the screen."""

from __future__ import annotations

import pytest

from worker.ops.commands.output import MIN_LAST, Table

COLUMNS = [("POSITION", 10, "<"), ("AGE", 7, ">"), ("TENANT", 16, "<"), ("MESSAGE", 0, "<")]


@pytest.mark.parametrize("width", [60, 80, 120, 200])
def test_a_table_is_as_wide_as_the_terminal_and_no_wider(
    width: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", str(width))
    table = Table(COLUMNS)
    row = table.row("0@12", "3h05m", "t-vestfold-bv-med-langt-navn", "x" * 500)
    # One column short of the screen: a line exactly as wide wraps on some terminals.
    assert len(row) == width - 1 and row.endswith("…")
    assert len(table.header()) <= width
    assert "t-vestfold-bv-m…" in row  # a fixed column is cut, never widened


def test_a_narrow_terminal_still_shows_the_message_column() -> None:
    row = Table(COLUMNS, width=30).row("0@1", "1m", "t-a", "y" * 100)
    assert row.endswith("y" * (MIN_LAST - 1) + "…")
