"""Progress: follow the build logs of running commits and echo them, prefixed by the short SHA.

Workers cannot print (pytest captures their output; xdist workers have no terminal), so the
process that owns the terminal follows each running commit's log file instead.
"""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path


class LogFollower(threading.Thread):
    """Echoes the lines appended to one log file until stopped, then the rest."""

    def __init__(self, path: Path, prefix: str, write: Callable[[str], None], poll: float = 0.2):
        super().__init__(daemon=True)
        self.path, self.prefix, self.write, self.poll = path, prefix, write, poll
        self.stopping = threading.Event()
        self.offset = 0
        # A previous run's log is replaced (new inode) when this run starts writing: skip it.
        self.stale_inode = path.stat().st_ino if path.exists() else None

    def run(self) -> None:
        pending = ""
        while True:
            stopping = self.stopping.is_set()
            pending = self.drain(pending)
            if stopping:
                if pending:
                    self.write(f"[{self.prefix}] {pending}")
                return
            time.sleep(self.poll)

    def drain(self, pending: str) -> str:
        try:
            with open(self.path, encoding="utf-8", errors="replace") as log:
                if os.fstat(log.fileno()).st_ino == self.stale_inode:
                    return pending
                log.seek(self.offset)
                chunk = log.read()
                self.offset = log.tell()
        except FileNotFoundError:
            return pending
        *lines, pending = (pending + chunk).split("\n")
        for line in lines:
            self.write(f"[{self.prefix}] {line}")
        return pending

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=5)


class Followers:
    """One follower per running commit, keyed by test id."""

    def __init__(self, write: Callable[[str], None]):
        self.lock = threading.Lock()
        self.running: dict[str, LogFollower] = {}

        def locked_write(line: str) -> None:
            with self.lock:
                write(line)
        self.write = locked_write

    def start(self, key: str, path: Path, prefix: str) -> None:
        follower = LogFollower(path, prefix, self.write)
        self.running[key] = follower
        follower.start()

    def stop(self, key: str) -> None:
        follower = self.running.pop(key, None)
        if follower:
            follower.stop()
