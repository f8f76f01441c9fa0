"""Report: read JUnit results and merge them into the status lists, every write atomic.

Status lists use the seed's format: `# CATEGORY: N commits`, then one SHA per line, in
`commit-status/success.txt` and `commit-status/failed/<category>.txt`. A run moves only
the commits it ran; every other entry, including categories this tool never produces, stays.
"""
from __future__ import annotations

import os
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

SUCCESS = "success"


@dataclass(frozen=True)
class Outcome:
    """One commit's result as the JUnit file records it."""

    sha: str
    status: str            # "success", a failure category, or "skipped"
    name: str
    properties: dict[str, str]
    message: str = ""


def atomic_write(path: Path, text: str) -> None:
    """Write beside the target, then rename over it: readers see the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def read_junit(path: Path) -> list[Outcome]:
    """Outcomes of the commit tests in a JUnit file (test cases without a `sha` property are ignored)."""
    outcomes = []
    for case in ET.parse(path).getroot().iter("testcase"):
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
        outcomes.append(Outcome(props["sha"], status, case.get("name", ""), props, message))
    return outcomes


def read_status(folder: Path) -> dict[str, str]:
    """sha -> "success" or failure category, in file order."""
    statuses: dict[str, str] = {}
    files = [(folder / "success.txt", SUCCESS)]
    files += [(p, p.stem) for p in sorted((folder / "failed").glob("*.txt"))]
    for path, status in files:
        if not path.is_file():
            continue
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            sha = line.split("#", 1)[0].strip()
            if sha:
                statuses[sha] = status
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
    """Rewrite every list, keeping the files of categories that are now empty."""
    groups: dict[str, list[str]] = {SUCCESS: []}
    groups.update({p.stem: [] for p in (folder / "failed").glob("*.txt")})
    for sha, status in statuses.items():
        groups.setdefault(status, []).append(sha)
    for status, shas in groups.items():
        path = folder / "success.txt" if status == SUCCESS else folder / "failed" / f"{status}.txt"
        atomic_write(path, render_list(status, shas))


def update_status_from_junit(junit: Path, folder: Path) -> list[Outcome]:
    """Merge one JUnit file's outcomes into the status lists; return those outcomes."""
    outcomes = read_junit(junit)
    write_status(folder, merge(read_status(folder), outcomes))
    return outcomes
