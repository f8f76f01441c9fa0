"""Dataset: read a dataset and a blacklist into the ordered list of commits to build.

Formats: the SGLang tracking file (JSON lines with `commit_hash` and `parent_commit`), the
vLLM file (JSON lines with `commit`, `commit_date`, `Dockerfile`), and a plain commit list
(`*.txt`, one SHA per line).

Nothing here touches git or docker: a bad line becomes an `InvalidEntry` that fails on its
own (category `dataset_invalid`, with its line number) while every other commit proceeds.
"""
from __future__ import annotations

import dataclasses
import json
import posixpath
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

ROLES = ("human", "parent", "commit")
# (sha key, content key, path key) for each role of a record.
ROLE_KEYS = {
    "human": ("commit_hash", "dockerfile_content", "dockerfile_path"),
    "parent": ("parent_commit", "parent_dockerfile_content", "parent_dockerfile_path"),
    "commit": ("commit", "Dockerfile", "dockerfile_path"),          # the vLLM dataset
}
MAX_DOCKERFILE_BYTES = 1024 * 1024
_SHA = re.compile(r"[0-9a-f]{7,40}")


@dataclass(frozen=True)
class DockerfileSource:
    """Where a commit's Dockerfile comes from: given content, a path in its tree, or the profile."""

    content: str | None = None
    path: str | None = None

    def describe(self) -> str:
        if self.content is not None:
            return "dataset content"
        return f"tree path {self.path}" if self.path else "profile candidates"


@dataclass(frozen=True)
class CommitSpec:
    """One commit to build: its SHA as the dataset gives it, its roles and its Dockerfile."""

    sha: str
    roles: tuple[str, ...]
    dockerfile: DockerfileSource
    line: int
    parent: str | None = None       # what a PR commit (`human`) is measured against: its record's parent
    children: tuple[str, ...] = ()  # the PR commits measured against this one (`parent`)

    @property
    def test_id(self) -> str:
        return f"{'+'.join(self.roles)}-{self.sha}"


@dataclass(frozen=True)
class InvalidEntry:
    """A record (or one commit of it) that cannot be built; it fails with `dataset_invalid`."""

    line: int
    reason: str
    sha: str | None = None          # set when the failure belongs to one commit's status
    roles: tuple[str, ...] = ()
    source: str = "dataset"

    @property
    def test_id(self) -> str:
        if self.sha:
            return f"{'+'.join(self.roles)}-{self.sha}"
        return f"{self.source}-line{self.line}-invalid"


Entry = Union[CommitSpec, InvalidEntry]  # noqa: UP007 (a runtime alias; `|` needs 3.10 objects)


@dataclass(frozen=True)
class DatasetPlan:
    entries: tuple[Entry, ...]
    blacklisted: tuple[str, ...]
    groups: dict[str, str] = field(default_factory=dict)     # linked commits -> their group's key


def child_of(record: dict) -> tuple[str, ...]:
    """The record's PR commit, when it names a valid one."""
    try:
        return (valid_sha(record.get("commit_hash")),)
    except ValueError:
        return ()


def parent_of(record: dict) -> str | None:
    """The record's parent commit, when it names a valid one."""
    try:
        return valid_sha(record.get("parent_commit"))
    except ValueError:
        return None


def valid_sha(value: object) -> str:
    """Return the SHA lower-cased, or raise ValueError saying what is wrong with it."""
    if not isinstance(value, str):
        raise ValueError(f"SHA must be a string, got {type(value).__name__}")
    sha = value.strip().lower()
    if not sha:
        raise ValueError("SHA is empty")
    if not re.fullmatch(r"[0-9a-f]+", sha):
        raise ValueError(f"SHA {value!r} is not hexadecimal")
    if not _SHA.fullmatch(sha):
        raise ValueError(f"SHA {value!r} must have 7 to 40 hex digits (too short to be unique?)")
    return sha


def valid_dockerfile_path(value: object) -> str:
    """A relative path that stays inside the repository, normalised; else ValueError."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"dockerfile path must be a non-empty string, got {value!r}")
    if "\x00" in value or "\\" in value:
        raise ValueError(f"dockerfile path {value!r} contains a NUL or backslash")
    if value.startswith("/"):
        raise ValueError(f"dockerfile path {value!r} is absolute; it must be inside the repository")
    path = posixpath.normpath(value)
    if path == ".." or path.startswith("../") or path == ".":
        raise ValueError(f"dockerfile path {value!r} climbs out of the repository")
    return path


def valid_dockerfile_content(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"dockerfile content must be a string, got {type(value).__name__}")
    if not value.strip():
        raise ValueError("dockerfile content is empty")
    if "\x00" in value:
        raise ValueError("dockerfile content contains NUL bytes")
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > MAX_DOCKERFILE_BYTES:
        raise ValueError(f"dockerfile content is {size} bytes, over the 1 MiB limit")
    return value


def dockerfile_source(record: dict, role: str) -> DockerfileSource:
    _, content_key, path_key = ROLE_KEYS[role]
    if record.get(content_key) is not None:
        return DockerfileSource(content=valid_dockerfile_content(record[content_key]))
    if record.get(path_key) is not None:
        return DockerfileSource(path=valid_dockerfile_path(record[path_key]))
    return DockerfileSource()


def read_records(lines: Iterable[str]) -> Iterator[tuple[int, dict | None, str]]:
    """Yield (line number, record or None, reason) for every non-blank line."""
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except ValueError as e:
            yield number, None, f"line {number} is not JSON: {e}"
            continue
        if not isinstance(record, dict):
            yield number, None, f"line {number} is a JSON {type(record).__name__}, not an object"
            continue
        yield number, record, ""


def record_key(record: dict) -> str:
    """The field naming a record's own commit: `commit_hash` (SGLang) or `commit` (vLLM)."""
    return "commit" if "commit" in record and "commit_hash" not in record else "commit_hash"


def commits_of(number: int, record: dict) -> Iterator[Entry]:
    """The commits of one record (human and parent, or the one vLLM commit), each valid or not on its own."""
    key = record_key(record)
    if record.get(key) is None:
        yield InvalidEntry(number, f"line {number}: record has no commit_hash (or commit)")
        return
    for role in (("commit",) if key == "commit" else ("human", "parent")):
        sha_key = ROLE_KEYS[role][0]
        if role == "parent" and record.get(sha_key) is None:
            continue
        try:
            sha = valid_sha(record.get(sha_key))
        except ValueError as e:
            yield InvalidEntry(number, f"line {number}: {sha_key}: {e}")
            continue
        try:
            yield CommitSpec(sha, (role,), dockerfile_source(record, role), number,
                             parent_of(record) if role == "human" else None,
                             child_of(record) if role == "parent" else ())
        except ValueError as e:
            yield InvalidEntry(number, f"line {number}: {role} commit {sha}: {e}", sha, (role,))


def merge_commits(entries: Iterable[Entry]) -> list[Entry]:
    """One entry per SHA, in first-seen order; roles are combined, the first valid source wins."""
    merged: dict[str, Entry] = {}
    loose: list[tuple[int, Entry]] = []
    order: dict[str, int] = {}
    for position, entry in enumerate(entries):
        if entry.sha is None:
            loose.append((position, entry))
            continue
        order.setdefault(entry.sha, position)
        previous = merged.get(entry.sha)
        if previous is None:
            merged[entry.sha] = entry
            continue
        roles = tuple(r for r in ROLES if r in previous.roles or r in entry.roles)
        keep = entry if isinstance(previous, InvalidEntry) and isinstance(entry, CommitSpec) else previous
        parent = next((e.parent for e in (previous, entry) if isinstance(e, CommitSpec) and e.parent), None)
        children = tuple(dict.fromkeys(c for e in (previous, entry) if isinstance(e, CommitSpec) for c in e.children))
        merged[entry.sha] = _with_roles(keep, roles, parent, children)
    ordered = [(order[sha], entry) for sha, entry in merged.items()] + loose
    return [entry for _, entry in sorted(ordered, key=lambda pair: pair[0])]


def _with_roles(entry: Entry, roles: tuple[str, ...], parent: str | None = None,
                children: tuple[str, ...] = ()) -> Entry:
    if isinstance(entry, CommitSpec):
        return dataclasses.replace(entry, roles=roles, parent=parent or entry.parent,
                                   children=children or entry.children)
    return InvalidEntry(entry.line, entry.reason, entry.sha, roles, entry.source)


def parse_dataset(lines: Iterable[str]) -> list[Entry]:
    """All entries of a tracking dataset, duplicates of an earlier record flagged by line."""
    entries: list[Entry] = []
    seen: dict[str, int] = {}
    for number, record, reason in read_records(lines):
        if record is None:
            entries.append(InvalidEntry(number, reason))
            continue
        key = str(record.get(record_key(record), "")).strip().lower()
        if key and key in seen:
            entries.append(InvalidEntry(number, f"line {number}: duplicate of the record on line {seen[key]}"))
            continue
        if key:
            seen[key] = number
        entries.extend(commits_of(number, record))
    return merge_commits(entries)


def with_full_shas(entries: list[Entry], resolve: Callable[[str], str]) -> list[Entry]:
    """Short SHAs replaced by full ones where `resolve` knows them; the others stay as given
    (their test then fails with the resolver's reason)."""
    resolved: list[Entry] = []
    for entry in entries:
        if isinstance(entry, CommitSpec) and len(entry.sha) < 40:
            try:
                entry = dataclasses.replace(entry, sha=resolve(entry.sha))
            except Exception:      # noqa: BLE001 - any resolver failure leaves the SHA for the test to report
                pass
        resolved.append(entry)
    return merge_commits(resolved)


def parse_blacklist(lines: Iterable[str]) -> tuple[set[str], list[InvalidEntry]]:
    """SHAs (or SHA prefixes) to exclude; garbage lines come back as invalid entries."""
    shas: set[str] = set()
    garbage: list[InvalidEntry] = []
    for number, text in enumerate(lines, start=1):
        value = text.split("#", 1)[0].strip()
        if not value:
            continue
        try:
            shas.add(valid_sha(value))
        except ValueError as e:
            garbage.append(InvalidEntry(number, f"blacklist line {number}: {e}", source="blacklist"))
    return shas, garbage


def is_blacklisted(sha: str, blacklist: set[str]) -> bool:
    return any(sha.startswith(b) or b.startswith(sha) for b in blacklist)


def parse_shard(text: str) -> tuple[int, int]:
    """`I/N` (1 <= I <= N) -> (I, N); ValueError otherwise."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match or not 1 <= int(match.group(1)) <= int(match.group(2)):
        raise ValueError(f"--shard {text!r}: expected I/N with 1 <= I <= N, for example 2/4")
    return int(match.group(1)), int(match.group(2))


def shard_groups(links: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Each linked commit -> the smallest SHA of its group (a parent and its child, and every commit
    joined to them through shared parents), so that a pair lands on one shard, and a group's shard
    stays where it is as the dataset grows (unless a new record joins two groups)."""
    root: dict[str, str] = {}

    def find(sha: str) -> str:
        while root.setdefault(sha, sha) != sha:
            root[sha] = root[root[sha]]
            sha = root[sha]
        return sha

    for a, b in links:
        ra, rb = find(a), find(b)
        if ra != rb:
            root[max(ra, rb)] = min(ra, rb)
    return {sha: find(sha) for sha in root}


def in_shard(entry: Entry, index: int, count: int, groups: dict[str, str] | None = None) -> bool:
    """Membership decided by the commit's group (its smallest SHA), so a pair shares a shard and shards
    stay stable when the dataset grows; entries without a SHA go by their line number."""
    key_sha = group_of(entry.sha, groups or {}) if entry.sha else None
    key = int(key_sha[:15], 16) if key_sha else entry.line
    return key % count == index - 1


def group_of(sha: str, groups: dict[str, str]) -> str:
    """The group key of a SHA; a full SHA resolved from a dataset's short one finds the short one's group."""
    if sha in groups:
        return groups[sha]
    for length in range(7, len(sha)):
        if sha[:length] in groups:
            return groups[sha[:length]]
    return sha


def select(entries: Iterable[Entry], has_work: Callable[[Entry], bool], batch_size: int | None,
           shard: tuple[int, int] | None, groups: dict[str, str] | None = None) -> list[Entry]:
    """The run's commits, chosen once and in this order: (the dataset and blacklist, and pytest's
    -k/-m/--lf, came before) -> what has no work stays, to be reported skipped, but does not count
    -> the first `batch_size` commits with work -> this shard's part of them."""
    kept, taken = [], 0
    for entry in entries:
        if isinstance(entry, CommitSpec) and has_work(entry):
            if batch_size is not None and taken >= max(batch_size, 0):
                continue
            taken += 1
        if shard is None or in_shard(entry, *shard, groups):
            kept.append(entry)
    return kept


def record_links(lines: Iterable[str]) -> list[tuple[str, str]]:
    """(commit, parent) of every record of the tracking format whose two SHAs are well formed."""
    links = []
    for _, record, _ in read_records(lines):
        if record is None:
            continue
        pair = record.get("commit_hash"), record.get("parent_commit")
        if all(isinstance(v, str) and _SHA.fullmatch(v.strip().lower()) for v in pair):
            links.append((pair[0].strip().lower(), pair[1].strip().lower()))  # type: ignore[union-attr]
    return links


def read_lines(path: Path) -> list[str]:
    """Text lines of a data file; undecodable bytes are replaced so one bad byte fails one line."""
    return path.read_text(encoding="utf-8", errors="replace").splitlines()


def parse_commit_list(lines: Iterable[str]) -> list[Entry]:
    """`commits.txt`: one SHA per line, `#` comments; each commit uses the profile's Dockerfile."""
    entries: list[Entry] = []
    for number, text in enumerate(lines, start=1):
        value = text.split("#", 1)[0].strip()
        if not value:
            continue
        try:
            entries.append(CommitSpec(valid_sha(value), ("commit",), DockerfileSource(), number))
        except ValueError as e:
            entries.append(InvalidEntry(number, f"line {number}: {e}"))
    return merge_commits(entries)


def load_plan(dataset: Path, blacklist: Path | None) -> DatasetPlan:
    """The ordered entries of a dataset minus blacklisted commits."""
    if not dataset.is_file():
        raise FileNotFoundError(f"dataset {dataset} does not exist")
    lines = read_lines(dataset)
    entries = parse_commit_list(lines) if dataset.suffix == ".txt" else parse_dataset(lines)
    excluded: set[str] = set()
    if blacklist is not None and blacklist.exists():
        excluded, garbage = parse_blacklist(read_lines(blacklist))
        entries.extend(garbage)
    kept = [e for e in entries if not (e.sha and is_blacklisted(e.sha, excluded))]
    dropped = tuple(e.sha for e in entries if e.sha and is_blacklisted(e.sha, excluded))
    links = () if dataset.suffix == ".txt" else tuple(record_links(lines))
    return DatasetPlan(tuple(kept), dropped, shard_groups(links))
