"""Tracking: a branch's new first-parent commits become dataset records, on real git repositories made on disk
with merge commits, squash merges, a revert, an octopus merge and a force-push; the records equal what
`git log --first-parent` says, the file stays valid, a second run adds nothing, and a tracked commit once built
and pushed is skipped by --skip-pushed."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.profiles import SGLANG
from helpers.source.dataset import CommitSpec, parse_dataset
from helpers.source.mirror import Mirror
from helpers.track import append_records, main, track
from testkit.minirepo import MiniRepo, git, make_repo, record
from tests.conftest import ROOT

PROFILE = "sglang"
DOCKERFILE = "FROM base\n"


def history(path: Path) -> MiniRepo:
    """main: a root commit, a squash merge, a merge commit of a pull request's branch, a docs-only commit,
    its revert, an octopus merge of two branches, and a commit without a Dockerfile."""
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    repo = MiniRepo(path)
    repo.commit("initial import", {"docker/Dockerfile": DOCKERFILE, "python/sglang/__init__.py": "",
                                   "python/pyproject.toml": "[project]\nname = 'sglang'\n"})
    repo.commit("Faster scheduler (#101)", {"python/sglang/scheduler.py": "BATCH = 16\n"})
    git(path, "checkout", "-q", "-b", "feature")
    repo.commit("feature work", {"python/sglang/feature.py": "ON = True\n"})
    git(path, "checkout", "-q", "main")
    git(path, "merge", "-q", "--no-ff", "feature", "-m", "Merge pull request #102 from org/feature\n\nFeature")
    repo.commits.append(git(path, "rev-parse", "HEAD"))
    repo.commit("Docs: how to run (#103)", {"docs/run.md": "run it\n"})
    git(path, "revert", "--no-edit", repo.commits[-1])
    repo.commits.append(git(path, "rev-parse", "HEAD"))
    for branch in ("a", "b"):
        git(path, "checkout", "-q", "-b", branch, "main")
        repo.commit(f"branch {branch}", {f"python/sglang/{branch}.py": "X = 1\n"})
    git(path, "checkout", "-q", "main")
    git(path, "merge", "-q", "--no-ff", "a", "b", "-m", "Merge branches a and b")
    repo.commits.append(git(path, "rev-parse", "HEAD"))
    git(path, "rm", "-q", "docker/Dockerfile")
    git(path, "commit", "-q", "-m", "Move the Dockerfile away (#104)")
    repo.commits.append(git(path, "rev-parse", "HEAD"))
    return repo


def first_parent_log(path: Path, after: str | None) -> list[tuple[str, str | None, str]]:
    """(commit, first parent, subject) of each first-parent commit after `after`, oldest first: the reference."""
    spec = [f"{after}..main"] if after else ["main"]
    out = git(path, "log", "--first-parent", "--reverse", "--format=%H %P%x00%s", *spec)
    rows = []
    for line in out.splitlines():
        shas, subject = line.split("\x00")
        words = shas.split()
        rows.append((words[0], words[1] if len(words) > 1 else None, subject))
    return rows


def run_track(repo: MiniRepo, dataset: Path, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "helpers.track", "--project", PROFILE, f"--repo-url={repo.path}",
                           f"--dataset={dataset}", f"--cache-dir={tmp_path / 'cache'}", *extra],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


def lines(dataset: Path) -> list[dict]:
    return [json.loads(line) for line in dataset.read_text().splitlines() if line.strip()]


def test_records_are_the_first_parent_history_after_the_newest_tracked_commit(tmp_path):
    repo = history(tmp_path / "repo")
    dataset = tmp_path / "dataset.jsonl"
    first = record(repo.commits[1], repo.commits[0], commit_subject="Faster scheduler (#101)")
    dataset.write_text(first)                                  # no final newline: kept, and one added
    done = run_track(repo, dataset, tmp_path)
    assert done.returncode == 0, done.stderr
    text = dataset.read_text()
    assert text.startswith(first + "\n")                       # the existing line, byte for byte
    added = lines(dataset)[1:]
    expected = first_parent_log(repo.path, repo.commits[1])
    assert [(r["commit_hash"], r["parent_commit"], r["commit_subject"]) for r in added] == expected
    assert [r["pr_url"] for r in added] == [
        "https://github.com/sgl-project/sglang/pull/102", "https://github.com/sgl-project/sglang/pull/103", None,
        None, "https://github.com/sgl-project/sglang/pull/104"]
    assert [r["dockerfile_path"] for r in added] == ["docker/Dockerfile"] * 4 + [None]
    assert added[-1]["has_dockerfile"] is False and added[-1]["parent_has_dockerfile"] is True
    assert "merges 3 parents (an octopus merge)" in done.stdout
    entries = parse_dataset(text.splitlines())
    assert all(isinstance(e, CommitSpec) for e in entries)
    again = run_track(repo, dataset, tmp_path)
    assert again.returncode == 0 and "nothing new" in again.stdout
    assert dataset.read_text() == text


def test_worth_building_skips_what_does_not_reach_the_image_and_says_why(tmp_path):
    repo = history(tmp_path / "repo")
    dataset = tmp_path / "dataset.jsonl"
    dataset.write_text(record(repo.commits[1], repo.commits[0]) + "\n")
    done = run_track(repo, dataset, tmp_path, "--runtime-only", "--skip-reverts")
    assert done.returncode == 0, done.stderr
    added = [r["commit_hash"] for r in lines(dataset)[1:]]
    docs, revert = repo.commits[4], repo.commits[5]
    assert docs not in added and revert not in added
    assert f"skipped {docs[:12]} Docs: how to run (#103): no runtime change (1 docs)" in done.stdout
    assert f"skipped {revert[:12]} Revert \"Docs: how to run (#103)\": a revert that restores a tree already " \
           "tracked" in done.stdout
    assert added == [repo.commits[3], repo.commits[8]]                 # the Dockerfile's move is no runtime change
    moved = repo.commits[-1][:12]
    assert f"skipped {moved} Move the Dockerfile away (#104): no runtime change (1 other)" in done.stdout


def test_a_cap_leaves_the_rest_for_the_next_run(tmp_path):
    repo = history(tmp_path / "repo")
    dataset = tmp_path / "dataset.jsonl"
    dataset.write_text(record(repo.commits[1], repo.commits[0]) + "\n")
    assert run_track(repo, dataset, tmp_path, "--max", "2").returncode == 0
    assert len(lines(dataset)) == 3
    assert run_track(repo, dataset, tmp_path).returncode == 0
    assert [r["commit_hash"] for r in lines(dataset)[1:]] == [c for c, _, _ in first_parent_log(repo.path,
                                                                                                repo.commits[1])]


def test_an_empty_dataset_starts_at_the_root_commit(tmp_path):
    repo = history(tmp_path / "repo")
    dataset = tmp_path / "dataset.jsonl"
    dataset.write_text("")
    mirror = Mirror(str(repo.path), tmp_path / "cache", "s", 60)
    mirror.ensure()
    found = track(mirror, SGLANG, dataset, "https://github.com/o/r.git")
    assert found.records[0]["commit_hash"] == repo.commits[0] and found.records[0]["parent_commit"] is None
    assert found.records[0]["parent_has_dockerfile"] is False
    assert any("is a root commit" in note for note in found.notes)


def test_bad_history_is_one_line_and_the_file_untouched(tmp_path):
    repo = history(tmp_path / "repo")
    dataset = tmp_path / "dataset.jsonl"
    dataset.write_text(record(repo.commits[2], repo.commits[1]) + "\n")
    before = dataset.read_bytes()
    unknown = run_track(repo, dataset, tmp_path, "--since", "deadbeef")
    assert unknown.returncode == 2 and unknown.stderr.count("\n") == 1 and "no such commit" in unknown.stderr
    not_a_date = run_track(repo, dataset, tmp_path, "--since", "yesterday-ish")
    assert not_a_date.returncode == 2 and "neither a commit nor an ISO date" in not_a_date.stderr
    git(repo.path, "reset", "-q", "--hard", repo.commits[0])          # the branch rewritten under the dataset
    repo.commit("Rewritten (#200)", {"python/sglang/other.py": "Y = 2\n"})
    rewritten = run_track(repo, dataset, tmp_path)
    assert rewritten.returncode == 2 and "rewritten" in rewritten.stderr and rewritten.stderr.count("\n") == 1
    assert dataset.read_bytes() == before
    since = run_track(repo, dataset, tmp_path, "--since", repo.commits[0])
    assert since.returncode == 0, since.stderr
    assert [r["commit_subject"] for r in lines(dataset)[1:]] == ["Rewritten (#200)"]


def test_since_a_date_starts_after_the_last_commit_before_it(tmp_path):
    repo = history(tmp_path / "repo")
    dataset = tmp_path / "dataset.jsonl"
    dataset.write_text("")
    done = run_track(repo, dataset, tmp_path, "--since", "2000-01-01", "--dry-run")
    assert done.returncode == 0 and "would add 7 record(s)" in done.stdout and dataset.read_text() == ""
    future = run_track(repo, dataset, tmp_path, "--since", "2999-01-01")
    assert future.returncode == 0 and "nothing new" in future.stdout


def test_an_unreachable_repository_stops_with_exit_4(tmp_path):
    done = subprocess.run([sys.executable, "-m", "helpers.track", f"--repo-url={tmp_path / 'missing'}",
                           f"--dataset={tmp_path / 'd.jsonl'}", f"--cache-dir={tmp_path / 'cache'}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 4 and done.stderr.startswith("error: ")


def test_appending_keeps_every_existing_byte(tmp_path):
    dataset = tmp_path / "d.jsonl"
    dataset.write_bytes(b'{"commit_hash": "\xc3\xa9"}  \n\n')
    append_records(dataset, ({"commit_hash": "a" * 40},))
    assert dataset.read_bytes() == b'{"commit_hash": "\xc3\xa9"}  \n\n{"commit_hash": "' + b"a" * 40 + b'"}\n'
    assert main(["--project", "nope"]) == 2


@pytest.mark.docker
def test_a_tracked_commit_once_built_is_skipped_by_skip_pushed(harness_runner, tmp_path):
    repo = make_repo(tmp_path / "mini")
    harness_runner.write_dataset(json.dumps({"commit": repo.commits[0]}))
    done = run_track(repo, harness_runner.dataset, tmp_path)
    assert done.returncode == 0, done.stderr
    child = repo.commits[1]
    assert lines(harness_runner.dataset)[-1]["commit_hash"] == child
    first = harness_runner.run(repo.path, "-k", child)
    assert first.returncode == 0, first.output
    again = harness_runner.run(repo.path, "--skip-pushed", "-k", child)
    assert again.returncode == 0 and again.outcomes[child].status == "skipped", again.output
