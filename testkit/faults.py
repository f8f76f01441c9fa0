"""Fault injection for the reliability tests: a faulty proxy, second Docker engines (one on a small
filesystem), process checks."""
from __future__ import annotations

import ipaddress
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import docker


class FaultyProxy:
    """A TCP proxy on loopback in front of a registry: its first connections fail (an HTTP 500
    answer, or a connection reset), every later one is forwarded byte for byte."""

    def __init__(self, upstream: str, faults: list[str]):
        host, port = upstream.rsplit(":", 1)
        self.upstream = (host if host != "localhost" else "127.0.0.1", int(port))
        self.faults = list(faults)
        self.faulted = 0
        self.forwarded = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.lock = threading.Lock()

    def __enter__(self) -> FaultyProxy:
        threading.Thread(target=self.accept, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.listener.close()

    def accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                fault = self.faults.pop(0) if self.faults else None
            threading.Thread(target=self.fail if fault else self.forward, args=(client, fault), daemon=True).start()

    def fail(self, client: socket.socket, fault: str) -> None:
        client.settimeout(5)
        try:
            client.recv(65536)
            if fault == "500":
                client.sendall(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            else:   # a reset: SO_LINGER 0 makes close() send RST
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        finally:
            self.faulted += 1
            client.close()

    def forward(self, client: socket.socket, _fault: None) -> None:
        self.forwarded += 1
        try:
            upstream = socket.create_connection(self.upstream, timeout=30)
        except OSError:
            client.close()
            return
        for source, target in ((client, upstream), (upstream, client)):
            threading.Thread(target=pump, args=(source, target), daemon=True).start()


def pump(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            target.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, target):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class SecondEngine:
    """A second dockerd with its own socket, data and network namespace (`unshare --net`: its
    network set-up and clean-up must not touch the main engine's bridge), stopped at will."""

    def __init__(self, root: Path):
        self.root = root
        self.socket = root / "docker.sock"
        self.host = f"unix://{self.socket}"
        self.proc: subprocess.Popen | None = None

    def dockerd_argv(self) -> list[str]:
        return ["unshare", "--net", "--", shutil.which("dockerd") or "dockerd", "--host", self.host,
                "--data-root", str(self.root / "data"), "--exec-root", str(self.root / "exec"),
                "--pidfile", str(self.root / "pid"), "--iptables=false", "--ip-masq=false"]

    def prepare(self) -> None:
        """What the engine needs before it starts (nothing here)."""

    def release(self) -> None:
        """What `prepare` made, undone after the engine stopped (nothing here)."""

    def start(self, images: list[str]) -> SecondEngine:
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            self.prepare()
            self.proc = subprocess.Popen(self.dockerd_argv(), stdout=open(self.root / "dockerd.log", "w"),
                                         stderr=subprocess.STDOUT)
            client = wait_for_engine(self.host, 60)
            main = docker.from_env()
            for image in images:
                client.images.load(b"".join(main.images.get(image).save(named=True)))
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.release()
        shutil.rmtree(self.root, ignore_errors=True)


class HostNetworkEngine(SecondEngine):
    """A second dockerd on its own bridge in this host's network namespace (so that it reaches the tests'
    registry on loopback, as a second machine reaches a shared registry; a bridge of its own leaves the main
    engine's docker0 alone, which `--bridge=none` would not: BuildKit needs one). Its build cache starts
    empty."""

    def __init__(self, root: Path):
        super().__init__(root)
        self.bridge = f"hd{os.getpid() % 100000}{random.randrange(100)}"[:15]

    def prepare(self) -> None:
        (self.root / "data").mkdir(exist_ok=True)
        subnet = free_subnet()
        for argv in (["ip", "link", "add", self.bridge, "type", "bridge"],
                     ["ip", "addr", "add", f"{subnet[1]}/{subnet.prefixlen}", "dev", self.bridge],
                     ["ip", "link", "set", self.bridge, "up"]):
            subprocess.run(argv, check=True, capture_output=True)

    def dockerd_argv(self) -> list[str]:
        return [shutil.which("dockerd") or "dockerd", "--host", self.host, "--data-root", str(self.root / "data"),
                "--exec-root", str(self.root / "exec"), "--pidfile", str(self.root / "pid"), "--iptables=false",
                "--ip-masq=false", f"--bridge={self.bridge}"]

    def release(self) -> None:
        subprocess.run(["ip", "link", "delete", self.bridge], capture_output=True)


class SmallDiskEngine(HostNetworkEngine):
    """A second dockerd whose data root is a size-limited tmpfs."""

    def __init__(self, root: Path, size: str):
        super().__init__(root)
        self.size = size

    def prepare(self) -> None:
        data = self.root / "data"
        data.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={self.size}", "tmpfs", str(data)], check=True)
        super().prepare()

    def release(self) -> None:
        subprocess.run(["umount", "-l", str(self.root / "data")], capture_output=True)
        super().release()


def free_subnet() -> ipaddress.IPv4Network:
    """A /24 in 10.231.0.0/16 that no interface of this host uses."""
    done = subprocess.run(["ip", "-o", "-4", "addr"], capture_output=True, text=True, check=True)
    used = {ipaddress.ip_interface(word).network for line in done.stdout.splitlines()
            for word in line.split() if "/" in word and word[0].isdigit()}
    for third in random.sample(range(256), 256):
        subnet = ipaddress.ip_network(f"10.231.{third}.0/24")
        if not any(subnet.overlaps(other) for other in used):
            return subnet
    raise RuntimeError("no free /24 in 10.231.0.0/16 for the test engine's bridge")


def wait_for_engine(host: str, deadline: float) -> docker.DockerClient:
    end = time.monotonic() + deadline
    while True:
        try:
            client = docker.DockerClient(base_url=host)
            client.ping()
            return client
        except Exception as e:
            if time.monotonic() > end:
                raise TimeoutError(f"the engine at {host} did not answer within {deadline}s: {e}") from e
            time.sleep(0.5)


def processes_matching(text: str) -> list[str]:
    """Command lines of live processes containing text (read from /proc)."""
    return [line for _, line in _processes(text)]


def _processes(text: str) -> list[tuple[int, str]]:
    found = []
    for name in os.listdir("/proc"):            # a process may end at any moment: each read on its own
        if not name.isdigit():
            continue
        try:
            line = Path("/proc", name, "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if text in line:
            found.append((int(name), line))
    return found


def kill_processes_matching(text: str) -> None:
    """For what a test's own fault leaves behind (a stopped engine orphans its build steps)."""
    for pid, _ in _processes(text):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def wait_until(predicate, deadline: float, what: str, poll: float = 0.2) -> None:
    end = time.monotonic() + deadline
    while not predicate():
        if time.monotonic() > end:
            raise TimeoutError(f"waited {deadline}s for {what}")
        time.sleep(poll)



class ArgvWatch:
    """While open, samples every live process's command line for `text` (every 20 ms: any process the
    harness starts lives longer than that); `seen` holds the command lines that carried it."""

    def __init__(self, text: str, every: float = 0.02):
        self.text, self.every = text, every
        self.seen: list[str] = []
        self.failed: BaseException | None = None
        self.running = threading.Event()
        self.thread = threading.Thread(target=self.sample, daemon=True)

    def sample(self) -> None:
        try:
            while self.running.is_set():
                self.seen.extend(processes_matching(self.text))
                time.sleep(self.every)
        except BaseException as e:      # a watch that stopped watching must not pass as "nothing seen"
            self.failed = e

    def __enter__(self) -> ArgvWatch:
        self.running.set()
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.running.clear()
        self.thread.join()
        if self.failed is not None:
            raise RuntimeError(f"the watch for {self.text[:4]}... stopped: {self.failed!r}") from self.failed
