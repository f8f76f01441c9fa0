"""Status lists from JUnit: the seed's format, merge rules, atomic writes."""
from pathlib import Path

import pytest

from helpers.report import Outcome, atomic_write, merge, read_junit, read_status, update_status_from_junit, write_status

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
    update_status_from_junit(j, status)
    after = read_status(status)
    assert after.pop(some) == "verify_import"
    assert after == {k: v for k, v in before.items() if k != some}


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path: Path):
    target = tmp_path / "x.txt"
    target.write_text("old\n")

    with pytest.raises(TypeError):
        atomic_write(target, None)  # type: ignore[arg-type]
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["x.txt"]
