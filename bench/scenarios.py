"""The benchmark's scenarios; each returns a Figure measured in this run."""
from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker

from helpers import render
from helpers.build import driver as build
from helpers.config import make_config
from helpers.pipeline import BuiltImage, CommitRun, Harness, Produced
from helpers.render.identity import proof_step
from helpers.report.results import read_junit
from helpers.source.dataset import CommitSpec, DockerfileSource
from helpers.source.mirror import make_context
from helpers.verify import checks as verify
from testkit import corpus
from testkit.minirepo import deps_dockerfile, make_deps_repo, make_repo
from testkit.shapes import make_job_repo
from testkit.smokerepo import make_smoke_repo

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Figure:
    name: str
    measured: str
    ratio: float | None
    target: str
    met: bool | None


class Workspace:
    """Temporary repositories, caches and configurations for one benchmark run."""

    def __init__(self, base_image: str):
        self.root = Path(tempfile.mkdtemp(prefix="harness-bench-"))
        self.base_image = base_image
        self.dataset = self.root / "dataset.jsonl"
        self.dataset.write_text("\n")
        self.namespace = f"run-{uuid.uuid4().hex[:8]}"           # this run's local images are bench.local/<it>/...
        self.local = f"bench.local/{self.namespace}"
        self.destination = ["--registry=bench.local", f"--namespace={self.namespace}"]     # the same, for a CLI run

    def harness(self, repo: Path, **options) -> Harness:
        values = {"no_push": True, "dataset": str(self.dataset), "repo_url": str(repo),
                  "cache_dir": str(self.root / "cache"),
                  "log_dir": str(self.root / "logs"), "status_dir": str(self.root / "status"),
                  "attestation_dir": str(self.root / "attestations"),
                  "image_name": f"bench-{uuid.uuid4().hex[:8]}", "registry": "bench.local",
                  "namespace": self.namespace,
                  "base_image_map": [f"nvcr.io/*={self.base_image}"], **options}
        return Harness(make_config(values, ROOT, uuid.uuid4().hex))

    def cleanup(self, client: docker.DockerClient) -> None:
        """Removes this run's images only (tests and other runs may be using the engine at the same time)."""
        for image in client.api.images():           # one listing: images.list() races with removals
            for tag in image.get("RepoTags") or ():
                if tag.startswith((f"{self.local}/", f"corpus.local/{self.namespace}/")):    # corpus.harness_for
                    client.images.remove(tag, force=True)
        subprocess.run(["rm", "-rf", str(self.root)], check=False)


def commit(harness: Harness, sha: str) -> CommitRun:
    return harness.commit(CommitSpec(sha, ("human",), DockerfileSource(), 1))


def produce(harness: Harness, sha: str) -> BuiltImage:
    return commit(harness, sha).produce()


OLD_SLOW = 20       # seconds the old recipe's pairs spend in their dependency step


def pair(ws: Workspace, slow: int) -> list[Figure]:
    """Second commit of a parent/child pair over the first's cold build, the Dockerfile in the 2025 shape (the
    install in the middle, heavy steps after it); then the old recipe's pair."""
    repo = make_job_repo(ws.root / "pair", commits=2, sets=1, work=slow)
    harness = ws.harness(repo.path)
    parent, child = (produce(harness, sha) for sha in repo.commits[:2])
    ratio = child.build_seconds / parent.build_seconds
    old_repo = make_deps_repo(ws.root / "old-recipe", slow=OLD_SLOW, old_recipe=True)   # ARG after FROM, early proof
    old_harness = ws.harness(old_repo.path)
    old_parent, old_child = (produce(old_harness, sha) for sha in old_repo.commits[:2])
    undone = old_child.build_seconds / old_parent.build_seconds
    old = old_recipe_pair(ws, old_harness, OLD_SLOW)
    return [Figure("pair", f"child {child.build_seconds:.1f} s / parent cold {parent.build_seconds:.1f} s (2025 "
                           f"shape)", ratio, "<= 0.10", ratio <= 0.10),
            Figure("pair, old-recipe Dockerfile", f"child {old_child.build_seconds:.1f} s / parent cold "
                   f"{old_parent.build_seconds:.1f} s (rendered by the harness)", undone, "<= 0.15", undone <= 0.15),
            Figure("pair, old tool", f"child {old[1]:.1f} s / parent cold {old[0]:.1f} s (built as the old tool "
                   "built it)", old[1] / old[0], "(for comparison)", None)]


def job(ws: Workspace, work: int, commits: int = 12, sets: int = 3) -> list[Figure]:
    """The real job's cost: `commits` commits over `sets` dependency sets, the 2025-shaped Dockerfile, built
    cold by `pytest -n 2` as a user runs it (verification included), over that many cold builds (one cold
    build of the same shape, timed alone)."""
    single = make_job_repo(ws.root / "job-single", commits=1, work=work)
    cold = produce(ws.harness(single.path), single.commits[0]).build_seconds or 0.0
    repo = make_job_repo(ws.root / "job", commits=commits, sets=sets, work=work)
    folder = ws.root / "job-run"
    folder.mkdir()
    (folder / "dataset.txt").write_text("\n".join(repo.commits) + "\n")
    argv = [sys.executable, "-m", "pytest", "-n", "2", "-q", "-p", "no:randomly", f"--dataset={folder / 'dataset.txt'}",
            f"--repo-url={repo.path}", f"--cache-dir={folder / 'cache'}", f"--log-dir={folder / 'logs'}",
            f"--status-dir={folder / 'status'}", f"--attestation-dir={folder / 'att'}",
            f"--junitxml={folder / 'junit.xml'}", "--no-push", "--no-smoke-checks", *ws.destination,
            f"--base-image-map=nvcr.io/*={ws.base_image}", "-o", f"cache_dir={folder / 'pytest-cache'}"]
    started = time.monotonic()
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    elapsed = time.monotonic() - started
    outcomes = read_junit(folder / "junit.xml") if (folder / "junit.xml").exists() else []
    if done.returncode != 0 or len(outcomes) != commits:
        raise RuntimeError(f"the job failed:\n{done.stdout[-3000:]}{done.stderr[-2000:]}")
    heavy = sum(bool(o.properties.get("rebuilt_heavy")) for o in outcomes)
    ratio = elapsed / (commits * cold)
    measured = (f"{commits} commits over {sets} dependency sets, -n 2, cold: {elapsed:.0f} s / {commits} x one cold "
                f"build {cold:.1f} s ({heavy} commits report a heavy step run: a set's first two commits start "
                "together, and BuildKit runs their shared steps once for both)")
    return [Figure("job", measured, ratio, "<= 0.35", ratio <= 0.35)]


def second_machine(ws: Workspace, client: docker.DockerClient, work: int) -> list[Figure]:
    """A second engine with an empty build cache (a second machine) builds a commit whose dependency set the
    first engine built and pushed: its build time over the first's cold build."""
    from testkit.faults import HostNetworkEngine
    if os.geteuid() != 0:
        return [Figure("second machine", "skipped: a second engine needs root", None, "<= 0.15", None)]
    repo = make_job_repo(ws.root / "machines", commits=2, sets=1, work=work)
    with local_registry(client, ws.root / "machines-registry") as registry:
        shared = {"no_push": False, "registry": registry, "namespace": "bench", "image_name": "machines"}
        first = ws.harness(repo.path, **shared)
        run = commit(first, repo.commits[0])
        image = run.produce()
        require_pass(run.verify(image))
        run.publish(image)
        engine = HostNetworkEngine(Path(tempfile.mkdtemp(prefix="m2-", dir="/tmp"))).start([ws.base_image])
        previous = os.environ.get("DOCKER_HOST")
        try:
            os.environ["DOCKER_HOST"] = engine.host
            second = ws.harness(repo.path, cache_dir=str(ws.root / "machines-cache-2"), **shared)
            other = produce(second, repo.commits[1])
        finally:
            os.environ.pop("DOCKER_HOST") if previous is None else os.environ.update(DOCKER_HOST=previous)
            engine.stop()
    ratio = (other.build_seconds or 0.0) / (image.build_seconds or 1.0)
    return [Figure("second machine", f"{other.build_seconds:.1f} s on an engine with an empty cache, taking the "
                                     f"layers the first pushed / cold {image.build_seconds:.1f} s", ratio, "<= 0.15",
                   ratio <= 0.15)]


def old_recipe_pair(ws: Workspace, harness: Harness, slow: int) -> tuple[float, float]:
    """The old recipe on the same kind of pair: ARG with the commit right after FROM, the source copied
    in the same RUN that installs every dependency, no package cache."""
    repo = make_deps_repo(ws.root / "old-pair", slow=slow)             # its own salt: cold, like the twin
    mirror = ws.harness(repo.path).mirror
    seconds = []
    for sha in repo.commits[:2]:
        ctx = make_context(mirror, sha, ws.root / "work")
        options = render.RenderOptions(harness.config.profile, sha=sha, base_images=harness.config.base_images,
                                       dependency_layer=False, package_cache=False)
        text = render.render((ctx.context / "docker" / "Dockerfile").read_text(), options).text
        text = text.replace(proof_step(harness.config.profile), "RUN echo $SGLANG_COMMIT > /opt/sglang_commit.txt")
        text = text.replace("ARG SGLANG_COMMIT\n", "")
        first_from = text.index("\n", text.index("FROM ")) + 1
        text = text[:first_from] + "ARG SGLANG_COMMIT\n" + text[first_from:]
        ctx.dockerfile.write_text(text)
        request = build.BuildRequest(ctx.dockerfile, ctx.context, f"{ws.local}/old:{sha}",
                                     {"SGLANG_COMMIT": sha}, {verify.REVISION_LABEL: sha})
        result = build.run_build(build.build_argv(harness.driver, request), ws.root / f"old-{sha}.log", 3600)
        seconds.append(result.seconds)
        ctx.remove()
    return seconds[0], seconds[1]


def verification(ws: Workspace, client: docker.DockerClient, rounds: int = 9) -> list[Figure]:
    """One verification of a real large package over its floor, the container start plus the import it checks
    (`docker run --rm -w / IMAGE python3 -c "import sympy"`), editable and as a wheel with bytecode: sympy
    from the package index (1,517 modules), the child 1.13.3 verified after its parent 1.13.2, as in the
    real job (what the parent taught is reused). Beside each: the cold first verification, and the figure
    over `docker run --rm IMAGE true` that earlier runs reported. Then, on their own, what the built-in
    SGLang profile's smoke checks add."""
    figures, plain_runs = [], []
    for editable in (True, False):
        figure, plain = verify_real_package(ws, client, editable, rounds)
        figures.append(figure)
        plain_runs += plain
    return figures + [smoke_cost(ws, statistics.median(plain_runs), rounds)]


def verify_real_package(ws: Workspace, client: docker.DockerClient, editable: bool,
                        rounds: int) -> tuple[Figure, list[float]]:
    """sympy's pair built one way, the child's verification against its floor; the `true` runs beside."""
    project = dataclasses.replace(corpus.SYMPY, editable=editable)
    kind = "editable" if editable else "wheel with bytecode"
    base = corpus.base_image(client, ws.base_image, project.needs)
    repo = corpus.make_corpus_repo(ws.root / f"sympy-{int(editable)}", project)
    harness = corpus.harness_for(project, ws.root / f"sympy-run-{int(editable)}", base, repo.path,
                                 namespace=ws.namespace)
    parent, child = (produce(harness, sha) for sha in repo.commits)
    cold = timed(lambda: require_pass(commit(harness, parent.sha).verify(parent)))
    require_pass(commit(harness, child.sha).verify(child))
    checks, floor, plain = [], [], []
    for _ in range(rounds):             # interleaved: drift on the machine reaches all three alike
        checks.append(timed(lambda: commit(harness, child.sha).verify(child)))
        floor.append(timed(lambda: docker_run(child.ref, "python3", "-c", "import sympy", workdir="/")))
        plain.append(timed(lambda: docker_run(child.ref, "true")))
    median = statistics.median
    ratio = median(checks) / median(floor)
    return Figure(f"verify, {kind}", f"{median(checks):.2f} s / floor {median(floor):.2f} s (docker run --rm IMAGE "
                  f"python3 -c 'import sympy'; medians of {rounds}); over docker run --rm IMAGE true "
                  f"{median(plain):.2f} s: {median(checks) / median(plain):.2f}; the parent's cold first "
                  f"verification {cold:.2f} s", ratio, "<= 1.3", ratio <= 1.3), plain


def require_pass(checks: verify.Checks) -> verify.Checks:
    if not checks.passed:
        raise RuntimeError(f"the benchmark's genuine image failed: {verify.summary(checks)}")
    return checks


def docker_run(ref: str, *command: str, workdir: str | None = None) -> None:
    options = ["-w", workdir] if workdir else []
    subprocess.run(["docker", "run", "--rm", *options, ref, *command], check=True, capture_output=True)


def smoke_cost(ws: Workspace, plain: float, rounds: int) -> Figure:
    """The same image verified with the built-in profile's smoke checks and without them, alternately."""
    (ws.root / "no-smoke.toml").write_text('base = "sglang"\nsmoke_imports = []\nsmoke_commands = []\n')
    smoke_repo, shas = make_smoke_repo(ws.root / "smoke")
    with_smoke = ws.harness(smoke_repo.path)
    without = ws.harness(smoke_repo.path, profile_file=str(ws.root / "no-smoke.toml"))
    image = produce(with_smoke, shas["success"])
    probe_seconds: list[float] = []
    record = lambda name, value: probe_seconds.append(float(value)) if name == "smoke_seconds" else None  # noqa: E731
    spec = CommitSpec(image.sha, ("human",), DockerfileSource(), 1)
    require_pass(with_smoke.commit(spec, record).verify(image))
    on, off = [], []
    for _ in range(rounds):
        on.append(timed(lambda: with_smoke.commit(spec, record).verify(image)))
        off.append(timed(lambda: without.commit(spec).verify(image)))
    added = statistics.median(on) - statistics.median(off)
    asked = len(with_smoke.config.profile.smoke_imports) + len(with_smoke.config.profile.smoke_commands)
    return Figure("verify, smoke added", f"+{added:.2f} s to {statistics.median(off):.2f} s ({asked} smoke checks "
                                         f"of the sglang profile; the probe's own timing "
                                         f"{statistics.median(probe_seconds):.2f} s); ratio: added / docker run "
                                         f"{plain:.2f} s", added / plain, "reported", None)


def overhead(ws: Workspace, files: int = 5000) -> list[Figure]:
    """The harness's own time per commit (mirror, git archive, fixes, render, logs) on a 5,000-file tree."""
    repo = make_repo(ws.root / "big", extra_modules=files)
    harness = ws.harness(repo.path)
    produce(harness, repo.commits[0])                              # warm the mirror and the layers
    started = time.monotonic()
    image = produce(harness, repo.commits[1])
    wall = time.monotonic() - started
    own = wall - (image.build_seconds or 0)
    return [Figure("overhead", f"{own:.2f} s per commit beyond the engine's {image.build_seconds:.2f} s build "
                               f"({files + 6} files)", None, "<= 1 s", own <= 1.0)]


def timed(action) -> float:
    started = time.monotonic()
    action()
    return time.monotonic() - started


def collection(ws: Workspace, commits: int = 10000) -> list[Figure]:
    """`pytest --collect-only` over a dataset of 10,000 commits."""
    dataset = ws.root / "big-dataset.jsonl"
    with open(dataset, "w") as out:
        for _ in range(commits // 2):
            out.write(json.dumps({"commit_hash": uuid.uuid4().hex + uuid.uuid4().hex[:8],
                                  "parent_commit": uuid.uuid4().hex + uuid.uuid4().hex[:8],
                                  "dockerfile_path": "docker/Dockerfile"}) + "\n")
    argv = [sys.executable, "-m", "pytest", "--collect-only", "-q", f"--dataset={dataset}", "--no-push",
            "-p", "no:cacheprovider"]
    seconds = timed(lambda: subprocess.run(argv, cwd=ROOT, check=True, capture_output=True))
    return [Figure("collect", f"{seconds:.2f} s for {commits:,} commits", None, "<= 3 s", seconds <= 3)]


def skip_pushed(ws: Workspace, client: docker.DockerClient, tags: int = 10000) -> list[Figure]:
    """--skip-pushed's tag listing against a real registry holding 10,000 tags."""
    storage = ws.root / "registry"
    with local_registry(client, storage) as registry:
        seed_tags(client, registry, storage, tags)
        harness = ws.harness(ws.root, registry=registry, namespace="bench", image_name="tags")
        seconds = timed(lambda: harness.pushed_tags())
        found = len(harness.pushed_tags())
    return [Figure("skip-pushed", f"{seconds:.2f} s to list {found:,} tags", None, "<= 5 s", seconds <= 5)]


def seed_tags(client: docker.DockerClient, registry: str, storage: Path, count: int) -> None:
    """One real push, then its tag link copied under `count` names in the registry's storage."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        info = tarfile.TarInfo("bench")
        tar.addfile(info, io.BytesIO(b""))
    ref = f"{registry}/bench/tags"
    client.api.import_image_from_data(data.getvalue(), repository=ref, tag="seed")
    deadline = time.monotonic() + 30
    while True:
        try:
            for _ in client.api.push(ref, tag="seed", stream=True, decode=True):
                pass
            break
        except docker.errors.APIError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    client.images.remove(f"{ref}:seed", force=True)
    tags = storage / "docker/registry/v2/repositories/bench/tags/_manifests/tags"
    link = (tags / "seed" / "current" / "link").read_text()
    for n in range(count):
        folder = tags / f"{n:040x}" / "current"
        folder.mkdir(parents=True)
        (folder / "link").write_text(link)


def parallel(ws: Workspace, commits: int = 8, slow: int = 6) -> list[Figure]:
    """Wall time of `pytest -n 2` over `pytest -n 1` for 8 independent commits (no shared layers)."""
    repo = make_repo(ws.root / "parallel")
    walls = {}
    for workers in ("1", "2"):
        dataset = ws.root / f"parallel-{workers}.jsonl"
        lines = []
        for i in range(commits):
            sha = repo.commit(f"commit {workers}-{i}", {"python/sglang/srt/scheduler.py": f"BATCH = {i}\n"})
            salted = deps_dockerfile(slow, f"{uuid.uuid4().hex}")
            lines.append(json.dumps({"commit_hash": sha, "dockerfile_content": salted}))
        dataset.write_text("\n".join(lines) + "\n")
        argv = [sys.executable, "-m", "pytest", "-n", workers, f"--dataset={dataset}", f"--repo-url={repo.path}",
                "--no-push", f"--cache-dir={ws.root / 'cache'}", f"--log-dir={ws.root / 'plogs'}",
                f"--status-dir={ws.root / 'pstatus'}", f"--junitxml={ws.root / 'pjunit.xml'}",
                f"--base-image-map=nvcr.io/*={ws.base_image}", *ws.destination, "-p", "no:cacheprovider"]
        walls[workers] = timed(lambda argv=argv: subprocess.run(argv, cwd=ROOT, check=True, capture_output=True))
    ratio = walls["2"] / walls["1"]
    return [Figure("parallel", f"-n 2 {walls['2']:.1f} s / -n 1 {walls['1']:.1f} s ({commits} commits)",
                   ratio, "(2 cores: 0.5 at best)", None)]


def build_path(ws: Workspace, client: docker.DockerClient, gigabytes: int = 2) -> list[Figure]:
    """What buildx's docker-container driver with --load adds to a build straight into the engine: the
    image exported as a tarball and loaded again (measured as `docker save | docker load`, a lower
    bound: buildx also compresses the layers it exports), on an image with a 2 GB layer."""
    context = ws.root / "big-layer"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM {ws.base_image}\nARG SALT\n"
                                        f"RUN echo $SALT && head -c {gigabytes}G /dev/urandom > /blob\n")
    ref = f"{ws.local}/big-layer:{uuid.uuid4().hex[:8]}"
    driver = build.detect_driver()
    argv = [driver.client, *(["buildx", "build", "--load"] if driver.kind == "buildx" else ["build"]), "-q",
            "--build-arg", f"SALT={uuid.uuid4().hex}", "-t", ref, str(context)]
    try:
        built = timed(lambda: subprocess.run(argv, check=True, capture_output=True,
                                             env={**os.environ, "DOCKER_BUILDKIT": "1"}))
        copied = timed(lambda: copy_through_tarball(ref))
    finally:
        client.images.remove(ref, force=True)
    ratio = (built + copied) / built
    return [Figure("build path", f"build + export/load {built + copied:.1f} s / build into the engine {built:.1f} s "
                                 f"({gigabytes} GB layer)", ratio, "(decides the workflow's driver)", None)]


def copy_through_tarball(ref: str) -> None:
    save = subprocess.Popen(["docker", "save", ref], stdout=subprocess.PIPE)
    load = subprocess.run(["docker", "load", "-q"], stdin=save.stdout, capture_output=True, check=True)
    save.stdout.close()
    if save.wait() != 0 or not load.stdout:
        raise RuntimeError(f"docker save | docker load of {ref} failed")


def disk(ws: Workspace, client: docker.DockerClient, dependency_mb: int = 320) -> list[Figure]:
    """A parent/child pair sharing a dependency layer of 320 MB, with a package the size of
    `python/sglang` (1,504 files, 15 MB), each commit built, verified, pushed
    and removed from the engine as a run does it: the disk the child's build adds over the parent
    image's size (what its commit leaves: the image is gone, its own layers stay in the build cache;
    the peak, with the image and the build context's copy, is printed beside it), and the bytes the
    registry stores for the child over those it stores for the parent.

    The cache budget is the whole filesystem: the benchmark prunes nothing on this machine."""
    storage = ws.root / "disk-registry"
    with local_registry(client, storage) as registry:
        repo = make_deps_repo(ws.root / "disk", dependency_mb=dependency_mb, extra_modules=1500, module_size=10_000)
        harness = ws.harness(repo.path, no_push=False, registry=registry, namespace="bench", cache_budget="100%")
        stored = [tree_bytes(storage)]
        peak, added, sizes = [], [], []
        for sha in repo.commits[:2]:
            run = commit(harness, sha)
            before = shutil.disk_usage(harness.disk.root).used
            image = run.produce()
            peak.append(shutil.disk_usage(harness.disk.root).used - before)
            sizes.append(client.images.get(image.ref).attrs["Size"])
            checks = run.verify(image)
            image = run.publish(image)
            harness.tidy(Produced(image, checks), run.record)
            added.append(shutil.disk_usage(harness.disk.root).used - before)
            stored.append(tree_bytes(storage))
    on_disk = added[1] / sizes[0]
    in_registry = (stored[2] - stored[1]) / (stored[1] - stored[0])
    mb = 2 ** 20
    return [Figure("disk, child", f"child adds {added[1] / mb:.1f} MB (at its peak {peak[1] / mb:.1f} MB) / "
                                  f"parent image {sizes[0] / mb:.0f} MB ({dependency_mb} MB dependency layer)",
                   on_disk, "<= 0.05", on_disk <= 0.05),
            Figure("registry, child", f"child {(stored[2] - stored[1]) / mb:.1f} MB / parent "
                                      f"{(stored[1] - stored[0]) / mb:.0f} MB stored", in_registry, "<= 0.05",
                   in_registry <= 0.05)]


@contextlib.contextmanager
def local_registry(client: docker.DockerClient, storage: Path) -> Iterator[str]:
    """A registry:2 on loopback whose storage is a folder here (so its bytes can be counted); its address."""
    storage.mkdir()
    container = client.containers.run("registry:2", detach=True, remove=True, ports={"5000/tcp": ("127.0.0.1", None)},
                                      volumes={str(storage): {"bind": "/var/lib/registry", "mode": "rw"}})
    try:
        container.reload()
        yield f"127.0.0.1:{container.attrs['NetworkSettings']['Ports']['5000/tcp'][0]['HostPort']}"
    finally:
        container.stop()


def tree_bytes(folder: Path) -> int:
    """Bytes the files under a folder take on disk (what a registry's storage holds)."""
    return sum(p.stat().st_blocks * 512 for p in folder.rglob("*") if p.is_file())
