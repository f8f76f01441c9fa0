"""Submodules: each submodule a commit records, from a cached mirror of its own, archived at its recorded
commit into its path of the build context; nested ones too.

`git archive` leaves a submodule's folder empty. The commit's `.gitmodules` names each submodule's URL
(relative URLs are resolved against the URL of the repository that records it, as git does), its tree
records the commit (a gitlink). A pinned clone's `git submodule update` (which pinning turns into `true`)
then finds the content already there. A submodule that cannot be fetched fails the commit
(`submodule_unavailable`) unless the profile's `optional_submodules` or `--no-submodules` say the build does
without it. Files that are Git LFS pointers (the LFS object itself was never fetched) are reported.
"""
from __future__ import annotations

import fnmatch
import os
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path

from helpers.errors import HarnessError, SubmoduleUnavailable
from helpers.source.mirror import QUERY_DEADLINE, Mirror, redact_url

MAX_DEPTH = 8                  # nested submodules deeper than this are a loop, not a project
LFS_POINTER = b"version https://git-lfs.github.com/spec/v1"


@dataclass(frozen=True)
class Submodule:
    path: str                  # from the top of the project's tree (nested ones: through their parents)
    url: str                   # resolved, credentials removed
    commit: str

    def line(self) -> str:
        return f"{self.path}@{self.commit[:12]}"


@dataclass(frozen=True)
class Fetched:
    submodules: tuple[Submodule, ...]
    notes: tuple[str, ...]


def resolve_url(base: str, url: str) -> str:
    """A submodule URL as git resolves it: `./x` and `../x` relative to the URL of the repository that records
    it (each `../` drops one component of that URL), anything else as written."""
    if not url.startswith(("./", "../")):
        return url
    base = base.rstrip("/")
    scp = re.match(r"^([^/:@]+@)?[^/:]+:(?!//)", base)      # git@host:org/repo
    head, path = (base[:scp.end()], base[scp.end():]) if scp else ("", base)
    if not scp and "://" in path:
        scheme_end = path.index("://") + 3
        host_end = path.find("/", scheme_end)
        head, path = (path, "") if host_end < 0 else (path[:host_end], path[host_end:])
    rest = url
    while True:
        if rest.startswith("./"):
            rest = rest[2:]
        elif rest.startswith("../"):
            rest = rest[3:]
            path = path.rsplit("/", 1)[0] if "/" in path else ""
        else:
            break
    return f"{head}{path}/{rest}" if path or not head.endswith(":") else f"{head}{rest}"


def recorded(mirror: Mirror, sha: str) -> list[tuple[str, str | None, str]]:
    """(path, URL as written in .gitmodules or None, commit) of each gitlink of the commit's tree."""
    tree = mirror.git(["ls-tree", "-r", "-z", "--full-tree", sha], QUERY_DEADLINE)
    links = {}
    for entry in filter(None, tree.text.split("\0")):
        meta, path = entry.split("\t", 1)
        mode, kind, commit = meta.split()
        if kind == "commit":
            links[path] = commit
    if not links:
        return []
    config = mirror.git(["config", "--blob", f"{sha}:.gitmodules", "-z", "--list"], QUERY_DEADLINE)
    names: dict[str, dict[str, str]] = {}
    for item in filter(None, config.text.split("\0")):
        key, _, value = item.partition("\n")
        if key.startswith("submodule.") and key.count(".") >= 2:
            name, variable = key[len("submodule."):].rsplit(".", 1)
            names.setdefault(name, {})[variable] = value
    urls = {entry.get("path", "").strip("/"): entry.get("url") for entry in names.values()}
    return [(path, urls.get(path), commit) for path, commit in links.items()]


def fetch(mirror: Mirror, sha: str, dest: Path, optional: tuple[str, ...] = (), prefix: str = "",
          depth: int = 0) -> Fetched:
    """Every submodule of the commit (nested ones too) archived at its commit into dest/<path>."""
    found: list[Submodule] = []
    notes: list[str] = []
    for path, url, commit in recorded(mirror, sha):
        full = prefix + path
        target = dest / path
        try:
            if depth >= MAX_DEPTH:
                raise SubmoduleUnavailable(f"nested more than {MAX_DEPTH} deep (a loop of submodules?)")
            if posixpath.normpath(path).startswith("../") or path.startswith("/"):
                raise SubmoduleUnavailable("its path leaves the tree")
            if not url:
                raise SubmoduleUnavailable(".gitmodules names no URL for it")
            source = Mirror(resolve_url(mirror.url, url), mirror.path.parent.parent, mirror.session_id,
                            mirror.timeout)
            source.ensure()
            commit = source.resolve(commit)
            target.mkdir(parents=True, exist_ok=True)
            refused = source.archive_into(commit, target)
            notes += [f"submodule {full}: refused unsafe archive member {r}" for r in refused]
            nested = fetch(source, commit, target, optional, full + "/", depth + 1)
        except HarnessError as e:
            where = f" from {redact_url(resolve_url(mirror.url, url))}" if url else ""
            why = f"submodule {full} at {commit[:12]}{where} could not be fetched: {e.message.strip()[:400]}"
            if any(fnmatch.fnmatchcase(full, pattern) for pattern in optional):
                notes.append(f"{why} (optional: the build goes on without it)")
                continue
            raise SubmoduleUnavailable(why + "; if the build does not need it, list it in the profile's "
                                       "optional_submodules or pass --no-submodules") from e
        found.append(Submodule(full, redact_url(source.url), commit))
        found += nested.submodules
        notes += nested.notes
    return Fetched(tuple(found), tuple(notes))


def lfs_pointers(root: Path, limit: int = 20) -> list[str]:
    """Files of a tree that are Git LFS pointers (the object itself is not there), by path under root."""
    found = []
    for folder, _dirs, files in os.walk(root):
        for name in files:
            path = Path(folder) / name
            try:
                size = path.lstat().st_size
                if not 100 <= size <= 400 or path.is_symlink():     # a pointer is about 130 bytes
                    continue
                with open(path, "rb") as f:
                    if f.read(len(LFS_POINTER)) == LFS_POINTER:
                        found.append(path.relative_to(root).as_posix())
            except OSError:
                continue
            if len(found) >= limit:
                return found
    return sorted(found)
