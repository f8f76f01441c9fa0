"""Resources: what a run of the harness shares across its commits, each made when first needed (collecting
the tests needs neither Docker nor the network): the engine client, the build driver, the mirror, the
registry and its credentials, the engine's disk budget, and what verification already knows (each blob's
definitions, the bytecode verdicts, where the project's images keep their package).
"""
from __future__ import annotations

import functools
import os
from functools import cached_property
from pathlib import Path

import docker
import requests

from helpers.build import disk
from helpers.build import driver as build
from helpers.config import HarnessConfig
from helpers.errors import InfraError
from helpers.publish import registry as publish
from helpers.source import mirror as source
from helpers.verify import image_facts, known


class Resources:
    """The run's shared resources (one set per pytest process: the controller and each xdist worker)."""

    def __init__(self, config: HarnessConfig):
        self.config = config
        # where the last verified image had its package copies, their bytecode and its metadata folder
        self.layout_file = config.cache_dir / "layouts" / f"{config.profile.name}-{config.profile.import_name}.json"
        self.layout = image_facts.Layout.read(self.layout_file)
        self.definitions = known.Definitions(config.cache_dir)
        self.bytecode = known.BytecodeVerdicts(config.cache_dir)

    def known(self, image, package_blobs: dict[str, str]) -> image_facts.Known:
        """What verification already knows for this image's commit: its modules' definitions (the ones the
        project's import loads), the bytecode verdicts, the commit's blob of each package file."""
        profile = self.config.profile
        return image_facts.Known(
            self.definitions.for_package(self.mirror, image.sha, profile.package_path, package_blobs, image.patched),
            self.bytecode.known(), package_blobs)

    def learn(self, image, package_blobs: dict[str, str], facts: image_facts.Facts, passed: bool) -> None:
        """Where this image kept its package (the next image's reads start there at once), and from an image
        that passed every check, its bytecode verdicts and what its import loaded."""
        self.layout = image_facts.Layout.of(facts)
        self.layout.write(self.layout_file)
        if not passed:
            return
        profile = self.config.profile
        self.bytecode.learn(facts.probe.get("interpreter"), facts.probe.get("bytecode_verified") or [])
        self.definitions.learn(self.mirror, image.sha, profile.package_path, package_blobs,
                               image_facts.loaded_sources(facts.probe, profile.import_name))

    @cached_property
    def docker(self) -> docker.DockerClient:
        """The engine client; an unreachable engine is one clear error naming the endpoint."""
        self.require_engine()
        # a read may wait as long as the verification's longest silence: a smoke check's deadline
        return docker.from_env(timeout=int(max(60, self.config.verify_timeout, self.config.smoke_timeout + 30)))

    def require_engine(self) -> None:
        """Raise InfraError naming the endpoint when the engine does not answer a new connection
        (a stopping engine keeps serving the connections it has, so a pooled one would lie)."""
        try:
            client = docker.from_env(timeout=15)
            try:
                client.ping()
            finally:
                client.close()
        except (docker.errors.DockerException, requests.RequestException) as e:
            raise InfraError(f"the Docker engine at {engine_endpoint()} does not answer: {e}") from e

    def engine_alive(self) -> bool:
        try:
            self.require_engine()
            return True
        except InfraError:
            return False

    def remove_image(self, ref: str) -> None:
        """Remove a local image tag; an image already gone or an engine gone is not an error."""
        try:
            self.docker.images.remove(ref, force=True)
        except (docker.errors.DockerException, requests.RequestException, InfraError):
            pass

    @cached_property
    def disk(self) -> disk.EngineDisk:
        return disk.EngineDisk(self.docker, self.config.min_free, self.config.cache_budget)

    @cached_property
    def driver(self) -> build.Driver:
        return build.detect_driver(self.config.docker_client, self.config.build_driver)

    @cached_property
    def mirror(self) -> source.Mirror:
        mirror = source.Mirror(self.config.repo_url, self.config.cache_dir, self.config.session_id,
                               self.config.git_timeout)
        mirror.ensure()
        return mirror

    @cached_property
    def credentials(self) -> publish.Credentials | None:
        return publish.resolve_credentials(self.config.image.registry)

    @cached_property
    def registry(self) -> publish.RegistryAPI:
        return publish.RegistryAPI(self.config.image.registry, self.credentials)

    def pushed_tags(self) -> set[str]:
        """Every tag of the image repository, from the registry's paginated tag list."""
        return set(self.registry.tags(self.config.image.repository))


@functools.cache
def harness_version() -> str:
    """The harness's own commit (its checkout's HEAD), `unknown` outside a git checkout."""
    try:
        done = source.run_git(["-C", str(Path(__file__).resolve().parent.parent), "rev-parse", "HEAD"], 10,
                              "the harness's own version")
    except (OSError, InfraError):
        return "unknown"
    return done.text.strip() if done.status == 0 else "unknown"


def engine_endpoint() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
