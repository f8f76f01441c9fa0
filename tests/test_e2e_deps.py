"""The dependency layer, for real: commits with the same dependency specification share the layer
that installs them; a commit that changes it rebuilds that layer (with pip's cache mounted, the
packages already built are not built again); verification passes throughout."""
from __future__ import annotations

import json
import re

import docker
import pytest

from testkit.minirepo import make_deps_repo, pyproject

pytestmark = pytest.mark.docker


def step_states(log: str) -> dict[str, bool]:
    """RUN step text -> whether BuildKit reused it from cache."""
    names = dict(re.findall(r"^#(\d+) \[(?:\S+ )?\d+/\d+\] (RUN .*)$", log, re.M))
    cached = set(re.findall(r"^#(\d+) CACHED$", log, re.M))
    return {name: number in cached for number, name in names.items()}


def dependency_step(log: str) -> tuple[str, bool]:
    (name, cached), = [(n, c) for n, c in step_states(log).items() if "slowdep==" in n and "harness-src" not in n]
    return name, cached


def test_same_specification_shares_the_layer_a_new_one_rebuilds_it(harness_runner, tmp_path):
    repo = make_deps_repo(tmp_path / "sglang", slow=3)
    parent, child, moved = repo.commits
    logs = {}
    for sha in (parent, child, moved):
        harness_runner.write_dataset(json.dumps({"commit_hash": sha}))
        run = harness_runner.run(repo.path, "--no-push")
        assert run.outcomes[sha].status == "success", run.output
        logs[sha] = run.log(sha)
    name, cached = dependency_step(logs[parent])
    assert re.fullmatch(r"RUN --mount=type=cache,target=/root/.cache/pip python3 -m pip --version +&& mkdir -p sglang "
                        r"&& true +&& cd sglang +&& mkdir -p /tmp/harness-deps && python3 -c .* "
                        r"/tmp/harness-deps/harness_deps-0-py3-none-any.whl slowdep==1.0 && python3 -m pip install "
                        r"--no-build-isolation --break-system-packages --no-index --find-links /opt/wheelhouse/\w+ "
                        r"/tmp/harness-deps/harness_deps-0-py3-none-any.whl && python3 -m pip uninstall -y "
                        r"--break-system-packages harness-deps && rm -rf /tmp/harness-deps", name), name
    assert cached is False
    assert dependency_step(logs[child])[1] is True                       # same spec: reused
    name, cached = dependency_step(logs[moved])
    assert "slowdep==2.0" in name and cached is False                     # new spec: rebuilt
    source_steps = [c for n, c in step_states(logs[child]).items() if "harness-src" in n]
    assert source_steps == [False]                                        # the source itself is per commit


def test_a_rebuilt_dependency_layer_reuses_what_pip_already_built(harness_runner, tmp_path):
    repo = make_deps_repo(tmp_path / "sglang", slow=2)
    parent = repo.commits[0]
    more = repo.commit("same package, one more requirement line",
                       {"python/pyproject.toml": pyproject(["slowdep==1.0", "slowdep>=0.5"])})
    for sha in (parent, more):
        harness_runner.write_dataset(json.dumps({"commit_hash": sha}))
        run = harness_runner.run(repo.path, "--no-push")
        assert run.outcomes[sha].status == "success", run.output
    log = run.log(more)
    assert dependency_step(log)[1] is False                               # the layer is rebuilt ...
    assert "Using cached slowdep-1.0-py3-none-any.whl" in log                # ... from pip's cache mount
    assert "Building wheel for slowdep" not in log


def test_the_child_reuses_the_dependency_layer_after_the_parents_image_left_the_engine(harness_runner, tmp_path,
                                                                                       docker_client):
    repo = make_deps_repo(tmp_path / "sglang", slow=2)
    parent, child = repo.commits[:2]
    harness_runner.write_dataset(json.dumps({"commit_hash": parent}))
    first = harness_runner.run(repo.path)                                 # pushed, then removed
    assert first.outcomes[parent].status == "success", first.output
    assert first.outcomes[parent].properties["removed"] == harness_runner.ref(parent)
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(harness_runner.ref(parent))
    harness_runner.write_dataset(json.dumps({"commit_hash": child}))
    second = harness_runner.run(repo.path)
    assert second.outcomes[child].status == "success", second.output
    assert dependency_step(second.log(child))[1] is True                  # from the build cache


def test_a_commit_whose_dependency_set_another_machine_pushed_takes_its_layers(harness_runner, base_image, tmp_path):
    """Each pushed image carries inline cache metadata and a tag per dependency set; a second engine with an
    empty build cache (a second machine) builds the child from the layers the first pushed."""
    import tempfile
    from pathlib import Path

    from testkit.faults import HostNetworkEngine
    repo = make_deps_repo(tmp_path / "sglang", slow=6)
    parent, child, _ = repo.commits
    harness_runner.write_dataset(json.dumps({"commit_hash": parent}))
    first = harness_runner.run(repo.path)
    assert first.outcomes[parent].status == "success", first.output
    tags = first.outcomes[parent].properties["cache_tags"].split(", ")
    assert [t.split("-")[0] + "-" + t.split("-")[1] if t.startswith("cache-dockerfile") else "cache" for t in tags] \
        == ["cache", "cache-dockerfile"] and "cache_tags_failed" not in first.outcomes[parent].properties
    engine = HostNetworkEngine(Path(tempfile.mkdtemp(prefix="m2-", dir="/tmp"))).start([base_image])
    try:
        harness_runner.write_dataset(json.dumps({"commit_hash": child}))
        second = harness_runner.run(repo.path, env={"DOCKER_HOST": engine.host})
    finally:
        engine.stop()
    assert second.outcomes[child].status == "success", second.output
    log = second.log(child)
    assert "importing cache manifest from" in log
    assert dependency_step(log)[1] is True                     # the dependency layer came from the registry
    ran = [n for n, cached in step_states(log).items() if not cached]
    assert len(ran) == 2 and "harness-src" in ran[0] and "/opt/sglang_commit.txt" in ran[1], ran   # source, proof
    assert second.outcomes[child].properties["build_steps"] == "2 of 6 run, 4 from cache"
