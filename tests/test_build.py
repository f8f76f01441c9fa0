"""Build driver choice, argv construction, and the runner's deadline and log."""
import sys
from pathlib import Path

import pytest

from helpers.build.driver import BuildRequest, Driver, build_argv, detect_driver, run_build
from helpers.errors import BuildFailed, BuildTimeout, ConfigError

REQUEST = BuildRequest(dockerfile=Path("/w/Dockerfile"), context=Path("/w/context"), tag="r/ns/img:abc",
                       build_args={"SGLANG_COMMIT": "abc"}, labels={"org.opencontainers.image.revision": "abc"},
                       cache_from=("type=registry,ref=r/cache",))


def test_buildkit_argv_is_a_list_with_every_value_its_own_argument():
    assert build_argv(Driver("buildkit", "/usr/bin/docker"), REQUEST) == [
        "/usr/bin/docker", "build", "--progress=plain", "--platform", "linux/amd64", "-f", "/w/Dockerfile",
        "-t", "r/ns/img:abc", "--build-arg", "SGLANG_COMMIT=abc",
        "--label", "org.opencontainers.image.revision=abc", "--cache-from", "type=registry,ref=r/cache", "/w/context"]


def test_buildx_argv_loads_the_image_and_passes_builder_and_caches_through():
    request = BuildRequest(**{**REQUEST.__dict__, "builder": "remote", "cache_to": ("type=registry,mode=max",),
                              "platform": "linux/arm64"})
    argv = build_argv(Driver("buildx", "docker"), request)
    assert argv[:6] == ["docker", "buildx", "build", "--load", "--builder", "remote"]
    assert argv[argv.index("--platform") + 1] == "linux/arm64"
    assert argv[argv.index("--cache-to") + 1] == "type=registry,mode=max"


def test_cache_to_without_buildx_is_a_config_error():
    request = BuildRequest(**{**REQUEST.__dict__, "cache_to": ("type=local,dest=/c",)})
    with pytest.raises(ConfigError, match="need the buildx driver"):
        build_argv(Driver("buildkit", "docker"), request)


@pytest.mark.docker
def test_driver_detection_finds_a_buildkit_client_here():
    driver = detect_driver()
    assert driver.kind in ("buildx", "buildkit")
    assert detect_driver(driver.client, driver.kind) == driver


def test_driver_detection_reports_what_it_tried(tmp_path):
    fake = tmp_path / "docker"
    fake.write_text("#!/bin/sh\nexit 1\n")
    fake.chmod(0o755)
    with pytest.raises(ConfigError, match="no BuildKit-capable docker client"):
        detect_driver(str(fake))
    with pytest.raises(ConfigError, match="choose auto, buildx or buildkit"):
        detect_driver(str(fake), "legacy")


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_run_build_logs_everything_and_reports_cached_steps(tmp_path):
    log = tmp_path / "b.log"
    out = "#5 [2/4] RUN slow\\n#5 CACHED\\n#6 [3/4] RUN --mount=x cp\\n#6 DONE 0.1s\\n"
    result = run_build(python(f"print('{out}', end='')"), log, timeout=30)
    assert result.cached_steps == ("[2/4] RUN slow",)
    assert "#6 DONE" in log.read_text() and log.read_text().startswith("$ ")


def test_run_build_reports_each_step_run_or_from_cache_and_the_heavy_ones(tmp_path):
    out = ("#1 [internal] load build definition from Dockerfile\\n#1 DONE 0.0s\\n"
           "#4 [stage-0 1/4] FROM docker.io/library/base\\n#4 CACHED\\n"
           "#5 [stage-0 2/4] RUN apt-get install -y cmake\\n#5 CACHED\\n"
           "#6 [stage-0 3/4] RUN make -C /opt/nvshmem\\n#6 12.1 compiling\\n#6 DONE 312.4s\\n"
           "#7 [stage-0 4/4] RUN --mount=x cp -a /src/. /w\\n#7 DONE 0.8s\\n"
           "#8 exporting to image\\n#8 DONE 0.2s\\n")
    result = run_build(python(f"print('{out}', end='')"), tmp_path / "b.log", timeout=30)
    assert [(s.name, s.cached, s.seconds) for s in result.steps] == [           # FROM is no build step
        ("[stage-0 2/4] RUN apt-get install -y cmake", True, None),
        ("[stage-0 3/4] RUN make -C /opt/nvshmem", False, 312.4),
        ("[stage-0 4/4] RUN --mount=x cp -a /src/. /w", False, 0.8)]
    assert result.describe_steps() == "2 of 3 run, 1 from cache"
    assert [s.name for s in result.heavy] == ["[stage-0 3/4] RUN make -C /opt/nvshmem"]


def test_failed_build_carries_exit_status_and_log_tail(tmp_path):
    with pytest.raises(BuildFailed) as failure:
        run_build(python("import sys; print('ERROR: step 3 failed'); sys.exit(7)"), tmp_path / "l", timeout=30)
    assert failure.value.exit_status == 7
    assert "ERROR: step 3 failed" in failure.value.describe()
    assert failure.value.category == "build_failed"


def test_build_over_the_deadline_is_stopped(tmp_path):
    code = "import time, subprocess, sys; print('started', flush=True); time.sleep(60)"
    with pytest.raises(BuildTimeout, match="--build-timeout=1s") as failure:
        run_build(python(code), tmp_path / "l", timeout=1)
    assert "started" in failure.value.log_tail


@pytest.mark.parametrize("kind", ["buildx", "buildkit"])
def test_inline_cache_is_the_build_arg_for_every_driver(kind):
    request = BuildRequest(Path("/c/Dockerfile"), Path("/c"), "r/i:t", {}, {}, cache_from=("r/i:cache-1",),
                           inline_cache=True)
    argv = build_argv(Driver(kind, "docker"), request)
    assert argv[argv.index("--cache-from") + 1] == "r/i:cache-1" and "--cache-to" not in argv
    assert argv[argv.index("BUILDKIT_INLINE_CACHE=1") - 1] == "--build-arg"
