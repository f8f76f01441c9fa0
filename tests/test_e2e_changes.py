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


def test_where_each_commits_change_went(harness_runner, kernels_base, docker_client, tmp_path):
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
    before, after = (package_files(docker_client, harness_runner.ref(sha)) for sha in (docs, package))
    assert sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p)) == ["srt/scheduler.py"]
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


@pytest.fixture
def compiling_kernels_base(docker_client, kernels_base, dev_image):
    """The kernels base with a C compiler and Python's headers (harness-dev:bookworm, made by .ci/setup)."""
    ref = build(docker_client, f"FROM {dev_image}\nCOPY --from={kernels_base} /opt/wheels /opt/wheels\n",
                repository="kernels-dev")
    yield ref
    docker_client.images.remove(ref, force=True)


def package_files(client, ref: str) -> dict[str, str]:
    """The installed package's source files in the image (its copy of python/sglang), by path: their hashes."""
    listing = client.containers.run(ref, ["sh", "-c", "cd /sgl-workspace/sglang/python/sglang && "
                                          "find . -name '*.py' -type f -exec sha256sum {} +"],
                                    entrypoint=[], remove=True, network_disabled=True).decode()
    return {line.split(None, 1)[1].strip()[2:]: line.split()[0] for line in listing.splitlines()}


def extension_of(client, ref: str) -> bytes:
    """The bytes of the kernel extension the image's Python imports."""
    return client.containers.run(ref, ["python3", "-c", "import sgl_kernel.common_ops as m, sys; "
                                       "sys.stdout.buffer.write(open(m.__file__, 'rb').read())"],
                                 entrypoint=[], remove=True, network_disabled=True)


def prebuilt_extension(client, ref: str) -> bytes:
    """The kernel extension inside the prebuilt wheel the Dockerfile installs."""
    return client.containers.run(ref, ["python3", "-c", "import glob, sys, zipfile; sys.stdout.buffer.write(zipfile."
                                       "ZipFile(glob.glob('/opt/wheels/*.whl')[0]).read('sgl_kernel/common_ops.so'))"],
                                 entrypoint=[], remove=True, network_disabled=True)


def test_build_changed_parts_builds_the_changed_kernel_from_the_commits_tree(harness_runner, compiling_kernels_base,
                                                                             docker_client, tmp_path):
    repo, shas = make_kernel_repo(tmp_path / "sglang")
    first, kernel = shas["first"], shas["kernel"]
    harness_runner.write_dataset(record(kernel, first))
    run = harness_runner.run(repo.path, "--no-push", "--no-smoke-checks", "--build-changed-parts",
                             f"--base-image-map=kernels.local/*={compiling_kernels_base}")
    outcomes = run.outcomes
    assert {sha: o.status for sha, o in outcomes.items()} == {first: "success", kernel: "success"}, run.output[-4000:]
    assert outcomes[kernel].properties["built_parts"] == "sgl-kernel"
    assert outcomes[first].properties["built_parts"] == "sgl-kernel"   # the baseline's kernel too: built the same way
    assert outcomes[kernel].properties["change.built"] == "M sgl-kernel/csrc/common_ops.c (runtime)"
    assert "every runtime change against" in outcomes[kernel].properties["check.change_not_in_image"]
    parent_so, child_so = (extension_of(docker_client, harness_runner.ref(sha)) for sha in (first, kernel))
    assert b"kernel-variant-1" in parent_so and b"kernel-variant-2" not in parent_so      # each from its own tree
    assert b"kernel-variant-2" in child_so and b"kernel-variant-1" not in child_so
    assert prebuilt_extension(docker_client, compiling_kernels_base) not in (parent_so, child_so)
