"""End to end: what used to fail only on a GPU machine fails at build time, each with its category.

A miniature SGLang with a real HTTP server and a compiled kernel package (testkit/smokerepo.py):
the genuine commit, and one commit per breakage. One run builds them all, runs the deep imports
and the server's `--help` in the verification container, and with --serve-check starts each
image's server (no GPU asked), waits for /health and sends one tiny request. Only the genuine
image is pushed; every server container is removed."""
from __future__ import annotations

import pytest
import requests

from helpers.build.disk import COMMIT_LABEL
from helpers.publish.registry import MANIFEST_TYPES
from testkit.minirepo import record
from testkit.smokerepo import make_smoke_repo

pytestmark = pytest.mark.docker


def pushed(runner, sha: str) -> bool:
    answer = requests.head(f"http://{runner.registry}/v2/test/{runner.image_name}/manifests/{sha}",
                           headers={"Accept": MANIFEST_TYPES}, timeout=10)
    return answer.status_code == 200


def test_each_breakage_gets_its_category_and_the_genuine_image_passes_all(harness_runner, tmp_path, docker_client):
    repo, shas = make_smoke_repo(tmp_path / "sglang")
    genuine = shas["success"]
    harness_runner.write_dataset(*(record(sha, genuine) for category, sha in shas.items() if category != "success"))
    run = harness_runner.run(repo.path, "--serve-check", "--serve-timeout=15", "--smoke-timeout=60", "-n", "2")
    assert run.returncode == 1, run.output
    assert run.statuses == {sha: category for category, sha in shas.items()}, run.output
    outcomes = run.outcomes

    props = outcomes[genuine].properties
    assert props["check.verify_smoke"].startswith(
        "ok   verify_smoke: 6 passed in ") and "python3 -m sglang.launch_server --help" in props["check.verify_smoke"]
    assert "import flashinfer: not installed, skipped" in props["check.verify_smoke"]
    assert "import sglang.srt.server: not in the commit's tree, skipped" in props["check.verify_smoke"]
    assert props["serve"].startswith("healthy after ") and "POST /generate -> 200" in props["serve"]
    assert float(props["smoke_seconds"]) > 0

    abi = outcomes[shas["abi_mismatch"]]
    assert abi.properties["reason"].startswith("abi_mismatch: import sglang.launch_server failed: ImportError: ")
    assert "common_ops.so: undefined symbol: _ZN3c106detail23torchInternalAssertFailEPKcS2_jS2_" in abi.message
    smoke = outcomes[shas["verify_smoke"]]
    assert smoke.properties["reason"] == ("verify_smoke: import sglang.launch_server failed: ModuleNotFoundError: "
                                          "No module named 'sglang.srt.managers.io_struct'")
    assert "python3 -m sglang.launch_server --help exited with 1" in smoke.message
    exits = outcomes[shas["server_failed_to_start"]]
    assert exits.properties["reason"].startswith("the server exited (exit status 1) after ")
    assert "RuntimeError: CUDA out of memory. Tried to allocate 20.00 GiB" in exits.message    # its log's tail
    assert exits.properties["check.verify_smoke"].startswith("ok")      # --help works; only serving fails
    never = outcomes[shas["server_timeout"]]
    assert never.properties["reason"] == "/health did not answer 200 within 15 s (last: HTTP 503)"
    assert '"GET /health HTTP/1.1" 503' in never.message
    failing = outcomes[shas["server_request_failed"]]
    assert failing.properties["reason"].startswith("POST /generate answered HTTP 500: ")
    assert "an illegal memory access" in failing.properties["reason"]
    assert '"POST /generate HTTP/1.1" 500' in failing.message

    assert [category for category, sha in shas.items() if pushed(harness_runner, sha)] == ["success"]
    for sha in shas.values():
        assert not docker_client.containers.list(all=True, filters={"label": f"{COMMIT_LABEL}={sha}"})
    for category in ("abi_mismatch", "verify_smoke", "server_failed_to_start", "server_timeout",
                     "server_request_failed"):
        listed = (harness_runner.workdir / "status" / "failed" / f"{category}.txt").read_text().splitlines()
        assert shas[category] in listed


def test_a_server_that_cannot_start_at_all_is_server_failed_to_start(harness_runner, tmp_path, docker_client):
    """A serve command whose program is not in the image: the container never starts, and is removed."""
    repo, shas = make_smoke_repo(tmp_path / "sglang")
    profile = tmp_path / "profile.toml"
    profile.write_text('base = "sglang"\nserve_command = "sglang-serve --port {port}"\nsmoke_commands = []\n')
    harness_runner.write_dataset(record(shas["success"], None))
    run = harness_runner.run(repo.path, f"--profile-file={profile}", "--serve-check", "--serve-timeout=15")
    outcome = run.outcomes[shas["success"]]
    assert outcome.status == "server_failed_to_start", run.output
    assert outcome.properties["reason"].startswith("`sglang-serve --port 30000` did not start: ")
    assert "executable file not found" in outcome.message and not pushed(harness_runner, shas["success"])
    assert not docker_client.containers.list(all=True, filters={"label": f"{COMMIT_LABEL}={shas['success']}"})


def test_with_the_smoke_checks_turned_off_a_broken_entrypoint_is_not_caught(harness_runner, tmp_path):
    """--no-smoke-checks: what only the smoke checks see passes, and the report says they were off."""
    repo, shas = make_smoke_repo(tmp_path / "sglang")
    harness_runner.write_dataset(record(shas["verify_smoke"], None))
    run = harness_runner.run(repo.path, "--no-smoke-checks", "--no-push")
    outcome = run.outcomes[shas["verify_smoke"]]
    assert outcome.status == "success", run.output
    assert outcome.properties["check.verify_smoke"] == ("ok   verify_smoke: none run\n"
                                                        "noted: turned off (--no-smoke-checks)")
