"""A skipped test fails the run unless its reason is on the allow-list below.

A skip hides a missing dependency or a broken fixture as well as a real limit of the machine, so only reasons
that are bound to the platform are allowed; everything CI needs is installed by `.ci/run` (the README's test
command), so any other skip there is a lost test. Loaded by tests/conftest.py; always on.
"""

from __future__ import annotations

import re

import pytest

# Reason pattern → why the skip is legitimate (no install step can lift it).
ALLOWED_SKIPS: dict[str, str] = {
    r"\bmacOS\b": "Core ML runs models only on macOS: prediction tests skip elsewhere, the off-macOS checks on macOS",
}


def _reason(report: pytest.CollectReport | pytest.TestReport) -> str:
    if hasattr(report, "wasxfail"):
        return f"xfail: {report.wasxfail}"
    longrepr = report.longrepr
    text = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return text.removeprefix("Skipped: ")


class SkipGate:
    """Collects every skip of one session whose reason matches no allowed pattern, and fails the session."""

    def __init__(self) -> None:
        self.refused: list[tuple[str, str]] = []

    def _record(self, report: pytest.CollectReport | pytest.TestReport) -> None:
        if report.skipped:
            reason = _reason(report)
            if not any(re.search(pattern, reason) for pattern in ALLOWED_SKIPS):
                self.refused.append((report.nodeid, reason))

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        self._record(report)  # module-level skips: pytest.skip(allow_module_level=True), importorskip at import

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self._record(report)

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.refused and exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if self.refused:
            terminalreporter.section("skips not on the allow-list (tests/skip_gate.py)", red=True)
            for nodeid, reason in self.refused:
                terminalreporter.line(f"SKIP NOT ALLOWED {nodeid}: {reason}", red=True)
            terminalreporter.line(f"{len(self.refused)} skip(s) not allowed: the run fails", red=True)


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(SkipGate(), "edgevit_skip_gate")
