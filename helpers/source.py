"""Source: one cached bare mirror per repository, and build contexts made from it by `git archive`.

The mirror is fetched at most once per session, even when several pytest-xdist workers ask
at the same time (a file lock plus a marker naming the session that last fetched).
"""
from __future__ import annotations

import hashlib
import posixpath
import re
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from helpers.errors import CommitNotFound, ConfigError, ContextFailed, DockerfileMissing, InfraError

FULL_SHA = re.compile(r"[0-9a-f]{40}")


def redact_url(url: str) -> str:
    """The URL without any user:password part, for logs, labels and messages."""
    return re.sub(r"^([a-z+]+://)[^@/]+@", r"\1", url)


def check_repo_url(url: str) -> str:
    """Refuse URLs carrying a password: it would end up in process arguments."""
    if re.match(r"^[a-z+]+://[^@/]+:[^@/]*@", url):
        raise ConfigError("--repo-url must not embed a password; use a git credential helper instead")
    return url


def is_inside_work_tree(path: Path) -> bool:
    return any((parent / ".git").exists() for parent in [path, *path.parents])


@dataclass
class BuildContext:
    """A fresh directory holding exactly one commit's tree, and what was done to it."""

    root: Path                       # parent folder: holds context/ and the rendered Dockerfile
    sha: str
    notes: list[str] = field(default_factory=list)

    @property
    def context(self) -> Path:
        return self.root / "context"

    @property
    def dockerfile(self) -> Path:
        return self.root / "Dockerfile"

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


class Mirror:
    """A bare mirror of one repository in the cache directory."""

    def __init__(self, url: str, cache_dir: Path, session_id: str, timeout: float = 1800):
        self.url = check_repo_url(url)
        digest = hashlib.sha256(url.encode()).hexdigest()[:12]
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", redact_url(url).rstrip("/").split("/")[-1])[:40]
        self.path = cache_dir / "mirrors" / f"{slug}-{digest}.git"
        self.session_id = session_id
        self.timeout = timeout
        self._repo: Any = None                # a git.Repo, made on first use (GitPython is slow to import)

    @property
    def lock(self) -> FileLock:
        return FileLock(str(self.path) + ".lock", timeout=self.timeout)

    @property
    def repo(self):
        if self._repo is None:
            self.ensure()
        assert self._repo is not None
        return self._repo

    def ensure(self) -> None:
        """Clone the mirror if absent, else fetch it, once per session across all workers."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        marker = self.path / "harness-fetched-by"
        try:
            with self.lock:
                if not (self.path / "HEAD").exists():
                    # --no-local: a local repository is read through git's own protocol, a consistent
                    # snapshot even while it is being written or repacked (hardlinking races with gc)
                    self._run(["clone", "--mirror", "--quiet", "--no-local", self.url, str(self.path)],
                              cwd=self.path.parent)
                elif not marker.exists() or marker.read_text() != self.session_id:
                    self._run(["fetch", "--prune", "--quiet", "origin"])
                marker.write_text(self.session_id)
        except Timeout as e:
            raise InfraError(f"waited {self.timeout:.0f}s for the mirror lock {e.lock_file}") from e
        import git
        self._repo = git.Repo(self.path)

    def _run(self, args: list[str], cwd: Path | None = None) -> str:
        argv = ["git", *args] if cwd else ["git", "--git-dir", str(self.path), *args]
        try:
            done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=self.timeout)
        except subprocess.TimeoutExpired as e:
            raise InfraError(f"git {args[0]} of {redact_url(self.url)} took over {self.timeout:.0f}s") from e
        if done.returncode != 0:
            raise InfraError(f"git {args[0]} of {redact_url(self.url)} failed",
                             log_tail=redact_url(done.stderr)[-2000:], exit_status=done.returncode)
        return done.stdout

    def resolve(self, sha: str) -> str:
        """The full SHA of a commit, fetching it by SHA once if the mirror's refs lack it."""
        full = self._lookup(sha)
        if full is None and FULL_SHA.fullmatch(sha):
            with self.lock:
                subprocess.run(["git", "--git-dir", str(self.path), "fetch", "--quiet", "origin", sha],
                               capture_output=True, timeout=self.timeout)
            full = self._lookup(sha)
        if full is None:
            raise CommitNotFound(f"commit {sha} is not in {redact_url(self.url)}")
        return full

    def _lookup(self, sha: str) -> str | None:
        done = subprocess.run(
            ["git", "--git-dir", str(self.path), "rev-parse", "--verify", "--quiet", "--end-of-options",
             f"{sha}^{{commit}}"], capture_output=True, text=True, timeout=60)
        if done.returncode == 0:
            return done.stdout.strip()
        if "ambiguous" in done.stderr:
            raise CommitNotFound(f"short SHA {sha} is ambiguous in {redact_url(self.url)}; give more digits")
        return None

    def scm_describe(self, sha: str, args: tuple[str, ...]) -> str | None:
        """`git describe` of the commit with setuptools-scm's arguments, None when no tag reaches it."""
        try:
            done = subprocess.run(["git", "--git-dir", str(self.path), *args, "--end-of-options", sha],
                                  capture_output=True, text=True, timeout=self.timeout)
        except subprocess.TimeoutExpired as e:
            raise InfraError(f"git describe of {sha} took over {self.timeout:.0f}s") from e
        return done.stdout.strip() if done.returncode == 0 else None

    def tree_id(self, sha: str, path: str) -> str:
        """The git tree id of a directory at the commit."""
        return self._run(["rev-parse", "--verify", "--end-of-options", f"{sha}:{path}"]).strip()

    def commit_count(self, sha: str) -> int:
        return int(self._run(["rev-list", "--count", sha]).strip())

    def commit_date(self, sha: str) -> str:
        return self._run(["show", "-s", "--format=%cI", sha]).strip()

    def end_of_commit_day(self, sha: str) -> str:
        """The end of the commit's committer day in UTC: parent and child of one day share it."""
        seconds = int(self._run(["show", "-s", "--format=%ct", sha]).strip())
        day = datetime.fromtimestamp(seconds, tz=timezone.utc).date()
        return f"{day.isoformat()}T23:59:59Z"

    def read_file(self, sha: str, path: str) -> str | None:
        """A file's text at a commit, or None when the tree has no such file."""
        try:
            blob = self.repo.commit(sha).tree / path
        except KeyError:
            return None
        if blob.type != "blob":
            return None
        return blob.data_stream.read().decode("utf-8", errors="replace")

    def blob_hashes(self, sha: str, prefix: str) -> dict[str, str]:
        """`git ls-tree -r` of a subtree: tree path -> blob hash (submodules left out)."""
        out = self.repo.git.ls_tree("-r", "-z", "--full-tree", sha, "--", prefix)
        hashes = {}
        for entry in filter(None, out.split("\0")):
            meta, path = entry.split("\t", 1)
            _mode, kind, blob = meta.split()
            if kind == "blob":
                hashes[path] = blob
        return hashes

    def archive_into(self, sha: str, dest: Path) -> list[str]:
        """Extract the commit's tree into dest (a fresh, empty folder); return the members refused."""
        refused: list[str] = []

        def safe(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo | None:
            reason = unsafe_member(member)
            if reason:
                refused.append(f"{member.name}: {reason}")
                return None
            mode = 0o755 if member.isdir() or member.mode & 0o111 else 0o644
            return member.replace(mode=mode, uid=0, gid=0, uname="", gname="", deep=False)

        argv = ["git", "--git-dir", str(self.path), "archive", "--format=tar", sha]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            with tarfile.open(fileobj=proc.stdout, mode="r|") as archive:
                archive.extractall(dest, filter=safe)
        except (tarfile.TarError, OSError) as e:
            proc.kill()
            raise ContextFailed(f"extracting git archive of {sha} failed: {e}") from e
        finally:
            stderr = proc.communicate(timeout=self.timeout)[1]
        if proc.returncode != 0:
            raise ContextFailed(f"git archive {sha} failed", log_tail=stderr.decode(errors="replace"),
                                exit_status=proc.returncode)
        return refused


def unsafe_member(member: tarfile.TarInfo) -> str | None:
    """Why extracting a member could write outside the folder, or None. Checked lexically: the folder
    is new and empty, and a link may only point inside it, so no path can leave it through a link.
    (tarfile's `data` filter checks the same with two realpath calls a member, several times slower.)"""
    name = posixpath.normpath(member.name)
    if name.startswith("/") or name == ".." or name.startswith("../"):
        return "path leaves the tree"
    if member.issym() or member.islnk():
        target = member.linkname if member.islnk() else posixpath.join(posixpath.dirname(name), member.linkname)
        target = posixpath.normpath(target)
        if member.linkname.startswith("/") or target == ".." or target.startswith("../"):
            return f"link to {member.linkname} points outside the tree"
        return None
    return None if member.isfile() or member.isdir() else "not a file, a folder or a link"


def find_dockerfile(mirror: Mirror, sha: str, path: str | None, candidates: tuple[str, ...]) -> tuple[str, str]:
    """(path, text) of the commit's Dockerfile: the given path, else the first candidate present."""
    for candidate in [path] if path else candidates:
        text = mirror.read_file(sha, candidate)
        if text is not None:
            return candidate, text
    wanted = path or " or ".join(candidates)
    raise DockerfileMissing(f"commit {sha} has no Dockerfile at {wanted}")


def project_files(context: Path, subdir: str) -> dict[str, str]:
    """The dependency specification files of the source directory: pyproject.toml and requirement lists."""
    base = context / subdir
    paths = [base / "pyproject.toml", *base.glob("requirements*.txt"), *base.glob("requirements/*.txt")]
    return {p.relative_to(context).as_posix(): p.read_text(encoding="utf-8", errors="replace")
            for p in paths if p.is_file() and not p.is_symlink()}


def make_context(mirror: Mirror, sha: str, work_dir: Path) -> BuildContext:
    """A fresh directory outside any git work tree with `git archive` of the commit in context/."""
    work_dir.mkdir(parents=True, exist_ok=True)
    ctx = BuildContext(Path(tempfile.mkdtemp(prefix=f"ctx-{sha[:12]}-", dir=work_dir)), sha)
    ctx.context.mkdir()
    try:
        refused = mirror.archive_into(sha, ctx.context)
    except BaseException:
        ctx.remove()
        raise
    ctx.notes += [f"refused unsafe archive member {r}" for r in refused]
    ignore = ctx.context / ".dockerignore"
    if ignore.is_file():
        # The image must hold the whole tree; the project's ignore list could drop source files.
        ignore.rename(ctx.root / "project.dockerignore")
        ctx.notes.append("moved the project's .dockerignore out of the context")
    return ctx
