"""The package installs with pip, carries py.typed, and the core module also works as one file."""

from __future__ import annotations

import inspect
import shutil
import sys
from pathlib import Path

import pytest
from conftest import PYTHON_SRC, client_env, run

import etlworks_agent


def test_pip_installs_the_package_with_its_marker_and_entry_point(tmp_path: Path) -> None:
    target = tmp_path / "site"
    source = tmp_path / "src"
    # Build from a copy so the checkout gets no build/ or egg-info folders.
    shutil.copytree(
        PYTHON_SRC, source, ignore=shutil.ignore_patterns("tests", "build", "*.egg-info", "__pycache__")
    )
    env = client_env(None, None)
    env.pop("PYTHONPATH")
    installed = run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(source),
        ],
        env,
        timeout=120,
    )
    assert installed.returncode == 0, installed.stderr
    package = target / "etlworks_agent"
    assert (package / "py.typed").is_file()
    assert (package / "__main__.py").is_file()
    metadata = next(target.glob("etlworks_agent-*.dist-info")) / "METADATA"
    text = metadata.read_text()
    assert "Requires-Python: >=3.9" in text
    # The core needs requests only; the framework adapters' packages are optional extras.
    assert [
        line for line in text.splitlines() if line.startswith("Requires-Dist:") and "extra ==" not in line
    ] == ["Requires-Dist: requests>=2.26"]
    for extra in ("langchain", "crewai", "autogen"):
        assert f"Provides-Extra: {extra}" in text
    assert f"Version: {etlworks_agent.__version__}" in text

    env["PYTHONPATH"] = str(target)
    imported = run(
        [sys.executable, "-c", "import etlworks_agent; print(etlworks_agent.__file__)"], env, cwd=tmp_path
    )
    assert imported.stdout.strip() == str(package / "__init__.py")
    version = run([sys.executable, "-m", "etlworks_agent", "--version"], env, cwd=tmp_path)
    assert version.stdout.strip() == f"python -m etlworks_agent {etlworks_agent.__version__}"


def test_the_core_works_as_a_single_downloaded_file(tmp_path: Path) -> None:
    single = tmp_path / "etlworks_agent.py"
    shutil.copyfile(PYTHON_SRC / "etlworks_agent" / "__init__.py", single)
    env = client_env(None, None)
    env.pop("PYTHONPATH")
    imported = run(
        [
            sys.executable,
            "-c",
            "import etlworks_agent as m; print(m.__file__); print(m.EtlworksAgent.__name__)",
        ],
        env,
        cwd=tmp_path,
    )
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.split() == [str(single), "EtlworksAgent"]
    version = run([sys.executable, str(single), "--version"], env, cwd=tmp_path)
    assert version.stdout.strip() == f"etlworks_agent.py {etlworks_agent.__version__}"


def _public_callables():
    for name in etlworks_agent.__all__:
        value = getattr(etlworks_agent, name)
        if inspect.isfunction(value):
            yield name, value
        elif inspect.isclass(value) and value.__module__ == etlworks_agent.__name__:
            for member_name, member in vars(value).items():
                if inspect.isfunction(member) and (
                    not member_name.startswith("_") or member_name == "__init__"
                ):
                    yield f"{name}.{member_name}", member


@pytest.mark.parametrize("name, function", list(_public_callables()))
def test_public_api_is_typed_and_documented(name: str, function: object) -> None:
    signature = inspect.signature(function)  # type: ignore[arg-type]
    for parameter in signature.parameters.values():
        if parameter.name != "self":
            assert parameter.annotation is not inspect.Parameter.empty, (
                f"{name}: {parameter.name} has no type"
            )
    assert signature.return_annotation is not inspect.Signature.empty, f"{name} has no return type"
    if not name.endswith("__init__"):
        assert inspect.getdoc(function), f"{name} has no docstring"
