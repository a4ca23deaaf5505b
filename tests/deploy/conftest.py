"""The deploy tests' own run summary: where promtool or prometheus is missing, the tests
that need them are skipped, and the end of the run says so (in CI they fail instead)."""

from __future__ import annotations

import pytest

from tests.deploy.tools import SKIPPED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for why in sorted(SKIPPED):
        terminalreporter.write_line(f"PROMETHEUS TESTS SKIPPED: {why}", yellow=True, bold=True)
