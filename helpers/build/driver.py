"""Build: pick a BuildKit driver, turn a build request into argv, run it with a deadline and a log.

Two drivers, both BuildKit: `docker buildx build` when the client has buildx, else a client
with BuildKit built in (`DOCKER_BUILDKIT=1 docker build`). The legacy builder is never used.
"""
from __future__ import annotations

import ctypes
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from helpers.errors import BuildFailed, BuildTimeout, ConfigError, InfraError

__all__ = ["BuildFailed", "BuildRequest", "BuildResult", "Driver", "Step", "build_argv", "detect_driver", "run_build"]

BUILD_ENV = {"DOCKER_BUILDKIT": "1", "BUILDX_GIT_INFO": "0", "BUILDKIT_PROGRESS": "plain"}
CLIENT_CANDIDATES = ("docker", "/usr/bin/docker", "/usr/local/bin/docker")


@dataclass(frozen=True)
class Driver:
    kind: str        # "buildx" or "buildkit"
    client: str      # path of the docker client that runs the build

    def describe(self) -> str:
        return f"{self.client} {'buildx build' if self.kind == 'buildx' else 'build (BuildKit built in)'}"


@dataclass(frozen=True)
class BuildRequest:
    dockerfile: Path
    context: Path
    tag: str
    build_args: dict[str, str]
    labels: dict[str, str]
    platform: str = "linux/amd64"
    builder: str | None = None
    cache_from: tuple[str, ...] = ()
    cache_to: tuple[str, ...] = ()
    inline_cache: bool = False          # cache metadata in the image itself, for later builds' --cache-from


# A rebuilt step that took this long is named in the report: a child's build should rebuild none.
HEAVY_SECONDS = 5.0


@dataclass(frozen=True)
class Step:
    """One build step as BuildKit reported it: `[2/7] RUN ...`, taken from cache or run, and how long."""

    name: str
    cached: bool
    seconds: float | None = None


@dataclass(frozen=True)
class BuildResult:
    seconds: float
    log_path: Path
    steps: tuple[Step, ...] = field(default_factory=tuple)

    @property
    def cached_steps(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.steps if s.cached)

    @property
    def heavy(self) -> tuple[Step, ...]:
        """The steps that ran (not from cache) for HEAVY_SECONDS or more."""
        return tuple(s for s in self.steps if not s.cached and (s.seconds or 0) >= HEAVY_SECONDS)

    def describe_steps(self) -> str:
        ran = sum(not s.cached for s in self.steps)
        return f"{ran} of {len(self.steps)} run, {len(self.steps) - ran} from cache"


def _works(argv: list[str]) -> bool:
    try:
        env = {**os.environ, **BUILD_ENV}
        return subprocess.run(argv, capture_output=True, timeout=30, env=env).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def detect_driver(client: str | None = None, kind: str | None = None) -> Driver:
    """buildx when a client has it, else a client with BuildKit built in; the user may force either."""
    if kind not in (None, "auto", "buildx", "buildkit"):
        raise ConfigError(f"--build-driver {kind!r}: choose auto, buildx or buildkit")
    clients = [client] if client else list(dict.fromkeys(
        p for p in (shutil.which(c) for c in CLIENT_CANDIDATES) if p))
    if not clients:
        raise ConfigError("no docker client found; install one or pass --docker-client PATH")
    for candidate in clients:
        if kind in (None, "auto", "buildx") and _works([candidate, "buildx", "version"]):
            return Driver("buildx", candidate)
    for candidate in clients:
        if kind in (None, "auto", "buildkit") and _works([candidate, "build", "--help"]):
            return Driver("buildkit", candidate)
    raise ConfigError(f"no BuildKit-capable docker client among {', '.join(clients)} "
                      f"(wanted driver: {kind or 'auto'}); install the buildx plugin or pass --docker-client")


def build_argv(driver: Driver, request: BuildRequest) -> list[str]:
    """The argv of one build; no shell, every value its own argument."""
    if driver.kind == "buildx":
        argv = [driver.client, "buildx", "build", "--load"]
        if request.builder:
            argv += ["--builder", request.builder]
    else:
        if request.builder or request.cache_to:
            raise ConfigError("--builder and --cache-to need the buildx driver; this client has no buildx")
        argv = [driver.client, "build"]
    argv += ["--progress=plain", "--platform", request.platform, "-f", str(request.dockerfile),
             "-t", request.tag]
    for name, value in request.build_args.items():
        argv += ["--build-arg", f"{name}={value}"]
    for name, value in request.labels.items():
        argv += ["--label", f"{name}={value}"]
    for ref in request.cache_from:
        argv += ["--cache-from", ref]
    for ref in request.cache_to:
        argv += ["--cache-to", ref]
    if request.inline_cache:        # the build arg, not --cache-to type=inline: buildx's docker driver refuses exports
        argv += ["--build-arg", "BUILDKIT_INLINE_CACHE=1"]
    return argv + [str(request.context)]


class LogPump(threading.Thread):
    """Copies the build's output to the log file, keeps its tail and notes each step: its name (`[2/7] RUN
    ...`), whether BuildKit took it from cache, how long it ran."""

    STEP = re.compile(r"#(\d+) (\[[^\]]*\d+/\d+\] .*|CACHED|DONE (\d+(?:\.\d+)?)s)$")

    def __init__(self, stream: IO[bytes], log: IO[str]):
        super().__init__(daemon=True)
        self.stream, self.log = stream, log
        self.tail: deque[str] = deque(maxlen=60)
        self.names: dict[str, str] = {}
        self.outcomes: dict[str, Step] = {}

    def run(self) -> None:
        for raw in iter(self.stream.readline, b""):
            line = raw.decode("utf-8", errors="replace")
            self.log.write(line)
            self.log.flush()
            self.tail.append(line)
            self.note(line.rstrip())

    def note(self, line: str) -> None:
        match = self.STEP.match(line)
        if not match:
            return
        number, what = match.group(1), match.group(2)
        if what == "CACHED" and number in self.names:
            self.outcomes[number] = Step(self.names[number], True)
        elif what.startswith("DONE") and number in self.names and number not in self.outcomes:
            self.outcomes[number] = Step(self.names[number], False, float(match.group(3)))
        elif what.startswith("[") and not re.match(r"\[[^\]]*\] FROM ", what):     # a base image: no build step
            self.names.setdefault(number, what)

    @property
    def steps(self) -> tuple[Step, ...]:
        return tuple(self.outcomes[n] for n in sorted(self.outcomes, key=int))

    @property
    def cached(self) -> list[str]:
        return [s.name for s in self.steps if s.cached]


def _die_with_parent() -> None:
    """In the child, before exec: get SIGKILL when the harness process dies, so that no build
    outlives a killed worker (the engine cancels a build whose client disconnects)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)     # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def run_build(argv: list[str], log_path: Path, timeout: float) -> BuildResult:
    """Run the build; on timeout interrupt it (the client cancels the build), then kill it."""
    started = time.monotonic()
    env = {**os.environ, **BUILD_ENV}
    with open(log_path, "a", encoding="utf-8") as log:
        log.write("$ " + " ".join(argv) + "\n")
        log.flush()
        try:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True, preexec_fn=_die_with_parent)
        except OSError as e:
            raise InfraError(f"cannot start {argv[0]}: {e}") from e
        assert proc.stdout is not None
        pump = LogPump(proc.stdout, log)
        pump.start()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop(proc)
            pump.join(timeout=10)
            raise BuildTimeout(f"build ran over --build-timeout={timeout:.0f}s and was stopped",
                               log_tail="".join(pump.tail)) from None
        except BaseException:
            stop(proc)
            raise
        pump.join(timeout=30)
    if proc.returncode != 0:
        raise BuildFailed("the build failed", log_tail="".join(pump.tail), exit_status=proc.returncode)
    return BuildResult(time.monotonic() - started, log_path, pump.steps)


def stop(proc: subprocess.Popen, grace: float = 15) -> None:
    """SIGINT the client's process group (it cancels the build in the engine), then SIGKILL."""
    for sig in (signal.SIGINT, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue
