"""Verification against real images: a genuine image of each install kind passes, and each way of
forging one (built for real, FROM a genuine image) fails with its category."""
from __future__ import annotations

import uuid

import docker
import pytest

from helpers.profiles import SGLANG
from helpers.verify.checks import Expected, evaluate
from helpers.verify.image_facts import REMOVALS, blob_hash, collect_facts
from testkit.forgeries import Target, build, extension_module, forgeries

pytestmark = pytest.mark.docker

SHA = "c" * 40
SOURCE = "/sgl-workspace/sglang/python"
SITE = "/usr/local/lib/python3.11/dist-packages"
PACKAGE = {
    "sglang/__init__.py": "from sglang.version import __version__, version\n",
    "sglang/version.py": '__version__ = "0.0.1"\n\n\ndef version():\n    return __version__\n',
    "sglang/srt/__init__.py": "",
    "sglang/srt/scheduler.py": "BATCH = 8\n",
}
PYPROJECT = ('[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = "setuptools.build_meta"\n'
             '[project]\nname = "sglang"\nversion = "0.0.1"\n[tool.setuptools.packages.find]\ninclude = ["sglang*"]\n')
SETUP_PY = 'from setuptools import setup\nsetup(name="sglang", version="0.0.1", packages=["sglang", "sglang.srt"])\n'
PIP = "python3 -m pip install --no-deps --no-build-isolation --break-system-packages --disable-pip-version-check"
TREE = {path[len("sglang/"):]: blob_hash(text.encode()) for path, text in PACKAGE.items()}
WANT = Expected(SHA, SGLANG, TREE)


def genuine_dockerfile(base: str, install: str) -> str:
    return (f"FROM {base}\nCOPY src /sgl-workspace/sglang\nRUN {install}\n"
            f"RUN echo {SHA} > /opt/sglang_commit.txt\nLABEL org.opencontainers.image.revision={SHA}\n"
            "WORKDIR /sgl-workspace\nENTRYPOINT [\"false\"]\n")


def source_files(setup: str) -> dict[str, bytes | str]:
    files: dict[str, bytes | str] = {f"src/python/{p}": t for p, t in PACKAGE.items()}
    files["src/python/" + ("setup.py" if setup == "setup.py" else "pyproject.toml")] = \
        SETUP_PY if setup == "setup.py" else PYPROJECT
    return files


KINDS = {
    "PEP 660 finder": ("pyproject", f"{PIP} -e {SOURCE}", "PEP 660 editable (import finder)"),
    "PEP 660 .pth path": ("pyproject", f"{PIP} --config-settings editable_mode=compat -e {SOURCE}",
                          "PEP 660/610 editable (.pth path)"),
    "setup.py develop": ("setup.py", f"{PIP} -e {SOURCE}", "setup.py develop (egg-link)"),
    "PEP 660 in a virtual environment": (
        "pyproject", "python3 -m venv --system-site-packages /opt/venv && /opt/venv/bin/python -m pip install "
                     f"--no-deps --no-build-isolation --disable-pip-version-check -e {SOURCE}\n"
                     "ENV PATH=/opt/venv/bin:$PATH", "PEP 660 editable (import finder)"),
}


@pytest.fixture(scope="module")
def images(docker_client, base_image):
    made: dict[str, str] = {}
    yield lambda key, make: made[key] if key in made else made.setdefault(key, make())
    for ref in made.values():
        docker_client.images.remove(ref, force=True)


@pytest.fixture(scope="module")
def genuine(images, docker_client, base_image) -> str:
    setup, install, _ = KINDS["PEP 660 finder"]
    return images("genuine", lambda: build(docker_client, genuine_dockerfile(base_image, install), source_files(setup)))


def verdict(client: docker.DockerClient, ref: str, labels: dict[str, str] | None = None):
    facts = collect_facts(client, ref, SGLANG, timeout=120, labels=labels or {})
    checks = evaluate(facts, WANT)
    failed = checks.first_failure()
    return ("success" if failed is None else failed.category), checks


@pytest.mark.parametrize("kind", KINDS)
def test_a_genuine_image_of_each_install_kind_passes_and_says_which_kind(kind, images, docker_client, base_image):
    setup, install, described = KINDS[kind]
    ref = images(kind, lambda: build(docker_client, genuine_dockerfile(base_image, install), source_files(setup)))
    label = {"harness-test": uuid.uuid4().hex}
    category, checks = verdict(docker_client, ref, label)
    assert category == "success", checks
    assert checks.editable_install.found.startswith(f"{described} of {SOURCE}"), checks.editable_install
    REMOVALS.wait()                      # removed in the background once they served
    assert not docker_client.containers.list(all=True, filters={"label": f"harness-test={label['harness-test']}"})


MINI = Target(SOURCE, "sglang", "version.py", PACKAGE["sglang/version.py"], "srt/scheduler.py", "version",
              "sglang.version")
FORGERIES = forgeries(MINI)


@pytest.mark.parametrize("name", FORGERIES)
def test_each_forgery_fails_with_its_category(name, genuine, docker_client, tmp_path):
    lines, files, expected = FORGERIES[name]
    if "forged.so" in files:
        files = {"forged.so": extension_module(tmp_path, "version")}
    ref = build(docker_client, f"FROM {genuine}\n{lines}", files)
    try:
        category, checks = verdict(docker_client, ref)
        assert category == expected, checks
    finally:
        docker_client.images.remove(ref, force=True)


def test_the_genuine_image_the_forgeries_start_from_passes(genuine, docker_client):
    assert verdict(docker_client, genuine)[0] == "success"
