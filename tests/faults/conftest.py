"""The fault suite's fixture and the figures' summary (see `kit`)."""

from __future__ import annotations

from typing import Any

from tests.faults.kit import FIGURES, stack

__all__ = ["stack"]


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if FIGURES:
        terminalreporter.section("fault suite figures")
        for line in FIGURES:
            terminalreporter.write_line(line)
