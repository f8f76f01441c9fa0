"""Status lists from JUnit: the seed's format, merge rules, atomic writes."""
from pathlib import Path

import pytest

from helpers.report.results import (
    OLD_NAMES,
    Outcome,
    atomic_write,
    fold,
    main,
    markdown_summary,
    merge,
    read_junit,
    read_status,
    update_status_from_junit,
    write_status,
)

A, B, C, D = ("a" * 40, "b" * 40, "c" * 40, "d" * 40)


def junit(*cases: str) -> str:
    return f'<?xml version="1.0"?><testsuites><testsuite name="pytest">{"".join(cases)}</testsuite></testsuites>'


def case(sha: str, result: str = "", category: str = "") -> str:
    props = f'<property name="sha" value="{sha}"/>'
    if category:
        props += f'<property name="category" value="{category}"/>'
    return f'<testcase name="test_commit[human-{sha}]"><properties>{props}</properties>{result}</testcase>'


def test_junit_outcomes(tmp_path: Path):
    path = tmp_path / "j.xml"
    path.write_text(junit(case(A), case(B, '<failure message="[build_failed] boom"/>', "build_failed"),
                          case(C, '<skipped message="already pushed"/>'), case(D, '<error message="x"/>'),
                          '<testcase name="test_other"/>'))
    outcomes = read_junit(path)
    assert [(o.sha, o.status) for o in outcomes] == [(A, "success"), (B, "build_failed"), (C, "skipped"),
                                                     (D, "infra_error")]
    assert outcomes[1].message == "[build_failed] boom"


def test_merge_moves_only_the_commits_of_this_run():
    current = {A: "success", B: "server_timeout", C: "build_failed"}
    outcomes = [Outcome(C, "success", "", {}), Outcome(A, "skipped", "", {}), Outcome(D, "push_failed", "", {})]
    assert merge(current, outcomes) == {A: "success", B: "server_timeout", C: "success", D: "push_failed"}


def test_lists_keep_the_seed_format_and_unknown_categories(tmp_path: Path):
    status = tmp_path / "commit-status"
    (status / "failed").mkdir(parents=True)
    (status / "success.txt").write_text(f"# SUCCESS: 2 commits with successful benchmarks\n{A}\n{B}\n")
    (status / "failed" / "server_timeout.txt").write_text(f"# SERVER_TIMEOUT: 1 commits\n{C}\n")
    write_status(status, merge(read_status(status), [Outcome(B, "build_failed", "", {}),
                                                      Outcome(C, "success", "", {})]))
    assert (status / "success.txt").read_text() == f"# SUCCESS: 2 commits\n{A}\n{C}\n"
    assert (status / "failed" / "build_failed.txt").read_text() == f"# BUILD_FAILED: 1 commits\n{B}\n"
    assert (status / "failed" / "server_timeout.txt").read_text() == "# SERVER_TIMEOUT: 0 commits\n"


def test_real_status_lists_survive_a_run_unchanged_but_for_its_commits(shared_data: Path, tmp_path: Path):
    import shutil
    status = tmp_path / "commit-status"
    shutil.copytree(shared_data / "sglang" / "commit-status", status)
    for path in status.rglob("*.txt"):
        path.chmod(0o644)
    before = read_status(status)
    some = next(iter(before))
    j = tmp_path / "j.xml"
    j.write_text(junit(case(some, '<failure message="x"/>', "verify_import")))
    update_status_from_junit(j, status, "docker.io/u/nvidia-sglang-docker")
    after = read_status(status)
    assert after.pop(some) == "verify_import"
    assert after == {k: v for k, v in before.items() if k != some}


def test_the_old_tools_category_names_merge_under_the_new_ones_without_losing_a_commit(shared_data: Path,
                                                                                      tmp_path: Path):
    import shutil
    status = tmp_path / "commit-status"
    shutil.copytree(shared_data / "sglang" / "commit-status", status)
    for path in status.rglob("*.txt"):
        path.chmod(0o644)
    field = {path.stem: [line for line in path.read_text().splitlines() if line and not line.startswith("#")]
             for path in (status / "failed").glob("*.txt")}
    write_status(status, read_status(status))
    files = sorted(p.stem for p in (status / "failed").glob("*.txt"))
    assert "flashinfer_abi_mismatch" not in files and "docker_build_failed" not in files
    for old, new in OLD_NAMES.items():
        lines = (status / "failed" / f"{new}.txt").read_text().splitlines()
        assert lines[0] == f"# {new.upper()}: {len(field[old])} commits" and lines[1:] == field[old]
    listed = [sha for p in (status / "failed").glob("*.txt") for sha in p.read_text().splitlines()[1:]]
    assert sorted(listed) == sorted(sha for shas in field.values() for sha in shas)      # none lost, none twice


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path: Path):
    target = tmp_path / "x.txt"
    target.write_text("old\n")

    with pytest.raises(TypeError):
        atomic_write(target, None)  # type: ignore[arg-type]
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["x.txt"]


def suite(timestamp: str, *cases: str) -> str:
    return f'<testsuites><testsuite name="pytest" timestamp="{timestamp}">{"".join(cases)}</testsuite></testsuites>'


def test_fold_merges_shards_and_reruns_newest_first(tmp_path: Path):
    old = tmp_path / "shard-1.xml"
    new = tmp_path / "rerun.xml"
    other = tmp_path / "shard-2.xml"
    old.write_text(suite("2026-01-01T10:00:00", case(A, '<failure message="[build_failed] boom">boom\nlast line'
                                                        '</failure>', "build_failed"), case(B)))
    other.write_text(suite("2026-01-01T10:05:00", case(C, '<failure message="x">x</failure>', "push_failed")))
    new.write_text(suite("2026-01-02T09:00:00", case(A), case(B, '<skipped message="already pushed"/>')))
    status = tmp_path / "status"
    outcomes = fold([new, old, other], status)
    assert {o.sha: o.status for o in outcomes} == {A: "success", B: "success", C: "push_failed"}
    assert read_status(status) == {A: "success", B: "success", C: "push_failed"}


def test_markdown_summary_counts_failures_and_images():
    outcomes = [Outcome(A, "success", "t", {"roles": "human", "image": "r/i:" + A, "digest": "sha256:1",
                                            "build_seconds": "12.5"}),
                Outcome(B, "build_failed", "t", {"roles": "parent"}, "[build_failed] x\n#9 ERROR: a | b\nlast")]
    text = markdown_summary(outcomes)
    assert "| success | 1 |\n| build_failed | 1 |" in text
    assert f"| `{B[:12]}` | parent | build_failed | [build_failed] x<br>#9 ERROR: a \\| b<br>last |" in text
    assert f"| `{A[:12]}` | human | `r/i:{A}` | `sha256:1` | 12.5 |" in text


def test_fold_command_writes_the_summary_where_github_reads_it(tmp_path: Path, monkeypatch):
    junit = tmp_path / "j.xml"
    junit.write_text(suite("2026-01-01T00:00:00", case(A)))
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path / "step-summary.md"))
    assert main(["fold", str(junit), "--status-dir", str(tmp_path / "s")]) == 0
    assert "| success | 1 |" in (tmp_path / "step-summary.md").read_text()
    assert main(["fold", str(tmp_path / "missing.xml")]) == 2
    (tmp_path / "bad.xml").write_text("<not closed")
    assert main(["fold", str(tmp_path / "bad.xml"), "--status-dir", str(tmp_path / "s")]) == 2


def test_status_lists_belong_to_one_image_repository(tmp_path: Path):
    from helpers.report.results import owner_conflict, status_owner
    status = tmp_path / "commit-status"
    j = tmp_path / "j.xml"
    j.write_text(junit(case("a" * 40)))
    update_status_from_junit(j, status, "docker.io/u/img")
    assert status_owner(status) == "docker.io/u/img"
    assert owner_conflict(status, "docker.io/u/img") is None
    assert "describe docker.io/u/img, not docker.io/u/other" in owner_conflict(status, "docker.io/u/other")
    assert "give --status-dir to keep" in owner_conflict(status, "docker.io/u/other")
    given = owner_conflict(status, "docker.io/u/other", chosen=True)
    assert f"--status-dir {status} belongs to docker.io/u/img" in given and "give --status-dir to" not in given


def test_a_second_run_folds_onto_the_first_runs_committed_lists(tmp_path: Path):
    from helpers.report.results import fold
    status = tmp_path / "commit-status"          # as checked out from git: the first run's lists
    first = tmp_path / "first.xml"
    first.write_text(junit(case("a" * 40) + case("b" * 40, '<failure message="x"/>', "build_failed")))
    update_status_from_junit(first, status, "docker.io/u/img")
    second = tmp_path / "second.xml"
    second.write_text(junit(case("b" * 40) + case("c" * 40, '<failure message="x"/>', "verify_import")))
    fold([second], status)
    assert read_status(status) == {"a" * 40: "success", "b" * 40: "success", "c" * 40: "verify_import"}
