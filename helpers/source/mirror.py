"""Source: one cached bare mirror per repository, and build contexts made from it by `git archive`.

The mirror is fetched at most once per session, even when several pytest-xdist workers ask
at the same time (a file lock plus a marker naming the session that last fetched).
"""
from __future__ import annotations

import hashlib
import io
import os
import posixpath
import re
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from filelock import FileLock, Timeout

from helpers.errors import CommitNotFound, ConfigError, ContextFailed, DockerfileMissing, InfraError

FULL_SHA = re.compile(r"[0-9a-f]{40}")


def redact_url(url: str) -> str:
    """The URL without any user:password part, for logs, labels and messages."""
    return re.sub(r"^([a-z+]+://)[^@/]+@", r"\1", url)


def valid_repo_url(url: str) -> str:
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


@dataclass(frozen=True)
class GitResult:
    status: int
    out: bytes
    err: str

    @property
    def text(self) -> str:
        return self.out.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class Change:
    """One path a commit changed: git's status letter (A, M, D, R, C, T), the path, the old path of a
    rename or copy."""

    status: str
    path: str
    old_path: str = ""

    def __str__(self) -> str:
        return f"{self.old_path} -> {self.path}" if self.old_path else self.path


QUERY_DEADLINE = 60.0      # seconds for a query of the local mirror (rev-parse, ls-tree, cat-file)


def run_git(args: list[str], deadline: float, what: str, cwd: Path | None = None) -> GitResult:
    """Every git command of the harness goes through here: GitPython's runner, which kills the command
    at its deadline. A command killed at its deadline is an InfraError naming it and `what` it was for."""
    import git  # GitPython is slow to import: only when git is needed
    started = time.monotonic()
    status, out, err = git.cmd.Git(cwd).execute(
        ["git", *args], kill_after_timeout=deadline, with_extended_output=True, with_exceptions=False,
        stdout_as_string=False, strip_newline_in_stdout=False)
    if status == -signal.SIGKILL and time.monotonic() - started >= deadline * 0.95:
        raise InfraError(f"`git {command_name(args)}` for {what} ran over its deadline of {deadline:.0f}s")
    return GitResult(status, out or b"", redact_url(err or ""))


def command_name(args: list[str]) -> str:
    """The git subcommand of an argv (after `--git-dir DIR` and other global options)."""
    rest = list(args)
    while rest and rest[0].startswith("-"):
        rest = rest[2:] if rest[0] in ("--git-dir", "-C") else rest[1:]
    return rest[0] if rest else "git"


class Mirror:
    """A bare mirror of one repository in the cache directory; every git command has a deadline."""

    def __init__(self, url: str, cache_dir: Path, session_id: str, timeout: float = 1800):
        self.url = valid_repo_url(url)
        digest = hashlib.sha256(url.encode()).hexdigest()[:12]
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", redact_url(url).rstrip("/").split("/")[-1])[:40]
        self.path = cache_dir / "mirrors" / f"{slug}-{digest}.git"
        self.session_id = session_id
        self.timeout = timeout
        self.stale = ""         # why this session's fetch failed, when it did (the mirror is as it was)

    @property
    def lock(self) -> FileLock:
        return FileLock(str(self.path) + ".lock", timeout=self.timeout)

    def ensure(self) -> None:
        """Clone the mirror if absent, else fetch it, once per session across all workers. A clone that fails
        is an InfraError (nothing can be built); a fetch that fails leaves the mirror as it was, and
        `stale` says why (commits it already holds still build; a missing one names the failed fetch)."""
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
                    done = self.git(["fetch", "--prune", "--quiet", "origin"])
                    failed = "" if done.status == 0 else f"git fetch failed: {done.err.strip()[-300:]}"
                    (self.path / "harness-fetch-failed").write_text(failed)
                marker.write_text(self.session_id)
                failure = self.path / "harness-fetch-failed"
                self.stale = failure.read_text() if failure.exists() else ""
        except Timeout as e:
            raise InfraError(f"waited {self.timeout:.0f}s for the mirror lock {e.lock_file}") from e

    def git(self, args: list[str], deadline: float | None = None) -> GitResult:
        """A git command on the mirror, killed at its deadline (--git-timeout unless given)."""
        return run_git(["--git-dir", str(self.path), *args], deadline or self.timeout, redact_url(self.url))

    def _run(self, args: list[str], cwd: Path | None = None, deadline: float | None = None) -> str:
        """A git command that must succeed (its stderr's tail in the error otherwise)."""
        done = (run_git(args, deadline or self.timeout, redact_url(self.url), cwd) if cwd
                else self.git(args, deadline))
        if done.status != 0:
            raise InfraError(f"git {args[0]} of {redact_url(self.url)} failed", log_tail=done.err[-2000:],
                             exit_status=done.status)
        return done.text

    def resolve(self, sha: str) -> str:
        """The full SHA of a commit, fetching it by SHA once if the mirror's refs lack it."""
        full = self._lookup(sha)
        if full is None and FULL_SHA.fullmatch(sha):
            with self.lock:
                self.git(["fetch", "--quiet", "origin", sha])
            full = self._lookup(sha)
        if full is None:
            stale = f" (the mirror could not be updated this session: {self.stale})" if self.stale else ""
            raise CommitNotFound(f"commit {sha} is not in {redact_url(self.url)}{stale}")
        return full

    def _lookup(self, sha: str) -> str | None:
        done = self.git(["rev-parse", "--verify", "--quiet", "--end-of-options", f"{sha}^{{commit}}"], QUERY_DEADLINE)
        if done.status == 0:
            return done.text.strip()
        if "ambiguous" in done.err:
            raise CommitNotFound(f"short SHA {sha} is ambiguous in {redact_url(self.url)}; give more digits")
        return None

    def scm_describe(self, sha: str, args: tuple[str, ...]) -> str | None:
        """`git describe` of the commit with setuptools-scm's arguments, None when no tag reaches it."""
        done = self.git([*args, "--end-of-options", sha])
        return done.text.strip() if done.status == 0 else None

    def run_describe_program(self, sha: str, argv: tuple[str, ...], root: str) -> str | None:
        """The project's own describe program (a setuptools-scm `describe_command` that is not git, such as
        SGLang's `python3 python/tools/get_version_tag.py`), run as setuptools-scm would run it in a checkout
        of the commit: in `root` of a scratch clone sharing the mirror's objects and tags, HEAD at the
        commit, holding the files its arguments name. It runs without this process's environment (no
        credentials reach it) and is killed at the query deadline. Its first line, None when it fails."""
        with tempfile.TemporaryDirectory(prefix="harness-describe-") as scratch:
            clone = Path(scratch) / "checkout"
            self._run(["clone", "--quiet", "--shared", "--no-checkout", str(self.path), str(clone)],
                      cwd=Path(scratch), deadline=QUERY_DEADLINE)
            run_git(["-C", str(clone), "update-ref", "--no-deref", "HEAD", sha], QUERY_DEADLINE, "describe")
            run_git(["-C", str(clone), "read-tree", sha], QUERY_DEADLINE, "describe")
            named = [posixpath.normpath(posixpath.join(root, word)) for word in argv[1:] if not word.startswith("-")]
            files = self.read_files(sha, [p for p in named if not p.startswith("..")]) if named else {}
            for path, data in files.items():
                (clone / path).parent.mkdir(parents=True, exist_ok=True)
                (clone / path).write_bytes(data)
            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": scratch, "LANG": "C.UTF-8",
                   "GIT_CONFIG_NOSYSTEM": "1", "GIT_TERMINAL_PROMPT": "0"}
            try:
                done = subprocess.run(list(argv), cwd=clone / root if root else clone, env=env, capture_output=True,
                                      text=True, timeout=QUERY_DEADLINE, stdin=subprocess.DEVNULL)
            except (OSError, subprocess.TimeoutExpired):
                return None
        lines = done.stdout.strip().splitlines()
        return lines[0].strip() if done.returncode == 0 and lines else None

    def tree_id(self, sha: str, path: str) -> str:
        """The git tree id of a directory at the commit."""
        done = self._run(["rev-parse", "--verify", "--end-of-options", f"{sha}:{path}"], deadline=QUERY_DEADLINE)
        return done.strip()

    def commit_count(self, sha: str) -> int:
        return int(self._run(["rev-list", "--count", sha]).strip())

    def commit_date(self, sha: str) -> str:
        return self._run(["show", "-s", "--format=%cI", sha], deadline=QUERY_DEADLINE).strip()

    def end_of_commit_day(self, sha: str) -> str:
        """The end of the commit's committer day in UTC: parent and child of one day share it."""
        seconds = int(self._run(["show", "-s", "--format=%ct", sha], deadline=QUERY_DEADLINE).strip())
        day = datetime.fromtimestamp(seconds, tz=timezone.utc).date()
        return f"{day.isoformat()}T23:59:59Z"

    def read_file(self, sha: str, path: str) -> str | None:
        """A file's text at a commit, or None when the tree has no such file (or it is not a file)."""
        done = self.git(["cat-file", "blob", f"{sha}:{path}"], QUERY_DEADLINE)     # fails for a tree too
        return done.text if done.status == 0 else None

    def blob_hashes(self, sha: str, prefix: str) -> dict[str, str]:
        """`git ls-tree -r` of a subtree: tree path -> blob hash (submodules left out)."""
        out = self._run(["ls-tree", "-r", "-z", "--full-tree", sha, "--", prefix], deadline=QUERY_DEADLINE)
        hashes = {}
        for entry in filter(None, out.split("\0")):
            meta, path = entry.split("\t", 1)
            _mode, kind, blob = meta.split()
            if kind == "blob":
                hashes[path] = blob
        return hashes

    def first_parent(self, sha: str) -> str | None:
        """The commit's first parent, None for a root commit."""
        done = self.git(["rev-parse", "--verify", "--quiet", "--end-of-options", f"{sha}^1"], QUERY_DEADLINE)
        return done.text.strip() if done.status == 0 else None

    def changes(self, base: str | None, sha: str) -> list[Change]:
        """What the commit changed against base (its parent; None: a root commit, against the empty tree),
        `git diff --name-status` with renames found, submodules as their paths."""
        args = ["diff", "--name-status", "-M", "-z", "--no-ext-diff", "--no-textconv", "--end-of-options",
                base, sha] if base else ["diff-tree", "-r", "--root", "--no-commit-id", "--name-status", "-M",
                                         "-z", "--end-of-options", sha]
        words = self._run(args, deadline=QUERY_DEADLINE).split("\0")
        found, i = [], 0
        while i < len(words) and words[i]:
            status = words[i]
            if status[0] in "RC":
                found.append(Change(status[0], words[i + 2], words[i + 1]))
                i += 3
            else:
                found.append(Change(status[0], words[i + 1]))
                i += 2
        return found

    def read_files(self, sha: str, paths: list[str]) -> dict[str, bytes]:
        """Files of the commit, by tree path (one `git archive`; pathspecs are literal)."""
        out = self.git(["--literal-pathspecs", "archive", "--format=tar", sha, "--", *paths])
        if out.status != 0:
            raise InfraError(f"git archive of {len(paths)} files at {sha[:12]} failed", log_tail=out.err[-2000:],
                             exit_status=out.status)
        files = {}
        with tarfile.open(fileobj=io.BytesIO(out.out), mode="r:") as tar:
            for member in tar:
                if member.isfile():
                    files[member.name] = tar.extractfile(member).read()  # type: ignore[union-attr]
        return files

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

        # streamed into the extraction, so not through run_git; the same deadline, the same error
        argv = ["git", "--git-dir", str(self.path), "archive", "--format=tar", sha]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            with tarfile.open(fileobj=proc.stdout, mode="r|") as archive:
                archive.extractall(dest, filter=safe)
        except (tarfile.TarError, OSError) as e:
            proc.kill()
            raise ContextFailed(f"extracting git archive of {sha} failed: {e}") from e
        finally:
            try:
                stderr = proc.communicate(timeout=self.timeout)[1]
            except subprocess.TimeoutExpired:
                proc.kill()
                raise InfraError(f"`git archive` of {sha} ran over its deadline of {self.timeout:.0f}s") from None
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
