"""The client's code stays formatted, lint-free and strictly typed (settings in pyproject.toml)."""

from __future__ import annotations

import sys

from conftest import PYTHON_SRC, client_env, run


def test_ruff_format_and_lint() -> None:
    env = client_env(None, None)
    formatted = run(
        [sys.executable, "-m", "ruff", "format", "--no-cache", "--check", "etlworks_agent", "tests"],
        env,
        cwd=PYTHON_SRC,
    )
    assert formatted.returncode == 0, formatted.stdout + formatted.stderr
    linted = run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "etlworks_agent", "tests"], env, cwd=PYTHON_SRC
    )
    assert linted.returncode == 0, linted.stdout + linted.stderr


def test_mypy_strict() -> None:
    env = client_env(None, None)
    checked = run(
        [sys.executable, "-m", "mypy", "--cache-dir", "/dev/null", "etlworks_agent"], env, cwd=PYTHON_SRC
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
