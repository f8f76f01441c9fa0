"""The module graph runs forward only: each stage of helpers/ imports earlier stages, never later
ones; the library and the benchmark never import the tests."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# The data flow, first to last; `errors` and `profiles` sit below every stage, and the modules
# that parse options or drive the stages (config, pipeline, plan, progress, the CLIs) above them.
ORDER = ("errors", "profiles", "dataset", "source", "submodules", "build_config", "context_fixes", "render", "build",
         "disk", "publish",
         "probe_code", "probe_smoke", "probe_paths", "probe", "smoke", "image_facts", "known", "verify", "changes",
         "serve", "report", "config", "resources", "progress", "pipeline", "plan", "track", "render.__main__")


def stage_of(module: str) -> str:
    """helpers.render.pin -> render; helpers.render.__main__ -> render.__main__."""
    parts = module.split(".")[1:]
    if parts and parts[-1] == "__main__":
        return ".".join(parts)
    return parts[0] if parts else ""


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth of its code (lazy imports count)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def helper_files() -> list[Path]:
    return sorted((ROOT / "helpers").rglob("*.py"))


def test_every_helpers_module_has_a_place_in_the_order():
    stages = {stage_of(module_name(path)) for path in helper_files()} - {""}
    assert stages <= set(ORDER), f"place these in ORDER: {sorted(stages - set(ORDER))}"


@pytest.mark.parametrize("path", helper_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_a_stage_imports_only_earlier_stages(path: Path):
    own = stage_of(module_name(path))
    if not own:
        return
    later = []
    for imported in imports(path):
        if not imported.startswith("helpers.") or imported.count(".") > 2:
            continue
        stage = stage_of(imported) if imported != "helpers" else ""
        if stage in ORDER and ORDER.index(stage) > ORDER.index(own):
            later.append(imported)
    assert not later, f"{module_name(path)} ({own}) imports later stages: {sorted(later)}"


@pytest.mark.parametrize("folder", ["helpers", "bench", "build_suite", "testkit"])
def test_the_library_and_the_benchmark_never_import_the_tests(folder: str):
    offenders = {str(path.relative_to(ROOT)): sorted(m for m in imports(path) if m.split(".")[0] == "tests")
                 for path in sorted((ROOT / folder).rglob("*.py"))}
    assert not {path: found for path, found in offenders.items() if found}


def test_the_library_never_imports_the_test_kit_or_the_benchmark():
    offenders = {str(path.relative_to(ROOT)): sorted(m for m in imports(path) if m.split(".")[0] in
                                                     ("testkit", "bench", "build_suite", "conftest"))
                 for path in helper_files()}
    assert not {path: found for path, found in offenders.items() if found}


def test_one_registry_of_fixes_names_what_each_stage_applies():
    from helpers.context_fixes import CONTEXT_FIXES
    from helpers.profiles import FIXES, fixes_of_kind
    from helpers.render.fixes import DOCKERFILE_FIXES
    assert set(DOCKERFILE_FIXES) == fixes_of_kind("dockerfile")
    assert CONTEXT_FIXES == fixes_of_kind("context")
    assert fixes_of_kind("context") | fixes_of_kind("dockerfile") | fixes_of_kind("version") == set(FIXES)
