"""The real-runtime figure: today's SGLang on its real runtime from the package index, verified with the smoke
checks over its floor (`python -m bench --only real-runtime`; minutes and about 5 GB of wheels the first time,
both cached: the wheelhouse in the tests' download cache, the base image in the engine).

SGLang 0.5.10.post1 (its sdist, laid out as the repository lays it out, `_version.py` not committed) and a
child commit of it, installed editable on a Debian base holding every runtime dependency the release names
(torch, flashinfer, sglang-kernel, transformers, xgrammar, ...), through the built-in `sglang` profile with its
smoke checks on. The CUDA toolkit's driver stub (`libcuda.so`) is copied in from `$HARNESS_CUDA_STUB` or the
host's toolkit when either has one; without it, the smoke checks say that the GPU kernels could not load.
"""
from __future__ import annotations

import dataclasses
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import docker

from bench.scenarios import Figure
from helpers.pipeline import BuiltImage, CommitRun, Harness
from helpers.profiles import SGLANG
from helpers.source.dataset import CommitSpec, DockerfileSource
from helpers.verify.checks import Checks
from testkit import corpus
from testkit.forgeries import build, extension_module

try:
    import tomllib
except ModuleNotFoundError:                      # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

RELEASE = "0.5.10.post1"
# A current setuptools and setuptools-scm for the editable build, as pip's isolated build would have.
BUILD_NEEDS = ("setuptools>=75", "setuptools-scm>=8")
STUBS = (os.environ.get("HARNESS_CUDA_STUB", ""), "/usr/local/cuda/lib64/stubs/libcuda.so",
         "/usr/local/cuda/targets/x86_64-linux/lib/stubs/libcuda.so")
STUB_IN_IMAGE = "/usr/local/cuda/lib64/stubs/libcuda.so"


def requirements() -> tuple[str, ...]:
    """The release's own `[project] dependencies`, and what its editable build needs."""
    with tempfile.TemporaryDirectory() as folder:
        corpus.unpack_sdist(corpus.sdist("sglang", RELEASE), Path(folder))
        data = tomllib.loads((Path(folder) / "pyproject.toml").read_text())
    return (*data["project"]["dependencies"], *BUILD_NEEDS)


def cuda_stub() -> Path | None:
    return next((Path(p) for p in STUBS if p and Path(p).is_file()), None)


def runtime_base(client: docker.DockerClient, base: str) -> str:
    """The base with the release's runtime (offline, from the cached wheelhouse), libnuma (which the real
    Dockerfiles apt-install) and, where one is at hand, the CUDA driver stub a devel base would hold."""
    with_wheels = corpus.base_image(client, base, requirements())
    stub = cuda_stub()
    tag = f"{with_wheels}-runtime{'-stub' if stub else ''}"
    try:
        client.images.get(tag)
        return tag
    except docker.errors.ImageNotFound:
        pass
    debs = corpus.cached(corpus.CACHE / "debs" / "libnuma1", lambda d: subprocess.run(
        ["apt-get", "download", "libnuma1"], cwd=d, check=True, capture_output=True))
    files: dict[str, bytes | str] = {"libnuma1.deb": next(debs.glob("*.deb")).read_bytes()}
    lines = ["COPY libnuma1.deb /tmp/", "RUN dpkg -i /tmp/libnuma1.deb && rm /tmp/libnuma1.deb"]
    if stub:
        files["libcuda.so"] = stub.read_bytes()
        lines.append(f"COPY libcuda.so {STUB_IN_IMAGE}")
    built = build(client, f"FROM {with_wheels}\n" + "\n".join(lines) + "\n", files, repository="harness-corpus")
    client.images.get(built).tag(tag)
    client.images.remove(built)
    return tag


def real_runtime(root: Path, client: docker.DockerClient, base: str, namespace: str, rounds: int) -> list[Figure]:
    """Two genuine images (the release and a child commit) pass with the smoke checks on; a forged `_version.py`
    and an undeclared compiled module fail naming the file; then one verification over its floor."""
    runtime = runtime_base(client, base)
    project = dataclasses.replace(corpus.SGLANG_SCM, releases=(RELEASE,))
    repo = corpus.make_corpus_repo(root / "repo", project)
    repo.commit("a pull request", {"python/sglang/srt/bench_note.py": "NOTE = 'a change of the child'\n"})
    harness = corpus.harness_for(project, root / "run", runtime, repo.path, namespace=namespace,
                                 no_smoke_checks=False)
    images = [commit(harness, sha).produce() for sha in repo.commits]
    first = [timed_checks(harness, image) for image in images]
    for checks, _ in first:
        if not checks.passed:
            raise RuntimeError("a genuine image of SGLang on its real runtime failed:\n" +
                               "\n".join(c.line() for c in checks))
    child = images[-1]
    forged = forgeries(harness, client, child, root)
    verify_s, floor_s = [], []
    imports, command = SGLANG.smoke_imports, SGLANG.smoke_commands[0].split()
    for _ in range(rounds):
        verify_s.append(timed_checks(harness, child)[1])
        floor_s.append(floor(child.ref, imports, command))
    median = statistics.median
    ratio = median(verify_s) / median(floor_s)
    smoke = first[-1][0].smoke
    stub = "the CUDA stub stood in for the driver" if cuda_stub() else \
        "no CUDA stub at hand (set HARNESS_CUDA_STUB to a toolkit's lib64/stubs/libcuda.so): the smoke checks ran " \
        "without it"
    return [Figure("real runtime", f"{median(verify_s):.2f} s / floor {median(floor_s):.2f} s (docker run of the "
                     f"profile's {len(imports)} imports, then of `{' '.join(command)}`; medians of {rounds}); "
                     f"2 of 2 genuine images pass at version {child.scm_version}; {forged}; {stub}; smoke: "
                     f"{smoke.found[:300]}", ratio, "<= 1.1", ratio <= 1.1)]


def commit(harness: Harness, sha: str) -> CommitRun:
    return harness.commit(CommitSpec(sha, ("human",), DockerfileSource(), 1))


def timed_checks(harness: Harness, image: BuiltImage) -> tuple[Checks, float]:
    started = time.monotonic()
    checks = commit(harness, image.sha).verify(image)
    return checks, time.monotonic() - started


def forgeries(harness: Harness, client: docker.DockerClient, genuine: BuiltImage, root: Path) -> str:
    """A `_version.py` of another version and an undeclared compiled module, each built FROM the genuine image:
    both must fail `verify_source_mismatch` naming the file."""
    package = "/workspace/sglang/python/sglang"
    cases = {"_version.py": f"RUN sed -i 's/{RELEASE}/9.9.9/g' {package}/_version.py",
             "_planted.cpython-311-x86_64-linux-gnu.so": f"COPY planted.so {package}/srt/"
                                                         "_planted.cpython-311-x86_64-linux-gnu.so"}
    files: dict[str, bytes | str] = {"planted.so": extension_module(root, "_planted")}
    for name, line in cases.items():
        ref = build(client, f"FROM {genuine.ref}\n{line}\n", files, repository="corpus.local/forged")
        try:
            checks = commit(harness, genuine.sha).verify(dataclasses.replace(genuine, ref=ref, local=False))
            failed = checks.first_failure()
            if failed is None or failed.category != "verify_source_mismatch" or name not in failed.found:
                raise RuntimeError(f"the forged {name} was not caught:\n" + "\n".join(c.line() for c in checks))
        finally:
            client.images.remove(ref, force=True)
    return "a forged _version.py and an undeclared .so each fail verify_source_mismatch naming the file"


def floor(ref: str, imports: tuple[str, ...], command: list[str]) -> float:
    """The same imports (each tried, as the smoke checks try each) and the same command, by `docker run`."""
    script = "import importlib\nfor name in %r:\n    try:\n        importlib.import_module(name)\n" \
             "    except Exception:\n        pass\n" % (list(imports),)
    started = time.monotonic()
    subprocess.run(["docker", "run", "--rm", "-w", "/", ref, "python3", "-c", script], check=True,
                   capture_output=True)
    subprocess.run(["docker", "run", "--rm", "-w", "/", ref, *command], check=True, capture_output=True)
    return time.monotonic() - started
