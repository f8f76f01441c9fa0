"""Smoke checks' pure logic: what a commit's tree rules in or out, and how each result reads (ABI errors,
hangs, a missing GPU driver); the serve check's command, request and GPU requests."""
from __future__ import annotations

from dataclasses import replace

import pytest

from helpers.profiles import SGLANG, VLLM
from helpers.verify.serve import device_requests, engine_host, request_body, server_argv
from helpers.verify.smoke import TURNED_OFF, SmokePlan, plan, read_results

TREE = {"__init__.py": "a", "launch_server.py": "b", "srt/__init__.py": "c", "srt/managers/scheduler.py": "d",
        "srt/entrypoints/http_server.py": "e", "srt/layers/__init__.py": "f"}
PROFILE = replace(SGLANG, smoke_imports=("sglang.launch_server", "sglang.srt.managers.scheduler", "sglang.srt.server",
                                         "sglang.srt.layers", "sgl_kernel"),
                  smoke_commands=("python3 -m sglang.launch_server --help", "python3 -m sglang.srt.server --help",
                                  "sglang-cli 'two words'"))


def test_the_plan_asks_for_every_module_and_knows_which_the_tree_has():
    found = plan(PROFILE, TREE)
    assert found.imports == (("sglang.launch_server", True), ("sglang.srt.managers.scheduler", True),
                             ("sglang.srt.server", False), ("sglang.srt.layers", True), ("sgl_kernel", None))
    assert found.commands == (("python3", "-m", "sglang.launch_server", "--help"), ("sglang-cli", "two words"))
    assert found.skipped == ("python3 -m sglang.srt.server --help: sglang.srt.server is not in the commit's tree, "
                             "skipped",)


def test_a_compiled_module_of_the_project_is_checked_when_the_image_has_it():
    found = plan(replace(VLLM, smoke_imports=("vllm._C",), smoke_commands=()), {"__init__.py": "x"})
    assert found.imports == (("vllm._C", False),)
    assert read_results(found, {"imports": [{"name": "vllm._C", "status": "ok"}]}).failures == []
    absent = read_results(found, {"imports": [{"name": "vllm._C", "status": "absent"}]})
    assert absent.failures == [] and absent.notes == ["import vllm._C: not in the commit's tree, skipped"]


UNDEFINED = ("Traceback (most recent call last):\n  File \"/x/sgl_kernel/__init__.py\", line 1\n"
             "ImportError: /x/sgl_kernel/common_ops.so: undefined symbol: _ZN3c106detail19maybe_wrap_dim_slowEllb")
NO_DRIVER = "OSError: libcuda.so.1: cannot open shared object file: No such file or directory"
GLIBCXX = "ImportError: /lib/x86_64-linux-gnu/libstdc++.so.6: version `GLIBCXX_3.4.32' not found"
# sglang-kernel 0.4.1 without a driver (real output, shortened): its ImportError lists every load it tried.
KERNEL_NO_DRIVER = "\n".join([
    "Traceback (most recent call last):",
    '  File "/usr/local/lib/python3.11/dist-packages/sgl_kernel/load_utils.py", line 188, in _load_ops',
    "ImportError: ", "[sgl_kernel] CRITICAL: Could not load any common_ops library!", "Attempted locations:",
    "1. Architecture-specific pattern: /usr/local/lib/python3.11/dist-packages/sgl_kernel/sm100/common_ops.* - "
    "found files: ['/usr/local/lib/python3.11/dist-packages/sgl_kernel/sm100/common_ops.abi3.so']",
    "Please ensure sgl_kernel is properly installed with:", "pip install --upgrade sglang-kernel",
    "Error details from previous import attempts:",
    "- ImportError: libcuda.so.1: cannot open shared object file: No such file or directory",
    "- ModuleNotFoundError: No module named 'common_ops'"])
KERNEL_BROKEN = KERNEL_NO_DRIVER.replace("libcuda.so.1: cannot open shared object file: No such file or directory",
                                         "/x/common_ops.abi3.so: invalid ELF header")


@pytest.mark.parametrize("entry, in_tree, category, failed, noted", [
    ({"name": "m", "status": "ok"}, True, "verify_smoke", False, False),
    ({"name": "m", "status": "absent"}, True, "verify_smoke", True, False),        # the tree has it, the image not
    ({"name": "m", "status": "absent"}, None, "verify_smoke", False, True),        # a kernel package not installed
    ({"name": "m", "status": "error", "output": "ModuleNotFoundError: No module named 'x'"}, True,
     "verify_smoke", True, False),
    ({"name": "m", "status": "error", "output": UNDEFINED}, None, "abi_mismatch", True, False),
    ({"name": "m", "status": "error", "output": GLIBCXX}, None, "abi_mismatch", True, False),
    ({"name": "m", "status": "error", "output": NO_DRIVER}, None, "verify_smoke", False, True),
    ({"name": "m", "status": "error", "output": KERNEL_NO_DRIVER}, None, "verify_smoke", False, True),
    ({"name": "m", "status": "error", "output": KERNEL_BROKEN}, None, "verify_smoke", True, False),
    ({"name": "m", "status": "timeout", "output": "loading", "seconds": 3.0}, True, "verify_smoke", True, False),
    ({"name": "m", "status": "crashed", "exit": -11, "output": "Fatal Python error: Segmentation fault"}, None,
     "verify_smoke", True, False),
])
def test_each_import_result_reads_as_its_category(entry, in_tree, category, failed, noted):
    verdict = read_results(SmokePlan(imports=(("m", in_tree),)), {"imports": [entry], "commands": [], "seconds": 1})
    assert (verdict.category, bool(verdict.failures), bool(verdict.notes)) == (category, failed, noted)


def test_a_failure_names_the_module_and_its_error_first_then_the_tail_once():
    verdict = read_results(SmokePlan(imports=(("a", True), ("b", True))), {"imports": [
        {"name": "a", "status": "error", "output": UNDEFINED}, {"name": "b", "status": "error", "output": UNDEFINED}]})
    first, second = verdict.failures
    assert first.startswith("import a failed: ImportError: /x/sgl_kernel/common_ops.so: undefined symbol")
    assert 'File "/x/sgl_kernel/__init__.py"' in first
    assert second == "import b failed: " + UNDEFINED.splitlines()[-1]        # the same error: no second tail


@pytest.mark.parametrize("entry, category, words", [
    ({"argv": ["srv", "--help"], "status": 0, "output": "usage"}, None, ""),
    ({"argv": ["srv", "--help"], "status": 2, "output": "error: unrecognized arguments: --help"},
     "verify_smoke", "srv --help exited with 2: error: unrecognized arguments"),
    ({"argv": ["srv", "--help"], "status": "timeout", "output": "waiting", "seconds": 5},
     "verify_smoke", "srv --help: still running after 5 s (a hang)"),
    ({"argv": ["srv", "--help"], "status": 1, "output": UNDEFINED}, "abi_mismatch", "undefined symbol"),
    ({"argv": ["nope"], "status": "cannot start ([Errno 2] No such file or directory: 'nope')", "output": ""},
     "verify_smoke", "nope: cannot start"),
    ({"argv": ["srv"], "status": -6, "output": "terminate called after throwing"}, "verify_smoke",
     "srv killed by SIGABRT: terminate called"),
    ({"argv": ["srv"], "status": 1, "output": "UserWarning: CUDA initialization: Found no NVIDIA driver on your "
      "system\nModuleNotFoundError: No module named 'sglang.srt.io_struct'"}, "verify_smoke",
     "srv exited with 1: ModuleNotFoundError"),                # a driver warning before the error hides nothing
])
def test_each_command_result_reads_as_its_category(entry, category, words):
    verdict = read_results(SmokePlan(commands=(tuple(entry["argv"]),)), {"imports": [], "commands": [entry]})
    if category is None:
        assert verdict.failures == [] and verdict.passed == [" ".join(entry["argv"])]
    else:
        assert verdict.category == category and words in verdict.failures[0]


def test_no_results_when_checks_were_asked_is_a_failure_and_none_asked_is_nothing():
    assert read_results(SmokePlan(imports=(("m", True),)), None).failures
    assert read_results(SmokePlan(), None).failures == []
    off = read_results(SmokePlan(skipped=TURNED_OFF), None)
    assert off.failures == [] and off.describe() == "none run\nnoted: turned off (--no-smoke-checks)"


def test_the_server_command_and_request_are_filled_word_by_word():
    assert server_argv(SGLANG, "org/My Model") == ["python3", "-m", "sglang.launch_server", "--model-path",
                                                   "org/My Model", "--host", "0.0.0.0", "--port", "30000"]
    assert '"model": "a\\"b"' in request_body(VLLM, 'a"b')


def test_gpus_only_when_asked(monkeypatch):
    assert device_requests("") == []
    assert device_requests("all")[0]["Count"] == -1
    assert device_requests("0,1")[0]["DeviceIDs"] == ["0", "1"]
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    assert engine_host() == ("127.0.0.1", "127.0.0.1")
    monkeypatch.setenv("DOCKER_HOST", "tcp://gpu-box:2375")
    assert engine_host() == ("0.0.0.0", "gpu-box")
