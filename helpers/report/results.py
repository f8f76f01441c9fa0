"""Report: read JUnit results, merge them into the status lists, and summarise them in Markdown.

Status lists use the seed's format: `# CATEGORY: N commits`, then one SHA per line, in
`commit-status/success.txt` and `commit-status/failed/<category>.txt`. A run moves only
the commits it ran; every other entry, including categories this tool never produces, stays.
Every write is atomic. `python -m helpers.report fold reports/*.xml` folds the JUnit files of
many shards or re-runs with the same rules, the newest result of a commit winning.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from helpers.source.build_config import BuildConfig

SUCCESS = "success"


@dataclass(frozen=True)
class Outcome:
    """One commit's result as the JUnit file records it."""

    sha: str
    status: str            # "success", a failure category, or "skipped"
    name: str
    properties: dict[str, str]
    message: str = ""
    timestamp: str = ""       # when its test session started (the JUnit testsuite's timestamp)


def atomic_write(path: Path, text: str) -> None:
    """Write beside the target, then rename over it: readers see the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())      # mkstemp makes 0600; these files are for everyone
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def read_junit(path: Path) -> list[Outcome]:
    """Outcomes of the commit tests in a JUnit file (test cases without a `sha` property are ignored)."""
    outcomes = []
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    for suite in suites:
        outcomes += read_suite(suite)
    return outcomes


def read_suite(suite: ET.Element) -> list[Outcome]:
    outcomes = []
    for case in suite.iter("testcase"):
        props = {p.get("name", ""): p.get("value", "") for p in case.iter("property")}
        if not props.get("sha"):
            continue
        problem = case.find("failure")
        if problem is None:
            problem = case.find("error")
        if problem is not None:
            status = props.get("category") or "infra_error"
            message = problem.get("message", "") or (problem.text or "")
        elif (skipped := case.find("skipped")) is not None:
            status, message = "skipped", skipped.get("message", "")
        else:
            status, message = SUCCESS, ""
        failure_text = (problem.text or "") if problem is not None else ""
        outcomes.append(Outcome(props["sha"], status, case.get("name", ""), props, failure_text or message,
                                suite.get("timestamp", "")))
    return outcomes


# The old tool's names of categories the harness names otherwise: their lists merge under the new names.
OLD_NAMES = {"flashinfer_abi_mismatch": "abi_mismatch", "docker_build_failed": "build_failed"}


def read_status(folder: Path) -> dict[str, str]:
    """sha -> "success" or failure category (an old tool's name read as the new one), in file order."""
    statuses: dict[str, str] = {}
    files = [(folder / "success.txt", SUCCESS)]
    files += [(p, p.stem) for p in sorted((folder / "failed").glob("*.txt"))]
    for path, status in files:
        if not path.is_file():
            continue
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            sha = line.split("#", 1)[0].strip()
            if sha:
                statuses[sha] = OLD_NAMES.get(status, status)
    return statuses


def merge(current: dict[str, str], outcomes: list[Outcome]) -> dict[str, str]:
    """The commits of this run move to their new list; skipped ones and all others stay."""
    merged = dict(current)
    for outcome in outcomes:
        if outcome.status == "skipped":
            continue
        merged.pop(outcome.sha, None)       # re-insert so the order shows what changed last
        merged[outcome.sha] = outcome.status
    return merged


def render_list(status: str, shas: list[str]) -> str:
    header = f"# {status.upper()}: {len(shas)} commits"
    return "\n".join([header, *shas]) + "\n"


def write_status(folder: Path, statuses: dict[str, str]) -> None:
    """Rewrite every list, keeping the files of categories that are now empty; a list under an old
    tool's name goes once its commits are written under the new one."""
    old_lists = [p for p in (folder / "failed").glob("*.txt") if p.stem in OLD_NAMES]
    groups: dict[str, list[str]] = {SUCCESS: []}
    groups.update({OLD_NAMES.get(p.stem, p.stem): [] for p in (folder / "failed").glob("*.txt")})
    for sha, status in statuses.items():
        groups.setdefault(status, []).append(sha)
    for status, shas in groups.items():
        path = folder / "success.txt" if status == SUCCESS else folder / "failed" / f"{status}.txt"
        atomic_write(path, render_list(status, shas))
    for path in old_lists:
        path.unlink()


OWNER_FILE = "image-repository.txt"


def status_owner(folder: Path) -> str | None:
    """The image repository (registry/namespace/name) the status lists describe, when they say."""
    path = folder / OWNER_FILE
    return path.read_text(encoding="utf-8").strip() or None if path.is_file() else None


def owner_conflict(folder: Path, repository: str, chosen: bool = False) -> str | None:
    """Why lists of another image repository must not take this run's results, else None. `chosen`: the
    folder was given with --status-dir (the hint then is another folder, or that repository's options)."""
    owner = status_owner(folder)
    if owner is None or owner == repository:
        return None
    hint = (f"--status-dir {folder} belongs to {owner}: give a folder of this repository's own, or run with "
            "the registry, namespace and image name of the repository it belongs to" if chosen else
            "give --status-dir to keep this run's lists in a folder of their own")
    return f"the status lists in {folder} describe {owner}, not {repository}; they were left as they are ({hint})"


def update_status_from_junit(junit: Path, folder: Path, repository: str) -> list[Outcome]:
    """Merge one JUnit file's outcomes into the status lists of this image repository; return them."""
    outcomes = read_junit(junit)
    write_status(folder, merge(read_status(folder), outcomes))
    if status_owner(folder) is None:
        atomic_write(folder / OWNER_FILE, repository + "\n")
    return outcomes


def fold(junits: list[Path], folder: Path) -> list[Outcome]:
    """Merge many JUnit files into the status lists; a commit's newest result wins (skips never do)."""
    outcomes = [o for path in junits for o in read_junit(path)]
    latest: dict[str, Outcome] = {}
    for outcome in sorted(outcomes, key=lambda o: o.timestamp):        # stable: ties keep argument order
        if outcome.status != "skipped" or outcome.sha not in latest:
            latest[outcome.sha] = outcome
    write_status(folder, merge(read_status(folder), list(latest.values())))
    return list(latest.values())


def cell(text: str, lines: int = 4) -> str:
    """Text fit for one Markdown table cell: its last lines, pipes escaped."""
    tail = [line.strip() for line in text.strip().splitlines() if line.strip()][-lines:]
    return "<br>".join(line.replace("|", "\\|")[:200] for line in tail) or "-"


def markdown_summary(outcomes: list[Outcome]) -> str:
    """Counts per category, failures with the last lines of their reason, and each success's image."""
    counts = Counter(o.status for o in outcomes)
    lines = [f"## Commit images: {len(outcomes)} commits", "", "| result | commits |", "|---|---|"]
    lines += [f"| {status} | {n} |" for status, n in sorted(counts.items(), key=lambda kv: (kv[0] != SUCCESS, kv))]
    failures = [o for o in outcomes if o.status not in (SUCCESS, "skipped")]
    if failures:
        lines += ["", "### Failures", "", "| commit | roles | category | reason |", "|---|---|---|---|"]
        lines += [f"| `{o.sha[:12]}` | {o.properties.get('roles', '')} | {o.status} | {cell(o.message)} |"
                  for o in failures]
    successes = [o for o in outcomes if o.status == SUCCESS]
    if successes:
        lines += ["", "### Images", "", "| commit | roles | image | digest | build s | change |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| `{o.sha[:12]}` | {o.properties.get('roles', '')} | `{o.properties.get('image', '')}` | "
                  f"`{o.properties.get('digest', '-')}` | {o.properties.get('build_seconds', '-')} | "
                  f"{cell(o.properties.get('change', '-'))} |" for o in successes]
    return "\n".join(lines) + "\n"


# The predicate type of the harness's own attestations: "this image holds exactly this commit's code".
PREDICATE_TYPE = "https://github.com/commit-image-harness/verification/v1"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"


@dataclass(frozen=True)
class Verification:
    """What an attestation says of one verified image."""

    repository: str             # the image repository, without tag or digest
    digest: str                 # sha256:... (the registry's manifest digest, or the local image ID)
    commit: str
    source: str                 # the project's repository URL, credentials removed
    package_path: str
    package_tree: str           # git tree id of the package directory at the commit
    package_files: int
    checks: tuple[tuple[str, bool, str], ...]   # (category, passed, what was found)
    harness_version: str
    verified_at: str
    change: dict | None = None      # where the commit's change went (helpers/verify/changes.py), when judged
    submodules: tuple[dict, ...] = ()   # each submodule archived into the build: path, URL, commit
    # What the commit's build configuration says (helpers/source/build_config.py): how it is versioned and the version
    # given, the files the build writes, the compiled modules accepted and why, what could not be read.
    build: dict | None = None


def statement(v: Verification) -> dict:
    """An in-toto Statement v1 whose subject is the image and whose predicate is every check."""
    algorithm, _, value = v.digest.partition(":")
    return {"_type": STATEMENT_TYPE,
            "subject": [{"name": v.repository, "digest": {algorithm: value}}],
            "predicateType": PREDICATE_TYPE,
            "predicate": {"commit": v.commit, "repository": v.source,
                          "package": {"path": v.package_path, "tree": v.package_tree, "files": v.package_files},
                          "checks": [{"name": c, "passed": ok, "found": found} for c, ok, found in v.checks],
                          "harness": {"version": v.harness_version}, "verifiedAt": v.verified_at,
                          **({"change": v.change} if v.change is not None else {}),
                          **({"submodules": list(v.submodules)} if v.submodules else {}),
                          **({"build": v.build} if v.build is not None else {})}}


def attested_build(config: BuildConfig, version: str | None) -> dict:
    """The build configuration's word in an attestation: versioning, version, written files, compiled modules."""
    versioning = config.versioning
    said = {"version": version} if version else {"why": versioning.why} if not versioning.from_git else {}
    return {"versioning": versioning.tool or "not from git", "saidBy": versioning.said_by, **said,
            "versionFiles": list(versioning.version_files),
            "compiled": [{"module": p.module, "declaredBy": p.declared_by} for p in config.products],
            "notRead": list(config.unread)}


def write_attestation(folder: Path, v: Verification) -> Path:
    path = folder / f"{v.commit}.intoto.json"
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(statement(v), indent=2) + "\n")
    return path


def attestation_matrix(files: list[Path], predicates: Path) -> list[dict[str, str]]:
    """One entry per statement, for a workflow matrix that signs and attaches each: the image, its
    digest and a file holding the predicate alone (what actions/attest takes)."""
    entries = []
    predicates.mkdir(parents=True, exist_ok=True)
    for path in sorted(files):
        data = json.loads(path.read_text(encoding="utf-8"))
        subject = data["subject"][0]
        algorithm, value = next(iter(subject["digest"].items()))
        predicate = predicates / f"{data['predicate']['commit']}.json"
        atomic_write(predicate, json.dumps(data["predicate"]) + "\n")
        entries.append({"commit": data["predicate"]["commit"], "name": subject["name"],
                        "digest": f"{algorithm}:{value}", "predicate": str(predicate)})
    return entries


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.report")
    commands = parser.add_subparsers(dest="command", required=True)
    fold_cmd = commands.add_parser("fold", help="merge JUnit files into the status lists and write a summary")
    fold_cmd.add_argument("junit", nargs="+", type=Path, help="JUnit files (shards, re-runs), any order")
    fold_cmd.add_argument("--status-dir", type=Path, default=Path("commit-status"))
    fold_cmd.add_argument("--summary", type=Path, help="Markdown summary file (default: $GITHUB_STEP_SUMMARY, "
                                                       "else standard output)")
    matrix_cmd = commands.add_parser("attestations", help="a workflow matrix of the attestations to sign")
    matrix_cmd.add_argument("statements", nargs="*", type=Path, help="<sha>.intoto.json files")
    matrix_cmd.add_argument("--predicates", type=Path, default=Path("predicates"))
    args = parser.parse_args(argv)
    if args.command == "attestations":
        print(json.dumps({"include": attestation_matrix(args.statements, args.predicates)}))
        return 0
    missing = [str(p) for p in args.junit if not p.is_file()]
    if missing:
        print(f"error: no such JUnit file: {', '.join(missing)}", file=sys.stderr)
        return 2
    try:
        outcomes = fold(args.junit, args.status_dir)
    except ET.ParseError as e:
        print(f"error: a JUnit file is not valid XML: {e}", file=sys.stderr)
        return 2
    summary = markdown_summary(outcomes)
    target = args.summary or (Path(os.environ["GITHUB_STEP_SUMMARY"]) if os.environ.get("GITHUB_STEP_SUMMARY")
                              else None)
    if target is None:
        sys.stdout.write(summary)
    else:
        with open(target, "a", encoding="utf-8") as f:
            f.write(summary)
    counts = Counter(o.status for o in outcomes)
    print(f"folded {len(args.junit)} file(s): " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())),
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
