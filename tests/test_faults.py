"""Reliability, proven by fault injection against real components: registries that fail, builds
that hang, engines that die, runs that are interrupted. Each fault fails only what it touches."""
from __future__ import annotations

import json
import signal
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from testkit.faults import FaultyProxy, SecondEngine, kill_processes_matching, processes_matching, wait_until
from testkit.minirepo import dockerfile, record

pytestmark = pytest.mark.docker

HANG = "sleep 3607"


def hanging(sha: str, step: str = HANG) -> str:
    """A dataset record whose Dockerfile never finishes a step."""
    return json.dumps({"commit_hash": sha, "dockerfile_content": dockerfile(step)})


def test_push_through_a_faulty_registry_succeeds_by_retrying(harness_runner, pair_dataset, mini_repo, registry):
    parent, child = pair_dataset
    with FaultyProxy(registry, ["500", "reset", "500", "reset", "500"]) as proxy:
        harness_runner.registry = proxy.address
        run = harness_runner.run(mini_repo.path, "--push-backoff=0.2", "-p", "no:xdist")
    assert run.returncode == 0, run.output
    assert proxy.faulted == 5 and proxy.forwarded > 0
    assert {o.status for o in run.outcomes.values()} == {"success"}
    assert max(int(o.properties["push_attempts"]) for o in run.outcomes.values()) > 1


def test_push_to_a_registry_that_is_down_fails_each_commit_and_keeps_the_image_when_asked(
        harness_runner, pair_dataset, mini_repo, docker_client):
    parent, child = pair_dataset
    harness_runner.registry = "127.0.0.1:9"
    run = harness_runner.run(mini_repo.path, "--push-retries=2", "--push-backoff=0.1", "--keep-failed")
    assert run.returncode == 1
    for sha in (parent, child):
        outcome = run.outcomes[sha]
        assert outcome.status == "push_failed"
        assert "after 3 attempt(s)" in outcome.message and "connection refused" in outcome.message.lower()
        docker_client.images.get(harness_runner.ref(sha))          # --keep-failed: the image stays local
        docker_client.images.remove(harness_runner.ref(sha), force=True)
    assert run.statuses == {parent: "push_failed", child: "push_failed"}


def test_a_hanging_build_is_stopped_at_the_deadline_and_the_others_go_on(harness_runner, mini_repo):
    parent, child = mini_repo.commits
    step = f"sleep 3613.{uuid.uuid4().int % 10**9:09d}"
    harness_runner.write_dataset(hanging(parent, step), record(child, None))
    started = time.monotonic()
    run = harness_runner.run(mini_repo.path, "--no-push", "--build-timeout=8")
    assert time.monotonic() - started < 120
    assert run.outcomes[parent].status == "build_timeout"
    assert "--build-timeout=8s" in run.outcomes[parent].message
    assert run.outcomes[child].status == "success"
    wait_until(lambda: not processes_matching(step), 20, "the hanging step to be gone")
    assert not processes_matching(f"-t {harness_runner.registry}/test/{harness_runner.image_name}")


def test_an_engine_unreachable_at_start_stops_the_session_with_one_message(harness_runner, pair_dataset, mini_repo):
    run = harness_runner.run(mini_repo.path, env={"DOCKER_HOST": "unix:///tmp/no-such-engine.sock"})
    assert run.returncode == 4
    assert run.output.count("does not answer") == 1
    assert "unix:///tmp/no-such-engine.sock" in run.output
    assert run.outcomes == {} and run.statuses == {}


def test_a_repository_that_cannot_be_cloned_stops_the_session_with_one_message(harness_runner, pair_dataset,
                                                                              mini_repo, tmp_path):
    status = harness_runner.workdir / "status"
    (status / "failed").mkdir(parents=True)
    (status / "success.txt").write_text("# SUCCESS: 1 commits\n" + "e" * 40 + "\n")
    before = {p: p.read_bytes() for p in status.rglob("*") if p.is_file()}
    missing = tmp_path / "no-such-repository"
    run = harness_runner.run(missing)
    assert run.returncode == 4, run.output
    assert run.output.count("stopping before any commit: git clone of") == 1
    assert str(missing) in run.output and "does not exist" in run.output     # git's own reason
    assert {p: p.read_bytes() for p in status.rglob("*") if p.is_file()} == before
    assert run.outcomes == {}


def test_a_mirror_that_cannot_be_fetched_builds_what_it_holds_and_names_the_failed_fetch(harness_runner, mini_repo,
                                                                                        tmp_path):
    parent, child = mini_repo.commits
    harness_runner.write_dataset(record(child, None))
    first = harness_runner.run(mini_repo.path, "--no-push", "--prepare-only", f"--out-dir={tmp_path / 'p1'}")
    assert first.returncode == 0, first.output
    moved = mini_repo.path.rename(tmp_path / "moved-away")        # the repository is gone; the mirror stays
    harness_runner.write_dataset(record(child, None), record("f" * 40, None))
    run = harness_runner.run(moved.parent / "sglang", "--no-push")
    assert run.returncode == 1, run.output
    assert "could not be updated" in run.output
    assert run.outcomes[child].status == "success"
    assert run.outcomes["f" * 40].status == "commit_not_found"
    assert "git fetch failed" in run.outcomes["f" * 40].message


def test_an_engine_that_stops_mid_run_fails_the_running_commits_quickly(harness_runner, mini_repo, base_image):
    parent, child = mini_repo.commits
    step = f"sleep 3611.{uuid.uuid4().int % 10**9:09d}"
    # unix socket paths are short (108 bytes), and dockerd nests containerd's under its exec root
    engine = SecondEngine(Path(tempfile.mkdtemp(prefix="e2-", dir="/tmp"))).start([base_image])
    try:
        harness_runner.write_dataset(hanging(parent, step), record(child, None))
        proc = harness_runner.start(mini_repo.path, "--no-push", "-p", "no:xdist", env={"DOCKER_HOST": engine.host})
        wait_until(lambda: processes_matching(step), 120, "the hanging build to start")
        stopped = time.monotonic()
        engine.stop()
        run = harness_runner.finish(proc, timeout=120)
        assert time.monotonic() - stopped < 60
    finally:
        engine.stop()
        kill_processes_matching(step)           # a stopped engine leaves its running steps behind
    assert {sha: o.status for sha, o in run.outcomes.items()} == {parent: "infra_error", child: "infra_error"}
    assert "stopped answering during the build" in run.outcomes[parent].message
    assert "does not answer" in run.outcomes[child].message
    assert run.statuses == {parent: "infra_error", child: "infra_error"}


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("workers", [["-p", "no:xdist"], ["-n", "2"]], ids=["in-process", "xdist"])
def test_an_interrupted_run_leaves_old_or_complete_results_and_no_build(harness_runner, mini_repo, sig, workers):
    parent, child = mini_repo.commits
    step = f"sleep 3620.{uuid.uuid4().int % 10**9:09d}"   # this run's own: a leftover of another is not it
    status = harness_runner.workdir / "status"
    (status / "failed").mkdir(parents=True)
    (status / "success.txt").write_text("# SUCCESS: 1 commits\n" + "e" * 40 + "\n")
    harness_runner.write_dataset(record(child, None), hanging(parent, step))
    proc = harness_runner.start(mini_repo.path, "--no-push", *workers)
    wait_until(lambda: processes_matching(step), 120, "the hanging build to run")
    proc.send_signal(sig)
    run = harness_runner.finish(proc, timeout=60)
    wait_until(lambda: not processes_matching(step), 30, "the interrupted build to be cancelled")
    junit = harness_runner.workdir / "reports" / "junit.xml"
    statuses = run.statuses
    assert statuses.get("e" * 40) == "success"                     # nothing lost
    if junit.exists():                                             # complete new results: lists agree
        for sha, outcome in run.outcomes.items():
            assert statuses.get(sha) == (outcome.status if outcome.status != "skipped" else None)
    assert not list(harness_runner.workdir.glob("reports/.junit.xml.*.tmp")) or not junit.exists()
    again = harness_runner.run(mini_repo.path, "--no-push", "--build-timeout=5")
    assert {sha: o.status for sha, o in again.outcomes.items()} == {child: "success", parent: "build_timeout"}
    assert again.statuses == {"e" * 40: "success", child: "success", parent: "build_timeout"}


def test_bad_inputs_each_fail_alone_with_a_category_and_a_reason(harness_runner, mini_repo):
    parent, child = mini_repo.commits
    fake = [f"{n:x}" * 40 for n in range(1, 10)]
    lines = [
        record(child, parent, commit_subject="Ünïcödé ⚡ 調整", models=["日本語"]),            # 1: fine
        "{not json",                                                                        # 2
        json.dumps({"parent_commit": parent}),                                              # 3
        json.dumps({"commit_hash": "g" * 40}),                                              # 4
        json.dumps({"commit_hash": "abc12"}),                                               # 5
        json.dumps({"commit_hash": "0123456789abcdef0123456789abcdef01234567"}),           # 6
        json.dumps({"commit_hash": fake[0], "dockerfile_path": "/etc/passwd"}),             # 7
        json.dumps({"commit_hash": fake[1], "dockerfile_path": "docker/../../../x"}),       # 8
        json.dumps({"commit_hash": fake[2], "dockerfile_content": "  \n"}),                # 9
        json.dumps({"commit_hash": fake[3], "dockerfile_content": "#" * (1024 * 1024 + 1)}),  # 10
        json.dumps({"commit_hash": fake[4], "dockerfile_content": "FROM x\x00"}),          # 11
        record(child, parent),                                                              # 12
    ]
    harness_runner.write_dataset(*lines)
    harness_runner.blacklist.write_text(f"# ok\n{fake[5]}\nthis is garbage\n")
    run = harness_runner.run(mini_repo.path, "--no-push")
    junit = (harness_runner.workdir / "reports" / "junit.xml").read_text()
    expected = {
        "dataset-line2-invalid": ("line 2 is not JSON", ""),
        "dataset-line3-invalid": ("line 3: record has no commit_hash", ""),
        "dataset-line4-invalid": ("line 4: commit_hash: SHA 'gggg", "is not hexadecimal"),
        "dataset-line5-invalid": ("line 5: commit_hash: SHA 'abc12' must have 7 to 40 hex digits", ""),
        f"human-{fake[0]}": (f"line 7: human commit {fake[0]}", "is absolute; it must be inside the repository"),
        f"human-{fake[1]}": (f"line 8: human commit {fake[1]}", "climbs out of the repository"),
        f"human-{fake[2]}": (f"line 9: human commit {fake[2]}", "dockerfile content is empty"),
        f"human-{fake[3]}": (f"line 10: human commit {fake[3]}", "over the 1 MiB limit"),
        f"human-{fake[4]}": (f"line 11: human commit {fake[4]}", "contains NUL bytes"),
        "dataset-line12-invalid": ("line 12: duplicate of the record on line 1", ""),
        "blacklist-line3-invalid": ("blacklist line 3: SHA 'this is garbage' is not hexadecimal", ""),
    }
    for test_id, (start, detail) in expected.items():
        assert f'name="test_commit[{test_id}]"' in junit, test_id
        assert f"[dataset_invalid] {start}" in junit and detail in junit, (start, detail)
    assert run.outcomes["0123456789abcdef0123456789abcdef01234567"].status == "commit_not_found"
    assert run.outcomes[child].status == "success" and run.outcomes[parent].status == "success"
    assert run.statuses[fake[4]] == "dataset_invalid" and run.statuses[child] == "success"
