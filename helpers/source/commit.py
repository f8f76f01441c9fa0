"""Commit: one commit as the source stage hands it on, before its build.

Takes the mirror, the profile and the dataset's entry; hands on frozen values: `CommitSource` (what the
commit's build configuration says, and the version git gives it), `Dockerfile` (its text, where it came
from, its path in the tree), the submodules archived into its context, the files the context fixes patch,
and what it changed against its parent.
"""
from __future__ import annotations

import posixpath
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from helpers.profiles import Profile
from helpers.source import submodules
from helpers.source.build_config import BuildConfig, read_build_config
from helpers.source.context_fixes import CONTEXT_FIXES, apply_context_fixes
from helpers.source.dataset import CommitSpec
from helpers.source.kinds import kind_of
from helpers.source.mirror import BuildContext, Change, Mirror, find_dockerfile, make_context
from helpers.source.scm_version import project_version

Record = Callable[[str, object], None]


@dataclass(frozen=True)
class CommitSource:
    """A commit as it describes itself: its build configuration, and the version git gives it (when that
    configuration versions it from git and the `scm_version` fix is on)."""

    sha: str
    build_config: BuildConfig
    scm_version: str | None

    def lines(self) -> list[str]:
        """What the log's header says of it."""
        given = [f"version given to the build: {self.scm_version}"] if self.scm_version else []
        return self.build_config.lines() + given


@dataclass(frozen=True)
class Dockerfile:
    """A commit's Dockerfile as written: its text, where it came from, and its path in the tree when it is the
    tree's own (a change to it is then built: the change check places it)."""

    text: str
    origin: str
    path: str | None


def describe(mirror: Mirror, profile: Profile, fixes: frozenset[str], sha: str) -> CommitSource:
    """The commit's build configuration, read from its tree, and the version it gets from git."""
    subdir = profile.source_subdir
    config = read_build_config(lambda path: mirror.read_file(sha, path), subdir,
                               lambda: mirror.blob_hashes(sha, subdir or "."))
    return CommitSource(sha, config, scm_version(mirror, config, fixes, sha))


def scm_version(mirror: Mirror, config: BuildConfig, fixes: frozenset[str], sha: str) -> str | None:
    """The version the commit's configuration gets from git (setuptools-scm, hatch-vcs), computed by
    setuptools-scm from the mirror; None when it is not versioned from git or `scm_version` is turned off."""
    versioning = config.versioning
    if not versioning.from_git or "scm_version" not in fixes:
        return None
    root = posixpath.normpath(posixpath.join(config.project_dir or ".", str(versioning.options.get("root", "."))))
    return project_version(versioning.options, sha, mirror, "" if root == "." else root)


def dockerfile_of(mirror: Mirror, spec: CommitSpec, sha: str, candidates: tuple[str, ...]) -> Dockerfile:
    """The dataset's content (the tree's own when it equals a candidate's text), else the tree's file."""
    if spec.dockerfile.content is not None:
        content = spec.dockerfile.content
        for path in [spec.dockerfile.path] if spec.dockerfile.path else candidates:
            if mirror.read_file(sha, path) == content:
                return Dockerfile(content, "dataset content", path)
        return Dockerfile(content, "dataset content", None)
    path, text = find_dockerfile(mirror, sha, spec.dockerfile.path, candidates)
    return Dockerfile(text, f"{path} in the commit's tree", path)


def add_submodules(mirror: Mirror, sha: str, ctx: BuildContext, profile: Profile, enabled: bool,
                   record: Record) -> tuple[submodules.Submodule, ...]:
    """Each submodule the commit records, at its commit, into its folder of the context (recorded as
    `submodules`); Git LFS pointers in the context are recorded as `lfs_pointers`."""
    fetched: tuple[submodules.Submodule, ...] = ()
    if enabled:
        found = submodules.fetch(mirror, sha, ctx.context, profile.optional_submodules)
        fetched = found.submodules
        ctx.notes += list(found.notes)
        if fetched:
            record("submodules", ", ".join(s.line() for s in fetched))
        if found.notes:
            record("submodule_notes", "; ".join(found.notes)[:2000])
    elif submodules.recorded(mirror, sha):
        ctx.notes.append("--no-submodules: the submodules' folders are left empty")
        record("submodules", "left empty (--no-submodules)")
    pointers = submodules.lfs_pointers(ctx.context)
    if pointers:
        record("lfs_pointers", ", ".join(pointers))
        ctx.notes.append(f"Git LFS pointer files (the objects were not fetched) reach the image: {', '.join(pointers)}")
    return fetched


def patched_files(mirror: Mirror, sha: str, work_dir: Path, fixes: frozenset[str]) -> dict[str, bytes]:
    """--verify-only: what the context fixes change in this commit (the image holds those bytes)."""
    if not fixes & CONTEXT_FIXES:
        return {}
    ctx = make_context(mirror, sha, work_dir)
    try:
        return apply_context_fixes(ctx.context, set(fixes))[0]
    finally:
        ctx.remove()


def commit_diff(mirror: Mirror, spec: CommitSpec, sha: str) -> tuple[str | None, list[Change]]:
    """(parent, what the commit changed against it): the record's parent, else git's first."""
    base = mirror.resolve(spec.parent) if spec.parent else mirror.first_parent(sha)
    return base, mirror.changes(base, sha)


def changed_parts(mirror: Mirror, spec: CommitSpec, sha: str, profile: Profile,
                  changed: list[Change]) -> tuple[str, ...]:
    """--build-changed-parts: the profile's parts in which the commit changed runtime code (`changed`), and
    those its PR commits in the dataset change (a baseline builds them from its tree too, so that a pair differs
    in the change only, not in how the part was built)."""
    changed = list(changed)
    for child in spec.children:
        changed += mirror.changes(sha, mirror.resolve(child))
    return tuple(part for part in profile.parts
                 if any(c.path.startswith(part.rstrip("/") + "/") and kind_of(c.path, profile) == "runtime"
                        for c in changed))
