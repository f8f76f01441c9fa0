"""Disk: the free space of the engine's data-root filesystem, BuildKit's cache kept under a budget,
and what the harness may prune when a build would not fit.

Removing an image frees nothing by itself on a BuildKit engine: its layers stay in the build
cache. Space comes back when the cache is pruned, least recently used records first (BuildKit's
own order), down to the budget; the newest records, such as the dependency layer the next commit
of a pair needs, stay.
"""
from __future__ import annotations

import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import docker
import requests

from helpers.errors import ConfigError, DiskFull

# Labels the harness puts on what it makes, so that it prunes only its own images and containers.
COMMIT_LABEL = "commit-image-harness.commit"
SESSION_LABEL = "commit-image-harness.session"

UNITS = {"": 1, "b": 1, "k": 2 ** 10, "m": 2 ** 20, "g": 2 ** 30, "t": 2 ** 40}
# An engine or a build step that ran out of space (BuildKit's gRPC ResourceExhausted too, except the
# same code for an over-long message).
DISK_FULL = re.compile(r"no space left on device|\[Errno 28\]|disk quota exceeded|"
                       r"ResourceExhausted(?!.*larger than max)", re.IGNORECASE)


@dataclass(frozen=True)
class Size:
    """A size given as bytes or as a share of the data-root filesystem, at most `cap` bytes."""

    text: str
    absolute: int | None = None
    share: float | None = None
    cap: int | None = None

    def of(self, filesystem_bytes: int | None) -> int | None:
        """Bytes for a filesystem of this size; None when a share is asked of an unknown filesystem."""
        if self.absolute is not None:
            return self.absolute
        if filesystem_bytes is None or self.share is None:
            return None
        value = int(filesystem_bytes * self.share)
        return min(value, self.cap) if self.cap is not None else value


def parse_size(text: str, option: str, cap: int | None = None) -> Size:
    """`30G`, `500MiB`, `1.5T` (powers of 1024), `0` or `25%` of the data-root's filesystem."""
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(%|[kmgt]?(?:i?b)?)\s*", text, re.IGNORECASE)
    if not found:
        raise ConfigError(f"{option} {text!r}: give a size such as 30G, 500M or 25% (of the data-root's filesystem)")
    number, unit = float(found.group(1)), found.group(2).lower()
    if unit == "%":
        if number > 100:
            raise ConfigError(f"{option} {text!r}: a share is at most 100%")
        return Size(text, share=number / 100, cap=cap)
    return Size(text, absolute=int(number * UNITS[unit[:1] if unit[:1] in "kmgt" else ""]))


def human(size: int | float) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def is_disk_full(text: str) -> bool:
    return bool(DISK_FULL.search(text or ""))


@dataclass(frozen=True)
class Usage:
    total: int
    free: int


class EngineDisk:
    """The engine's data-root, seen from this machine (a remote engine's is not: nothing is checked)."""

    def __init__(self, client: docker.DockerClient, min_free: Size, cache_budget: Size):
        self.client, self.min_free, self.cache_budget = client, min_free, cache_budget
        self.root = Path(client.info().get("DockerRootDir") or "/var/lib/docker")

    def usage(self) -> Usage | None:
        """The data-root filesystem's size and the space free to the engine; None when it is not visible."""
        try:
            found = shutil.disk_usage(self.root)
        except OSError:
            return None
        return Usage(found.total, found.free)

    def describe(self) -> str:
        usage = self.usage()
        if usage is None:
            return f"engine data root {self.root} is not visible from here: free space is not checked"
        return (f"engine data root {self.root}: {human(usage.free)} free of {human(usage.total)}; "
                f"--min-free {human(self.min_free.of(usage.total) or 0)}, "
                f"--cache-budget {human(self.cache_budget.of(usage.total) or 0)}")

    def cache_bytes(self) -> int:
        return sum(record.get("Size", 0) for record in self.client.df().get("BuildCache") or ())

    def prune_cache(self, keep: int) -> int:
        """BuildKit's cache down to `keep` bytes, least recently used first; the bytes it freed."""
        result = self.client.api.prune_builds(keep_storage=max(0, keep))
        return int(result.get("SpaceReclaimed") or 0)

    def bound_cache(self) -> int:
        """Between builds: the copies of build contexts go (each commit has a context of its own, so no
        later build reuses one), then the cache under --cache-budget. Returns the bytes freed."""
        freed = int(self.client.api.prune_builds(filters={"type": "source.local"}).get("SpaceReclaimed") or 0)
        usage = self.usage()
        budget = self.cache_budget.of(usage.total if usage else None)
        return freed + (self.prune_cache(budget) if budget is not None else 0)

    def prune_own(self) -> int:
        """The harness's stopped containers and its untagged images (earlier builds of a tag)."""
        # an hour old at least: a running worker's created, never-started reading containers stay
        freed = self.client.containers.prune(filters={"label": SESSION_LABEL, "until": "1h"}).get(
            "SpaceReclaimed") or 0
        images = self.client.images.prune(filters={"dangling": True, "label": COMMIT_LABEL})
        return int(freed) + int(images.get("SpaceReclaimed") or 0)

    def ensure_room(self) -> str:
        """Before a build: at least --min-free free, pruning the cache and the harness's leftovers when
        short; DiskFull (what is free, what is needed, what was pruned) when it still is. Returns a note."""
        usage = self.usage()
        needed = self.min_free.of(usage.total if usage else None)
        if usage is None or needed is None or usage.free >= needed:
            return f"{human(usage.free)} free" if usage else "free space not visible"
        started, pruned, errors = time.monotonic(), 0, []
        for step in (lambda short: self.prune_cache(self.cache_bytes() - short), lambda short: self.prune_own(),
                     lambda short: self.prune_cache(0)):
            try:
                pruned += step(needed - usage.free)
            except (docker.errors.DockerException, requests.RequestException) as e:
                errors.append(str(e))
            usage = self.usage() or usage
            if usage.free >= needed:
                return (f"{human(usage.free)} free after pruning {human(pruned)} "
                        f"in {time.monotonic() - started:.0f} s")
        failed = f"; pruning failed: {'; '.join(errors)}" if errors else ""
        raise DiskFull(f"{human(usage.free)} free on {self.root}'s filesystem, --min-free needs {human(needed)}; "
                       f"pruned {human(pruned)} (build cache, the harness's dangling images and stopped "
                       f"containers){failed}. Free space, or lower --min-free")
