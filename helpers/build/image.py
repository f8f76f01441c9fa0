"""Image: one commit's build, from its prepared context to a local image tagged with the commit.

Takes the `Prepared` commit, its context, the labels the image must carry and the run's `BuildSettings`;
writes the build's log (a header saying what was changed and why, then the build's own output) and hands on
`Built`: the build's time, its steps, and the cache tags the image is shared under.
"""
from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from helpers.build.disk import is_disk_full
from helpers.build.driver import BuildFailed, BuildRequest, BuildResult, Driver, build_argv, run_build
from helpers.errors import DiskFull, InfraError
from helpers.render.prepared import Prepared
from helpers.source.mirror import BuildContext

Record = Callable[[str, object], None]


@dataclass(frozen=True)
class BuildSettings:
    """What of the run's configuration a build takes."""

    driver: Driver
    log_dir: Path
    timeout: float
    platform: str
    builder: str | None
    cache_from: tuple[str, ...]
    cache_to: tuple[str, ...]
    share_layers: bool          # the image goes to a registry: cache tags for other machines' builds


@dataclass(frozen=True)
class Built:
    """A finished build: how long it took, what its steps did, the cache tags its image is pushed under too."""

    seconds: float
    result: BuildResult
    cache_tags: tuple[str, ...]


def cache_tags(prepared: Prepared) -> tuple[str, ...]:
    """The image repository's tags this build can take layers from, and that its image is pushed under too: one
    per layers key (commits with the same Dockerfile and dependency set), one per Dockerfile as written (the
    layers before the dependencies)."""
    written = hashlib.sha256(prepared.original.encode()).hexdigest()[:16]
    return f"cache-{prepared.rendered.layers_key()}", f"cache-dockerfile-{written}"


def write_log(log_dir: Path, prepared: Prepared, sha: str, header: list[str], source_lines: list[str]) -> Path:
    """`<sha>.log` begun anew (followers of the previous run's log skip it) with the header, every fix and
    change, what the commit's build configuration says, and the diff of the Dockerfile as written and as built;
    `<sha>.Dockerfile`, the Dockerfile as built."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{sha}.log"
    lines = [*header, f"started:    {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}",
             "fixes:", *[f"  - {f}" for f in prepared.fixes], "changes:", *[f"  - {n}" for n in prepared.notes],
             "build configuration:", *[f"  - {line}" for line in source_lines]]
    fresh = log_path.with_name(f".{log_path.name}.{os.getpid()}")
    fresh.write_text("\n".join(lines) + "\n--- rendered vs original ---\n" + prepared.diff() + "--- build ---\n",
                     encoding="utf-8")
    os.replace(fresh, log_path)
    (log_dir / f"{sha}.Dockerfile").write_text(prepared.rendered.text, encoding="utf-8")
    return log_path


def build_image(settings: BuildSettings, prepared: Prepared, ctx: BuildContext, ref: str, labels: dict[str, str],
                log_path: Path, record: Record, engine_alive: Callable[[], bool], disk_state: Callable[[], str],
                endpoint: str) -> Built:
    """The build, with its cache tags taken from and its failures told apart: an engine that stopped answering
    and a full disk are the infrastructure's, anything else the build's own."""
    repository = ref.rsplit(":", 1)[0]
    tags = cache_tags(prepared) if settings.share_layers else ()
    shared = tuple(f"{repository}:{tag}" for tag in tags)
    request = BuildRequest(dockerfile=ctx.dockerfile, context=ctx.context, tag=ref,
                           build_args=prepared.rendered.build_args, labels=labels, platform=settings.platform,
                           builder=settings.builder, cache_from=settings.cache_from + shared,
                           cache_to=settings.cache_to, inline_cache=bool(shared) and not settings.cache_to)
    if shared:
        record("cache_from", ", ".join(shared))
    try:
        result = run_build(build_argv(settings.driver, request), log_path, settings.timeout)
    except BuildFailed as e:
        if not engine_alive():
            raise InfraError(f"the Docker engine at {endpoint} stopped answering during the build",
                             log_tail=e.log_tail, exit_status=e.exit_status) from e
        if is_disk_full(e.log_tail):
            raise DiskFull(f"the engine ran out of disk during the build ({disk_state()})",
                           log_tail=e.log_tail, exit_status=e.exit_status) from e
        raise
    record("build_seconds", round(result.seconds, 2))
    record("build_steps", result.describe_steps())
    if result.heavy:
        record("rebuilt_heavy", "; ".join(f"{s.name[:100]} ({s.seconds:.0f} s)" for s in result.heavy))
    return Built(round(result.seconds, 2), result, tags)
