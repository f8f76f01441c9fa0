"""Verification's checks as pure comparisons of facts (the real images are in test_verify_images.py)."""
import dataclasses
import json
import subprocess

import pytest

from helpers.profiles import SGLANG, VLLM
from helpers.verify.checks import Expected, evaluate, expected_tree
from helpers.verify.image_facts import Facts, FileFacts, blob_hash, read_probe_output, record_hash
from helpers.verify.probe import MARK

SHA = "a" * 40
SRC = "/sgl-workspace/sglang/python"
PKG = f"{SRC}/sglang"
SITE = "/usr/local/lib/python3.11/dist-packages"
DIST = f"{SITE}/sglang-0.0.1.dist-info"
TREE = {"__init__.py": blob_hash(b"x = 1\n"), "srt/a.py": blob_hash(b"A\n")}
WANT = Expected(SHA, SGLANG, TREE)


def text(value: str) -> FileFacts:
    return FileFacts(blob_hash(value.encode()), record_hash(value.encode()), value)


def files_of(tree: dict[str, str]) -> dict[str, FileFacts]:
    return {p: FileFacts(h, "") for p, h in tree.items()}


def module(origin: str, **extra) -> dict:
    return {"origin": origin, "loader": "importlib.machinery.SourceFileLoader", "source_loader": True,
            "extension": False, "foreign": [], **extra}


def good() -> Facts:
    probe = {"modules": {"sglang": module(f"{PKG}/__init__.py")}, "copies": [PKG], "pycs": {},
             "listing": {SITE: {"__editable__.sglang-0.0.1.pth": "file"}}, "dist_info": DIST}
    files = {"/opt/sglang_commit.txt": text(SHA + "\n"),
             f"{DIST}/direct_url.json": text(json.dumps({"url": f"file://{SRC}", "dir_info": {"editable": True}})),
             f"{SITE}/__editable__.sglang-0.0.1.pth": text(SRC + "\n")}
    return Facts({"org.opencontainers.image.revision": SHA}, probe, {}, files, {PKG: files_of(TREE)})


def changed(facts: Facts, probe: dict | None = None, files: dict | None = None, copies: dict | None = None,
            **fields) -> Facts:
    return dataclasses.replace(facts, probe={**facts.probe, **(probe or {})}, files={**facts.files, **(files or {})},
                               copies={**facts.copies, **(copies or {})}, **fields)


def outcome(facts: Facts, want: Expected = WANT):
    checks = evaluate(facts, want)
    failed = checks.first_failure()
    return ("success" if failed is None else failed.category), checks


def test_a_good_image_passes_every_check():
    category, checks = outcome(good())
    assert category == "success", checks
    assert "PEP 660/610 editable (.pth path)" in checks.editable_install.found


EGG = f"{SITE}/sglang.egg-link"
CASES = {
    "no label": (lambda f: changed(f, labels={}), "verify_label", "(none)"),
    "another commit's label": (lambda f: changed(f, labels={"org.opencontainers.image.revision": "b" * 40}),
                               "verify_label", "b" * 40),
    "another proof": (lambda f: changed(f, files={"/opt/sglang_commit.txt": text("b" * 40)}),
                      "verify_proof_file", "b" * 40),
    "no proof file": (lambda f: changed(f, files={"/opt/sglang_commit.txt": None}), "verify_proof_file",
                      "not in the image"),
    "a file differs": (lambda f: changed(f, copies={PKG: files_of({**TREE, "srt/a.py": blob_hash(b"B\n")})}),
                       "verify_source_mismatch", "differ (1): srt/a.py"),
    "a file is missing": (lambda f: changed(f, copies={PKG: files_of({"__init__.py": TREE["__init__.py"]})}),
                          "verify_source_mismatch", "missing (1): srt/a.py"),
    "an extra module": (lambda f: changed(f, copies={PKG: files_of({**TREE, "srt/injected.py": "0" * 40})}),
                        "verify_source_mismatch", "not in the commit (1): srt/injected.py"),
    "an extension module shadows a source module": (
        lambda f: changed(f, copies={PKG: files_of({**TREE, "srt/a.cpython-311-x86_64-linux-gnu.so": "1" * 40})}),
        "verify_source_mismatch", "loaded instead of source (1): srt/a.cpython-311-x86_64-linux-gnu.so"),
    "a sourceless module": (lambda f: changed(f, copies={PKG: files_of({**TREE, "srt/b.pyc": "1" * 40})}),
                            "verify_source_mismatch", "srt/b.pyc"),
    "bytecode that is not its source's": (
        lambda f: changed(f, probe={"pycs": {PKG: {"srt/__pycache__/a.cpython-311.pyc": "bytecode that is not its "
                                                   "source's (unchecked hash)"}}}),
        "verify_source_mismatch", "unchecked hash"),
    "a second copy on the import path differs": (
        lambda f: changed(f, probe={"copies": [PKG, "/opt/evil/sglang"]},
                          copies={"/opt/evil/sglang": files_of({**TREE, "srt/a.py": "2" * 40})}),
        "verify_source_mismatch", "/opt/evil/sglang: differ (1)"),
    "loaded from a directory no import path leads to": (
        lambda f: changed(f, probe={"modules": {"sglang": module("/opt/evil/sglang/__init__.py")}}),
        "verify_source_mismatch", "which no import path leads to"),
    "a submodule loaded from elsewhere": (
        lambda f: changed(f, probe={"modules": {"sglang": module(f"{PKG}/__init__.py"),
                                                "sglang.srt.a": module("/tmp/a.py")}}),
        "verify_source_mismatch", "sglang.srt.a was loaded from /tmp/a.py"),
    "a loader that is not a source loader": (
        lambda f: changed(f, probe={"modules": {"sglang": module(f"{PKG}/__init__.py", source_loader=False,
                                                                 loader="evil.Loader")}}),
        "verify_source_mismatch", "loaded by evil.Loader"),
    "a function patched after load": (
        lambda f: changed(f, probe={"modules": {"sglang": module(f"{PKG}/__init__.py",
                                                                 foreign=["version (code from <string>)"])}}),
        "verify_source_mismatch", "sglang.version (code from <string>) is not the code"),
    "a start-up hook imported the package": (
        lambda f: changed(f, probe={"preloaded": ["sglang"]}), "verify_source_mismatch",
        "start-up code imported sglang"),
    "a start-up hook replaced the import system": (
        lambda f: changed(f, probe={"startup_changes": ["builtins.__import__ was replaced"]}),
        "verify_source_mismatch", "builtins.__import__ was replaced"),
    "a .pth line names the package": (
        lambda f: changed(f, probe={"listing": {SITE: {"zz.pth": "file"}}},
                          files={f"{SITE}/zz.pth": text("import sglang; sglang.x = 1\n")}),
        "verify_source_mismatch", "zz.pth names sglang"),
    "a copy's file changed while the image ran": (
        lambda f: changed(f, probe={"changed_at_run": ["/tmp/x", f"{PKG}/srt/a.py"]}),
        "verify_source_mismatch", f"start-up code changed {PKG}/srt/a.py while the image ran"),
    "forged facts line": (lambda f: changed(f, tampering="the image printed 1 facts line(s) of its own"),
                          "verify_source_mismatch", "of its own"),
    "import fails": (lambda f: changed(f, probe={"import_errors": {"sglang": "ModuleNotFoundError: torch"}}),
                     "verify_import", "torch"),
    "the package's own import hits an undefined symbol": (
        lambda f: changed(f, probe={"import_errors": {"sglang": "ImportError: /x/_C.so: undefined symbol: _ZN3c10"}}),
        "abi_mismatch", "import sglang failed:\nImportError: /x/_C.so: undefined symbol"),
    "installed, not editable": (
        lambda f: changed(f, files={f"{DIST}/direct_url.json": text('{"url": "file:///x.whl", "archive_info": {}}')},
                          probe={"listing": {}}),
        "verify_editable_install", "not editable (installed from file:///x.whl)"),
    "editable, but the import loads another copy": (
        lambda f: changed(f, probe={"copies": [PKG, f"{SITE}/sglang"],
                                    "modules": {"sglang": module(f"{SITE}/sglang/__init__.py")}},
                          copies={f"{SITE}/sglang": files_of(TREE)}),
        "verify_editable_install", f"loaded from {SITE}/sglang (expected {PKG})"),
    "editable install of another directory": (
        lambda f: changed(f, files={f"{DIST}/direct_url.json": text(json.dumps(
            {"url": "file:///elsewhere", "dir_info": {"editable": True}}))}),
        "verify_editable_install", "not the source's python/"),
}


@pytest.mark.parametrize("name", CASES)
def test_each_way_of_lying_fails_alone_with_its_category_and_says_what_it_found(name):
    mutate, category, found = CASES[name]
    got, checks = outcome(mutate(good()))
    assert got == category, checks
    failing = [c for c in checks if not c.passed]
    assert found in failing[0].found


def test_a_legacy_setup_py_develop_install_is_editable():
    facts = changed(good(), probe={"listing": {SITE: {"sglang.egg-link": "file", "easy-install.pth": "file"}},
                                   "dist_info": f"{SRC}/sglang.egg-info"},
                    files={EGG: text(SRC + "\n.\n"), f"{SITE}/easy-install.pth": text(SRC + "\n")})
    category, checks = outcome(facts)
    assert category == "success", checks
    assert checks.editable_install.found.startswith("setup.py develop (egg-link) of " + SRC)


def test_a_pep_660_finder_is_named_as_such():
    facts = changed(good(), probe={"listing": {SITE: {"__editable__.sglang-0.0.1.pth": "file",
                                                      "__editable___sglang_0_0_1_finder.py": "file"}}},
                    files={f"{SITE}/__editable__.sglang-0.0.1.pth": text(
                        "import __editable___sglang_0_0_1_finder; __editable___sglang_0_0_1_finder.install()\n")})
    category, checks = outcome(facts)
    assert category == "success", checks
    assert "PEP 660 editable (import finder)" in checks.editable_install.found


def test_every_start_up_hook_is_listed_even_when_harmless():
    facts = changed(good(), env={"PYTHONPATH": "/opt/x"},
                    probe={"listing": {SITE: {"distutils-precedence.pth": "file"},
                                       "/usr/lib/python3.11": {"sitecustomize.py": "file"}}})
    category, checks = outcome(facts)
    assert category == "success", checks                 # listed, and none of them reaches for the package
    assert "PYTHONPATH=/opt/x" in checks.source_tree.found
    assert f"{SITE}/distutils-precedence.pth" in checks.source_tree.found
    assert "/usr/lib/python3.11/sitecustomize.py" in checks.source_tree.found


def wheel_facts(record_rows: list[str], installed: dict[str, bytes]) -> tuple[Facts, Expected]:
    site_pkg = f"{SITE}/vllm"
    dist = f"{SITE}/vllm-0.1.0.dist-info"
    tree = {"__init__.py": blob_hash(b"x\n"), "engine.py": blob_hash(b"E\n"), "py.typed": blob_hash(b"")}
    probe = {"modules": {"vllm": module(f"{site_pkg}/__init__.py")}, "copies": [site_pkg], "pycs": {},
             "listing": {}, "dist_info": dist}
    files = {"/opt/vllm_commit.txt": text(SHA), f"{dist}/RECORD": text("\n".join(record_rows)),
             f"{dist}/METADATA": text("Metadata-Version: 2.1\nName: vllm\nVersion: 0.1.1.dev1+gaaaaaaa\n")}
    copies = {site_pkg: {p: FileFacts(blob_hash(b), record_hash(b)) for p, b in installed.items()}}
    facts = Facts({"org.opencontainers.image.revision": SHA}, probe, {}, files, copies)
    return facts, Expected(SHA, VLLM, tree, version="0.1.1.dev1+gaaaaaaa")


def test_a_wheel_copy_is_checked_against_the_commit_and_its_record():
    installed = {"__init__.py": b"x\n", "engine.py": b"E\n", "_version.py": b"v\n", "_C.abi3.so": b"\x7fELF"}
    rows = [f"vllm/{p},{record_hash(b)},{len(b)}" for p, b in installed.items()]
    assert outcome(*wheel_facts(rows, installed))[0] == "success"
    edited = {**installed, "engine.py": b"E2\n"}
    assert "differ from RECORD (1): engine.py" in outcome(*wheel_facts(rows, edited))[1].source_tree.found
    extra = {**installed, "extra.py": b"import os\n"}
    found = outcome(*wheel_facts(rows, extra))[1].source_tree.found
    assert "not in the commit (1): extra.py" in found and "not in RECORD (1): extra.py" in found


def test_the_installed_version_must_be_the_commits():
    installed = {"__init__.py": b"x\n", "engine.py": b"E\n"}
    facts, want = wheel_facts([f"vllm/{p},{record_hash(b)},{len(b)}" for p, b in installed.items()], installed)
    category, checks = outcome(facts, dataclasses.replace(want, version="0.1.0.post1+gaaaaaaa"))
    assert category == "verify_version"
    assert checks.version.actual == "0.1.1.dev1+gaaaaaaa" and checks.version.expected == "0.1.0.post1+gaaaaaaa"


@pytest.mark.parametrize("output, tampered", [
    (f"{MARK}NONCE {{}}\n", ""),
    (f"{MARK}NONCE {{}}\n{MARK}{{\"fake\": 1}}\n", "1 facts line(s) of its own"),
    (f"{MARK}{{\"fake\": 1}}\n{MARK}NONCE {{}}\n", "1 facts line(s) of its own"),
    (f"{MARK}OTHER {{}}\n", "1 facts line(s) of its own"),
])
def test_only_the_nonce_tagged_facts_line_counts(output, tampered):
    probe, tampering = read_probe_output(output, "NONCE", 0, "")
    assert (tampered in tampering) if tampered else (tampering == "" and probe == {})


def test_patched_files_are_compared_with_their_patched_content():
    tree = expected_tree(SGLANG, {"python/sglang/a.py": "1" * 40, "python/pyproject.toml": "2" * 40,
                                  "docs/x.md": "3" * 40}, {"python/sglang/a.py": b"patched\n"})
    assert tree == {"a.py": blob_hash(b"patched\n")}


@pytest.mark.parametrize("data", [b"", b"hello\n", bytes(range(256)) * 10])
def test_blob_hash_matches_git(data):
    done = subprocess.run(["git", "hash-object", "--stdin"], input=data, capture_output=True, check=True)
    assert blob_hash(data) == done.stdout.decode().strip()


SCM7 = "# file generated by setuptools_scm\n# don't change, don't track in version control\n__version__ = version = " \
       "'1.2.3'\n__version_tuple__ = version_tuple = (1, 2, 3)\n"
SCM8 = ("# file generated by setuptools_scm\n# don't change, don't track in version control\nTYPE_CHECKING = False\n"
        "if TYPE_CHECKING:\n    from typing import Tuple, Union\n    VERSION_TUPLE = Tuple[Union[int, str], ...]\n"
        "else:\n    VERSION_TUPLE = object\n\nversion: str\n__version__: str\n__version_tuple__: VERSION_TUPLE\n"
        "version_tuple: VERSION_TUPLE\n\n__version__ = version = '1.2.3'\n"
        "__version_tuple__ = version_tuple = (1, 2, 3)\n")
SCM10 = ("# file generated by vcs-versioning\nfrom __future__ import annotations\n\n__all__ = ['__version__', "
         "'version', '__commit_id__', 'commit_id']\n\nversion: str\n__version__: str\ncommit_id: str | None\n\n"
         "__version__ = version = '1.2.3'\n__version_tuple__ = version_tuple = (1, 2, 3)\n\n"
         "__commit_id__ = commit_id = 'g1234abc'\n")


@pytest.mark.parametrize("path, text, problem", [
    ("_version.py", SCM7, ""),
    ("_version.py", SCM8, ""),
    ("_version.py", SCM10, ""),
    ("_version.py", 'version = "1.2.3"\n__version__ = version\n', ""),            # a template of a project's own
    ("version.txt", "1.2.3\n", ""),
    ("_version.py", SCM10.replace("1.2.3", "9.9.9"), "says version '9.9.9'"),
    ("_version.py", SCM8 + "import os\n", "is code no version template writes: 'import os'"),
    ("_version.py", SCM7 + "def version_info():\n    return 1\n", "is code no version template writes"),
    ("_version.py", SCM7 + "__version__ = __import__('os').getenv('V')\n", "is code no version template writes"),
    ("_version.py", "VERSION_TUPLE = object\n", "assigns no version"),
    ("_version.py", "__version__ = (\n", "does not parse"),
    ("version.txt", "9.9.9\n", "says '9.9.9'"),
])
def test_a_version_file_carries_the_version_and_nothing_else(path, text, problem):
    from helpers.verify.checks import version_file_problems
    from helpers.verify.image_facts import facts_of
    found = version_file_problems(path, facts_of(text.encode(), keep_text=True), "1.2.3", "the build")
    assert (found == []) if not problem else (len(found) == 1 and problem in found[0]), found
    assert version_file_problems(path, None, "1.2.3", "pyproject.toml [tool.setuptools_scm]") == [
        f"{path}: missing (the build writes it: pyproject.toml [tool.setuptools_scm])"]
