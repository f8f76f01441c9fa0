"""Progress: what a person watching the run sees: a line per finished commit, a table at the
end, and (--show-build-logs) each running commit's build log, prefixed by its short SHA.

Workers cannot print (pytest captures their output; xdist workers have no terminal), so the
process that owns the terminal does all of it: it follows each running commit's log file.
"""
from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Finished:
    """One commit's end as the run reports it."""

    sha: str
    roles: str
    result: str            # passed, failed, skipped
    category: str
    build_seconds: str
    detail: str            # the image of a success, the reason of a failure or skip
    steps: str = "-"       # "3/18": build steps run of all (the rest from cache)
    heavy: str = ""        # the heavy steps this build ran again
    change: str = "-"      # where the commit's change went: "3 verified, 1 built, 8 not in the image (...)"


class RunProgress:
    """A line per finished commit while the run goes, and a table of all of them at the end."""

    def __init__(self) -> None:
        self.finished: list[Finished] = []

    def finish(self, nodeid: str, when: str, outcome: str, properties: dict[str, str], reason: str) -> str | None:
        """The progress line of a test report that ends a commit, else None."""
        if not (when == "call" or (when == "setup" and outcome != "passed")):
            return None
        sha = properties.get("sha") or nodeid[nodeid.find("[") + 1:].rstrip("]")
        reasons = [line for line in reason.strip().splitlines() if line.strip() and not re.match(r"\[gw\d+\] ", line)]
        detail = properties.get("image") or (f"prepared in {properties['prepared']}" if "prepared" in properties
                                             else "") if outcome == "passed" else (
            properties.get("reason") or (reasons[0] if reasons else ""))[:160]
        steps = re.match(r"(\d+) of (\d+) run", properties.get("build_steps", ""))
        done = Finished(sha, properties.get("roles", ""), outcome,
                        properties.get("category", "" if outcome != "failed" else "infra_error"),
                        properties.get("build_seconds", "-"), detail, f"{steps[1]}/{steps[2]}" if steps else "-",
                        properties.get("rebuilt_heavy", ""), properties.get("change", "-"))
        self.finished.append(done)
        name = done.sha[:12] if re.fullmatch(r"[0-9a-f]{40}", done.sha) else done.sha
        heavy = f"  rebuilt heavy: {done.heavy[:200]}" if done.heavy else ""
        return (f"[{len(self.finished):>4}] {done.result.upper():7} {done.roles:12} {name:12} "
                f"{done.category or '-':24} build {done.build_seconds:>8}s {done.steps:>7} steps  {done.detail}{heavy}")

    def table(self) -> list[str]:
        if not self.finished:
            return []
        rows = [("result", "category", "roles", "commit", "build s", "steps run", "change", "image or reason")]
        rows += [(f.result, f.category or "-", f.roles, f.sha, f.build_seconds, f.steps, f.change,
                  f.detail + (f" (rebuilt heavy: {f.heavy[:200]})" if f.heavy else "")) for f in self.finished]
        widths = [max(len(row[i]) for row in rows) for i in range(7)]
        return ["  ".join(cell.ljust(width) for cell, width in zip(row[:7], widths, strict=True)) + "  " + row[7]
                for row in rows]
