"""Changes: where a commit's change went (verified, built, not in the image) and what kind of file each is.

A commit's paths against its parent (`git diff --name-status`, renames found) are each

- *verified*: inside the checked package, compared file for file with the image;
- *built*: read by the build from the commit's tree (helpers/render/reads.py);
- *not in the image*: neither, or a compiled source read only by steps that take the compiled part prebuilt
  (`VLLM_USE_PRECOMPILED=1 pip install .`, a variable the commit's setup.py reads). Of these, *runtime
  code* (Python, C/C++/CUDA sources and headers, build files) is told apart from tests, docs, CI files,
  benchmarks and other files; a profile adds its own patterns (`path_kinds`).

A `human` commit whose runtime changes are all not in the image fails `change_not_in_image`, naming the
paths and where the image got that part instead, when the Dockerfile says. Parents are baselines: reported,
never failed for this; `--accept-change-not-in-image` reports and passes.
"""
from __future__ import annotations

import functools
import posixpath
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from helpers.profiles import PATH_KINDS, Profile
from helpers.render.reads import PackageSource, TreeReads
from helpers.source.kinds import COMPILED_SUFFIXES, kind_of
from helpers.source.mirror import Change
from helpers.verify.checks import CheckResult

try:
    import tomllib
except ModuleNotFoundError:                      # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

VERIFIED, BUILT, NOT_IN_IMAGE = "verified", "built", "not in the image"
KINDS = PATH_KINDS
CATEGORY = "change_not_in_image"

@dataclass(frozen=True)
class PathChange:
    change: Change
    where: str              # VERIFIED, BUILT or NOT_IN_IMAGE
    kind: str               # one of KINDS
    reader: str = ""        # what reads it, for a built path

    def line(self) -> str:
        return f"{self.change.status} {self.change} ({self.kind})"


@dataclass(frozen=True)
class ChangeReport:
    """The commit's changed paths against `base`, each placed and kinded; where the image got the parts it
    did not build from the tree (`elsewhere`: a part's folder -> its distribution and install sources)."""

    base: str | None
    paths: tuple[PathChange, ...]
    elsewhere: tuple[tuple[str, str, tuple[PackageSource, ...]], ...] = ()

    def of(self, where: str) -> list[PathChange]:
        return [p for p in self.paths if p.where == where]

    @property
    def runtime(self) -> list[PathChange]:
        return [p for p in self.paths if p.kind == "runtime"]

    def counts(self) -> str:
        """`3 verified, 1 built, 8 not in the image (6 test, 2 docs)`."""
        counts = Counter(p.where for p in self.paths)
        text = ", ".join(f"{counts[w]} {w}" for w in (VERIFIED, BUILT, NOT_IN_IMAGE))
        outside = Counter(p.kind for p in self.of(NOT_IN_IMAGE))
        if outside:
            text += " (" + ", ".join(f"{outside[k]} {k}" for k in KINDS if outside[k]) + ")"
        return text

    def listing(self, where: str, limit: int = 40) -> str:
        paths = self.of(where)
        text = "; ".join(p.line() for p in paths[:limit])
        return text + (f"; ... {len(paths) - limit} more" if len(paths) > limit else "")

    def attested(self) -> dict:
        """For the attestation: the parent compared against and each path by where it went."""
        return {"against": self.base, **{where.replace(" ", "_"): [
            {"status": p.change.status, "path": p.change.path, "kind": p.kind,
             **({"from": p.change.old_path} if p.change.old_path else {})} for p in self.of(where)]
            for where in (VERIFIED, BUILT, NOT_IN_IMAGE)}}

    def check(self, roles: tuple[str, ...], accept: bool) -> CheckResult:
        """The change check: fails only a `human` commit whose runtime changes are all not in the image."""
        against = f"against {self.base[:12]}" if self.base else "(a root commit)"
        runtime = self.runtime
        missing = [p for p in runtime if p.where == NOT_IN_IMAGE]
        if not self.paths:
            return CheckResult(CATEGORY, True, True, f"no change {against}: the image's code is its parent's")
        if not runtime:
            return CheckResult(CATEGORY, True, True, f"no runtime change {against} ({self.counts()}): "
                                                     "the image's code is its parent's")
        if not missing:
            return CheckResult(CATEGORY, True, True, f"every runtime change {against} is in the image "
                                                     f"({self.counts()})")
        where = self.instead()
        named = ", ".join(str(p.change) for p in missing[:12]) + (f" and {len(missing) - 12} more"
                                                                   if len(missing) > 12 else "")
        if len(missing) < len(runtime):
            return CheckResult(CATEGORY, True, True, f"{len(runtime) - len(missing)} runtime change(s) {against} in "
                                                     f"the image; not in it: {named}{where}")
        if "human" not in roles:
            return CheckResult(CATEGORY, True, True, f"a baseline: its runtime changes {against} are not in the "
                                                     f"image ({named}){where}")
        if accept:
            return CheckResult(CATEGORY, True, True, f"accepted (--accept-change-not-in-image): no runtime change "
                                                     f"{against} is in the image: {named}{where}")
        return CheckResult(CATEGORY, False, True, f"no runtime change {against} is in the image: {named}{where}; "
                                                  "the image holds its parent's code for them (--build-changed-parts "
                                                  "builds a profile's parts from the tree; "
                                                  "--accept-change-not-in-image accepts)")

    def instead(self) -> str:
        said = [f"the build takes the compiled part prebuilt: {reason[len('prebuilt: '):]}" for reason in
                dict.fromkeys(p.reader for p in self.of(NOT_IN_IMAGE) if p.reader.startswith("prebuilt: "))]
        for folder, name, sources in self.elsewhere:
            if sources:
                said.append(f"the image gets {folder or '.'}/ as " + "; ".join(s.describe() for s in sources[:3]))
            else:
                said.append(f"the Dockerfile neither builds {folder or '.'}/ ({name}) from the tree nor names "
                            "where it comes from")
        return (" (" + "; ".join(said) + ")") if said else ""


def place(changes: list[Change], profile: Profile, reads: TreeReads, dockerfile_path: str | None,
          base: str | None, read_file: Callable[[str], str | None],
          gitlinks: frozenset[str] = frozenset()) -> ChangeReport:
    """Each change placed (verified, built, not in the image) and kinded (a submodule whose path says
    nothing else is runtime code: its commit is the code); for runtime code not in the image, the part it
    belongs to (the nearest folder with a pyproject.toml or setup.py) and where the build installs that part
    from instead."""
    package = profile.package_path.rstrip("/") + "/"
    read_file = functools.lru_cache(maxsize=None)(read_file)
    placed = []
    for change in changes:
        kind = kind_of(change.path, profile)
        if kind == "other" and change.path in gitlinks:
            kind = "runtime"
        if change.path.startswith(package):
            placed.append(PathChange(change, VERIFIED, kind))
        elif change.path == dockerfile_path:
            placed.append(PathChange(change, BUILT, kind, "the Dockerfile"))
        elif (prebuilt := prebuilt_by(change.path, reads, read_file)) is not None:
            placed.append(PathChange(change, NOT_IN_IMAGE, kind, f"prebuilt: {prebuilt}"))
        elif (reader := reads.reader_of(change.path)) is not None:
            placed.append(PathChange(change, BUILT, kind, reader))
        else:
            placed.append(PathChange(change, NOT_IN_IMAGE, kind))
    parts: dict[str, str] = {}
    for p in placed:
        if p.where == NOT_IN_IMAGE and p.kind == "runtime":
            part = part_of(p.change.path, read_file, profile)
            if part is not None:
                parts.setdefault(*part)
    elsewhere = tuple((folder, name, tuple(reads.sources_of(name))) for folder, name in parts.items())
    return ChangeReport(base, tuple(placed), elsewhere)


def prebuilt_by(path: str, reads: TreeReads, read_file: Callable[[str], str | None]) -> str | None:
    """Why a compiled source the build reads is not built: every step reading it runs with a `*PRECOMPILED*`
    variable set true, and the commit's own setup.py (the nearest above the path) reads that variable."""
    why = reads.prebuilt_by(path)
    name = posixpath.basename(path)
    if why is None or not (posixpath.splitext(name)[1] in COMPILED_SUFFIXES or name == "CMakeLists.txt"):
        return None
    variable = why.split("=", 1)[0]
    folder = posixpath.dirname(path)
    while True:
        setup = read_file(posixpath.join(folder, "setup.py"))
        if setup is not None:
            return f"{why}, which {posixpath.join(folder, 'setup.py')} reads" if variable in setup else None
        if not folder:
            return None
        folder = posixpath.dirname(folder)


def part_of(path: str, read_file: Callable[[str], str | None], profile: Profile) -> tuple[str, str] | None:
    """(folder, distribution name) of the nearest folder above path with a pyproject.toml or setup.py,
    other than the project's own; None when there is none."""
    folder = posixpath.dirname(path)
    own = profile.source_subdir.strip("/")
    while True:
        if folder != own:
            name = distribution_name(read_file(posixpath.join(folder, "pyproject.toml")),
                                     read_file(posixpath.join(folder, "setup.py")))
            if name:
                return folder, name
        if not folder:
            return None
        folder = posixpath.dirname(folder)


def distribution_name(pyproject: str | None, setup_py: str | None) -> str | None:
    if pyproject:
        try:
            name = tomllib.loads(pyproject).get("project", {}).get("name")
        except tomllib.TOMLDecodeError:
            name = None
        if isinstance(name, str) and name:
            return name
    if setup_py:
        found = re.search(r"""\bname\s*=\s*["']([A-Za-z0-9][A-Za-z0-9._-]*)["']""", setup_py)
        if found:
            return found.group(1)
    return None
