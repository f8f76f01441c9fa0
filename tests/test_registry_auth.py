"""Registry credentials on a real job: tokens that expire mid-run are fetched again, and each
registry gets only its own credentials (Docker Hub's token never reaches another registry)."""
from __future__ import annotations

import base64
import time
import uuid

import docker
import pytest

from testkit.faults import ArgvWatch
from testkit.tokenauth import TokenRegistry, TokenServer
from tests.conftest import REGISTRY_TOKEN, REGISTRY_USER

pytestmark = pytest.mark.docker

HUB_USER, HUB_TOKEN = "hub-user-" + uuid.uuid4().hex[:6], "hub-token-" + uuid.uuid4().hex


def docker_login(folder, registry: str, username: str, password: str):
    """A DOCKER_CONFIG folder as `docker login` leaves it."""
    import json
    folder.mkdir(parents=True, exist_ok=True)
    auth = base64.b64encode(f"{username}:{password}".encode()).decode()
    (folder / "config.json").write_text(json.dumps({"auths": {registry: {"auth": auth}}}))
    return folder


def warm_up(client: docker.DockerClient, registry: str, repository: str, base_image: str, server) -> None:
    """The base image's layers pushed once with long-lived tokens: the engine keeps a token for at least
    60 s whatever expires_in says, so a 420 MB upload would outlive a 3 s token mid-push."""
    lifetime, server.lifetime = server.lifetime, 120
    client.images.get(base_image).tag(f"{registry}/{repository}", "warm-up")
    for line in client.api.push(f"{registry}/{repository}", tag="warm-up", stream=True, decode=True,
                                auth_config={"username": server.username, "password": server.password}):
        assert "error" not in line, line
    client.images.remove(f"{registry}/{repository}:warm-up")
    server.lifetime = lifetime


def test_a_run_that_outlives_many_tokens_pushes_confirms_lists_and_verifies(harness_runner, mini_repo, tmp_path,
                                                                            docker_client, base_image):
    server = TokenServer("harness", "pw-" + uuid.uuid4().hex, lifetime=3)
    for i in range(3):
        mini_repo.commit(f"change {i}", {"python/sglang/srt/scheduler.py": f"BATCH = {100 + i}\n"})
    harness_runner.dataset = harness_runner.workdir / "commits.txt"
    harness_runner.write_dataset(*mini_repo.commits)
    with TokenRegistry(tmp_path / "registry", server) as registry:
        harness_runner.registry = registry.address
        warm_up(docker_client, registry.address, f"test/{harness_runner.image_name}", base_image, server)
        env = {"DOCKER_CONFIG": str(docker_login(tmp_path / "login", registry.address, server.username,
                                                 server.password)),
               "DOCKERHUB_USERNAME": HUB_USER, "DOCKERHUB_TOKEN": HUB_TOKEN}
        started = time.monotonic()
        run = harness_runner.run(mini_repo.path, env=env)
        assert {o.status for o in run.outcomes.values()} == {"success"}, run.output
        assert len(run.outcomes) == 5
        assert time.monotonic() - started > 3 * server.lifetime          # the run outlived several tokens
        assert sum(agent.startswith("python-requests") for agent in server.issued) >= 2
        # A server that claims its tokens live an hour: a cached token's 401 is answered by a new one.
        server.advertised = 3600
        issued = len(server.issued)
        skipped = harness_runner.run(mini_repo.path, "--skip-pushed", env=env)
        assert {o.status for o in skipped.outcomes.values()} == {"skipped"}, skipped.output
        verified = harness_runner.run(mini_repo.path, "--verify-only", env=env)
        assert {o.status for o in verified.outcomes.values()} == {"success"}, verified.output
        assert len(server.issued) > issued
    assert "infra_error" not in run.output + skipped.output + verified.output


def published_on(client: docker.DockerClient, port: str):
    """The container that publishes this host port (exactly: another's port may contain its digits)."""
    return next(c for c in client.containers.list()
                if any(b.get("HostPort") == port for binds in (c.ports or {}).values() for b in binds or []))


def test_docker_hubs_token_never_reaches_another_registry(harness_runner, pair_dataset, mini_repo, auth_registry,
                                                          tmp_path, docker_client: docker.DockerClient):
    parent, child = pair_dataset
    harness_runner.registry = auth_registry
    login = docker_login(tmp_path / "login", auth_registry, REGISTRY_USER, REGISTRY_TOKEN)
    with ArgvWatch(HUB_TOKEN) as watch:
        run = harness_runner.run(mini_repo.path, env={"DOCKER_CONFIG": str(login), "DOCKERHUB_USERNAME": HUB_USER,
                                                      "DOCKERHUB_TOKEN": HUB_TOKEN})
    assert {o.status for o in run.outcomes.values()} == {"success"}, run.output   # docker login's credentials
    assert watch.seen == []
    registry = published_on(docker_client, auth_registry.rsplit(":", 1)[-1])
    log = registry.logs().decode(errors="replace")
    assert REGISTRY_USER in log and HUB_USER not in log                 # every request came as the login's user
    assert HUB_TOKEN not in run.output
