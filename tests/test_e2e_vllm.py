"""End to end with --project vllm: a miniature vLLM whose Dockerfile bind-mounts .git for
setuptools-scm, checks the wheel size and installs the built wheel; the harness's fixes make it
build from a `git archive` context, and verification compares the installed package files."""
from __future__ import annotations

import io
import json
import subprocess
import tarfile

import pytest

from testkit.minirepo import git, make_vllm_repo
from tests.conftest import BASE_IMAGE
from tests.test_scm_version import checkout_version

pytestmark = pytest.mark.docker


@pytest.fixture
def vllm_repo(tmp_path):
    return make_vllm_repo(tmp_path / "vllm")


def vllm_args() -> list[str]:
    return ["--project", "vllm", f"--base-image-map=nvidia/cuda:*={BASE_IMAGE}"]


def test_vllm_pair_builds_and_verifies_with_the_fixes_recorded(harness_runner, vllm_repo, docker_client):
    parent, child = vllm_repo.commits
    harness_runner.dataset = harness_runner.workdir / "nvidia-vllm-docker.jsonl"
    harness_runner.write_dataset(*(json.dumps({"commit": sha, "commit_date": "2024-05-01T10:00:00+00:00",
                                               "Dockerfile": None}) for sha in (parent, child)))
    run = harness_runner.run(vllm_repo.path, *vllm_args())
    assert run.returncode == 0, run.output
    outcomes = run.outcomes
    assert {sha: o.status for sha, o in outcomes.items()} == {parent: "success", child: "success"}
    fixes = outcomes[child].properties["fixes"]
    for name in ("drop_sparse_deps", "pin_outlines", "dockerfile_syntax", "no_git_mount", "no_wheel_size_check",
                 "scm_version"):
        assert name in fixes, fixes
    assert "no_git_mount: line 9: removed the .git bind mount" in run.log(child)
    assert outcomes[child].properties["check.verify_editable_install"] == \
        "ok   verify_editable_install: not required by the profile"
    assert outcomes[child].properties["check.verify_source_mismatch"].startswith("ok")
    installed = {}
    for sha in (parent, child):
        out = docker_client.containers.run(
            harness_runner.ref(sha), entrypoint=["python3", "-c"], remove=True,
            command=["import importlib.metadata as m, json, vllm.engine as e; print(json.dumps([m.version('vllm'), "
                     "[r.replace(' ', '').replace('(', '').replace(')', '') for r in m.requires('vllm')], "
                     "e.BLOCK_SIZE, open('/opt/vllm_commit.txt').read().strip()]))"])
        installed[sha] = json.loads(out.decode())
    assert installed[parent] == ["0.1.0", ["outlines<0.0.43"], 16, parent]
    git(vllm_repo.path, "checkout", "-q", child)              # what the project's own setuptools-scm says
    assert installed[child] == [checkout_version(vllm_repo.path), ["outlines<0.0.43"], 32, child]
    assert installed[child][0].startswith("0.1.1.dev1+g")
    assert outcomes[child].properties["check.verify_version"] == \
        f"ok   verify_version: vllm {installed[child][0]}, the commit's is {installed[child][0]}"


def test_without_the_git_mount_fix_the_build_fails_as_build_failed(harness_runner, vllm_repo):
    parent, _ = vllm_repo.commits
    harness_runner.dataset = harness_runner.workdir / "commits.txt"
    harness_runner.write_dataset(parent)
    run = harness_runner.run(vllm_repo.path, *vllm_args(), "--no-push", "--disable-fix", "no_git_mount")
    assert run.outcomes[parent].status == "build_failed"
    assert ".git" in run.outcomes[parent].message


def test_prepare_only_writes_rendered_dockerfile_diff_and_fixes_without_building(harness_runner, vllm_repo,
                                                                                 docker_client, tmp_path):
    parent, child = vllm_repo.commits
    harness_runner.dataset = harness_runner.workdir / "commits.txt"
    harness_runner.write_dataset(parent, child)
    out = tmp_path / "prepared"
    run = harness_runner.run(vllm_repo.path, *vllm_args(), "--prepare-only", f"--out-dir={out}", "--freeze-deps",
                             "-k", child)
    assert run.returncode == 0, run.output
    assert sorted(p.name for p in out.iterdir()) == [child]
    files = {p.name: p.read_text() for p in (out / child).iterdir()}
    assert set(files) == {"Dockerfile", "Dockerfile.original", "Dockerfile.diff", "fixes.txt"}
    assert "-RUN python3 check-wheel-size.py dist\n+RUN true\n" in files["Dockerfile.diff"]
    assert "ARG PIP_UPLOADED_PRIOR_TO\n" in files["Dockerfile"]
    assert "PIP_UPLOADED_PRIOR_TO=" in files["fixes.txt"] and "T23:59:59Z" in files["fixes.txt"]
    assert "pin_outlines: requirements-common.txt: outlines == 0.0.46 -> outlines<0.0.43" in files["fixes.txt"]
    assert not docker_client.images.list(name=f"{harness_runner.registry}/test/{harness_runner.image_name}")
    assert not (harness_runner.workdir / "status").exists()


SITE = "/usr/local/lib/python3.11/dist-packages"


def source_tree(repo, sha: str) -> bytes:
    return subprocess.run(["git", "-C", str(repo.path), "archive", "--format=tar", sha], capture_output=True,
                          check=True).stdout


def forged(client, base: str, target: str, lines: str, tree: bytes | None = None) -> None:
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        entries = {"Dockerfile": f"FROM {base}\n{lines}".encode(), **({"src.tar": tree} if tree else {})}
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    context.seek(0)
    client.images.build(fileobj=context, custom_context=True, tag=target, rm=True, forcerm=True)


def test_wheel_images_check_every_installed_copy_and_the_version(harness_runner, vllm_repo, docker_client):
    parent, child = vllm_repo.commits
    harness_runner.dataset = harness_runner.workdir / "commits.txt"
    harness_runner.write_dataset(parent, child)
    built = harness_runner.run(vllm_repo.path, *vllm_args(), "--no-push")
    assert built.returncode == 0, built.output
    genuine = {sha: harness_runner.ref(sha) + "-genuine" for sha in (parent, child)}
    for sha, ref in genuine.items():
        docker_client.images.get(harness_runner.ref(sha)).tag(ref)
    relabel = f"LABEL org.opencontainers.image.revision={child}\nRUN echo {child} > /opt/vllm_commit.txt\n"
    cases = {
        # single stage: the child's source tree in the WORKDIR, the parent's wheel installed
        "the parent's wheel under the child's source tree": (
            genuine[parent], relabel + "ADD src.tar /vllm-workspace/\n", source_tree(vllm_repo, child)),
        "an edited installed __init__.py": (genuine[child], f"RUN echo 'X = 1' >> {SITE}/vllm/__init__.py\n", None),
        "an extra installed module": (genuine[child], f"RUN echo 'import os' > {SITE}/vllm/extra.py\n", None),
        "another version in the metadata": (
            genuine[child], f"RUN sed -i 's/^Version: .*/Version: 0.1.0.post1/' {SITE}/vllm-*.dist-info/METADATA\n",
            None),
    }
    found = {}
    for name, (base, lines, tree) in cases.items():
        forged(docker_client, base, harness_runner.ref(child), lines, tree)
        run = harness_runner.run(vllm_repo.path, *vllm_args(), "--verify-only", "--no-push", "-k", child)
        found[name] = run.outcomes[child].status
    assert found == {"the parent's wheel under the child's source tree": "verify_source_mismatch",
                     "an edited installed __init__.py": "verify_source_mismatch",
                     "an extra installed module": "verify_source_mismatch",
                     "another version in the metadata": "verify_version"}
    for ref in genuine.values():
        docker_client.images.remove(ref, force=True)
