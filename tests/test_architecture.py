"""The module graph runs forward only: each stage of helpers/ is a package (source, render, build, verify,
publish, report) that imports earlier stages, never later ones, and inside a package each module imports only
the modules before it; nothing imports in a circle; the library and the benchmark never import the tests."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# The data flow, first to last; `errors` and `profiles` sit below every stage, and the modules
# that parse options or drive the stages (config, resources, pipeline, plan, track, the CLIs) above them.
ORDER = ("errors", "profiles", "source", "render", "build", "verify", "publish", "report", "config", "resources",
         "pipeline", "plan", "track", "render.__main__", "report.__main__")
STAGES = ("source", "render", "build", "verify", "publish", "report")
# Inside each stage's package, its modules in the order of the data they pass on.
WITHIN = {
    "source": ("dataset", "mirror", "kinds", "submodules", "scm_version", "build_config", "context_fixes", "commit"),
    "render": ("shellwords", "dockerfile", "deps", "late", "reads", "pin", "identity", "parts", "caches", "fixes",
               "base_images", "__init__", "prepared", "__main__"),
    "build": ("driver", "disk", "image"),
    "verify": ("probe_code", "probe_smoke", "probe_paths", "probe", "smoke", "image_facts", "known", "checks",
               "changes", "serve", "commit"),
    "publish": ("registry", "image"),
    "report": ("results", "progress", "__main__"),
}


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
    from helpers.profiles import FIXES, fixes_of_kind
    from helpers.render.fixes import DOCKERFILE_FIXES
    from helpers.source.context_fixes import CONTEXT_FIXES
    assert set(DOCKERFILE_FIXES) == fixes_of_kind("dockerfile")
    assert CONTEXT_FIXES == fixes_of_kind("context")
    assert fixes_of_kind("context") | fixes_of_kind("dockerfile") | fixes_of_kind("version") == set(FIXES)


def test_every_stage_is_a_package_of_its_own():
    for stage in STAGES:
        assert (ROOT / "helpers" / stage / "__init__.py").is_file(), stage
        assert not (ROOT / "helpers" / f"{stage}.py").exists(), stage
        doc = ast.get_docstring(ast.parse((ROOT / "helpers" / stage / "__init__.py").read_text()))
        assert doc and doc.split(":")[0].lower() == stage, f"{stage}/__init__.py opens with its job"
        modules = {p.stem for p in (ROOT / "helpers" / stage).glob("*.py")} - {"__init__"}
        unplaced = sorted(modules - set(WITHIN[stage]))
        assert not unplaced, f"place these in WITHIN[{stage!r}]: {unplaced}"


@pytest.mark.parametrize("path", [p for p in helper_files() if len(p.relative_to(ROOT).parts) == 3],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_inside_a_stage_a_module_imports_only_earlier_ones(path: Path):
    stage, own = path.parent.name, path.stem
    order = WITHIN[stage]
    later = sorted(m for m in imports(path) if m.startswith(f"helpers.{stage}.")
                   and m.split(".")[2] in order and order.index(m.split(".")[2]) > order.index(own))
    assert not later, f"{module_name(path)} imports later modules of its stage: {later}"


def test_nothing_imports_in_a_circle():
    graph = {module_name(p): {m for m in imports(p) if m.startswith("helpers")} for p in helper_files()}
    graph = {name: {m if m in graph else m.rsplit(".", 1)[0] for m in found} & set(graph) - {name}
             for name, found in graph.items()}
    state: dict[str, int] = {}

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for other in sorted(graph[name]):
            if state.get(other) == 1:
                raise AssertionError(f"import circle: {' -> '.join(path[path.index(other):] + [other])}")
            if other not in state:
                visit(other, path + [other])
        state[name] = 2
    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
