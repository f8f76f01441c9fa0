"""End to end: the build suite run as a user runs it, on a miniature SGLang with real history,
building with BuildKit, pushing to a real registry and verifying the images."""
from __future__ import annotations

import io
import json
import re
import tarfile
from datetime import datetime, timezone

import docker
import pytest
import requests

from helpers.publish.registry import MANIFEST_TYPES
from testkit.minirepo import git, record
from tests.conftest import ROOT, local_tags

pytestmark = pytest.mark.docker


def test_pair_is_built_pushed_and_verified(harness_runner, pair_dataset, mini_repo):
    parent, child = pair_dataset
    run = harness_runner.run(mini_repo.path)
    assert run.returncode == 0, run.output
    assert f"generated xml file: {harness_runner.workdir / 'reports' / 'junit.xml'}" in run.output   # not the .tmp
    outcomes = run.outcomes
    assert {sha: o.status for sha, o in outcomes.items()} == {child: "success", parent: "success"}
    assert (harness_runner.workdir / "status" / "success.txt").stat().st_mode & 0o044 == 0o044   # others can read
    for sha, role in ((child, "human"), (parent, "parent")):
        props = outcomes[sha].properties
        assert props["roles"] == role and props["image"] == harness_runner.ref(sha)
        assert float(props["build_seconds"]) > 0
        served = requests.head(f"http://{harness_runner.registry}/v2/test/{harness_runner.image_name}/manifests/{sha}",
                               headers={"Accept": MANIFEST_TYPES}, timeout=10)
        assert served.headers["Docker-Content-Digest"] == props["digest"]
        assert props["check.verify_source_mismatch"].startswith("ok")
        assert "pinned `git clone https://github.com/sgl-project/sglang.git`" in run.log(sha)
    assert run.statuses == {child: "success", parent: "success"}
    statement = json.loads((harness_runner.workdir / "reports" / "attestations" / f"{child}.intoto.json").read_text())
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["subject"] == [{"name": harness_runner.ref(child).rsplit(":", 1)[0],
                                     "digest": {"sha256": outcomes[child].properties["digest"].split(":")[1]}}]
    predicate = statement["predicate"]
    assert predicate["commit"] == child and predicate["package"]["path"] == "python/sglang"
    assert predicate["package"]["tree"] == git(mini_repo.path, "rev-parse", f"{child}:python/sglang")
    assert predicate["package"]["files"] == len(git(mini_repo.path, "ls-tree", "-r", "--name-only", child,
                                                    "python/sglang").splitlines())
    assert [c["name"] for c in predicate["checks"] if c["passed"]] == [
        "verify_label", "verify_proof_file", "verify_source_mismatch", "verify_import", "verify_editable_install",
        "verify_version", "verify_smoke", "change_not_in_image"]
    assert predicate["change"]["against"] == parent and [p["path"] for p in predicate["change"]["verified"]] == \
        ["python/sglang/srt/scheduler.py"]
    assert re.fullmatch(r"[0-9a-f]{40}|unknown", predicate["harness"]["version"])
    success = (harness_runner.workdir / "status" / "success.txt").read_text().splitlines()
    assert success[0] == "# SUCCESS: 2 commits"


def test_second_commit_reuses_every_step_before_the_source_copy(harness_runner, mini_repo):
    parent, child = mini_repo.commits
    harness_runner.write_dataset(record(parent, None))
    first = harness_runner.run(mini_repo.path, "--no-push")
    assert first.returncode == 0, first.output
    harness_runner.write_dataset(record(child, None))
    second = harness_runner.run(mini_repo.path, "--no-push")
    assert second.returncode == 0, second.output
    steps = re.findall(r"^#(\d+) (\[(?:\S+ )?\d+/\d+\] .*)$", second.log(child), re.M)
    cached = set(re.findall(r"^#(\d+) CACHED$", second.log(child), re.M))
    runs = [(number, name) for number, name in steps if "] RUN " in name]
    before_copy = [pair for pair in runs[:next(i for i, (_, n) in enumerate(runs) if "harness-src" in n)]]
    assert before_copy, runs
    assert all(number in cached for number, _ in before_copy), (before_copy, cached)
    assert not any(number in cached for number, name in runs if "harness-src" in name)


def test_image_of_another_commit_dressed_as_this_one_fails_source_mismatch(
        harness_runner, pair_dataset, mini_repo, docker_client):
    parent, child = pair_dataset
    built = harness_runner.run(mini_repo.path, "--no-push", "-k", parent)
    assert built.returncode == 0, built.output
    forge(docker_client, harness_runner.ref(parent), harness_runner.ref(child), child)
    run = harness_runner.run(mini_repo.path, "--verify-only", "--no-push", "-k", child)     # the local image
    assert run.returncode == 1
    outcome = run.outcomes[child]
    assert outcome.status == "verify_source_mismatch"
    assert outcome.properties["check.verify_label"].startswith("ok")
    assert outcome.properties["check.verify_proof_file"].startswith("ok")
    assert "differ (1): srt/scheduler.py" in outcome.message
    assert run.statuses == {child: "verify_source_mismatch", parent: "success"}


def forge(client: docker.DockerClient, source_ref: str, target_ref: str, claimed_sha: str) -> None:
    """An image FROM another commit's image, with this commit's label, proof file and tag."""
    dockerfile = (f"FROM {source_ref}\nLABEL org.opencontainers.image.revision={claimed_sha}\n"
                  f"RUN echo {claimed_sha} > /opt/sglang_commit.txt\n")
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        data = dockerfile.encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    context.seek(0)
    client.images.build(fileobj=context, custom_context=True, tag=target_ref, rm=True)


def test_parallel_run_with_two_workers(harness_runner, pair_dataset, mini_repo):
    parent, child = pair_dataset
    run = harness_runner.run(mini_repo.path, "-n", "2")
    assert run.returncode == 0, run.output
    assert "2 workers" in run.output
    assert {o.status for o in run.outcomes.values()} == {"success"}
    fetched_by = list((harness_runner.workdir / "cache" / "mirrors").glob("*.git/harness-fetched-by"))
    assert len(fetched_by) == 1


def test_last_failed_reruns_only_the_failed_commits(harness_runner, mini_repo):
    parent, child = mini_repo.commits
    missing = "0123456789abcdef0123456789abcdef01234567"
    harness_runner.write_dataset(record(child, parent), record(missing, None))
    first = harness_runner.run(mini_repo.path, "--no-push")
    assert first.returncode == 1
    assert first.outcomes[missing].status == "commit_not_found"
    assert "is not in" in first.outcomes[missing].message
    again = harness_runner.run(mini_repo.path, "--no-push", "--lf")
    assert set(again.outcomes) == {missing}, again.output
    assert again.statuses == {child: "success", parent: "success", missing: "commit_not_found"}


def test_line_that_is_not_json_fails_only_its_record(harness_runner, mini_repo):
    parent, child = mini_repo.commits
    harness_runner.dataset.write_text(record(child, parent) + "\n{this is not json\n")
    run = harness_runner.run(mini_repo.path, "--no-push")
    assert run.returncode == 1
    junit = (harness_runner.workdir / "reports" / "junit.xml").read_text()
    assert 'name="test_commit[dataset-line2-invalid]"' in junit
    assert "[dataset_invalid] line 2 is not JSON" in junit
    assert {o.status for o in run.outcomes.values()} == {"success"}
    assert "2 passed" in run.output and "1 failed" in run.output


def test_missing_dockerfile_and_unpinnable_dockerfile_are_categorised(harness_runner, mini_repo):
    parent, child = mini_repo.commits
    unpinnable = 'FROM nvcr.io/x\nADD https://github.com/sgl-project/sglang/archive/main.tar.gz /src\n'
    harness_runner.write_dataset(
        json.dumps({"commit_hash": child, "dockerfile_path": "no/such/Dockerfile"}),
        json.dumps({"commit_hash": parent, "dockerfile_content": unpinnable}))
    run = harness_runner.run(mini_repo.path, "--no-push")
    assert {sha: o.status for sha, o in run.outcomes.items()} == {child: "dockerfile_missing",
                                                                   parent: "unpinnable_dockerfile"}
    assert run.statuses == {child: "dockerfile_missing", parent: "unpinnable_dockerfile"}


def test_short_shas_are_resolved_so_ids_carry_full_shas(harness_runner, mini_repo):
    parent, child = mini_repo.commits
    harness_runner.write_dataset(record(child[:10], parent[:8]))
    run = harness_runner.run(mini_repo.path, "--collect-only", "-q")
    assert f"test_commit[human-{child}]" in run.output and f"test_commit[parent-{parent}]" in run.output


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["in-process", "xdist"])
def test_show_build_logs_streams_each_commit_prefixed_by_its_short_sha(harness_runner, pair_dataset, mini_repo,
                                                                        workers):
    parent, child = pair_dataset
    run = harness_runner.run(mini_repo.path, "--no-push", "--show-build-logs", *workers)
    assert run.returncode == 0, run.output
    for sha in (parent, child):
        assert f"[{sha[:12]}] commit:     {sha}" in run.output
        assert re.search(rf"^\[{sha[:12]}\] #\d+ naming to ", run.output, re.M)


def test_freeze_deps_reaches_the_install_steps_and_leaves_earlier_layers_shared(harness_runner, pair_dataset,
                                                                              mini_repo, docker_client):
    parent, child = pair_dataset
    run = harness_runner.run(mini_repo.path, "--no-push", "--freeze-deps", "-p", "no:xdist")
    assert run.returncode == 0, run.output
    seconds = int(git(mini_repo.path, "show", "-s", "--format=%ct", child))
    day = datetime.fromtimestamp(seconds, tz=timezone.utc).date().isoformat()
    history = [h["CreatedBy"] for h in docker_client.api.history(harness_runner.ref(child))]
    install = next(h for h in history if "harness-src" in h)
    assert f"PIP_UPLOADED_PRIOR_TO={day}T23:59:59Z" in install and f"UV_EXCLUDE_NEWER={day}T23:59:59Z" in install
    earlier = next(h for h in history if "dependencies of the image" in h)
    assert "PIP_UPLOADED_PRIOR_TO" not in earlier
    assert re.search(r"^#\d+ CACHED$", run.log(child), re.M)


def test_skip_pushed_lists_tags_once_and_skips_what_is_there(harness_runner, pair_dataset, mini_repo,
                                                              docker_client):
    parent, child = pair_dataset
    first = harness_runner.run(mini_repo.path, "-k", parent)
    assert first.returncode == 0, first.output
    again = harness_runner.run(mini_repo.path, "--skip-pushed")
    assert again.returncode == 0, again.output
    assert again.outcomes[parent].status == "skipped"
    assert f"already pushed: {harness_runner.ref(parent)}" in again.outcomes[parent].message
    assert again.outcomes[child].status == "success"
    assert again.statuses == {parent: "success", child: "success"}
    assert re.search(rf"SKIPPED +parent +{parent[:12]} .*already pushed", again.output)
    # once pushed, the image left the engine; --verify-only with --skip-pushed pulls it by its digest,
    # verifies it, and removes it again
    assert again.outcomes[child].properties["removed"] == harness_runner.ref(child)
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(harness_runner.ref(child))
    verified = harness_runner.run(mini_repo.path, "--verify-only", "--skip-pushed", "-k", child)
    assert verified.returncode == 0, verified.output
    assert verified.outcomes[child].status == "success"
    digest = verified.outcomes[child].properties["digest"]
    assert verified.outcomes[child].properties["verified"] == harness_runner.ref(child).rsplit(":", 1)[0] + "@" + digest
    assert verified.outcomes[child].properties["removed"] == verified.outcomes[child].properties["verified"]
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(verified.outcomes[child].properties["verified"])
    kept = harness_runner.run(mini_repo.path, "--verify-only", "--keep-images", "-k", child)
    assert kept.outcomes[child].status == "success" and "removed" not in kept.outcomes[child].properties
    docker_client.images.get(kept.outcomes[child].properties["verified"])


def test_skip_pushed_against_an_unreachable_registry_stops_and_says_so(harness_runner, pair_dataset, mini_repo):
    status = harness_runner.workdir / "status"
    (status / "failed").mkdir(parents=True)
    (status / "success.txt").write_text("# SUCCESS: 1 commits\n" + "f" * 40 + "\n")
    run = harness_runner.run(mini_repo.path, "--skip-pushed", "--registry=127.0.0.1:9")
    assert run.returncode == 4
    assert "stopping before any commit: registry http://127.0.0.1:9 cannot be reached" in run.output
    assert run.statuses == {"f" * 40: "success"}


def test_shards_split_the_commits_with_no_overlap_and_no_gap(harness_runner, mini_repo, shared_data):
    harness_runner.dataset = shared_data / "sglang" / "sglang_track_all.json"
    seen = []
    for index in (1, 2, 3):
        run = harness_runner.run(mini_repo.path, "--collect-only", "-q", f"--shard={index}/3")
        seen += re.findall(r"test_commit\[[^\]]+\]", run.output)
    assert len(seen) == 93 and len(set(seen)) == 93


def test_progress_lines_and_the_final_table(harness_runner, mini_repo):
    parent, child = mini_repo.commits
    harness_runner.write_dataset(record(child, parent), "not json")
    run = harness_runner.run(mini_repo.path, "--no-push", "-n", "2")
    assert re.search(rf"^\[ +\d\] PASSED +human +{child[:12]} +- +build +[\d.]+s", run.output, re.M)
    assert re.search(r"^\[ +\d\] FAILED +dataset-line2-invalid +dataset_invalid", run.output, re.M)
    table = run.output.split("commits of this run", 1)[1]
    assert re.search(rf"passed +- +parent +{parent}", table)
    summary = (harness_runner.workdir / "reports" / "summary.md").read_text()
    assert "| success | 2 |" in summary and f"`{child[:12]}` | human |" in summary


def served_digest(runner, sha: str) -> str | None:
    answer = requests.head(f"http://{runner.registry}/v2/test/{runner.image_name}/manifests/{sha}",
                           headers={"Accept": MANIFEST_TYPES}, timeout=10)
    return answer.headers.get("Docker-Content-Digest") if answer.status_code == 200 else None


TAMPERING = "RUN rm /sgl-workspace/sglang/python/sglang/srt/scheduler.py\n"


def test_an_image_that_fails_verification_is_never_pushed_and_is_rebuilt_next_time(harness_runner, mini_repo):
    from testkit.minirepo import dockerfile
    parent, child = mini_repo.commits
    tampered = {sha: json.dumps({"commit_hash": sha, "dockerfile_content": dockerfile() + TAMPERING})
                for sha in (parent, child)}
    harness_runner.write_dataset(tampered[parent], json.dumps({"commit_hash": child}))
    first = harness_runner.run(mini_repo.path)
    assert {sha: o.status for sha, o in first.outcomes.items()} == {parent: "verify_source_mismatch",
                                                                    child: "success"}, first.output
    assert served_digest(harness_runner, parent) is None              # the failed image went nowhere
    assert "push_attempts" not in first.outcomes[parent].properties
    good = served_digest(harness_runner, child)
    assert good == first.outcomes[child].properties["digest"]
    # a rebuild of the child that fails verification leaves the registry's image for its tag alone
    harness_runner.write_dataset(tampered[child])
    rebuilt = harness_runner.run(mini_repo.path)
    assert rebuilt.outcomes[child].status == "verify_source_mismatch"
    assert served_digest(harness_runner, child) == good
    # --skip-pushed means verified and published: the parent, never pushed, is built now
    harness_runner.write_dataset(record(child, parent))
    again = harness_runner.run(mini_repo.path, "--skip-pushed")
    assert {sha: o.status for sha, o in again.outcomes.items()} == {parent: "success", child: "skipped"}
    assert served_digest(harness_runner, parent) == again.outcomes[parent].properties["digest"]
    assert again.statuses == {parent: "success", child: "verify_source_mismatch"}     # its last build's verdict


def test_verify_only_verifies_what_the_registry_serves_not_the_local_image(harness_runner, pair_dataset, mini_repo,
                                                                          docker_client):
    parent, child = pair_dataset
    built = harness_runner.run(mini_repo.path, "--keep-images")
    assert built.returncode == 0, built.output
    genuine = harness_runner.ref(child)
    docker_client.images.get(genuine).tag(f"{genuine}-genuine")
    forge(docker_client, harness_runner.ref(parent), genuine, child)           # the parent's code, dressed up
    repository = genuine.rsplit(":", 1)[0]
    for line in docker_client.images.push(repository, tag=child, stream=True, decode=True):
        assert "error" not in line, line
    forged_digest = served_digest(harness_runner, child)
    docker_client.images.get(f"{genuine}-genuine").tag(genuine)                # locally: the genuine image
    run = harness_runner.run(mini_repo.path, "--verify-only", "-k", child)
    outcome = run.outcomes[child]
    assert outcome.status == "verify_source_mismatch", run.output
    assert outcome.properties["digest"] == forged_digest
    assert outcome.properties["verified"] == f"{repository}@{forged_digest}"
    assert run.statuses[child] == "verify_source_mismatch"
    # the local genuine image still passes when asked for explicitly
    local = harness_runner.run(mini_repo.path, "--verify-only", "--no-push", "-k", child)
    assert local.outcomes[child].status == "success", local.output
    # with no build to read, the Dockerfile is rendered again to say where the change went
    assert local.outcomes[child].properties["change"] == "1 verified, 0 built, 0 not in the image"
    docker_client.images.remove(f"{genuine}-genuine", force=True)


def plan_count(runner, *extra: str) -> int:
    import subprocess
    import sys
    done = subprocess.run([sys.executable, "-m", "helpers.plan", "--dataset", str(runner.dataset), "--blacklist",
                           str(runner.blacklist), "--batch-size", "4", "--shards", "2", "--skip-pushed",
                           "--registry", runner.registry, "--namespace", "test", "--image-name", runner.image_name,
                           *extra], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    return int(dict(line.split("=", 1) for line in done.stdout.splitlines())["count"])


def test_batches_with_skip_pushed_progress_through_the_dataset(harness_runner, mini_repo):
    for i in range(10):
        mini_repo.commit(f"change {i}", {"python/sglang/srt/scheduler.py": f"BATCH = {100 + i}\n"})
    harness_runner.dataset = harness_runner.workdir / "commits.txt"
    harness_runner.write_dataset(*mini_repo.commits)
    built: list[str] = []
    for _ in range(3):
        assert plan_count(harness_runner) == 4                 # the workflow's plan counts what will be built
        run = harness_runner.run(mini_repo.path, "--batch-size", "4", "--skip-pushed", "-n", "2")
        assert run.returncode == 0, run.output
        done = [sha for sha, o in run.outcomes.items() if o.status == "success"]
        assert len(done) == 4 and all(o.status in ("success", "skipped") for o in run.outcomes.values())
        built += done
    assert sorted(built) == sorted(mini_repo.commits)
    assert plan_count(harness_runner) == 0
    again = harness_runner.run(mini_repo.path, "--lf")              # the last run had no failures
    assert again.returncode == 5 and again.outcomes == {}
    assert "no previously failed tests, deselecting all items" in again.output


def test_a_run_against_another_image_repository_leaves_the_status_lists_alone(harness_runner, pair_dataset,
                                                                              mini_repo):
    parent, child = pair_dataset
    first = harness_runner.run(mini_repo.path)
    assert first.statuses == {parent: "success", child: "success"}
    wrong = harness_runner.run(mini_repo.path, "--verify-only", "--image-name=some-other-image", "-k", child)
    assert wrong.outcomes[child].status == "image_not_found"
    assert "status lists not written" in wrong.output and "some-other-image" in wrong.output
    assert wrong.statuses == {parent: "success", child: "success"}          # nothing moved


def test_the_main_command_without_a_namespace_pushes_to_a_registry_the_harness_starts(
        harness_runner, pair_dataset, mini_repo, docker_client, base_image):
    import os
    import socket
    import subprocess
    import sys

    from tests.conftest import BASE_MAP
    parent, child = pair_dataset
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    w = harness_runner.workdir
    argv = [sys.executable, "-m", "pytest", "-n", "2", f"--dataset={harness_runner.dataset}",
            f"--repo-url={mini_repo.path}", f"--base-image-map={BASE_MAP}", f"--image-name={harness_runner.image_name}",
            f"--cache-dir={w / 'cache'}", f"--log-dir={w / 'logs'}", f"--status-dir={w / 'status'}",
            f"--junitxml={w / 'reports' / 'junit.xml'}", f"--attestation-dir={w / 'att'}", "-p", "no:cacheprovider"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKERHUB_")}
    env["HARNESS_LOCAL_REGISTRY_PORT"] = str(port)
    name = f"commit-image-harness-registry-{port}"
    try:
        done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"images go to the harness's own registry localhost:{port}" in done.stdout
        for sha in (parent, child):
            answer = requests.head(f"http://localhost:{port}/v2/harness/{harness_runner.image_name}/manifests/{sha}",
                                   headers={"Accept": MANIFEST_TYPES}, timeout=10)
            assert answer.status_code == 200
        assert docker_client.containers.get(name).status == "running"           # left running for others
    finally:
        for tag in local_tags(docker_client, f"/harness/{harness_runner.image_name}:"):
            docker_client.images.remove(tag, force=True)
        try:
            docker_client.containers.get(name).remove(force=True)
            docker_client.volumes.get(name).remove(force=True)
        except docker.errors.NotFound:
            pass
