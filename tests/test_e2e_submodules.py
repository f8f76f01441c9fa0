"""Submodules, end to end: real repositories on disk, a submodule recorded by relative URL and one nested in
it, archived into the build context at the commits the tree records (not the submodules' branch tips); a
pinned clone's `git submodule update --init --recursive` finds them there; one that cannot be fetched fails
`submodule_unavailable`, and `--no-submodules` builds without it."""
from __future__ import annotations

import json

import pytest

from testkit.minirepo import git, make_submodule_repos, record

pytestmark = pytest.mark.docker


def test_submodules_are_archived_at_their_recorded_commits(harness_runner, docker_client, tmp_path):
    repo, shas = make_submodule_repos(tmp_path)
    recorded, unreachable = shas["recorded"], shas["unreachable"]
    lib = git(repo.path, "rev-parse", f"{recorded}:third_party/lib")
    inner = git(tmp_path / "lib", "rev-parse", f"{lib}:deps/inner")
    harness_runner.write_dataset(record(unreachable, recorded))
    run = harness_runner.run(repo.path, "--no-push", "--no-smoke-checks")
    outcomes = run.outcomes
    assert {sha: o.status for sha, o in outcomes.items()} == {recorded: "success",
                                                               unreachable: "submodule_unavailable"}, run.output[-4000:]
    props = outcomes[recorded].properties
    assert props["submodules"] == f"third_party/lib@{lib[:12]}, third_party/lib/deps/inner@{inner[:12]}"
    assert props["lfs_pointers"] == "models/weights.bin"
    image = harness_runner.ref(recorded)
    held = docker_client.containers.run(image, ["cat", "/opt/lib.txt"], entrypoint=[], remove=True)
    assert held == b"lib v1\ninner v1\n"                            # the recorded commits, not lib's tip (v2)
    assert docker_client.images.get(image).labels["commit-image-harness.submodules"] == \
        f"third_party/lib={lib} third_party/lib/deps/inner={inner}"
    attestations = harness_runner.workdir / "reports" / "attestations"
    statement = json.loads((attestations / f"{recorded}.intoto.json").read_text())
    assert statement["predicate"]["submodules"] == [
        {"path": "third_party/lib", "url": str(tmp_path / "lib"), "commit": lib},
        {"path": "third_party/lib/deps/inner", "url": str(tmp_path / "inner"), "commit": inner}]

    message = outcomes[unreachable].message
    assert f"submodule third_party/lib at {lib[:12]} from {tmp_path / 'missing-lib'} could not be fetched" in message
    assert "optional_submodules or pass --no-submodules" in message
    assert run.statuses[unreachable] == "submodule_unavailable"

    without = harness_runner.run(repo.path, "--no-push", "--no-smoke-checks", "--no-submodules", "-k", unreachable)
    assert without.outcomes[unreachable].status == "success", without.output[-3000:]
    assert without.outcomes[unreachable].properties["submodules"] == "left empty (--no-submodules)"
