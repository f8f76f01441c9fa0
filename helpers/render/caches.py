"""Caches: BuildKit cache mounts that keep what a rebuilt step downloads or compiles out of the image and
ready for the next build: pip's and uv's download caches on every step that installs packages, and a
compiler cache (ccache's folder) on every step that compiles where the project's source is.

A step's text changes (its cache key with it); what it installs does not: the caches never reach the
image. Only steps that run as root get them (the mounts are root's cache folders).
"""
from __future__ import annotations

import re

from helpers.profiles import Profile
from helpers.render.dockerfile import keyword_end, parse, stages
from helpers.render.shellwords import apply_edits, package_actions, pip_install_index, program, walk

CACHES = {"pip": "/root/.cache/pip", "uv": "/root/.cache/uv"}
NO_CACHE = {"--no-cache-dir", "--no-cache"}


def add_package_caches(text: str) -> tuple[str, list[str]]:
    """A BuildKit cache mount for pip's and uv's download caches on every RUN that installs as root,
    and `--no-cache-dir` dropped (the cache lives in the mount, never in the image)."""
    doc = parse(text)
    notes: list[str] = []
    for inst, state in stages(doc):
        if inst.cmd != "RUN" or inst.is_json or not state.is_root:
            continue
        current = doc.text_of(inst)
        actions = package_actions(current, keyword_end(current))
        tools = [tool for tool in CACHES if (tool, "install") in actions or (tool, "wheel") in actions
                 or (tool, "sync") in actions]
        mounts = [f"--mount=type=cache,target={CACHES[t]}" for t in tools if f"target={CACHES[t]}" not in current]
        if not tools:
            continue
        edits = [(w.start - 1 if current[w.start - 1] == " " else w.start, w.end, "")
                 for _, cmd, _ in walk(current, keyword_end(current), "/")
                 if cmd and program(cmd[0]).startswith(("pip", "python", "uv")) for w in cmd if w.value in NO_CACHE]
        new = apply_edits(current, edits)
        if mounts:
            keyword = re.match(r"\s*RUN", new, re.I)
            assert keyword is not None
            new = new[:keyword.end()] + " " + " ".join(mounts) + new[keyword.end():]
        if new != current:
            doc.replace(inst, new)
            notes.append(f"line {inst.first + 1}: package cache mounted for {', '.join(tools)}")
    return doc.render(), notes


COMPILER_CACHE = "/root/.cache/ccache"          # ccache 4's folder for root (CCACHE_DIR unset, no ~/.ccache)
COMPILER_MOUNT = f"--mount=type=cache,target={COMPILER_CACHE},id=harness-ccache,sharing=shared"
COMPILERS = {"cmake", "make", "ninja", "nvcc", "gcc", "g++", "cc", "c++", "clang", "clang++"}
SETUP_BUILDS = {"build", "build_ext", "bdist_wheel", "develop", "install", "bdist_egg"}


def compiles(cmd) -> bool:
    """A command that compiles: a compiler or build tool, `setup.py build|bdist_wheel|...`, `python -m build`,
    `pip wheel`, or a pip/uv install of a local path (it builds the project there)."""
    if not cmd:
        return False
    values = [w.value for w in cmd]
    name = program(cmd[0])
    if name in COMPILERS:
        return True
    if name.startswith("python") and any(v.endswith("setup.py") for v in values) and SETUP_BUILDS & set(values):
        return True
    if name.startswith("python") and values[1:3] == ["-m", "build"]:
        return True
    if "wheel" in values[1:4] and any(v == "pip" or v.endswith("/pip") or v == "pip3" for v in values[:3]):
        return True
    at = pip_install_index(cmd)
    return at is not None and any(v in (".", "..") or v.startswith(("/", "./", "../")) or "/" in v and "://" not in v
                                  for v in values[at + 1:] if not v.startswith("-"))


def add_compiler_caches(text: str, profile: Profile) -> tuple[str, list[str]]:
    """A shared ccache mount on every RUN that compiles, as root, in a stage that holds the project's source
    (concurrent builds share it safely: ccache locks its own entries), unless it has a compiler cache."""
    doc = parse(text)
    notes: list[str] = []
    for inst, state in stages(doc, profile):
        if inst.cmd != "RUN" or inst.is_json or not state.is_root or not state.has_source:
            continue
        current = doc.text_of(inst)
        if "ccache" in current or "sccache" in current:
            continue
        if any(compiles(cmd) for _, cmd, _ in walk(current, keyword_end(current), state.workdir)):
            keyword = re.match(r"\s*RUN", current, re.I)
            assert keyword is not None
            doc.replace(inst, current[:keyword.end()] + " " + COMPILER_MOUNT + current[keyword.end():])
            notes.append(f"line {inst.first + 1}: compiler cache (ccache) mounted")
    return doc.render(), notes
