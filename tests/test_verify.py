"""Verification: the checks as pure comparisons, and the probe in a real container."""
import io
import subprocess
import tarfile
import uuid

import pytest

from helpers.errors import VerificationFailed
from helpers.pipeline import require_all
from helpers.profiles import SGLANG
from helpers.verify import Expected, Facts, blob_hash, collect_facts, evaluate, expected_tree

SHA = "a" * 40
SRC = "/sgl-workspace/sglang/python"
TREE = {"__init__.py": blob_hash(b"x = 1\n"), "srt/a.py": blob_hash(b"A\n")}
GOOD = {"proof": SHA + "\n", "direct_url": {"url": f"file://{SRC}", "dir_info": {"editable": True}},
        "source_dir": SRC, "module_file": f"{SRC}/sglang/__init__.py", "hashes": dict(TREE),
        "package_dir": f"{SRC}/sglang"}
WANT = Expected(SHA, SGLANG, TREE)


def results(labels=None, **probe):
    facts = Facts({"org.opencontainers.image.revision": SHA} if labels is None else labels, {**GOOD, **probe})
    return {r.category: r for r in evaluate(facts, WANT)}


def test_a_good_image_passes_every_check():
    assert all(r.passed for r in results().values())


@pytest.mark.parametrize("labels, probe, failing, found", [
    ({}, {}, "verify_label", "(none)"),
    ({"org.opencontainers.image.revision": "b" * 40}, {}, "verify_label", "b" * 40),
    (None, {"proof": "b" * 40}, "verify_proof_file", "b" * 40),
    (None, {"proof": None, "proof_error": "FileNotFoundError: x"}, "verify_proof_file", "FileNotFoundError"),
    (None, {"direct_url": None}, "verify_editable_install", "no PEP 610"),
    (None, {"direct_url": {"url": f"file://{SRC}", "dir_info": {}}}, "verify_editable_install", "editable=False"),
    (None, {"module_file": "/usr/lib/python3/site-packages/sglang/__init__.py"}, "verify_editable_install",
     "site-packages"),
    (None, {"source_dir": "/elsewhere", "module_file": "/elsewhere/sglang/__init__.py"},
     "verify_editable_install", "sglang from /elsewhere"),
    (None, {"import_error": "ModuleNotFoundError: No module named 'torch'"}, "verify_import", "torch"),
    (None, {"hashes": {"__init__.py": TREE["__init__.py"], "srt/a.py": blob_hash(b"B\n")}},
     "verify_source_mismatch", "differ (1): srt/a.py"),
    (None, {"hashes": {"__init__.py": TREE["__init__.py"]}}, "verify_source_mismatch", "missing (1): srt/a.py"),
    (None, {"hashes": {**TREE, "srt/injected.py": "0" * 40}}, "verify_source_mismatch",
     "not in the commit (1): srt/injected.py"),
    (None, {"hashes": None}, "verify_source_mismatch", "no package directory"),
])
def test_each_check_fails_alone_and_names_what_it_found(labels, probe, failing, found):
    checked = results(labels, **probe)
    assert [c for c, r in checked.items() if not r.passed] == [failing]
    assert found in checked[failing].found


def test_files_that_are_not_python_and_not_in_the_commit_are_tolerated():
    assert results(hashes={**TREE, "srt/kernel.so": "1" * 40, "data/x.json": "2" * 40})[
        "verify_source_mismatch"].passed


def test_patched_files_are_compared_with_their_patched_content():
    tree = expected_tree(SGLANG, {"python/sglang/a.py": "1" * 40, "python/pyproject.toml": "2" * 40,
                                  "docs/x.md": "3" * 40}, {"python/sglang/a.py": b"patched\n"})
    assert tree == {"a.py": blob_hash(b"patched\n")}


def test_first_failing_check_names_the_category_and_every_check_is_listed():
    checked = list(results({}, proof="x").values())
    with pytest.raises(VerificationFailed) as failure:
        require_all(checked)
    assert failure.value.category == "verify_label"
    assert failure.value.describe().count("\n") >= 5 and "FAIL verify_proof_file" in failure.value.describe()


@pytest.mark.parametrize("data", [b"", b"hello\n", bytes(range(256)) * 10])
def test_blob_hash_matches_git(data):
    done = subprocess.run(["git", "hash-object", "--stdin"], input=data, capture_output=True, check=True)
    assert blob_hash(data) == done.stdout.decode().strip()


@pytest.mark.docker
def test_probe_reports_the_facts_of_a_real_image_in_one_run(docker_client, base_image):
    """An editable install in a real container, probed with an ENTRYPOINT that must be bypassed."""
    dockerfile = (f"FROM {base_image}\nCOPY src /s\n"
                  "RUN python3 -m pip install --no-deps --no-build-isolation --break-system-packages -e /s/python "
                  f"&& echo {SHA} > /opt/sglang_commit.txt\nWORKDIR /s\nENTRYPOINT [\"false\"]\n")
    files = {"Dockerfile": dockerfile, "src/python/pyproject.toml": "[project]\nname='sglang'\nversion='1'\n",
             "src/python/sglang/__init__.py": "x = 1\n", "src/python/sglang/srt/a.py": "A\n"}
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        for name, text in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(text.encode())
            tar.addfile(info, io.BytesIO(text.encode()))
    ref = f"probe-test:{uuid.uuid4().hex[:8]}"
    context.seek(0)
    docker_client.images.build(fileobj=context, custom_context=True, tag=ref, rm=True,
                               labels={"org.opencontainers.image.revision": SHA})
    try:
        facts = collect_facts(docker_client, ref, SGLANG, timeout=120, labels={"t": "1"})
        checked = {r.category: r for r in evaluate(facts, WANT)}
        assert all(r.passed for r in checked.values()), checked
        assert facts.probe["source_dir"] == "/s/python"
        assert not docker_client.containers.list(all=True, filters={"label": "t=1"})
    finally:
        docker_client.images.remove(ref, force=True)
