"""Track: the new first-parent commits of a project's branch become dataset records, appended in history order.

    python -m helpers.track --project sglang [--since SHA|DATE] [--runtime-only] [--skip-reverts] [--max N]

Every first-parent commit of the branch after the newest one the dataset already holds (or after
`--since`) becomes a record of the tracking format: the commit, its first parent as `parent_commit`, subject,
committer date, the pull request number and URL its subject or merge message carries (`(#1234)`,
`Merge pull request #1234`), and the Dockerfile the profile's candidates find at each of the two commits.
Existing lines are kept byte for byte, the file is replaced atomically, and a second run adds nothing.
Bad history (a branch rewritten under the dataset, an unknown `--since`) is one line and exit status 2; a
repository that cannot be cloned is exit status 4, as for the main job.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from helpers.config import default_dataset
from helpers.errors import ConfigError, DockerfileMissing, HarnessError
from helpers.profiles import Profile, choose_profile, normalise_repo
from helpers.source import mirror as source
from helpers.source.dataset import ROLE_KEYS, read_records
from helpers.source.kinds import kind_of

ROOT = Path(__file__).resolve().parent.parent
PULL_REQUEST = re.compile(r"\(#(\d+)\)\s*$|^Merge pull request #(\d+)\b|\bpull request #(\d+)\b")
REVERT = re.compile(r'^Revert "')


class HistoryError(ConfigError):
    """The history cannot be read as asked (rewritten branch, unknown --since): one line, exit status 2."""


@dataclass(frozen=True)
class Commit:
    sha: str
    parents: tuple[str, ...]
    date: str
    subject: str
    message: str


@dataclass(frozen=True)
class Tracked:
    """What one run found: the records to append and, per commit left out, why."""

    after: str | None                 # the commit the range starts after (None: the branch's whole history)
    records: tuple[dict, ...]
    skipped: tuple[tuple[Commit, str], ...]
    notes: tuple[str, ...]


def pull_request(commit: Commit) -> int | None:
    """The pull request number its subject (`Title (#1234)`) or merge message (`Merge pull request #1234`) names."""
    for text in (commit.subject, commit.message):
        found = PULL_REQUEST.search(text)
        if found:
            return int(next(g for g in found.groups() if g))
    return None


def pull_request_url(repo_url: str, number: int | None) -> str | None:
    """`https://github.com/org/repo/pull/N` for a repository on GitHub; None elsewhere or without a number."""
    normal = normalise_repo(repo_url)
    if number is None or not normal.startswith("github.com/") or normal.count("/") != 2:
        return None
    _, org, repo = normal.split("/")
    return f"https://github.com/{org}/{repo}/pull/{number}"


def tracked_shas(dataset: Path) -> list[str]:
    """Every commit the dataset names, in any role (full or abbreviated, as written)."""
    if not dataset.exists():
        return []
    found = []
    for _, record, _ in read_records(dataset.read_text(encoding="utf-8").splitlines()):
        for key, _, _ in ROLE_KEYS.values():
            value = (record or {}).get(key)
            if isinstance(value, str) and value:
                found.append(value.lower())
    return found


class History:
    """The first-parent history of one branch of the mirror."""

    def __init__(self, mirror: source.Mirror, branch: str | None):
        self.mirror = mirror
        self.branch = branch or self.default_branch()
        done = mirror.git(["rev-list", "--first-parent", f"refs/heads/{self.branch}", "--"], source.QUERY_DEADLINE)
        if done.status != 0:
            raise HistoryError(f"no branch {self.branch!r} in {source.redact_url(mirror.url)}")
        self.line = done.text.split()               # newest first

    def default_branch(self) -> str:
        done = self.mirror.git(["symbolic-ref", "--short", "HEAD"], source.QUERY_DEADLINE)
        return done.text.strip() if done.status == 0 and done.text.strip() else "main"

    def newest_of(self, shas: list[str]) -> str | None:
        """The newest first-parent commit the dataset holds; a dataset none of whose commits is on the line
        any more was tracked on a history the branch no longer has."""
        if not shas:
            return None
        held = set(shas)
        prefixes = {s for s in held if len(s) < 40}
        for sha in self.line:
            if sha in held or any(sha.startswith(p) for p in prefixes):
                return sha
        raise HistoryError(f"none of the dataset's {len(held)} commits is on the first-parent history of "
                           f"{self.branch} any more (the branch was rewritten?); give --since SHA or DATE")

    def since(self, value: str) -> str | None:
        """The commit the range starts after: a SHA on the line, or the last commit before a date."""
        if re.fullmatch(r"[0-9a-fA-F]{4,40}", value):
            done = self.mirror.git(["rev-parse", "--verify", "--quiet", "--end-of-options", f"{value}^{{commit}}"],
                                   source.QUERY_DEADLINE)
            sha = done.text.strip()
            if done.status != 0 or not sha:
                raise HistoryError(f"--since {value}: no such commit in {source.redact_url(self.mirror.url)}")
            if sha not in set(self.line):
                raise HistoryError(f"--since {value}: not on the first-parent history of {self.branch}")
            return sha
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise HistoryError(f"--since {value!r} is neither a commit nor an ISO date (2026-12-01)") from None
        cutoff = (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()
        done = self.mirror.git(["log", "--first-parent", "--format=%H %ct", f"refs/heads/{self.branch}", "--"],
                               source.QUERY_DEADLINE)
        dated = [line.split() for line in done.text.splitlines() if line.strip()]
        return next((sha for sha, seconds in dated if int(seconds) <= cutoff), None)

    def after(self, start: str | None) -> list[Commit]:
        """The first-parent commits after `start` (all of them when None), oldest first: `git log
        --first-parent` itself, its subjects and messages as git gives them."""
        excluded = [f"^{start}"] if start else []
        done = self.mirror.git(["log", "--first-parent", "--reverse", "--format=%H%x00%P%x00%cI%x00%s%x00%B%x1e",
                                *excluded, f"refs/heads/{self.branch}", "--"], source.QUERY_DEADLINE * 4)
        commits = []
        for chunk in filter(str.strip, done.text.split("\x1e")):
            sha, parents, date, subject, message = chunk.strip("\n").split("\x00", 4)
            commits.append(Commit(sha, tuple(parents.split()), date, subject, message))
        return commits


def dockerfile_path(mirror: source.Mirror, sha: str | None, candidates: tuple[str, ...]) -> str | None:
    if sha is None:
        return None
    try:
        return source.find_dockerfile(mirror, sha, None, candidates)[0]
    except DockerfileMissing:
        return None


def record_of(commit: Commit, profile: Profile, mirror: source.Mirror, repo_url: str) -> dict:
    """The tracking format's record of one commit (the parent's Dockerfile looked up too)."""
    parent = commit.parents[0] if commit.parents else None
    number = pull_request(commit)
    path = dockerfile_path(mirror, commit.sha, profile.dockerfile_candidates)
    parent_path = dockerfile_path(mirror, parent, profile.dockerfile_candidates)
    return {"commit_hash": commit.sha, "commit_short": commit.sha[:12], "commit_subject": commit.subject,
            "commit_date": commit.date, "pr_number": number, "pr_url": pull_request_url(repo_url, number),
            "repo": profile.name, "parent_commit": parent,
            "has_dockerfile": path is not None, "dockerfile_path": path,
            "parent_has_dockerfile": parent_path is not None, "parent_dockerfile_path": parent_path,
            "dockerfile_content": None, "parent_dockerfile_content": None}


def tree_of(mirror: source.Mirror, sha: str) -> str:
    return mirror.git(["rev-parse", "--verify", "--quiet", f"{sha}^{{tree}}"], source.QUERY_DEADLINE).text.strip()


def why_skipped(commit: Commit, profile: Profile, mirror: source.Mirror, built_trees: set[str],
                runtime_only: bool, skip_reverts: bool) -> str | None:
    """Why a commit is not worth building, None when it is."""
    parent = commit.parents[0] if commit.parents else None
    tree = tree_of(mirror, commit.sha) if skip_reverts else ""
    if tree and tree in built_trees:
        kind = "a revert" if REVERT.match(commit.subject) else "a commit"
        return f"{kind} that restores a tree already tracked ({tree[:12]})"
    if runtime_only:
        kinds = Counter(kind_of(c.path, profile) for c in mirror.changes(parent, commit.sha))
        if not kinds["runtime"]:
            listed = ", ".join(f"{n} {k}" for k, n in kinds.most_common()) or "no file"
            return f"no runtime change ({listed})"
    return None


def track(mirror: source.Mirror, profile: Profile, dataset: Path, repo_url: str, branch: str | None = None,
          since: str | None = None, runtime_only: bool = False, skip_reverts: bool = False,
          most: int | None = None) -> Tracked:
    """The records a run would append to the dataset (nothing written)."""
    history = History(mirror, branch)
    held = tracked_shas(dataset)
    start = history.since(since) if since else history.newest_of(held)
    built_trees = {tree_of(mirror, sha) for sha in held} - {""} if skip_reverts else set()
    records: list[dict] = []
    skipped: list[tuple[Commit, str]] = []
    notes: list[str] = []
    for commit in history.after(start):
        if most is not None and len(records) >= most:
            notes.append(f"--max {most}: the rest waits for the next run (from {commit.sha[:12]} on)")
            break
        if commit.sha in held:
            continue
        if len(commit.parents) > 2:
            notes.append(f"{commit.sha[:12]} merges {len(commit.parents)} parents (an octopus merge): its record "
                         "measures it against its first parent")
        if not commit.parents:
            notes.append(f"{commit.sha[:12]} is a root commit: its record has no parent")
        why = why_skipped(commit, profile, mirror, built_trees, runtime_only, skip_reverts)
        if why:
            skipped.append((commit, why))
            continue
        records.append(record_of(commit, profile, mirror, repo_url))
        if skip_reverts:
            built_trees.add(tree_of(mirror, commit.sha))
    return Tracked(start, tuple(records), tuple(skipped), tuple(notes))


def append_records(dataset: Path, records: tuple[dict, ...]) -> None:
    """The dataset with the records appended: existing bytes kept, the file replaced atomically."""
    old = dataset.read_bytes() if dataset.exists() else b""
    if old and not old.endswith(b"\n"):
        old += b"\n"
    new = b"".join(json.dumps(r, ensure_ascii=False).encode("utf-8") + b"\n" for r in records)
    partial = dataset.with_name(f".{dataset.name}.{os.getpid()}")
    partial.write_bytes(old + new)
    os.replace(partial, dataset)


def arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m helpers.track", description=__doc__.splitlines()[0])
    parser.add_argument("--project", help="built-in profile: sglang (default) or vllm")
    parser.add_argument("--profile-file", help="a profile in TOML")
    parser.add_argument("--repo-url", help="repository URL or local path (default: the profile's)")
    parser.add_argument("--branch", help="the branch to track (default: the repository's HEAD branch)")
    parser.add_argument("--dataset", help="the dataset to append to (default: the project's)")
    parser.add_argument("--since", help="start after this commit or date instead of the dataset's newest commit")
    parser.add_argument("--runtime-only", action="store_true", help="keep only commits that change runtime code")
    parser.add_argument("--skip-reverts", action="store_true",
                        help="skip commits that restore a tree already tracked (reverts)")
    parser.add_argument("--max", type=int, dest="most", help="add at most this many records in this run")
    parser.add_argument("--cache-dir", default=os.environ.get("HARNESS_CACHE_DIR")
                        or str(Path.home() / ".cache" / "commit-image-harness"))
    parser.add_argument("--dry-run", action="store_true", help="say what would be added; write nothing")
    return parser.parse_args(argv)


def say(found: Tracked, dataset: Path, dry_run: bool) -> None:
    """Each commit skipped (and why), each note, each record added, then one line for the run."""
    for commit, why in found.skipped:
        print(f"skipped {commit.sha[:12]} {commit.subject[:70]}: {why}")
    for note in found.notes:
        print(f"note: {note}")
    for record in found.records:
        print(f"added   {record['commit_hash'][:12]} {record['commit_subject'][:70]}")
    after = f"after {found.after[:12]}" if found.after else "from the first commit"
    if not found.records:
        print(f"nothing new to add to {dataset} ({after}; {len(found.skipped)} skipped)")
    else:
        print(f"{'would add' if dry_run else 'added'} {len(found.records)} record(s) to {dataset} ({after}; "
              f"{len(found.skipped)} skipped)")


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv)
    try:
        profile = choose_profile({"project": args.project, "profile_file": args.profile_file})
        dataset = Path(args.dataset) if args.dataset else default_dataset(ROOT, profile)
        mirror = source.Mirror(args.repo_url or profile.repo_url, Path(args.cache_dir), uuid.uuid4().hex)
        mirror.ensure()
        web_url = args.repo_url if args.repo_url and not Path(args.repo_url).exists() else profile.repo_url
        found = track(mirror, profile, dataset, web_url, args.branch, args.since, args.runtime_only,
                      args.skip_reverts, args.most)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except HarnessError as e:
        print(f"error: {e.message}", file=sys.stderr)
        return 4
    say(found, dataset, args.dry_run)
    if found.records and not args.dry_run:
        append_records(dataset, found.records)
    return 0


if __name__ == "__main__":
    sys.exit(main())
