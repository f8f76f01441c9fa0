"""Serve check (--serve-check): start an image's server, wait for its health path, send one tiny request.

The server runs as the profile says (`serve_command`, its port, health path and request), in a
container of its own with the port published on the engine's host, GPUs only when asked. The
container is always removed, and its log's tail goes with any failure: the process exited before
it was healthy (`server_failed_to_start`), it never answered 200 in time (`server_timeout`), or
the tiny request failed (`server_request_failed`).
"""
from __future__ import annotations

import json
import os
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

import docker
import requests
from docker.models.containers import Container
from docker.types import DeviceRequest

from helpers.errors import InfraError, ServerFailedToStart, ServerRequestFailed, ServerTimeout
from helpers.profiles import Profile, command_words

LOG_LINES = 60


@dataclass(frozen=True)
class ServeOptions:
    """What the server's container gets (model, GPUs, variables by name, mounts, /dev/shm) and its deadline."""

    model: str
    gpus: str
    timeout: float
    env_names: tuple[str, ...] = ()
    volumes: tuple[tuple[str, str], ...] = ()
    shm_size: str = "16g"


@dataclass(frozen=True)
class Served:
    """A server that answered: how long it took to be healthy and what the tiny request got."""

    seconds_to_health: float
    answer: str

    def line(self) -> str:
        return f"healthy after {self.seconds_to_health:.1f} s; {self.answer}"


def server_argv(profile: Profile, model: str) -> list[str]:
    """The profile's serve command as words, `{model}` and `{port}` replaced in each (no shell)."""
    return [word.replace("{model}", model).replace("{port}", str(profile.serve_port))
            for word in command_words(profile.serve_command)]


def request_body(profile: Profile, model: str) -> str:
    return profile.serve_request_body.replace("{model}", json.dumps(model)[1:-1])


def device_requests(gpus: str) -> list[DeviceRequest]:
    """`all` -> every GPU (docker run --gpus all); `0,1` -> those devices; empty -> none."""
    if not gpus:
        return []
    if gpus == "all":
        return [DeviceRequest(count=-1, capabilities=[["gpu"]])]
    return [DeviceRequest(device_ids=gpus.split(","), capabilities=[["gpu"]])]


def engine_host() -> tuple[str, str]:
    """Where the published port is bound and reached: loopback for a local engine, the engine's host
    for a remote one (DOCKER_HOST=tcp://host:port)."""
    url = urllib.parse.urlsplit(os.environ.get("DOCKER_HOST") or "")
    if url.scheme in ("tcp", "http", "https") and url.hostname not in (None, "localhost", "127.0.0.1"):
        return "0.0.0.0", url.hostname
    return "127.0.0.1", "127.0.0.1"


class ServerRun:
    """One server container: created, started, watched until healthy, asked once, removed."""

    def __init__(self, client: docker.DockerClient, ref: str, profile: Profile, options: ServeOptions,
                 labels: dict[str, str], sleep: Callable[[float], None] = time.sleep, poll: float = 1.0):
        self.client, self.ref, self.profile, self.options = client, ref, profile, options
        self.labels, self.sleep, self.poll = labels, sleep, poll
        self.container: Container | None = None
        self.bind, self.host = engine_host()
        self.http = requests.Session()
        self.http.trust_env = False            # straight to the published port, never through a proxy

    @property
    def started(self) -> Container:
        if self.container is None:
            raise InfraError("the server's container was never created")
        return self.container

    def start(self) -> None:
        argv = server_argv(self.profile, self.options.model)
        port = f"{self.profile.serve_port}/tcp"
        env = {name: os.environ[name] for name in self.options.env_names if name in os.environ}
        try:
            self.container = self.client.containers.create(
                self.ref, entrypoint=argv[:1], command=argv[1:], environment=env, labels=self.labels,
                ports={port: (self.bind, None)}, device_requests=device_requests(self.options.gpus),
                volumes={host: {"bind": inside, "mode": "rw"} for host, inside in self.options.volumes},
                shm_size=self.options.shm_size)
            self.started.start()
        except docker.errors.APIError as e:
            if self.options.gpus and ("device driver" in str(e) or "gpu" in str(e).lower()):
                raise InfraError(f"the engine cannot give the server GPUs ({self.options.gpus}): {e}") from e
            raise ServerFailedToStart(f"`{' '.join(argv)}` did not start: {e.explanation or e}",
                                      log_tail=self.log_tail()) from e

    def base_url(self) -> str:
        """The published port's URL, as the last `exited()` read the container (one inspect per poll)."""
        bound = (self.started.attrs.get("NetworkSettings", {}).get("Ports") or {}).get(
            f"{self.profile.serve_port}/tcp") or []
        if not bound:
            return ""
        return f"http://{self.host}:{bound[0]['HostPort']}"

    def exited(self) -> str | None:
        """Why the server's process is gone (exit status, OOM), or None while it runs."""
        self.started.reload()
        state = self.started.attrs.get("State") or {}
        if state.get("Status") not in ("exited", "dead"):
            return None
        oom = " (killed: out of memory)" if state.get("OOMKilled") else ""
        return f"exit status {state.get('ExitCode')}{oom}"

    def wait_healthy(self, clock: Callable[[], float] = time.monotonic) -> tuple[str, float]:
        """Poll the health path until it answers 200; the base URL and the seconds it took."""
        started, last = clock(), "no answer yet"
        health = self.profile.serve_health_path
        while True:
            gone = self.exited()
            if gone:
                raise ServerFailedToStart(f"the server exited ({gone}) after {clock() - started:.1f} s, before "
                                          f"{health} answered", log_tail=self.log_tail())
            base = self.base_url()
            try:
                answer = self.http.get(base + health, timeout=5) if base else None
                if answer is not None and answer.status_code == 200:
                    return base, clock() - started
                last = f"HTTP {answer.status_code}" if answer is not None else "port not published yet"
            except requests.RequestException as e:
                last = type(e).__name__
            if clock() - started > self.options.timeout:
                raise ServerTimeout(f"{health} did not answer 200 within {self.options.timeout:.0f} s (last: {last})",
                                    log_tail=self.log_tail())
            self.sleep(self.poll)

    def ask(self, base: str) -> str:
        """The profile's one tiny request: a 2xx answer with a body, else server_request_failed."""
        path = self.profile.serve_request_path
        if not path:
            return "no request asked by the profile"
        try:
            answer = self.http.post(base + path, data=request_body(self.profile, self.options.model),
                                   headers={"Content-Type": "application/json"}, timeout=300)
        except requests.RequestException as e:
            raise ServerRequestFailed(f"POST {path} failed: {e}", log_tail=self.log_tail()) from e
        text = answer.text.strip()
        if not answer.ok or not text:
            raise ServerRequestFailed(f"POST {path} answered HTTP {answer.status_code}: {text[:500] or '(empty)'}",
                                      log_tail=self.log_tail())
        return f"POST {path} -> {answer.status_code} {text[:200]}"

    def log_tail(self) -> str:
        if self.container is None:
            return ""
        try:
            return self.container.logs(tail=LOG_LINES).decode("utf-8", errors="replace")
        except (docker.errors.DockerException, requests.RequestException):
            return ""

    def remove(self) -> None:
        self.http.close()
        if self.container is not None:
            try:
                self.container.remove(force=True)
            except (docker.errors.DockerException, requests.RequestException):
                pass


def serve_check(client: docker.DockerClient, ref: str, profile: Profile, options: ServeOptions,
                labels: dict[str, str], sleep: Callable[[float], None] = time.sleep) -> Served:
    """Start the server, wait until healthy, send the request; the container is removed whatever happens."""
    run = ServerRun(client, ref, profile, options, labels, sleep)
    try:
        run.start()
        base, seconds = run.wait_healthy()
        return Served(seconds, run.ask(base))
    except (docker.errors.DockerException, requests.RequestException) as e:
        raise InfraError(f"the serve check of {ref} could not run: {e}", log_tail=run.log_tail()) from e
    finally:
        run.remove()
