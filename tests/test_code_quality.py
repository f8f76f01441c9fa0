"""The project's rules that a machine can check: no shell strings, types and lint clean."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def tracked_sources() -> list[Path]:
    """The project's Python files: what git tracks (a virtual environment inside the clone is not the project)."""
    done = subprocess.run(["git", "ls-files", "-z", "--cached", "--", "*.py"],
                          cwd=ROOT, capture_output=True, check=True)
    return [ROOT / name for name in done.stdout.decode().split("\0") if name and (ROOT / name).is_file()]


SOURCES = tracked_sources()


def test_no_command_is_ever_a_shell_string():
    pattern = re.compile(r"shell\s*=\s*True|os\.system\(|os\.popen\(|subprocess\.getoutput|\beval\(")
    offenders = [f"{p.relative_to(ROOT)}:{n}" for p in SOURCES
                 for n, line in enumerate(p.read_text().splitlines(), 1)
                 if pattern.search(line) and "pattern = re.compile" not in line]
    assert offenders == []


def test_every_module_says_its_job_in_its_first_line():
    missing = [str(p.relative_to(ROOT)) for p in SOURCES
               if p.name != "__init__.py" or p.parent.name in ("helpers", "render")
               if not p.read_text().lstrip().startswith('"""') and p.stat().st_size > 0]
    assert missing == []


@pytest.mark.parametrize("tool, args", [
    ("mypy", ["helpers"]),
    ("ruff", ["check", "helpers", "conftest.py", "build_suite", "tests", "testkit", "bench"]),
])
def test_tool_is_clean(tool, args):
    argv = [sys.executable, "-m", tool, *args]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{tool} (pip install -r requirements-dev.txt):\n{done.stdout}{done.stderr}"


def test_no_function_is_over_40_lines_outside_the_configuration_table():
    import ast
    long = []
    for path in SOURCES:
        if path.relative_to(ROOT).parts[0] == "tests":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 40:
                long.append(f"{path.relative_to(ROOT)}:{node.name}")
    assert long == ["helpers/config.py:make_config"]        # most of it is the HarnessConfig(...) table
