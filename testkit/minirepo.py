"""A miniature SGLang made on disk: a real git repository with history and a real-style Dockerfile.

Its Dockerfile follows the shape of the real ones in ../shared/data/sglang/: it clones
`https://github.com/sgl-project/sglang.git` with `--depth=1` inside a longer `&&` chain,
`cd`s into the clone and installs `python[all]` editable. Nothing is downloaded: the base
image comes from the FROM map, and pip installs with no dependencies and no build isolation.
"""
from __future__ import annotations

import json
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path

PYPROJECT = """\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "sglang"
version = "0.0.1"
requires-python = ">=3.8"

[project.optional-dependencies]
all = []

[tool.setuptools.packages.find]
include = ["sglang*"]
"""

DOCKERFILE = """\
ARG CUDA_VERSION=12.4.1

FROM nvcr.io/nvidia/tritonserver:24.04-py3-min

ARG BUILD_TYPE=all
ENV DEBIAN_FRONTEND=noninteractive

RUN echo "dependencies of the image, slow in real life" > /opt/deps.txt{deps_step}

WORKDIR /sgl-workspace

RUN python3 -m pip --version \\
    && git clone --depth=1 https://github.com/sgl-project/sglang.git \\
    && cd sglang \\
    && python3 -m pip install --no-deps --no-build-isolation --break-system-packages -e "python[${{BUILD_TYPE}}]"

ENV DEBIAN_FRONTEND=interactive
"""


def dockerfile(deps_step: str = "") -> str:
    return DOCKERFILE.format(deps_step=f" \\\n    && {deps_step}" if deps_step else "")


# A local "index" made inside the image: sdists of `slowdep` 1.0 and 2.0 whose builds take
# SLOW seconds and whose installs carry MB megabytes of data, so that installing the project's
# dependencies is an expensive step, offline. The folder carries the repository's salt, so pip's
# wheel cache has never seen these sdists either.
WHEELHOUSE_STEP = r"""ARG SLOW={slow}
ARG MB={mb}
RUN for v in 1.0 2.0; do \
      mkdir -p /tmp/sd/slowdep-$v && cd /tmp/sd/slowdep-$v \
      && printf 'import os, time\nfrom setuptools import setup\ntime.sleep(%s)\n' "$SLOW" > setup.py \
      && printf 'open("slowdep.bin", "wb").write(os.urandom(%s << 20))\n' "$MB" >> setup.py \
      && printf 'setup(name="slowdep", version="%s", py_modules=["slowdep"], ' "$v" >> setup.py \
      && printf 'data_files=[("share/slowdep", ["slowdep.bin"])])\n' >> setup.py \
      && printf 'VERSION = "%s"\n' "$v" > slowdep.py \
      && mkdir -p /opt/wheelhouse/{salt} && tar -C /tmp/sd -czf /opt/wheelhouse/{salt}/slowdep-$v.tar.gz slowdep-$v \
      || exit 1; \
    done && rm -rf /tmp/sd
"""

DEPS_DOCKERFILE = """\
FROM nvcr.io/nvidia/tritonserver:24.04-py3-min
ARG BUILD_TYPE=all
RUN echo "{salt}" > /opt/image-salt
{wheelhouse}WORKDIR /sgl-workspace
RUN python3 -m pip --version \\
    && git clone --depth=1 https://github.com/sgl-project/sglang.git \\
    && cd sglang \\
    && python3 -m pip install --no-build-isolation --break-system-packages --no-index \\
       --find-links /opt/wheelhouse/{salt} \\
       -e "python[${{BUILD_TYPE}}]"
"""


# The old tool's recipe: the commit as a build arg right after FROM, and the proof file written at once.
OLD_RECIPE_IDENTITY = "ARG SGLANG_COMMIT\nRUN echo $SGLANG_COMMIT > /opt/sglang_commit.txt\n"


def deps_dockerfile(slow: int = 0, salt: str = "", old_recipe: bool = False, dependency_mb: int = 0) -> str:
    """The salt makes every layer new to BuildKit: a cold build, whatever ran on this machine before."""
    wheelhouse = WHEELHOUSE_STEP.replace("{slow}", str(slow)).replace("{salt}", salt)
    wheelhouse = wheelhouse.replace("{mb}", str(dependency_mb))
    text = DEPS_DOCKERFILE.format(wheelhouse=wheelhouse, salt=salt)
    if old_recipe:
        first_from = text.index("\n") + 1
        text = text[:first_from] + OLD_RECIPE_IDENTITY + text[first_from:]
    return text


def pyproject(dependencies: list[str]) -> str:
    listed = ", ".join(f'"{d}"' for d in dependencies)
    return PYPROJECT.replace('requires-python = ">=3.8"\n', f'requires-python = ">=3.8"\ndependencies = [{listed}]\n')


def make_deps_repo(path: Path, slow: int = 0, extra_modules: int = 0, old_recipe: bool = False,
                   dependency_mb: int = 0, module_size: int = 0) -> MiniRepo:
    """parent and child with the same dependencies (slowdep 1.0), then a third commit moving to 2.0.

    Building a dependency takes `slow` seconds (an sdist whose setup.py sleeps); installing it adds
    `dependency_mb` megabytes of random data to the dependency layer."""
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    repo = MiniRepo(path)
    files = {"README.md": f"mini sglang with dependencies {uuid.uuid4().hex}\n",
             "python/pyproject.toml": pyproject(["slowdep==1.0"]),
             "python/sglang/__init__.py": "", "python/sglang/srt/__init__.py": "",
             "python/sglang/srt/scheduler.py": "BATCH = 8\n",
             "docker/Dockerfile": deps_dockerfile(slow, uuid.uuid4().hex, old_recipe, dependency_mb)}
    files.update({f"python/sglang/extra/mod_{i}.py": module_text(i, module_size) for i in range(extra_modules)})
    repo.commit("parent", files)
    repo.commit("child: same dependencies", {"python/sglang/srt/scheduler.py": "BATCH = 16\n"})
    repo.commit("new dependency version", {"python/pyproject.toml": pyproject(["slowdep==2.0"])})
    return repo


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True,
                          env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                               "GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin:/usr/local/bin",
                               "HOME": str(repo)})
    return done.stdout.strip()


@dataclass
class MiniRepo:
    path: Path
    commits: list[str] = field(default_factory=list)

    def write(self, files: dict[str, str] | dict[str, str | bytes]) -> None:
        for name, content in files.items():
            target = self.path / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                target.write_bytes(content)
            else:
                target.write_text(content)

    def commit(self, message: str, files: dict[str, str] | dict[str, str | bytes]) -> str:
        self.write(files)
        git(self.path, "add", "-A")
        git(self.path, "commit", "-q", "-m", message)
        sha = git(self.path, "rev-parse", "HEAD")
        self.commits.append(sha)
        return sha


def module_text(i: int, size: int) -> str:
    """A module of about `size` bytes (comment lines after its one statement)."""
    text = f"VALUE = {i}\n"
    line = "# " + "x" * 76 + "\n"
    return text + line * max(0, (size - len(text)) // len(line))


def make_repo(path: Path, deps_step: str = "", extra_modules: int = 0, module_size: int = 0) -> MiniRepo:
    """Two commits, parent then child, differing in one line of one module.

    The README carries a random salt so that no two repositories share BuildKit cache entries
    for their source: a test sees its own builds, not an earlier test's.
    """
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "gc.auto", "0")
    repo = MiniRepo(path)
    files = {
        "README.md": f"mini sglang {uuid.uuid4().hex}\n",
        "python/pyproject.toml": PYPROJECT,
        "python/sglang/__init__.py": "from sglang.version import __version__\n",
        "python/sglang/version.py": '__version__ = "0.0.1"\n',
        "python/sglang/srt/__init__.py": "",
        "python/sglang/srt/scheduler.py": "BATCH = 8\n",
        "docker/Dockerfile": dockerfile(deps_step),
    }
    files.update({f"python/sglang/extra/mod_{i}.py": module_text(i, module_size) for i in range(extra_modules)})
    repo.commit("parent: first version", files)
    repo.commit("child: bigger batches", {"python/sglang/srt/scheduler.py": "BATCH = 16\n"})
    return repo


def record(human: str, parent: str, **extra: object) -> str:
    """One dataset line in the SGLang tracking format (Dockerfiles taken from each commit's tree)."""
    data = {"commit_hash": human, "parent_commit": parent, "repo": "sglang", "has_dockerfile": True,
            "dockerfile_path": "docker/Dockerfile", "dockerfile_content": None,
            "parent_dockerfile_path": "docker/Dockerfile", "parent_dockerfile_content": None}
    data.update(extra)
    return json.dumps(data)


VLLM_PYPROJECT = """\
[build-system]
requires = ["setuptools>=61", "setuptools-scm>=7", "wheel"]
build-backend = "setuptools.build_meta"

[project]
name = "vllm"
dynamic = ["version", "dependencies"]
requires-python = ">=3.8"

[tool.setuptools_scm]
write_to = "vllm/_version.py"

[tool.setuptools.dynamic]
dependencies = {file = ["requirements-common.txt"]}

[tool.setuptools.packages.find]
include = ["vllm*"]
"""

# In the style of vLLM's own: a build stage makes a wheel with setuptools-scm reading .git through a
# bind mount, checks the wheel's size, and the final stage installs the wheel; legacy syntax included.
VLLM_DOCKERFILE = """\
ARG CUDA_VERSION=12.4.1
FROM nvidia/cuda:${CUDA_VERSION}-devel-ubuntu22.04 as build
ENV DEBIAN_FRONTEND noninteractive
WORKDIR /workspace
COPY requirements-common.txt requirements-common.txt
RUN python3 -m pip --version
COPY pyproject.toml pyproject.toml
COPY vllm vllm
RUN --mount=type=bind,source=.git,target=.git \\
    python3 -m pip wheel --no-deps --no-build-isolation --wheel-dir dist .
COPY .buildkite/check-wheel-size.py check-wheel-size.py
RUN python3 check-wheel-size.py dist

FROM nvidia/cuda:${CUDA_VERSION}-base-ubuntu22.04 AS vllm-base
WORKDIR /vllm-workspace
RUN --mount=type=bind,from=build,src=/workspace/dist,target=/vllm-workspace/dist \\
    python3 -m pip install --no-deps --break-system-packages dist/*.whl

FROM vllm-base AS vllm-openai
ENV VLLM_USAGE_SOURCE production-docker-image
ENTRYPOINT ["python3", "-m", "vllm.entrypoints.openai.api_server"]
"""


def make_vllm_repo(path: Path) -> MiniRepo:
    """A miniature vLLM: parent (tagged v0.1.0) and child, differing in one line."""
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    repo = MiniRepo(path)
    repo.commit("parent", {
        "README.md": f"mini vllm {uuid.uuid4().hex}\n",
        "pyproject.toml": VLLM_PYPROJECT,
        "requirements-common.txt": "sparsezoo\noutlines == 0.0.46\n",
        "vllm/__init__.py": "from vllm.engine import BLOCK_SIZE\n",
        "vllm/engine.py": "BLOCK_SIZE = 16\n",
        "vllm/entrypoints/__init__.py": "",
        "vllm/entrypoints/openai/__init__.py": "",
        "vllm/entrypoints/openai/api_server.py": "print('serving')\n",
        "vllm/py.typed": "",
        ".buildkite/check-wheel-size.py": "import sys\nsys.exit('wheel over the upload limit')\n",
        "Dockerfile": VLLM_DOCKERFILE,
    })
    git(path, "tag", "v0.1.0")
    repo.commit("child", {"vllm/engine.py": "BLOCK_SIZE = 32\n"})
    return repo


SUBMODULE_DOCKERFILE = """\
FROM nvcr.io/nvidia/tritonserver:24.04-py3-min
WORKDIR /sgl-workspace
RUN git clone https://github.com/sgl-project/sglang.git \\
    && cd sglang \\
    && git submodule update --init --recursive \\
    && python3 -m pip install --no-deps --no-build-isolation --break-system-packages -e "python"
{read}"""
LFS_POINTER = ("version https://git-lfs.github.com/spec/v1\noid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1"
               "258daaa5e2ca24d17e2393\nsize 12345\n")
READ_SUBMODULES = ("RUN cat /sgl-workspace/sglang/third_party/lib/VERSION "
                   "/sgl-workspace/sglang/third_party/lib/deps/inner/inner.txt > /opt/lib.txt\n")


def submodule(repo: Path, url: str, path: str) -> None:
    """`git submodule add` of a local repository (file transport allowed for this command only)."""
    git(repo, "-c", "protocol.file.allow=always", "submodule", "add", "-q", url, path)


def make_submodule_repos(root: Path) -> tuple[MiniRepo, dict[str, str]]:
    """A mini SGLang recording `third_party/lib` (relative URL `../lib`), which records `deps/inner` (`../inner`):
    each a real repository beside it. Commits: `recorded` (the Dockerfile reads both submodules' files;
    lib moves on afterwards, so its tip is not what was recorded), then `unreachable` (`.gitmodules` points
    lib at a repository that does not exist; the Dockerfile no longer reads it)."""
    inner, lib = MiniRepo(root / "inner"), MiniRepo(root / "lib")
    for sub in (inner, lib):
        sub.path.mkdir(parents=True)
        git(sub.path, "init", "-q", "-b", "main")
    inner.commit("inner v1", {"inner.txt": "inner v1\n"})
    lib.commit("lib v1", {"VERSION": "lib v1\n"})
    submodule(lib.path, "../inner", "deps/inner")
    git(lib.path, "commit", "-q", "-m", "lib records inner")
    repo = make_repo(root / "sglang")
    submodule(repo.path, "../lib", "third_party/lib")
    shas = {"recorded": repo.commit("third_party/lib recorded", {
        "docker/Dockerfile": SUBMODULE_DOCKERFILE.format(read=READ_SUBMODULES), "models/weights.bin": LFS_POINTER})}
    lib.commit("lib v2, never recorded", {"VERSION": "lib v2\n"})
    gitmodules = (repo.path / ".gitmodules").read_text().replace("../lib", "../missing-lib")
    shas["unreachable"] = repo.commit("lib moved", {".gitmodules": gitmodules,
                                                   "docker/Dockerfile": SUBMODULE_DOCKERFILE.format(read="")})
    return repo, shas
