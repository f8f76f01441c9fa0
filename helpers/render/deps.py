"""Dependencies and package caches: what the commit's specification asks pip to install for the project's
extras (read exactly from its pyproject.toml, else nothing), the parts of an install command, and
BuildKit cache mounts for pip's and uv's downloads.

The dependency list comes from PEP 621 `dependencies`, the requested `optional-dependencies`,
recursive self-references and setuptools' `dynamic` files; whatever cannot be read exactly gives
None, and the caller keeps the Dockerfile's order (helpers/render/late.py).
"""
from __future__ import annotations

import posixpath
from collections.abc import Mapping

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from helpers.render.shellwords import (
    PIP_VALUE_OPTIONS,
    Word,
    pip_install_index,
)

try:
    import tomllib
except ModuleNotFoundError:                      # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

INDEX_OPTIONS = {"-i", "--index-url", "--extra-index-url", "-f", "--find-links", "--no-index", "--trusted-host",
                 "--pre", "--prefer-binary", "--only-binary", "--no-binary"}


def dependency_list(files: Mapping[str, str], subdir: str, extras: set[str]) -> list[str] | None:
    """The requirement strings pip would install for `<subdir>[extras]`, or None if unknowable."""
    pyproject = files.get(posixpath.join(subdir, "pyproject.toml"))
    if pyproject is None:
        return None
    try:
        data = tomllib.loads(pyproject)
    except tomllib.TOMLDecodeError:
        return None
    project = data.get("project") or {}
    name = canonicalize_name(project.get("name", ""))
    dynamic = set(project.get("dynamic") or ())
    base = _dynamic(data, files, subdir, "dependencies") if "dependencies" in dynamic else \
        project.get("dependencies", [])                  # PEP 621: absent and not dynamic means none
    optional = project.get("optional-dependencies") or {}
    if not name or base is None or "optional-dependencies" in dynamic:
        return None
    wanted, seen, out = sorted(extras), set(), list(base)
    while wanted:                                         # breadth first, in the order they are written
        extra = wanted.pop(0)
        if extra in seen:
            continue
        seen.add(extra)
        if extra not in optional:
            return None                                   # pip would warn; do not guess
        for text in optional[extra]:
            req = _parse(text)
            if req is None:
                return None
            if canonicalize_name(req.name) == name:               # "sglang[srt]" inside sglang's own extras
                wanted += sorted(req.extras)
            else:
                out.append(text)
    return list(dict.fromkeys(out))


def _parse(text: str) -> Requirement | None:
    try:
        return Requirement(text)
    except InvalidRequirement:
        return None


def _dynamic(data: dict, files: Mapping[str, str], subdir: str, key: str) -> list[str] | None:
    spec = ((data.get("tool") or {}).get("setuptools") or {}).get("dynamic", {}).get(key)
    if not isinstance(spec, dict) or not spec.get("file"):
        return None
    out: list[str] = []
    for name in [spec["file"]] if isinstance(spec["file"], str) else spec["file"]:
        text = files.get(posixpath.normpath(posixpath.join(subdir, name)))
        if text is None:
            return None
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            if line.startswith("-"):
                return None                              # -r, -c, --index-url inside: not a plain list
            if line:
                out.append(line)
    return out


def install_parts(cmd: list[Word], target: str) -> tuple[str, list[str]]:
    """(pip or uv up to `install`, its options: everything but the project's target word and its `-e`)."""
    install_at = pip_install_index(cmd) or 0
    head = " ".join(w.raw for w in cmd[:install_at + 1])
    options, skip = [], False
    args = cmd[install_at + 1:]
    for i, word in enumerate(args):
        if skip:
            skip = False
            continue
        if word.raw == target or word.value in ("-e", "--editable") and i + 1 < len(args) and args[i + 1].raw == target:
            continue
        options.append(word.raw)
        if word.value in PIP_VALUE_OPTIONS and i + 1 < len(args):
            options.append(args[i + 1].raw)
            skip = True
    return head, options
