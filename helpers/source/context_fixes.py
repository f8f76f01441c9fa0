"""Context fixes: known breakages of real commits' dependency files, patched in the build context.

Each fix is a pure function of a file's text; `apply_context_fixes` runs the enabled ones over
a context and records which file each one changed (the verification compares patched files
with their patched content, and the report lists every change).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import Specifier, SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from helpers.profiles import fixes_of_kind

CONTEXT_FIXES = fixes_of_kind("context")     # the fixes that change context files
SPARSE = {"sparsezoo", "sparseml"}
OUTLINES_BOUND = Version("0.0.43")      # 0.0.43 needs `pyairports`, which is not installable


@dataclass(frozen=True)
class AppliedFix:
    name: str
    detail: str

    def __str__(self) -> str:
        return f"{self.name}: {self.detail}"


def constrain_outlines(spec: SpecifierSet) -> SpecifierSet:
    """A specifier admitting no outlines >= 0.0.43, keeping what the original allowed below it."""
    def below(s: Specifier) -> bool:
        version = _version(s)
        return version is not None and version < OUTLINES_BOUND

    if any(below(s) and s.operator in ("==", "===", "<", "<=") for s in spec) or \
            any(s.operator == "<" and _version(s) == OUTLINES_BOUND for s in spec):
        return spec                                  # already below the bound
    kept = [f">={s.version}" if s.operator == "~=" else str(s) for s in spec
            if s.operator in (">=", ">", "!=", "~=") and below(s)]
    return SpecifierSet(",".join([*kept, f"<{OUTLINES_BOUND}"]))


def _version(spec: Specifier) -> Version | None:
    try:
        return Version(spec.version.rstrip(".*"))
    except InvalidVersion:
        return None


def fix_requirement(text: str, fixes: set[str]) -> str | None:
    """One requirement string fixed; None when it must go; unchanged when it is not ours."""
    try:
        req = Requirement(text)
    except InvalidRequirement:
        return text
    name = canonicalize_name(req.name)
    if "drop_sparse_deps" in fixes and name in SPARSE:
        return None
    if "pin_outlines" in fixes and name == "outlines" and req.url is None:
        spec = constrain_outlines(req.specifier)
        if spec == req.specifier:
            return text
        written = re.match(r"\s*[A-Za-z0-9._-]+", text)
        extras = f"[{','.join(sorted(req.extras))}]" if req.extras else ""
        marker = f"; {req.marker}" if req.marker else ""
        return f"{written.group(0).strip() if written else req.name}{extras}{spec}{marker}"
    return text


def fix_requirements_text(text: str, fixes: set[str]) -> str:
    """A requirements file with each requirement line fixed; options, comments and layout kept."""
    out = []
    for line in text.splitlines(keepends=True):
        newline = line[len(line.rstrip("\r\n")):]
        body, _, comment = line.rstrip("\r\n").partition(" #")
        comment = f" #{comment}" if _ else ""
        if not body.strip() or body.lstrip().startswith(("-", "#")):
            out.append(line)
            continue
        fixed = fix_requirement(body.strip(), fixes)
        if fixed is None:
            continue
        if fixed != body.strip():
            indent = body[:len(body) - len(body.lstrip())]
            line = indent + fixed + comment + newline
        out.append(line)
    return "".join(out)


_ARRAY_START = re.compile(r"^\s*(\"?[A-Za-z0-9_.-]+\"?)\s*=\s*\[", re.M)
_STRING = re.compile(r"(\s*)(\"(?:[^\"\\]|\\.)*\"|'[^']*')(\s*,)?")


def dependency_arrays(text: str) -> list[tuple[int, int]]:
    """Spans of `[project] dependencies` and `[project.optional-dependencies]` arrays."""
    spans, table = [], ""
    for match in re.finditer(r"^\s*\[([^\[\]]+)\]\s*$|" + _ARRAY_START.pattern, text, re.M):
        if match.group(1) is not None:
            table = match.group(1).strip()
            continue
        key = match.group(2).strip('"')
        if (table == "project" and key == "dependencies") or table == "project.optional-dependencies":
            spans.append((match.end(), _array_end(text, match.end())))
    return spans


def _array_end(text: str, start: int) -> int:
    i, depth = start, 1
    while i < len(text) and depth:
        char = text[i]
        if char in "\"'":
            end = text.find(char, i + 1)
            i = len(text) if end < 0 else end + 1
            continue
        if char == "#":
            end = text.find("\n", i)
            i = len(text) if end < 0 else end
            continue
        depth += (char == "[") - (char == "]")
        i += 1
    return i - 1


def fix_pyproject_text(text: str, fixes: set[str]) -> str:
    """pyproject.toml with the requirement strings of its dependency arrays fixed."""
    def replace(match: re.Match) -> str:
        space, literal, comma = match.group(1), match.group(2), match.group(3) or ""
        fixed = fix_requirement(literal[1:-1], fixes)
        if fixed is None:
            return ""
        return f"{space}{literal[0]}{fixed}{literal[0]}{comma}"

    for start, end in reversed(dependency_arrays(text)):
        lines = []
        for line in text[start:end].splitlines(keepends=True):
            new = _STRING.sub(replace, line)
            if new != line and _STRING.search(line) and not _STRING.search(new) and \
                    not new.split("#", 1)[0].strip(" \t\r\n,"):
                continue                      # the line held only a dropped requirement (and its comment)
            lines.append(new)
        text = text[:start] + "".join(lines) + text[end:]
    return text


def is_requirements_file(path: str) -> bool:
    name = path.rsplit("/", 1)[-1]
    return name.endswith(".txt") and (name.startswith("requirements") or "/requirements/" in f"/{path}")


def apply_context_fixes(context: Path, fixes: set[str]) -> tuple[dict[str, bytes], list[AppliedFix]]:
    """Fix every dependency file of the context in place; return {tree path: new bytes} and what changed."""
    wanted = fixes & CONTEXT_FIXES
    patched: dict[str, bytes] = {}
    applied: list[AppliedFix] = []
    if not wanted:
        return patched, applied
    for path in sorted(context.rglob("*")):
        rel = path.relative_to(context).as_posix()
        if not path.is_file() or path.is_symlink():
            continue
        if is_requirements_file(rel):
            fixer = fix_requirements_text
        elif path.name == "pyproject.toml":
            fixer = fix_pyproject_text
        else:
            continue
        old = path.read_text(encoding="utf-8", errors="surrogateescape")
        for name in (n for n in ("drop_sparse_deps", "pin_outlines") if n in wanted):
            new = fixer(old, {name})
            if new != old:
                applied.append(AppliedFix(name, f"{rel}: {describe_change(old, new)}"))
                old = new
        if old != path.read_text(encoding="utf-8", errors="surrogateescape"):
            path.write_text(old, encoding="utf-8", errors="surrogateescape")
            patched[rel] = path.read_bytes()
    return patched, applied


def describe_change(old: str, new: str) -> str:
    before = [line.strip() for line in old.splitlines() if line.strip() and line not in new.splitlines()]
    after = [line.strip() for line in new.splitlines() if line.strip() and line not in old.splitlines()]
    return f"{'; '.join(before) or '-'} -> {'; '.join(after) or '(removed)'}"
