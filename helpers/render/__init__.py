"""Render: the Dockerfile rewrites, each a pure `str -> str` function, applied in order.

    fixes (syntax, .git mounts, wheel size check) -> pin_source -> late source (dependencies in the
        source's place, the source itself last) -> undo the old recipe's early identity -> declare_identity
        -> setuptools-scm version and dependency cut-off, declared late
        -> the changed parts built from the tree (--build-changed-parts) -> package and compiler cache mounts
        -> map_base_images
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from helpers.profiles import Profile
from helpers.render.base_images import BaseImageMap, map_base_images, parse_mapping
from helpers.render.caches import add_compiler_caches, add_package_caches
from helpers.render.fixes import DOCKERFILE_FIXES
from helpers.render.identity import (
    FREEZE_ARGS,
    declare_freeze,
    declare_identity,
    declare_scm_version,
    scm_arg_names,
    undo_early_identity,
)
from helpers.render.late import late_source
from helpers.render.parts import build_parts
from helpers.render.pin import pin_source_report
from helpers.source.context_fixes import AppliedFix

__all__ = ["RenderOptions", "Rendered", "render", "pin_source", "declare_identity", "map_base_images",
           "parse_mapping"]


@dataclass(frozen=True)
class RenderOptions:
    """What a rendering depends on besides the Dockerfile itself."""

    profile: Profile
    sha: str = ""
    base_images: BaseImageMap = ()
    repo_ids: tuple[str, ...] = ()
    fixes: frozenset[str] = frozenset()
    scm_version: str | None = None       # set: builds without .git get this version
    freeze_until: str | None = None      # set: pip/uv see only releases uploaded before it
    project_files: Mapping[str, str] = field(default_factory=dict)   # pyproject.toml and its lists
    dependency_layer: bool = True
    package_cache: bool = True
    build_parts: tuple[str, ...] = ()    # --build-changed-parts: the profile's parts this commit changed


@dataclass(frozen=True)
class Rendered:
    text: str
    notes: tuple[str, ...]
    fixes: tuple[AppliedFix, ...] = ()
    build_args: dict[str, str] = field(default_factory=dict)
    commit_args: tuple[str, ...] = ()       # the build args that carry the commit (they reach the last steps only)

    def layers_key(self) -> str:
        """What the image's layers before the source depend on: the Dockerfile as built and the build args
        that are not the commit's. Commits with the same Dockerfile and dependency set share it."""
        args = {k: v for k, v in sorted(self.build_args.items()) if k not in self.commit_args}
        return hashlib.sha256(f"{self.text}\n{args}".encode()).hexdigest()[:16]


def pin_source(text: str, profile: Profile, repo_ids: tuple[str, ...] = ()) -> str:
    return pin_source_report(text, profile, repo_ids)[0]


def render(text: str, options: RenderOptions) -> Rendered:
    """The Dockerfile as it is built, what changed, and the build args it declares."""
    applied: list[AppliedFix] = []
    for name, fix in DOCKERFILE_FIXES.items():
        if name in options.fixes:
            text, changes = fix(text)
            applied += [AppliedFix(name, change) for change in changes]
    text, notes = pin_source_report(text, options.profile, options.repo_ids)
    if options.dependency_layer:
        text, moved = late_source(text, options.profile, options.project_files)
        notes += moved
    text, undone = undo_early_identity(text, options.profile)
    notes += undone
    text, built = build_parts(text, options.build_parts)
    notes += built
    text = declare_identity(text, options.profile)
    build_args = {options.profile.build_arg: options.sha}
    if "scm_version" in options.fixes and options.scm_version:
        text = declare_scm_version(text, options.profile)
        build_args.update(dict.fromkeys(scm_arg_names(options.profile), options.scm_version))
        applied.append(AppliedFix("scm_version", f"setuptools-scm version {options.scm_version}"))
    if options.freeze_until:
        text = declare_freeze(text)
        build_args.update(dict.fromkeys(FREEZE_ARGS, options.freeze_until))
        notes.append(f"dependencies frozen to releases uploaded before {options.freeze_until}")
    if options.package_cache:
        text, cached = add_package_caches(text)
        notes += cached
        text, compiled = add_compiler_caches(text, options.profile)
        notes += compiled
    text = map_base_images(text, options.base_images)
    commit_args = (options.profile.build_arg, *scm_arg_names(options.profile))
    return Rendered(text, tuple(notes), tuple(applied), build_args, commit_args)
