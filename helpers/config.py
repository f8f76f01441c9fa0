"""Configuration: the options of one run, parsed once at the edge into a frozen object."""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from helpers.dataset import parse_shard
from helpers.disk import Size, parse_size
from helpers.errors import ConfigError
from helpers.profiles import Profile, choose_fixes, choose_profile
from helpers.publish import ImageName
from helpers.render import parse_mapping
from helpers.render.base_images import BaseImageMap
from helpers.source import check_repo_url, is_inside_work_tree


@dataclass(frozen=True)
class HarnessConfig:
    profile: Profile
    dataset: Path
    blacklist: Path
    repo_url: str
    cache_dir: Path
    work_dir: Path
    log_dir: Path
    status_dir: Path
    attestation_dir: Path
    image: ImageName
    session_id: str
    push: bool = True
    no_push: bool = False            # --no-push: nothing goes to or comes from the registry
    local_registry: bool = False     # no registry or namespace given: the harness runs a registry itself
    verify_only: bool = False
    platform: str = "linux/amd64"
    docker_client: str | None = None
    build_driver: str | None = None
    builder: str | None = None
    cache_from: tuple[str, ...] = ()
    cache_to: tuple[str, ...] = ()
    base_images: BaseImageMap = ()
    build_timeout: float = 7200
    verify_timeout: float = 600
    git_timeout: float = 1800
    push_retries: int = 3
    push_backoff: float = 2.0
    keep_failed: bool = False
    keep_images: bool = False        # --keep-images: pushed images stay in the local engine
    min_free: Size = Size("10%", share=0.10, cap=30 * 2 ** 30)
    cache_budget: Size = Size("25%", share=0.25)
    show_build_logs: bool = False
    keep_contexts: bool = False
    skip_pushed: bool = False
    shard: tuple[int, int] | None = None
    fixes: frozenset[str] = frozenset()
    freeze_deps: bool = False
    prepare_only: bool = False
    out_dir: Path | None = None
    dependency_layer: bool = True
    package_cache: bool = True


def local_registry_port() -> int:
    return int(os.environ.get("HARNESS_LOCAL_REGISTRY_PORT") or 5000)


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(os.environ.get("HARNESS_CACHE_DIR") or Path(base) / "commit-image-harness")


def default_dataset(root: Path, profile: Profile) -> Path:
    """data/sglang_track_all.json for SGLang, data/<image name>.jsonl for every other project."""
    name = "sglang_track_all.json" if profile.name == "sglang" else f"{profile.image_name}.jsonl"
    return root / "data" / name


def default_work_dir() -> Path:
    """/dev/shm when it is a writable tmpfs with room (extracting thousands of files is metadata
    work, many times faster in memory than on a disk), else the system's temp dir."""
    shm = Path("/dev/shm")
    try:
        usage = shutil.disk_usage(shm)
        if os.access(shm, os.W_OK) and usage.free >= 2 * 2 ** 30:
            return shm / "commit-image-harness"
    except OSError:
        pass
    return Path(tempfile.gettempdir()) / "commit-image-harness"


def shard(text: str | None) -> tuple[int, int] | None:
    try:
        return parse_shard(text) if text else None
    except ValueError as e:
        raise ConfigError(str(e)) from e


def positive(name: str, value: float) -> float:
    if value <= 0:
        raise ConfigError(f"{name} must be positive, got {value}")
    return value


def make_config(options: dict, root: Path, session_id: str) -> HarnessConfig:
    """Build the configuration from option values (None means: use the default)."""
    profile = choose_profile(options)
    prepare_only = bool(options.get("prepare_only"))
    if prepare_only and not options.get("out_dir"):
        raise ConfigError("--prepare-only needs --out-dir DIR")
    work_dir = Path(options.get("work_dir") or default_work_dir()).resolve()
    if is_inside_work_tree(work_dir):
        raise ConfigError(f"--work-dir {work_dir} is inside a git work tree; build contexts must not be")
    namespace = options.get("namespace")
    if namespace is None:
        namespace = os.environ.get("DOCKERHUB_USERNAME", "")
    local_registry = not options.get("registry") and not namespace
    if local_registry:                     # nowhere to push was named: the harness's own registry
        registry, namespace = f"localhost:{local_registry_port()}", "harness"
    else:
        registry = options.get("registry") or "docker.io"
    push = not options.get("no_push") and not options.get("verify_only") and not prepare_only
    if push and registry == "docker.io" and not namespace and not options.get("collect_only"):
        raise ConfigError("pushing to docker.io needs a namespace: set DOCKERHUB_USERNAME or pass "
                          "--namespace (or use --no-push)")
    dataset = Path(options.get("dataset") or default_dataset(root, profile)).resolve()
    if not dataset.is_file():
        raise ConfigError(f"dataset {dataset} does not exist (--dataset)")
    return HarnessConfig(
        profile=profile,
        dataset=dataset,
        blacklist=Path(options.get("blacklist") or root / "data" / "blacklist.txt").resolve(),
        repo_url=check_repo_url(options.get("repo_url") or profile.repo_url),
        cache_dir=Path(options.get("cache_dir") or default_cache_dir()).resolve(),
        work_dir=work_dir,
        log_dir=Path(options.get("log_dir") or root / "logs").resolve(),
        status_dir=Path(options.get("status_dir") or root / "commit-status").resolve(),
        attestation_dir=Path(options.get("attestation_dir") or root / "reports" / "attestations").resolve(),
        image=ImageName(registry, namespace, options.get("image_name") or profile.image_name),
        session_id=session_id,
        push=push,
        local_registry=local_registry,
        no_push=bool(options.get("no_push")),
        verify_only=bool(options.get("verify_only")),
        platform=options.get("platform") or "linux/amd64",
        docker_client=options.get("docker_client") or os.environ.get("HARNESS_DOCKER_CLIENT") or None,
        build_driver=options.get("build_driver") or os.environ.get("HARNESS_BUILD_DRIVER") or None,
        builder=options.get("builder"),
        cache_from=tuple(options.get("cache_from") or ()),
        cache_to=tuple(options.get("cache_to") or ()),
        base_images=parse_mapping(list(options.get("base_image_map") or ())),
        build_timeout=positive("--build-timeout", float(options.get("build_timeout") or 7200)),
        verify_timeout=positive("--verify-timeout", float(options.get("verify_timeout") or 600)),
        git_timeout=positive("--git-timeout", float(options.get("git_timeout") or 1800)),
        push_retries=int(options.get("push_retries") or 0) if options.get("push_retries") is not None else 3,
        push_backoff=positive("--push-backoff", float(options.get("push_backoff") or 2.0)),
        keep_failed=bool(options.get("keep_failed")),
        keep_images=bool(options.get("keep_images")),
        min_free=parse_size(options["min_free"], "--min-free") if options.get("min_free") else HarnessConfig.min_free,
        cache_budget=(parse_size(options["cache_budget"], "--cache-budget") if options.get("cache_budget")
                      else HarnessConfig.cache_budget),
        show_build_logs=bool(options.get("show_build_logs")),
        keep_contexts=bool(options.get("keep_contexts")),
        skip_pushed=bool(options.get("skip_pushed")),
        shard=shard(options.get("shard")),
        fixes=choose_fixes(profile, options.get("enable_fix"), options.get("disable_fix")),
        freeze_deps=bool(options.get("freeze_deps")),
        prepare_only=prepare_only,
        out_dir=Path(options["out_dir"]).resolve() if options.get("out_dir") else None,
        dependency_layer=not options.get("no_dependency_layer"),
        package_cache=not options.get("no_package_cache"),
    )
