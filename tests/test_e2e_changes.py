"""The commit's change is in the image, end to end: a mini SGLang whose kernels live in `sgl-kernel/` (a C
extension) while its Dockerfile installs them from a prebuilt wheel, as the real Dockerfiles install them
from an index. A PR commit that changes only the kernel's source fails `change_not_in_image`; one that
changes only tests and docs is reported as no runtime change; one that changes the package is verified."""
from __future__ import annotations

import json

import pytest

from testkit.forgeries import build
from testkit.minirepo import record
from testkit.smokerepo import kernel_wheel, make_kernel_repo

pytestmark = pytest.mark.docker


@pytest.fixture
def kernels_base(docker_client, base_image):
    """The base image with the prebuilt kernel wheel in /opt/wheels."""
    ref = build(docker_client, f"FROM {base_image}\nCOPY sgl_kernel-0.0.1-py3-none-any.whl /opt/wheels/\n",
                {"sgl_kernel-0.0.1-py3-none-any.whl": kernel_wheel()}, repository="kernels-base")
    yield ref
    docker_client.images.remove(ref, force=True)


def test_where_each_commits_change_went(harness_runner, kernels_base, tmp_path):
    repo, shas = make_kernel_repo(tmp_path / "sglang")
    first, kernel, docs, package = shas["first"], shas["kernel"], shas["tests and docs"], shas["package"]
    harness_runner.write_dataset(record(kernel, first), record(docs, kernel), record(package, docs))
    run = harness_runner.run(repo.path, "--no-push", "--no-smoke-checks", f"--base-image-map=kernels.local/*="
                             f"{kernels_base}", "-n", "2")
    outcomes = run.outcomes
    assert {sha: o.status for sha, o in outcomes.items()} == {
        first: "success", kernel: "change_not_in_image", docs: "success", package: "success"}, run.output[-4000:]

    failed = outcomes[kernel]
    assert "no runtime change against " + first[:12] + " is in the image: sgl-kernel/csrc/common_ops.c" \
        in failed.message, failed.message
    assert "the image gets sgl-kernel/ as sgl-kernel from --find-links /opt/wheels (line 3:" in failed.message
    assert failed.properties["change.not_in_the_image"] == "M sgl-kernel/csrc/common_ops.c (runtime)"
    assert run.statuses[kernel] == "change_not_in_image"

    assert "no runtime change against" in outcomes[docs].properties["check.change_not_in_image"]
    assert outcomes[docs].properties["change"] == "0 verified, 0 built, 2 not in the image (1 test, 1 docs)"

    assert outcomes[package].properties["change.verified"] == "M python/sglang/srt/scheduler.py (runtime)"
    assert outcomes[package].properties["change"] == "1 verified, 0 built, 0 not in the image"
    attestation = json.loads(next((harness_runner.workdir / "reports" / "attestations").glob(
        f"*{package[:12]}*.json")).read_text())
    assert attestation["predicate"]["change"]["verified"] == [
        {"status": "M", "path": "python/sglang/srt/scheduler.py", "kind": "runtime"}]
    assert attestation["predicate"]["change"]["against"] == docs

    # the root commit is a baseline: everything it adds, the Dockerfile built, the package verified
    assert outcomes[first].properties["change"] == "4 verified, 2 built, 7 not in the image (4 runtime, 1 test, 2 docs)"
    assert "commits of this run" in run.output and "1 verified, 0 built, 0 not in the image" in run.output

    accepted = harness_runner.run(repo.path, "--no-push", "--no-smoke-checks", "--accept-change-not-in-image",
                                  f"--base-image-map=kernels.local/*={kernels_base}", "-k", kernel)
    assert accepted.outcomes[kernel].status == "success", accepted.output[-3000:]
    assert accepted.outcomes[kernel].properties["check.change_not_in_image"].startswith(
        "ok   change_not_in_image: accepted (--accept-change-not-in-image)")
