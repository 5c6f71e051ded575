"""The skip gate: a run whose only problem is a skip outside the allow-list fails, and says which."""

from __future__ import annotations

import pytest

pytest_plugins = ("pytester",)

SUITE = """
import pytest

def test_runs():
    assert True

@pytest.mark.skipif(True, reason="Core ML prediction needs macOS")
def test_platform_bound():
    pass

def test_lost():
    pytest.skip("optional package missing")
"""


def test_a_skip_outside_the_allow_list_fails_the_run(pytester: pytest.Pytester, monkeypatch) -> None:
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")  # the inner runs need no installed plugin
    pytester.makepyfile(test_inner=SUITE, test_gone="import pytest\npytest.importorskip('no_such_module_here')\n")
    result = pytester.runpytest_inprocess("-p", "tests.skip_gate", "-q")
    result.assert_outcomes(passed=1, skipped=3)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "SKIP NOT ALLOWED test_gone.py: could not import 'no_such_module_here'*",
            "SKIP NOT ALLOWED test_inner.py::test_lost: optional package missing",
            "2 skip(s) not allowed: the run fails",
        ]
    )
    assert "test_platform_bound" not in result.stdout.str()

    (pytester.path / "test_inner.py").unlink()
    pytester.makepyfile(test_gone="import pytest\npytest.skip('runs on macOS only', allow_module_level=True)\n")
    pytester.makepyfile(test_ok="def test_ok():\n    pass\n")
    result = pytester.runpytest_inprocess("-p", "tests.skip_gate", "-q")
    result.assert_outcomes(passed=1, skipped=1)
    assert result.ret == pytest.ExitCode.OK and "NOT ALLOWED" not in result.stdout.str()
