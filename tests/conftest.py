"""Fixtures of the harness's own tests: a real engine, a real registry, real git repositories."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

# testcontainers reads these when imported. Its reaper image cannot be pulled offline, and on a
# host that looks like a container it would report the bridge gateway, to which Docker refuses
# plain-HTTP pushes; loopback is what a push accepts without TLS.
os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
os.environ.setdefault("TESTCONTAINERS_CONNECTION_MODE", "docker_host")
os.environ.setdefault("TESTCONTAINERS_HOST_OVERRIDE", "localhost")

import docker  # noqa: E402
import pytest  # noqa: E402

from helpers.report.results import Outcome, read_junit, read_status  # noqa: E402
from testkit.minirepo import MiniRepo, make_repo, record  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
BASE_IMAGE = os.environ.get("HARNESS_TEST_BASE_IMAGE", "harness-base:bookworm")
DEV_IMAGE = os.environ.get("HARNESS_TEST_DEV_IMAGE", "harness-dev:bookworm")     # the base with gcc and headers
BASE_MAP = f"nvcr.io/*={BASE_IMAGE}"


def local_tags(client: docker.DockerClient, part: str) -> list[str]:
    """The engine's tags containing `part`, from one listing (images.list() inspects each image after listing
    them, which fails when another test removes one in between)."""
    return [tag for image in client.api.images() for tag in image.get("RepoTags") or () if part in tag]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that needs the engine is end to end: `-m "not e2e"` leaves it out of the quick loop."""
    for item in items:
        if item.get_closest_marker("docker"):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def docker_client() -> docker.DockerClient:
    try:
        client = docker.from_env()
        client.ping()
    except Exception as e:
        pytest.fail(f"these tests need a Docker engine (run `bash .ci/setup`): {e}", pytrace=False)
    return client


@pytest.fixture(scope="session", autouse=True)
def no_dangling_images_left():
    """Images the tests re-tag (forgeries, rebuilds) leave their predecessors untagged: remove those."""
    yield
    try:
        docker.from_env().images.prune(filters={"dangling": True, "label": "org.opencontainers.image.revision"})
    except Exception:  # noqa: BLE001 - no engine, nothing to clean
        pass


def made_by_setup(client: docker.DockerClient, image: str, what: str) -> str:
    """An image .ci/setup makes; the test fails with what to run when it is missing."""
    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        pytest.fail(f"{what} {image} is missing: run `bash .ci/setup`", pytrace=False)
    return image


@pytest.fixture(scope="session")
def base_image(docker_client: docker.DockerClient) -> str:
    return made_by_setup(docker_client, BASE_IMAGE, "base image")


@pytest.fixture(scope="session")
def dev_image(docker_client: docker.DockerClient) -> str:
    """The base with a C compiler and Python's headers (harness-dev:bookworm, made by .ci/setup)."""
    return made_by_setup(docker_client, DEV_IMAGE, "the base with a compiler and Python's headers")


@pytest.fixture(scope="session")
def registry(docker_client: docker.DockerClient) -> str:
    """A real registry (CNCF distribution) on loopback, started with testcontainers."""
    from testcontainers.community.registry import DockerRegistryContainer
    with DockerRegistryContainer("registry:2") as container:
        yield container.get_registry()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"the field data is not beside this checkout ({SHARED}); it is not part of the repository")
    return SHARED


@pytest.fixture
def mini_repo(tmp_path: Path) -> MiniRepo:
    return make_repo(tmp_path / "sglang")


@dataclass
class HarnessRun:
    """One run of the build suite in a subprocess, exactly as a user starts it."""

    returncode: int
    output: str
    workdir: Path

    @property
    def outcomes(self) -> dict[str, Outcome]:
        junit = self.workdir / "reports" / "junit.xml"
        return {o.sha: o for o in read_junit(junit)} if junit.exists() else {}

    @property
    def statuses(self) -> dict[str, str]:
        return read_status(self.workdir / "status")

    def log(self, sha: str) -> str:
        return (self.workdir / "logs" / f"{sha}.log").read_text()


# The harness is started as a user's shell starts it: SIGINT at its default disposition, whatever this
# process inherited (a background job of a non-interactive shell, or nohup, ignores it, and exec keeps an
# ignored signal ignored). Only then does Ctrl-C reach it as Ctrl-C.
LAUNCHER = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
            "os.execv(sys.executable, [sys.executable, '-m', 'pytest', *sys.argv[1:]])")


class Runner:
    """Runs `pytest` on the build suite with every output in a private folder. Every run is its own process
    group, and whatever a test started is stopped when the test ends (`stop_all`): nothing of a test
    outlives it, whether it passed, failed or timed out."""

    def __init__(self, workdir: Path, registry: str, image_name: str):
        self.workdir, self.registry, self.image_name = workdir, registry, image_name
        workdir.mkdir(parents=True, exist_ok=True)
        self.dataset = workdir / "dataset.jsonl"
        self.blacklist = workdir / "blacklist.txt"
        self.started: list[subprocess.Popen] = []

    def write_dataset(self, *lines: str) -> None:
        self.dataset.write_text("\n".join(lines) + "\n")

    def args(self, repo: Path) -> list[str]:
        w = self.workdir
        return [f"--dataset={self.dataset}", f"--blacklist={self.blacklist}", f"--repo-url={repo}",
                f"--cache-dir={w / 'cache'}", f"--log-dir={w / 'logs'}", f"--status-dir={w / 'status'}",
                f"--attestation-dir={w / 'reports' / 'attestations'}",
                f"--junitxml={w / 'reports' / 'junit.xml'}", f"--registry={self.registry}", "--namespace=test",
                f"--image-name={self.image_name}", f"--base-image-map={BASE_MAP}", "-o", f"cache_dir={w / 'cache'}",
                "-p", "no:randomly"]

    def run(self, repo: Path, *extra: str, env: dict[str, str] | None = None, timeout: float = 600) -> HarnessRun:
        return self.finish(self.start(repo, *extra, env=env), timeout)

    def start(self, repo: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        """The same run, in the background (for tests that interrupt it or watch it)."""
        argv = [sys.executable, "-c", LAUNCHER, *self.args(repo), *extra]
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, **(env or {})}, start_new_session=True)
        self.started.append(proc)
        return proc

    def finish(self, proc: subprocess.Popen, timeout: float = 300) -> HarnessRun:
        """The run's result; one still running at the deadline is stopped, and the deadline is the error."""
        try:
            output, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop(proc)
            raise
        return HarnessRun(proc.returncode, output, self.workdir)

    def stop_all(self) -> None:
        for proc in self.started:
            stop(proc)

    def ref(self, sha: str) -> str:
        return f"{self.registry}/test/{self.image_name}:{sha}"


def stop(proc: subprocess.Popen) -> None:
    """A harness run and everything in its process group (xdist workers, build clients: a build client that
    dies cancels its build in the engine): SIGTERM, as CI cancels a job, then SIGKILL."""
    if proc.poll() is not None:
        return
    for sig, grace in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except OSError:
            return
        try:
            proc.communicate(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture
def harness_runner(tmp_path: Path, registry: str, base_image: str, docker_client: docker.DockerClient):
    """A Runner with its own image name; its runs are stopped and its images removed afterwards."""
    image_name = f"mini-sglang-{uuid.uuid4().hex[:8]}"
    runner = Runner(tmp_path / "run", registry, image_name)
    yield runner
    runner.stop_all()
    for tag in local_tags(docker_client, f"/test/{image_name}:"):      # under any registry the test pointed it at
        docker_client.images.remove(tag, force=True)


@pytest.fixture
def pair_dataset(harness_runner: Runner, mini_repo: MiniRepo) -> tuple[str, str]:
    parent, child = mini_repo.commits
    harness_runner.write_dataset(record(child, parent))
    return parent, child


REGISTRY_USER, REGISTRY_TOKEN = "harness", "tok-" + uuid.uuid4().hex


@pytest.fixture(scope="session")
def auth_registry(docker_client: docker.DockerClient) -> str:
    """A real registry with htpasswd (basic) authentication."""
    from testcontainers.community.registry import DockerRegistryContainer
    with DockerRegistryContainer("registry:2", username=REGISTRY_USER, password=REGISTRY_TOKEN) as container:
        yield container.get_registry()
