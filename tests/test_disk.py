"""Disk at real size: sizes and disk-full errors (unit), then a run on an engine whose data root is
a small filesystem: with the defaults every commit fits, with --keep-images the commit that does not
fit fails as disk_full and the others keep their results."""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

import docker
import pytest

from helpers.build.disk import is_disk_full, parse_size
from helpers.errors import ConfigError
from testkit.faults import SmallDiskEngine
from testkit.minirepo import MiniRepo, make_repo, record
from tests.conftest import local_tags

BLOB_MB = 160           # each commit's own layer (a model file, in real life)


@pytest.mark.parametrize("text, expected", [("30G", 30 * 2 ** 30), ("500MiB", 500 * 2 ** 20), ("2gb", 2 * 2 ** 30),
                                            ("1.5T", int(1.5 * 2 ** 40)), ("10k", 10 * 2 ** 10), ("0", 0),
                                            ("4096", 4096)])
def test_sizes_are_in_powers_of_1024(text, expected):
    assert parse_size(text, "--min-free").of(None) == expected


def test_a_share_is_of_the_data_roots_filesystem_and_capped():
    size = parse_size("10%", "--min-free", cap=30 * 2 ** 30)
    assert size.of(100 * 2 ** 30) == 10 * 2 ** 30
    assert size.of(1000 * 2 ** 30) == 30 * 2 ** 30
    assert size.of(None) is None                      # a remote engine's filesystem is not known


@pytest.mark.parametrize("text", ["", "ten", "-5G", "150%", "5X", "1.2.3G"])
def test_a_bad_size_names_its_option(text):
    with pytest.raises(ConfigError, match="--cache-budget"):
        parse_size(text, "--cache-budget")


@pytest.mark.parametrize("line, full", [
    ("ERROR: failed to solve: ResourceExhausted: failed to copy: write /var/lib/docker/buildkit/content/ingest/"
     "5f3a/data: no space left on device", True),
    ("failed to register layer: Error processing tar file(exit status 1): write /blob: no space left on device", True),
    ("OSError: [Errno 28] No space left on device: '/usr/lib/python3/dist-packages/torch'", True),
    ("rpc error: code = ResourceExhausted desc = grpc: received message larger than max (5000000 vs. 4194304)", False),
    ("executor failed running [/bin/sh -c make]: exit code: 2", False),
])
def test_disk_full_errors_are_told_from_others(line, full):
    assert is_disk_full(line) is full


def blob_commits(path: Path, count: int) -> tuple[MiniRepo, list[str]]:
    """`count` commits whose images each add a layer of BLOB_MB of their own after the source (the step reads
    the source, so it stays after it)."""
    repo = make_repo(path)
    dockerfile = (repo.path / "docker" / "Dockerfile").read_text()
    blob = (f"RUN head -c {BLOB_MB}M /dev/zero > /opt/model.bin "
            "&& cat /sgl-workspace/sglang/python/sglang/srt/scheduler.py >> /opt/model.bin\n")
    first = repo.commit("a model file in the image", {"docker/Dockerfile": dockerfile + blob})
    for n in range(1, count):
        repo.commit(f"commit {n}", {"python/sglang/srt/scheduler.py": f"BATCH = {n}\n"})
    return repo, repo.commits[repo.commits.index(first):]


@pytest.fixture
def small_engine(base_image: str):
    if os.geteuid() != 0:
        pytest.skip("a tmpfs data root and a second dockerd need root (CI runs as root)")
    engine = SmallDiskEngine(Path(tempfile.mkdtemp(prefix="e3-", dir="/tmp")), "1024m").start([base_image])
    yield engine
    engine.stop()


@pytest.mark.docker
def test_more_commits_than_the_disk_holds_pass_with_the_defaults_and_fail_as_disk_full_when_kept(
        harness_runner, small_engine, tmp_path):
    repo, commits = blob_commits(tmp_path / "sglang", 5)
    harness_runner.write_dataset(*(record(sha, None) for sha in commits))
    filesystem = shutil.disk_usage(small_engine.root / "data")
    assert len(commits) * BLOB_MB * 2 ** 20 > filesystem.free              # together they do not fit
    env = {"DOCKER_HOST": small_engine.host}
    run = harness_runner.run(repo.path, "-p", "no:xdist", env=env, timeout=900)
    assert run.returncode == 0, run.output
    assert run.statuses == {sha: "success" for sha in commits}
    assert all(run.outcomes[sha].properties["removed"] == harness_runner.ref(sha) for sha in commits)
    assert any("cache_pruned" in run.outcomes[sha].properties for sha in commits)
    engine = docker.DockerClient(base_url=small_engine.host)
    assert not local_tags(engine, harness_runner.image_name)

    engine.api.prune_builds()                                 # the second run starts as cold as the first
    kept = harness_runner.run(repo.path, "-p", "no:xdist", "--keep-images", env=env, timeout=900)
    statuses = [kept.outcomes[sha].status for sha in commits]
    fitted = statuses.index("disk_full") if "disk_full" in statuses else len(commits)
    assert 1 <= fitted < len(commits) and statuses == ["success"] * fitted + ["disk_full"] * (len(commits) - fitted)
    assert re.search(r"[\d.]+ [KMG]iB free", kept.outcomes[commits[fitted]].message)  # checked before, or hit during
    assert kept.statuses == dict(zip(commits, statuses, strict=True))
    status = harness_runner.workdir / "status"
    assert [p.name for p in (status / "failed").iterdir()] == ["disk_full.txt"]
    expected_counts = ((status / "success.txt", fitted), (status / "failed" / "disk_full.txt", len(commits) - fitted))
    for path, count in expected_counts:
        lines = path.read_text().splitlines()
        assert lines[0] == f"# {'SUCCESS' if path.name == 'success.txt' else 'DISK_FULL'}: {count} commits"
        assert len(lines) == count + 1

    # asked for more than is free, the check before the build prunes what it may, then says why it stops
    last = commits[-1]
    short = harness_runner.run(repo.path, "-p", "no:xdist", "--keep-images", "--min-free=1G", "-k", last, env=env)
    assert short.outcomes[last].status == "disk_full", short.output
    assert re.search(r"[\d.]+ MiB free on .*'s filesystem, --min-free needs 1.0 GiB; pruned [\d.]+ \S+ "
                     r"\(build cache", short.outcomes[last].message), short.outcomes[last].message
    # without the check (--min-free 0), the engine runs out of space during the build
    full = harness_runner.run(repo.path, "-p", "no:xdist", "--keep-images", "--min-free=0", "-k", last, env=env)
    assert full.outcomes[last].status == "disk_full", full.output
    assert "ran out of disk during the build" in full.outcomes[last].message
    assert "no space left on device" in full.log(last).lower()
