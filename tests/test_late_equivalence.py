"""The late-source image holds what the Dockerfile's own order would have: for every shape of the real
SGLang and vLLM Dockerfiles (testkit/shapes.py), built both ways with real BuildKit, the same `pip freeze`,
the same files outside the source tree (content, type, mode, owner), the same environment, working
directory, user, entrypoint and command.

A clone that a rebuilt step makes again differs in what git stamps with the time and the files' status
(`.git/index`, `.git/logs/`) whatever the order: those are left out."""
from __future__ import annotations

import hashlib
import io
import tarfile
import uuid

import docker
import pytest

from helpers.config import make_config
from helpers.pipeline import Harness
from helpers.source.dataset import CommitSpec, DockerfileSource
from testkit.shapes import SHAPES, make_shape_repo
from tests.conftest import BASE_MAP, ROOT

pytestmark = pytest.mark.docker
SOURCE_TREE = "sgl-workspace/sglang/"
CONFIG = ("Env", "WorkingDir", "User", "Entrypoint", "Cmd")


def build(repo, tmp_path, late: bool) -> tuple[str, list[str]]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    dataset = tmp_path / "dataset.txt"
    dataset.write_text("\n")
    values = {"no_push": True, "dataset": str(dataset), "repo_url": str(repo.path),
              "cache_dir": str(tmp_path / "cache"), "log_dir": str(tmp_path / "logs"),
              "status_dir": str(tmp_path / "status"), "attestation_dir": str(tmp_path / "att"),
              "image_name": f"shape-{uuid.uuid4().hex[:8]}", "registry": "shapes.local",
              "base_image_map": [BASE_MAP], "no_dependency_layer": not late}
    harness = Harness(make_config(values, ROOT, uuid.uuid4().hex))
    notes: list[str] = []
    run = harness.commit(CommitSpec(repo.commits[0], ("commit",), DockerfileSource(), 1),
                         lambda name, value: notes.append(str(value)) if name == "fixes" else None)
    image = run.produce()
    log = (tmp_path / "logs" / f"{image.sha}.log").read_text()
    return image.ref, [line for line in log.splitlines() if "late source" in line]


def files(client: docker.DockerClient, ref: str) -> dict[str, tuple]:
    """Every file outside the source tree: (type, mode, owner, content digest or link target). Bytecode is
    compared without its header (the source's mtime at install time)."""
    container = client.api.create_container(ref, entrypoint=["/never-started"])["Id"]
    found: dict[str, tuple] = {}
    try:
        stream = client.api.export(container)
        with tarfile.open(fileobj=io.BufferedReader(Stream(stream)), mode="r|") as tar:
            for member in tar:
                name = member.name.lstrip("./")
                if name.startswith(SOURCE_TREE) or "/.git/index" in f"/{name}" or "/.git/logs/" in f"/{name}":
                    continue
                data = tar.extractfile(member).read() if member.isfile() else b""   # type: ignore[union-attr]
                if name.endswith(".pyc"):
                    data = data[16:]
                found[name] = (member.type, member.mode, member.uid, member.gid, member.linkname,
                               hashlib.sha256(data).hexdigest())
    finally:
        client.api.remove_container(container, force=True)
    return found


class Stream(io.RawIOBase):
    def __init__(self, chunks):
        self.chunks, self.buffer = iter(chunks), b""

    def readable(self) -> bool:
        return True

    def readinto(self, target) -> int:
        while not self.buffer:
            try:
                self.buffer = next(self.chunks)
            except StopIteration:
                return 0
        n = min(len(target), len(self.buffer))
        target[:n], self.buffer = self.buffer[:n], self.buffer[n:]
        return n


def freeze(client: docker.DockerClient, ref: str) -> str:
    return client.containers.run(ref, ["python3", "-m", "pip", "freeze", "--all"], entrypoint=[], remove=True,
                                 network_disabled=True).decode()


@pytest.mark.parametrize("shape", SHAPES)
def test_the_late_source_image_holds_what_the_original_order_would(shape, docker_client, base_image, tmp_path):
    repo = make_shape_repo(tmp_path / "repo", shape)
    late, late_notes = build(repo, tmp_path / "late", late=True)
    original, original_notes = build(repo, tmp_path / "original", late=False)
    try:
        assert late_notes and "late source: line" in late_notes[0], late_notes      # it was applied
        assert original_notes == []
        assert freeze(docker_client, late) == freeze(docker_client, original)
        ours, theirs = files(docker_client, late), files(docker_client, original)
        assert sorted(set(ours) ^ set(theirs)) == []
        assert [path for path in ours if ours[path] != theirs[path]] == []
        configs = [docker_client.images.get(ref).attrs["Config"] for ref in (late, original)]
        assert [{key: config.get(key) for key in CONFIG} for config in configs][0] == \
            {key: configs[1].get(key) for key in CONFIG}
    finally:
        for ref in (late, original):
            docker_client.images.remove(ref, force=True)
