"""Smoke checks in a real verification container: a crash or a hang of one deep import ends only that
import (the others still run; a thread a module leaves running does not hold them up), and a command
is stopped at its deadline with its output's tail."""
from __future__ import annotations

from dataclasses import replace

import docker
import pytest

from helpers.image_facts import Smoke, collect_facts
from helpers.profiles import SGLANG
from helpers.smoke import plan, read_results
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
    assert not docker_client.containers.list(all=True, filters={"label": "harness-test=smoke"})
