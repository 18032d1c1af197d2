"""The house rules, checked on every test run: the layers' boundary (only the Airflow adapters import
Airflow), no import loop between the package's folders, short functions, and zero findings from ruff
(lint and format) and mypy."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.flow_runner import ROOT

PACKAGE = ROOT / "plugins" / "order_cancel"
# The only code of the package that may import Airflow: its adapters, and the pages' web apps
# (which run inside Airflow's api-server).
ADAPTERS = (PACKAGE / "airflow", PACKAGE / "panels" / "app.py", PACKAGE / "ledger_page" / "app.py")
MAX_FUNCTION_LINES = 60
CHECKED = ["plugins", "dags", "fakes", "devtools", "bench", "tests"]


def package_modules() -> list[Path]:
    return sorted(path for path in PACKAGE.rglob("*.py") if "templates" not in path.parts)


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def reaches_airflow(module: str) -> bool:
    """Airflow itself (or the api-server's FastAPI), or an adapter module of the package."""
    return module.split(".")[0] in ("airflow", "fastapi") or module.startswith(
        ("order_cancel.airflow", "order_cancel.panels.app", "order_cancel.ledger_page.app")
    )


def is_adapter(path: Path) -> bool:
    return any(path == adapter or adapter in path.parents for adapter in ADAPTERS)


@pytest.mark.parametrize(
    "path", [p for p in package_modules() if not is_adapter(p)], ids=lambda p: str(p.relative_to(PACKAGE))
)
def test_only_the_airflow_adapters_import_airflow(path):
    imports = {name for name in imported_modules(path) if reaches_airflow(name)}
    assert imports == set(), f"{path.relative_to(ROOT)} is not an Airflow adapter but imports {sorted(imports)}"


def test_the_boundary_check_sees_an_airflow_import(tmp_path):
    module = tmp_path / "leaky.py"
    module.write_text("from airflow.sdk import Variable\nimport order_cancel.airflow.run_data\n", encoding="utf-8")
    assert {name for name in imported_modules(module) if reaches_airflow(name)} == {
        "airflow.sdk",
        "order_cancel.airflow.run_data",
    }


def folder_of(module: str) -> str | None:
    """The package's folder a module name lies in (None: outside the package, or a top-level module)."""
    parts = module.split(".")
    return parts[1] if parts[0] == "order_cancel" and len(parts) > 2 else None


def folder_imports(paths: list[Path]) -> dict[str, set[str]]:
    """Which of the package's folders each folder imports, from the modules at `paths`."""
    graph: dict[str, set[str]] = {}
    for path in paths:
        parts = path.relative_to(PACKAGE).parts
        if len(parts) < 2:
            continue
        imported = {folder_of(name) for name in imported_modules(path)} - {None, parts[0]}
        graph.setdefault(parts[0], set()).update(folder for folder in imported if folder)
    return graph


def import_loops(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each loop between folders once, as the path that closes it: ["a", "b", "a"]."""
    loops: list[list[str]] = []

    def walk(folder: str, path: list[str]) -> None:
        for imported in sorted(graph.get(folder, ())):
            if imported == path[0]:
                loops.append([*path, imported])
            elif imported not in path and imported > path[0]:  # each loop from its smallest folder only
                walk(imported, [*path, imported])

    for start in sorted(graph):
        walk(start, [start])
    return loops


def test_no_import_loop_between_the_package_folders():
    loops = import_loops(folder_imports(package_modules()))
    assert loops == [], "import loops between folders: " + "; ".join(" -> ".join(loop) for loop in loops)


def test_the_loop_check_sees_a_loop():
    graph = {"runtime": {"clients"}, "clients": {"flows"}, "flows": {"runtime"}, "pipeline": {"runtime"}}
    assert import_loops(graph) == [["clients", "flows", "runtime", "clients"]]


def long_functions(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    functions = [node for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]
    return [
        f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in functions
        if node.end_lineno and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]


def test_no_function_of_the_package_is_longer_than_60_lines():
    assert [line for path in package_modules() for line in long_functions(path)] == []


def run_tool(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *command], capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_ruff_finds_nothing():
    lint = run_tool("ruff", "check", *CHECKED)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    form = run_tool("ruff", "format", "--check", *CHECKED)
    assert form.returncode == 0, form.stdout + form.stderr


def test_mypy_finds_nothing():
    result = run_tool("mypy")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_package_works_installed_as_a_wheel(tmp_path):
    """Built and installed away from the repository, it still finds its own data (the default
    response template, the panels' page) and validates the example flows."""
    source = tmp_path / "source"
    shutil.copytree(PACKAGE, source / "plugins" / "order_cancel", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", source)
    build = run_tool("pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "dist"), str(source))
    assert build.returncode == 0, build.stderr
    [wheel] = (tmp_path / "dist").glob("*.whl")
    install = run_tool("pip", "install", "-q", "--no-deps", "--target", str(tmp_path / "site"), str(wheel))
    assert install.returncode == 0, install.stderr
    check = (
        "import order_cancel, sys\n"
        "assert order_cancel.__file__.startswith(sys.path[1]), order_cancel.__file__\n"
        "from importlib import resources\n"
        "from order_cancel.pipeline.evaluation import default_response_script\n"
        "assert default_response_script().name == 'default_response.py'\n"
        "assert '<html' in resources.files('order_cancel.panels').joinpath('page.html').read_text()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    for command in (["-c", check], ["-m", "order_cancel", "validate", str(ROOT / "include" / "flows")]):
        result = subprocess.run([sys.executable, *command], capture_output=True, text=True, cwd=tmp_path, env=env)
        assert result.returncode == 0, result.stdout + result.stderr
