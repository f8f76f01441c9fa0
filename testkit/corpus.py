"""Real code for the tests and the benchmark: released source from the package index, committed into local
git repositories laid out like the projects' own, and a base image holding what their imports need.

Everything downloaded is cached (`$HARNESS_TEST_CACHE`, else ~/.cache/commit-image-harness-tests): an sdist
per release, and a wheelhouse per set of requirements, fetched on the host for the base image's Python
(containers here cannot reach the index) and installed offline in the build.
"""
from __future__ import annotations

import hashlib
import io
import os
import platform
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import docker

from testkit.minirepo import MiniRepo, git

CACHE = Path(os.environ.get("HARNESS_TEST_CACHE") or Path.home() / ".cache" / "commit-image-harness-tests")
PIP = "python3 -m pip install --no-deps --no-build-isolation --break-system-packages --disable-pip-version-check"
# What the base image's interpreter (Debian bookworm's CPython 3.11, glibc 2.36) can install.
PYTHON_VERSION = "3.11"
PLATFORMS = ("manylinux2014", "manylinux_2_17", "manylinux_2_27", "manylinux_2_28", "manylinux_2_31", "manylinux_2_34",
             "manylinux_2_35")
# sdist files that a git checkout of the project would not hold (made by `setup.py sdist`).
SDIST_ONLY = ("PKG-INFO",)
SDIST_SETUP_CFG = "[egg_info]\ntag_build = \ntag_date = 0\n"


@dataclass(frozen=True)
class Project:
    """A real project of the corpus: its releases, where its package lives in its repository, and how the
    image installs it."""

    name: str                       # the distribution on the index
    import_name: str
    releases: tuple[str, ...]
    package_dir: str                # where the package lives in the repository ("src/openai", "python/sglang")
    source_subdir: str = ""         # what pip installs ("python"; "" for the root)
    needs: tuple[str, ...] = ()     # what importing it (and building it without isolation) needs
    profile: dict = field(default_factory=dict)     # profile-file fields beyond the layout
    repo_url: str = ""              # the URL its Dockerfile clones (default: a made-up one of its own)
    dockerfile_path: str = "Dockerfile"
    editable: bool = True           # False: the image installs a built wheel (with bytecode, as pip does)
    left_out: tuple[str, ...] = ()  # sdist files the repository does not commit (a build writes them: _version.py)

    @property
    def builtin(self) -> bool:
        """SGLang goes through the built-in profile, as a user would drive it; the others through a profile file."""
        return self.name == "sglang"

    @property
    def url(self) -> str:
        return self.repo_url or f"https://github.com/corpus/{self.name}.git"

    @property
    def profile_fields(self) -> dict:
        fields = {"name": self.name, "repo_url": self.url,
                  "image_name": f"corpus-{self.name}", "distribution": self.name, "import_name": self.import_name,
                  "source_subdir": self.source_subdir, "package_dir": self.package_dir,
                  "default_location": f"/workspace/{self.name}", "proof_file": f"/opt/{self.import_name}_commit.txt",
                  "build_arg": f"{self.import_name.upper()}_COMMIT", "dockerfile_candidates": [self.dockerfile_path],
                  "smoke_imports": [], "smoke_commands": [], "serve_command": "", "editable_required": self.editable}
        return {**fields, **self.profile}

    def profile_toml(self) -> str:
        """The profile file a user would write for it."""
        import json
        return "".join(f"{key} = {json.dumps(value)}\n" for key, value in self.profile_fields.items())


def cached(folder: Path, make) -> Path:
    """A folder made once: built beside its final name, then moved into place (concurrent makers are fine)."""
    if folder.is_dir():
        return folder
    partial = folder.with_name(f".{folder.name}.{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    make(partial)
    try:
        partial.rename(folder)
    except OSError:             # another process got there first
        shutil.rmtree(partial, ignore_errors=True)
    return folder


def pip(*args: str) -> None:
    argv = [sys.executable, "-m", "pip", *args, "--disable-pip-version-check", "-q"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed (the index must be reachable):\n{done.stderr[-3000:]}")


def sdist(name: str, version: str) -> Path:
    """The released sdist of one version, downloaded once."""
    folder = cached(CACHE / "sdists" / f"{name}-{version}",
                    lambda d: pip("download", "--no-deps", "--no-binary", ":all:", f"{name}=={version}", "-d", str(d)))
    return next(folder.iterdir())


def wheelhouse(requirements: tuple[str, ...]) -> Path:
    """Wheels of the requirements and everything they need, for the base image's interpreter."""
    key = hashlib.sha256("\n".join(sorted(requirements)).encode()).hexdigest()[:16]
    platforms = [arg for tag in PLATFORMS for arg in ("--platform", f"{tag}_{platform.machine()}")]
    return cached(CACHE / "wheels" / key, lambda d: pip(
        "download", "--only-binary", ":all:", "--python-version", PYTHON_VERSION, "--implementation", "cp",
        *platforms, "-d", str(d), *requirements))


def base_image(client: docker.DockerClient, base: str, requirements: tuple[str, ...]) -> str:
    """`base` with the requirements installed from a wheelhouse (offline), tagged by what it holds."""
    if not requirements:
        return base
    base_id = client.images.get(base).id
    key = hashlib.sha256(("\n".join(sorted(requirements)) + base_id).encode()).hexdigest()[:12]
    tag = f"harness-corpus:{key}"
    try:
        client.images.get(tag)
        return tag
    except docker.errors.ImageNotFound:
        pass
    wheels = wheelhouse(requirements)
    dockerfile = (f"FROM {base}\nRUN --mount=type=bind,source=.,target=/ctx python3 -m pip install -q "
                  "--no-index --find-links /ctx/wheels --break-system-packages --disable-pip-version-check "
                  "-r /ctx/requirements.txt\n")
    build_context(client, tag, dockerfile, {"wheels": wheels}, {"requirements.txt": "\n".join(requirements) + "\n"})
    return tag


def build_context(client: docker.DockerClient, tag: str, dockerfile: str, folders: dict[str, Path],
                  files: dict[str, str] | None = None) -> None:
    """A BuildKit build (the client with BuildKit built in) of a Dockerfile, folders linked beside it (hard
    links: a wheelhouse of gigabytes is not copied) and small files."""
    import tempfile
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        ctx = Path(tmp)
        (ctx / "Dockerfile").write_text(dockerfile)
        for name, text in (files or {}).items():
            (ctx / name).write_text(text)
        for name, folder in folders.items():
            shutil.copytree(folder, ctx / name, copy_function=os.link)
        client_path = "/usr/bin/docker" if Path("/usr/bin/docker").exists() else "docker"
        done = subprocess.run([client_path, "build", "-q", "-t", tag, str(ctx)], capture_output=True, text=True,
                              env={**os.environ, "DOCKER_BUILDKIT": "1"}, timeout=1800)
        if done.returncode != 0:
            raise RuntimeError(f"building {tag} failed:\n{done.stderr[-3000:]}")


def unpack_sdist(archive: Path, target: Path, left_out: tuple[str, ...] = ()) -> None:
    """The sdist's files under `target`, without the files only an sdist has (nor those `left_out` names)."""
    with tarfile.open(archive) as tar:
        top = tar.getnames()[0].split("/")[0]
        for member in tar.getmembers():
            rel = member.name[len(top) + 1:]
            if not rel or not member.isfile() or rel in SDIST_ONLY + left_out or ".egg-info" in rel.split("/")[0]:
                continue
            data = tar.extractfile(member).read()      # type: ignore[union-attr]
            if rel == "setup.cfg" and data.decode().strip() == SDIST_SETUP_CFG.strip():
                continue
            path = target / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)


def dockerfile(project: Project, editable: bool = True) -> str:
    """How the project's image fetches and installs it: a clone of its repository (the harness pins it)."""
    target = f"/workspace/{project.name}"
    install = f"-e {target}/{project.source_subdir}" if editable else f"{target}/{project.source_subdir}"
    return (f"FROM corpus.local/{project.name}:base\nWORKDIR /workspace\n"
            f"RUN git clone {project.url} {target} && {PIP} {install.rstrip('/')}\n")


def make_corpus_repo(path: Path, project: Project, editable: bool | None = None) -> MiniRepo:
    """A repository with one commit per release (tagged `v<version>`), each the release's source at the
    project's layout, and a Dockerfile at the root."""
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    repo = MiniRepo(path)
    for version in project.releases:
        for child in path.iterdir():
            if child.name != ".git":
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        unpack_sdist(sdist(project.name, version), path / project.source_subdir, project.left_out)
        (path / project.dockerfile_path).parent.mkdir(parents=True, exist_ok=True)
        (path / project.dockerfile_path).write_text(dockerfile(project, project.editable if editable is None
                                                                else editable))
        git(path, "add", "-A")
        git(path, "commit", "-q", "-m", f"{project.name} {version}")
        git(path, "tag", f"v{version}")
        repo.commits.append(git(path, "rev-parse", "HEAD").strip())
    return repo


def harness_for(project: Project, root: Path, base: str, repo: Path, **options):
    """A Harness for the project's repository (its profile file, or the built-in profile of its name), local
    images only, as the tests and the benchmark drive it."""
    import uuid

    from helpers.config import make_config
    from helpers.pipeline import Harness
    root.mkdir(parents=True, exist_ok=True)
    dataset = root / "dataset.txt"
    dataset.write_text("\n")
    values = {"no_push": True, "dataset": str(dataset), "repo_url": str(repo), "cache_dir": str(root / "cache"),
              "log_dir": str(root / "logs"), "status_dir": str(root / "status"),
              "attestation_dir": str(root / "attestations"), "image_name": f"corpus-{uuid.uuid4().hex[:8]}",
              "registry": "corpus.local", "base_image_map": [f"corpus.local/*={base}"], "no_smoke_checks": True,
              **options}
    if not project.builtin:
        profile = root / "profile.toml"
        profile.write_text(project.profile_toml())
        values["profile_file"] = str(profile)
    return Harness(make_config(values, Path(__file__).resolve().parent.parent, uuid.uuid4().hex))


def package_files(archive: Path, project: Project) -> dict[str, bytes]:
    """The release's files under its package directory, by path relative to it (what the image must hold)."""
    with io.BytesIO(archive.read_bytes()) as raw, tarfile.open(fileobj=raw) as tar:
        top = tar.getnames()[0].split("/")[0]
        package = project.package_dir[len(project.source_subdir):].strip("/")
        prefix = f"{top}/{package}/"
        return {m.name[len(prefix):]: tar.extractfile(m).read()      # type: ignore[union-attr]
                for m in tar.getmembers() if m.isfile() and m.name.startswith(prefix)}


HATCH = ("hatchling", "hatch-fancy-pypi-readme", "hatch-vcs", "editables")
# What the projects after SGLang need to build without isolation and to import, in one base image: pydantic's
# own release pins its core, and the OpenAI SDK imports with it.
COMMON = (*HATCH, "mpmath", "pydantic==2.10.4", "pydantic-core==2.27.2", "typing-extensions", "annotated-types",
          "httpx", "anyio", "distro", "jiter", "sniffio", "tqdm")
# The real-code corpus: large pure-Python projects that use dataclasses, enums, namespace packages, attrs or
# pydantic, decorators and re-exports, in every layout (python/<pkg>, flat, src).
SGLANG = Project("sglang", "sglang", ("0.4.3", "0.5.2"), "python/sglang", "python",
                 needs=("numpy", "pybase64", "requests", "ipython", "pydantic", "tqdm", "aiohttp"),
                 repo_url="https://github.com/sgl-project/sglang.git", dockerfile_path="docker/Dockerfile")
SYMPY = Project("sympy", "sympy", ("1.13.2", "1.13.3"), "sympy", needs=COMMON)
NETWORKX = Project("networkx", "networkx", ("3.4.2",), "networkx", needs=COMMON)
PYDANTIC = Project("pydantic", "pydantic", ("2.10.4",), "pydantic", needs=COMMON)
OPENAI = Project("openai", "openai", ("1.60.0",), "src/openai", needs=COMMON)
ATTRS = Project("attrs", "attrs", ("24.3.0",), "src/attrs", needs=COMMON)
# Today's SGLang: versioned by setuptools-scm from git (its own describe program since 0.5.10), its
# `_version.py` written by the build and never committed; built with a current setuptools and setuptools-scm,
# as pip's isolated build would.
SGLANG_SCM = Project("sglang", "sglang", ("0.5.7", "0.5.10.post1"), "python/sglang", "python",
                     needs=(*SGLANG.needs, "setuptools>=75", "setuptools-scm>=8"),
                     repo_url=SGLANG.repo_url, dockerfile_path="docker/Dockerfile", left_out=("sglang/_version.py",))
# requests places other distributions' modules under its own name (requests.packages.chardet is
# charset_normalizer): aliases its own code makes.
REQUESTS = Project("requests", "requests", ("2.32.3",), "src/requests",
                   needs=("urllib3", "idna", "charset-normalizer", "certifi"))
CORPUS = (SGLANG, SYMPY, NETWORKX, PYDANTIC, OPENAI, ATTRS, SGLANG_SCM, REQUESTS)
# A real released package with a C extension its setup.py declares (`markupsafe._speedups`), in a src layout,
# built by the image's compiler (harness-dev) with a current setuptools.
MARKUPSAFE = Project("markupsafe", "markupsafe", ("3.0.2",), "src/markupsafe", needs=("setuptools>=75",))
# A real project installed as a wheel on a Debian base whose own `python3-zipp` (a module file, zipp 1.0.0)
# lies later on the path.
ZIPP = Project("zipp", "zipp", ("3.21.0",), "zipp", editable=False)
