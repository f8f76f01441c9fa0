"""Smoke checks in a real verification container: a crash or a hang of one deep import ends only that
import (the others still run; a thread a module leaves running does not hold them up), and a command
is stopped at its deadline with its output's tail."""
from __future__ import annotations

import subprocess
import sysconfig
from dataclasses import replace
from pathlib import Path

import docker
import pytest

from helpers.profiles import SGLANG
from helpers.verify.image_facts import REMOVALS, Smoke, collect_facts
from helpers.verify.smoke import plan, read_results
from testkit.smokerepo import TORCH_SYMBOL
from tests.test_verify_images import SITE, build

pytestmark = pytest.mark.docker

MODULES = {"smk_fine.py": "X = 1\n", "smk_crash.py": "import ctypes\nctypes.string_at(0)\n",
           "smk_hang.py": "import time\nprint('loading weights', flush=True)\ntime.sleep(600)\n",
           "smk_after.py": "import threading, time\nthreading.Thread(target=time.sleep, args=(600,)).start()\n"}
PROFILE = replace(SGLANG, smoke_imports=("smk_fine", "smk_crash", "smk_hang", "smk_after", "smk_absent"),
                  smoke_commands=("sleep 600", "python3 -c 'import sys; print(\"boom\"); sys.exit(3)'", "true",
                                  "no-such-program --help"))


@pytest.fixture(scope="module")
def smoke_image(docker_client: docker.DockerClient, base_image: str):
    ref = build(docker_client, f"FROM {base_image}\nCOPY mods/ {SITE}/\n",
                {f"mods/{name}": text for name, text in MODULES.items()})
    yield ref
    docker_client.images.remove(ref, force=True)


def test_crashes_and_hangs_end_at_their_deadline_and_the_rest_still_run(docker_client, smoke_image):
    smoke_plan = plan(PROFILE, {})
    facts = collect_facts(docker_client, smoke_image, PROFILE, timeout=120, labels={"harness-test": "smoke"},
                          smoke=Smoke(smoke_plan, deadline=3))
    verdict = read_results(smoke_plan, facts.probe.get("smoke"))
    runs = [status for status, _ in facts.probe["smoke"]["import_runs"]]
    assert runs == [-11, "timeout", 0]          # crashed, hung, and the last ended by itself despite the thread
    assert verdict.category == "verify_smoke"
    assert verdict.passed == ["import smk_fine", "import smk_after", "true"]
    assert verdict.notes == ["import smk_absent: not installed, skipped"]
    crash, hang, sleep, exit_3, missing = verdict.failures
    assert crash.startswith("import smk_crash: the interpreter died (killed by SIGSEGV): Fatal Python error: "
                            "Segmentation fault")
    assert hang.startswith("import smk_hang: still running after") and "loading weights" in hang
    assert sleep.startswith("sleep 600: still running after")
    assert exit_3.startswith("python3 -c import sys; print(\"boom\"); sys.exit(3) exited with 3") and "boom" in exit_3
    assert missing.startswith("no-such-program --help: cannot start")
    REMOVALS.wait()                      # removed in the background once they served
    assert not docker_client.containers.list(all=True, filters={"label": "harness-test=smoke"})


def compile_so(folder: Path, name: str, code: str, *link: str) -> bytes:
    source, target = folder / f"{name}.c", folder / f"{name}.so"
    source.write_text(code)
    subprocess.run(["gcc", "-shared", "-fPIC", "-I", sysconfig.get_paths()["include"], str(source), "-o", str(target),
                    *link], check=True, capture_output=True)
    return target.read_bytes()


def kernel(module: str, missing: str = "") -> str:
    """An extension module that calls the driver (cuInit) and, if given, a symbol nothing defines."""
    declared = f"extern void {missing}(void);" if missing else ""
    return (f"#include <Python.h>\nextern int cuInit(unsigned int);\n{declared}\n"
            f"void launch(void) {{ cuInit(0); {missing + '();' if missing else ''} }}\n"
            f'static struct PyModuleDef m = {{PyModuleDef_HEAD_INIT, "{module}"}};\n'
            f"PyMODINIT_FUNC PyInit_{module}(void) {{ return PyModule_Create(&m); }}\n")


@pytest.mark.parametrize("with_stub", [True, False], ids=["toolkit stub", "no stub"])
def test_an_abi_break_behind_the_missing_gpu_driver_is_found_through_the_toolkits_stub(
        with_stub, docker_client, base_image, tmp_path):
    """A kernel package linked against libcuda.so.1 (absent without a GPU): with the CUDA toolkit's stub in
    the image, the linker gets to its symbols and finds the one missing (abi_mismatch); with no stub only
    the missing driver shows, which is noted, not failed."""
    stub = compile_so(tmp_path, "libcuda", "int cuInit(unsigned int flags) { return 34; }\n",
                      "-Wl,-soname,libcuda.so.1")
    (tmp_path / "libcuda.so.1").symlink_to(tmp_path / "libcuda.so")
    files: dict[str, bytes | str] = {
        "mods/kern_fine.so": compile_so(tmp_path, "kern_fine", kernel("kern_fine"), f"-L{tmp_path}", "-lcuda"),
        "mods/kern_broken.so": compile_so(tmp_path, "kern_broken", kernel("kern_broken", TORCH_SYMBOL),
                                          f"-L{tmp_path}", "-lcuda")}
    lines = f"FROM {base_image}\nCOPY mods/ {SITE}/\n"
    if with_stub:
        files["libcuda.so"] = stub
        lines += "COPY libcuda.so /usr/local/cuda/lib64/stubs/libcuda.so\n"
    ref = build(docker_client, lines, files)
    try:
        profile = replace(SGLANG, smoke_imports=("kern_fine", "kern_broken"), smoke_commands=())
        smoke_plan = plan(profile, {})
        facts = collect_facts(docker_client, ref, profile, timeout=120, smoke=Smoke(smoke_plan, deadline=30))
        verdict = read_results(smoke_plan, facts.probe.get("smoke"))
    finally:
        docker_client.images.remove(ref, force=True)
    if with_stub:
        assert verdict.category == "abi_mismatch" and verdict.passed == ["import kern_fine"]
        assert verdict.failures[0].startswith(f"import kern_broken failed: ImportError: {SITE}/kern_broken.so: "
                                              f"undefined symbol: {TORCH_SYMBOL}")
        assert "the CUDA stub /usr/local/cuda/lib64/stubs/libcuda.so stood in for libcuda.so.1" in verdict.describe()
    else:
        assert verdict.failures == [] and verdict.passed == [] and len(verdict.notes) == 2
        assert all("needs a GPU driver, not checked here (ImportError: libcuda.so.1: cannot open shared object file"
                   in note for note in verdict.notes)
