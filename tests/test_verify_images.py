"""Verification against real images: a genuine image of each install kind passes, and each way of
forging one (built for real, FROM a genuine image) fails with its category."""
from __future__ import annotations

import io
import subprocess
import sysconfig
import tarfile
import uuid
from pathlib import Path

import docker
import pytest

from helpers.image_facts import blob_hash, collect_facts
from helpers.profiles import SGLANG
from helpers.verify import Expected, evaluate

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


def build(client: docker.DockerClient, dockerfile: str, files: dict[str, bytes | str] | None = None) -> str:
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        for name, content in {"Dockerfile": dockerfile, **(files or {})}.items():
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    context.seek(0)
    ref = f"verify-images:{uuid.uuid4().hex[:10]}"
    client.images.build(fileobj=context, custom_context=True, tag=ref, rm=True, forcerm=True)
    return ref


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
    assert not docker_client.containers.list(all=True, filters={"label": f"harness-test={label['harness-test']}"})


FORGED_SCHEDULER = "echo 'BATCH = 999' > {pkg}/srt/scheduler.py"
EVIL_COPY = (f"mkdir -p /opt/evil && cp -a {SOURCE}/sglang /opt/evil/ && "
             + FORGED_SCHEDULER.format(pkg="/opt/evil/sglang")
             + f" && printf '__file__ = \"{SOURCE}/sglang/__init__.py\"\\n' >> /opt/evil/sglang/__init__.py")
PATCH_HOOK = """\
def install():
    import sys, importlib.machinery as machinery
    class Patcher:
        def find_spec(self, name, path=None, target=None):
            if name != "sglang.version":
                return None
            spec = machinery.PathFinder.find_spec(name, path)
            run = spec.loader.exec_module
            def exec_module(module):
                run(module)
                module.version = lambda: "patched"
            spec.loader.exec_module = exec_module
            return spec
    sys.meta_path.insert(0, Patcher())
install()
"""
FAKE_FACTS_AT_EXIT = "import atexit\natexit.register(lambda: print('HARNESS-FACTS:{}'))\n"
FAKE_FACTS_AT_START = "print('HARNESS-FACTS:{}', flush=True)\n"
FORGED_VERSION = 'def version():\n    return "forged"\n__version__ = "6.6.6"\n'
UNCHECKED_PYC = (f"printf '{FORGED_VERSION.encode('unicode_escape').decode()}' > /tmp/v.py && "
                 "python3 -c \"import py_compile; "
                 f"py_compile.compile('/tmp/v.py', cfile='{SOURCE}/sglang/__pycache__/version.cpython-311.pyc', "
                 f"dfile='{SOURCE}/sglang/version.py', "
                 "invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)\"")
# Same size as the genuine version.py, same mtime: a timestamp .pyc whose header the import system accepts.
SAME_SIZE = '__version__ = "6.6.6"\n\n\ndef version():\n    return "forged!!!"\n'
TIMESTAMP_PYC = (f"printf '{SAME_SIZE.encode('unicode_escape').decode()}' > /tmp/version.py && "
                 f"touch -r {SOURCE}/sglang/version.py /tmp/version.py && python3 -c \"import py_compile; "
                 f"py_compile.compile('/tmp/version.py', cfile='{SOURCE}/sglang/__pycache__/version.cpython-311.pyc', "
                 f"dfile='{SOURCE}/sglang/version.py')\"")
SOURCELESS = (f"mkdir -p /opt/sl && cp -a {SOURCE}/sglang /opt/sl/ && " + FORGED_SCHEDULER.format(pkg="/opt/sl/sglang")
              + " && python3 -m compileall -q -b /opt/sl/sglang && find /opt/sl -name '*.py' -delete"
              + f" && echo /opt/sl > {SITE}/00-sl.pth")

FORGED_WITH_SITECUSTOMIZE = (f"RUN {FORGED_SCHEDULER.format(pkg=SOURCE + '/sglang')} && "
                             "rm /usr/lib/python3.11/sitecustomize.py\n"
                             "COPY sitecustomize.py /usr/lib/python3.11/sitecustomize.py\n")

# name -> (Dockerfile lines after FROM <genuine>, extra context files, expected category)
FORGERIES: dict[str, tuple[str, dict[str, bytes | str], str]] = {
    "__file__ set to the genuine path, code from PYTHONPATH": (
        f"RUN {EVIL_COPY}\nENV PYTHONPATH=/opt/evil\n", {}, "verify_source_mismatch"),
    "__file__ set to the genuine path, code from a .pth entry": (
        f"RUN {EVIL_COPY} && echo /opt/evil > {SITE}/00-evil.pth\n", {}, "verify_source_mismatch"),
    "sitecustomize prints a fake facts line at exit": (
        FORGED_WITH_SITECUSTOMIZE, {"sitecustomize.py": FAKE_FACTS_AT_EXIT}, "verify_source_mismatch"),
    "sitecustomize prints a fake facts line at start": (
        FORGED_WITH_SITECUSTOMIZE, {"sitecustomize.py": FAKE_FACTS_AT_START}, "verify_source_mismatch"),
    "sitecustomize rewrites the package's files at every start": (
        "RUN rm /usr/lib/python3.11/sitecustomize.py\nCOPY sitecustomize.py /usr/lib/python3.11/sitecustomize.py\n",
        {"sitecustomize.py": "open('/sgl-workspace/sg' + 'lang/python/sg' + 'lang/srt/scheduler.py', 'w')"
                             ".write('BATCH = 999\\n')\n"},          # the package's name never written out
        "verify_source_mismatch"),
    "a .pth import hook patches a function after it loads": (
        "COPY patch.py /opt/patch.py\n"
        f"RUN echo \"import sys; exec(open('/opt/patch.py').read())\" > {SITE}/00-patch.pth\n",
        {"patch.py": PATCH_HOOK}, "verify_source_mismatch"),
    "an unchecked-hash .pyc beside an untouched .py": (f"RUN {UNCHECKED_PYC}\n", {}, "verify_source_mismatch"),
    "a timestamp .pyc with the source's mtime and size": (f"RUN {TIMESTAMP_PYC}\n", {}, "verify_source_mismatch"),
    "a sourceless .pyc package first on the path": (f"RUN {SOURCELESS}\n", {}, "verify_source_mismatch"),
    # the copy is genuine but for its bytecode, and only a start-up hook's sys.path edit leads to it
    "a .pth line puts a copy with forged bytecode first on the path": (
        f"RUN mkdir -p /opt/cp && cp -a {SOURCE}/sglang /opt/cp/ && "
        + UNCHECKED_PYC.replace(f"{SOURCE}/sglang/__pycache__", "/opt/cp/sglang/__pycache__")
        + f" && echo \"import sys; sys.path.insert(0, '/opt/cp')\" > {SITE}/00-cp.pth\n", {},
        "verify_source_mismatch"),
    "an extension module shadows the source module": (
        f"COPY version.so {SOURCE}/sglang/version.cpython-311-x86_64-linux-gnu.so\n", {"version.so": b""},
        "verify_source_mismatch"),
}


assert len(SAME_SIZE) == len(PACKAGE["sglang/version.py"])


def extension_module(tmp: Path) -> bytes:
    """A real CPython extension `version` (defines __version__ = "6.6.6"), compiled here."""
    source = tmp / "version.c"
    source.write_text('#include <Python.h>\nstatic struct PyModuleDef m = {PyModuleDef_HEAD_INIT, "version"};\n'
                      'PyMODINIT_FUNC PyInit_version(void) { PyObject *mod = PyModule_Create(&m);\n'
                      '  PyModule_AddStringConstant(mod, "__version__", "6.6.6"); return mod; }\n')
    target = tmp / "version.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-I", sysconfig.get_paths()["include"], str(source), "-o", str(target)],
                   check=True, capture_output=True)
    return target.read_bytes()


@pytest.mark.parametrize("name", FORGERIES)
def test_each_forgery_fails_with_its_category(name, genuine, docker_client, tmp_path):
    lines, files, expected = FORGERIES[name]
    if "version.so" in files:
        files = {"version.so": extension_module(tmp_path)}
    ref = build(docker_client, f"FROM {genuine}\n{lines}", files)
    try:
        category, checks = verdict(docker_client, ref)
        assert category == expected, checks
    finally:
        docker_client.images.remove(ref, force=True)


def test_the_genuine_image_the_forgeries_start_from_passes(genuine, docker_client):
    assert verdict(docker_client, genuine)[0] == "success"
