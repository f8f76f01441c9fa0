"""Secrets never leak, and forged images never pass: each forgery fails with its own category."""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import docker
import pytest

from testkit.faults import ArgvWatch
from testkit.minirepo import dockerfile
from tests.conftest import REGISTRY_TOKEN, REGISTRY_USER

pytestmark = pytest.mark.docker


def test_the_token_is_used_but_never_shown(harness_runner, pair_dataset, mini_repo, auth_registry, tmp_path):
    """The registry's password comes from `docker login`'s store (DOCKERHUB_TOKEN is Docker Hub's only)."""
    from tests.test_registry_auth import docker_login
    parent, child = pair_dataset
    harness_runner.registry = auth_registry
    env = {"DOCKER_CONFIG": str(docker_login(tmp_path / "login", auth_registry, REGISTRY_USER, REGISTRY_TOKEN))}
    with ArgvWatch(REGISTRY_TOKEN) as watch:            # every process's command line, all the run long
        first = harness_runner.run(mini_repo.path, "-k", parent, env=env)
        again = harness_runner.run(mini_repo.path, "--skip-pushed", "-n", "2", env=env)
    assert first.returncode == 0 and again.returncode == 0, first.output + again.output
    assert again.outcomes[parent].status == "skipped" and again.outcomes[child].status == "success"
    assert watch.seen == []
    for text in (first.output, again.output):
        assert REGISTRY_TOKEN not in text
    for path in harness_runner.workdir.rglob("*"):
        if path.is_file():
            assert REGISTRY_TOKEN.encode() not in path.read_bytes(), path


def forged(client, base_ref: str, target_ref: str, dockerfile: str, files: dict[str, str] | None = None) -> None:
    """An image built FROM a real one with a few changes, tagged as another commit."""
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        for name, text in {"Dockerfile": f"FROM {base_ref}\n{dockerfile}", **(files or {})}.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    context.seek(0)
    client.images.build(fileobj=context, custom_context=True, tag=target_ref, rm=True)


PIP = "python3 -m pip --disable-pip-version-check"


def forgeries(parent: str, child: str) -> dict[str, tuple[str, str, dict[str, str]]]:
    """name -> (base commit, Dockerfile lines, extra context files); the result is tagged as `child`."""
    label = f"LABEL org.opencontainers.image.revision={child}\n"
    proof = f"RUN echo {child} > /opt/sglang_commit.txt\n"
    return {
        "right label only": (parent, label + "RUN rm /opt/sglang_commit.txt\n", {}),
        "right proof file, another commit's code": (parent, label + proof, {}),
        "right code, wrong proof file": (child, f"RUN echo {parent} > /opt/sglang_commit.txt\n", {}),
        "one source file altered after installation": (
            child, "RUN echo 'BATCH = 999' > /sgl-workspace/sglang/python/sglang/srt/scheduler.py\n", {}),
        "same code installed non-editable": (
            child, f"RUN {PIP} uninstall -y --break-system-packages sglang && cd /sgl-workspace/sglang && "
                   f"{PIP} install --no-deps --no-build-isolation --break-system-packages ./python\n", {}),
        "importable from another directory": (
            child, "RUN cp -a /sgl-workspace/sglang/python/sglang /usr/local/lib/python3.11/dist-packages/ && "
                   "rm -f /usr/local/lib/python3.11/dist-packages/__editable__*\n", {}),
    }


EXPECTED = {
    "right label only": "verify_proof_file",
    "right proof file, another commit's code": "verify_source_mismatch",
    "right code, wrong proof file": "verify_proof_file",
    "one source file altered after installation": "verify_source_mismatch",
    "same code installed non-editable": "verify_editable_install",
    "importable from another directory": "verify_editable_install",
}


def test_every_forgery_fails_with_its_category(harness_runner, pair_dataset, mini_repo, docker_client):
    parent, child = pair_dataset
    built = harness_runner.run(mini_repo.path, "--no-push")
    assert built.returncode == 0, built.output
    originals = {sha: harness_runner.ref(sha) for sha in (parent, child)}
    for ref in originals.values():
        docker_client.images.get(ref).tag(f"{ref}-genuine")
    found = {}
    for name, (base, lines, files) in forgeries(parent, child).items():
        forged(docker_client, f"{originals[base]}-genuine", originals[child], lines, files)
        run = harness_runner.run(mini_repo.path, "--verify-only", "--no-push", "-k", child)
        found[name] = run.outcomes[child].status
    assert found == EXPECTED
    for ref in originals.values():
        docker_client.images.remove(f"{ref}-genuine", force=True)


def test_after_a_session_nothing_of_the_harness_is_left(harness_runner, pair_dataset, mini_repo, docker_client,
                                                        tmp_path: Path):
    parent, child = pair_dataset
    work = tmp_path / "contexts"
    tampering = dockerfile() + "RUN rm /sgl-workspace/sglang/python/sglang/srt/scheduler.py\n"
    harness_runner.write_dataset(json.dumps({"commit_hash": parent, "dockerfile_content": tampering}),
                                 json.dumps({"commit_hash": child}))
    run = harness_runner.run(mini_repo.path, "--no-push", f"--work-dir={work}", "-n", "2")
    assert run.outcomes[parent].status == "verify_source_mismatch", run.output
    assert run.outcomes[child].status == "success"
    assert list(work.iterdir()) == []                                   # contexts removed
    for sha in (parent, child):
        assert not docker_client.containers.list(all=True, filters={"label": f"commit-image-harness.commit={sha}"})
    with pytest.raises(docker.errors.ImageNotFound):                   # the failed image is removed
        docker_client.images.get(harness_runner.ref(parent))
    docker_client.images.get(harness_runner.ref(child))
    kept = harness_runner.run(mini_repo.path, "--no-push", "--keep-failed", "-k", parent)
    assert kept.outcomes[parent].status == "verify_source_mismatch"
    docker_client.images.get(harness_runner.ref(parent))
