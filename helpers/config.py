"""Configuration: the options of one run, parsed once at the edge into a frozen object."""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from helpers.build.disk import Size, parse_size
from helpers.errors import ConfigError
from helpers.profiles import Profile, choose_fixes, choose_profile
from helpers.publish.registry import ImageName
from helpers.render import parse_mapping
from helpers.render.base_images import BaseImageMap
from helpers.source.dataset import parse_shard
from helpers.source.mirror import is_inside_work_tree, valid_repo_url
from helpers.verify.serve import ServeOptions


@dataclass(frozen=True)
class Option:
    """One option of a run: its flag, its help, and its default (written as if given; None when the
    run computes it, and then `shown` says how). --help and the README both show this default."""

    flag: str
    help: str
    default: str | None = None
    shown: str = ""
    kind: str = "value"          # value | flag (store_true) | list (repeatable) | int | float
    metavar: str | None = None

    @property
    def name(self) -> str:
        """The key of its value in `make_config`'s options (`--repo-url` -> `repo_url`)."""
        return self.flag[2:].replace("-", "_")

    @property
    def default_text(self) -> str:
        return "off" if self.kind == "flag" else self.shown or self.default or ""

    def keywords(self) -> dict:
        """argparse keywords (pytest's addoption)."""
        shown = f" (default {self.default_text})" if self.default_text and self.kind != "flag" else ""
        keywords: dict = {"help": (self.help + shown).replace("%", "%%")}
        kinds: dict[str, dict] = {"flag": {"action": "store_true"}, "list": {"action": "append"},
                                  "int": {"type": int}, "float": {"type": float}}
        keywords.update(kinds.get(self.kind, {}))
        if self.metavar:
            keywords["metavar"] = self.metavar
        return keywords


MIN_FREE_CAP = "30G"       # a share of a big disk is more than one build needs

OPTIONS = (
    Option("--dataset", "JSON-lines dataset", shown="data/sglang_track_all.json"),
    Option("--blacklist", "SHAs to exclude, one per line",
           shown="data/blacklist.txt (vLLM: data/nvidia-vllm-docker-blacklist.txt)"),
    Option("--project", "built-in project profile: sglang or vllm", shown="sglang"),
    Option("--profile-file", "a project profile in TOML (see README)"),
    Option("--repo-url", "repository URL or local path",
           shown="the profile's: https://github.com/sgl-project/sglang.git for sglang"),
    Option("--cache-dir", "where the bare mirror lives",
           shown="~/.cache/commit-image-harness (or $HARNESS_CACHE_DIR)"),
    Option("--work-dir", "where build contexts are made",
           shown="/dev/shm when it has 2 GiB free, else the system temp dir"),
    Option("--log-dir", "one build log per commit", shown="logs/"),
    Option("--status-dir", "status lists folder", shown="commit-status/"),
    Option("--attestation-dir", "an in-toto statement per verified image", shown="reports/attestations/"),
    Option("--registry", "registry host",
           shown="docker.io when a namespace is known, else the harness's own localhost:5000"),
    Option("--namespace", "registry namespace", shown="$DOCKERHUB_USERNAME (harness on the local registry)"),
    Option("--image-name", "image repository name", shown="the profile's: nvidia-sglang-docker for sglang"),
    Option("--no-push", "build and verify locally; push nothing", kind="flag"),
    Option("--verify-only", "verify existing images (local, else pulled)", kind="flag"),
    Option("--platform", "build platform", "linux/amd64"),
    Option("--docker-client", "docker client binary", shown="$HARNESS_DOCKER_CLIENT, else found on PATH"),
    Option("--build-driver", "auto | buildx | buildkit", shown="$HARNESS_BUILD_DRIVER, else auto"),
    Option("--builder", "buildx builder to use (remote BuildKit, for instance)"),
    Option("--cache-from", "buildx --cache-from, repeatable", kind="list"),
    Option("--cache-to", "buildx --cache-to, repeatable", kind="list"),
    Option("--base-image-map", "rewrite FROM images matching a glob, repeatable", kind="list",
           metavar="PATTERN=IMAGE"),
    Option("--build-timeout", "seconds before a build is stopped", "7200", kind="float"),
    Option("--verify-timeout", "seconds for the verification run", "600", kind="float"),
    Option("--no-smoke-checks", "skip the profile's deep imports and commands (the other checks still run)",
           kind="flag"),
    Option("--smoke-timeout", "seconds each smoke check (a deep import, a command) may take", "300", kind="float"),
    Option("--no-submodules", "leave every submodule's folder empty, as `git archive` leaves it (the build "
           "does without them)", kind="flag"),
    Option("--build-changed-parts", "build the profile's parts a commit changed (SGLang: sgl-kernel/) from its "
           "tree, not from what the Dockerfile installs", kind="flag"),
    Option("--accept-change-not-in-image", "pass a PR commit whose runtime changes are all outside the image "
           "(reported, not failed)", kind="flag"),
    Option("--serve-check", "start each verified image's server, wait for its health path, send one tiny request "
           "(before pushing)", kind="flag"),
    Option("--serve-model", "the model the serve check's server loads (the profile's `{model}`)",
           "Qwen/Qwen2.5-0.5B-Instruct"),
    Option("--serve-gpus", "GPUs for the serve check's container: all, or device IDs like 0,1", shown="none"),
    Option("--serve-timeout", "seconds the server has to answer its health path", "1200", kind="float"),
    Option("--serve-env", "pass this variable of the harness's environment to the server (HF_TOKEN), repeatable",
           kind="list", metavar="NAME"),
    Option("--serve-volume", "mount into the server's container (a model cache), repeatable", kind="list",
           metavar="HOST_PATH:CONTAINER_PATH"),
    Option("--serve-shm-size", "/dev/shm of the server's container (servers share tensors through it)", "16g"),
    Option("--git-timeout", "seconds for any git command (a clone or fetch of the mirror too)", "1800",
           kind="float"),
    Option("--push-retries", "retries of a push on transient errors", "3", kind="int"),
    Option("--push-backoff", "seconds before the first push retry, doubling", "2", kind="float"),
    Option("--keep-failed", "keep the images of commits that failed (verification or push)", kind="flag"),
    Option("--keep-images", "keep each pushed image in the local engine (else its tag is removed once pushed)",
           kind="flag"),
    Option("--min-free", "free space the engine's data root needs before each build; pruning when short, "
           "else disk_full", "10%", shown=f"10% of the data root's filesystem, at most {MIN_FREE_CAP}",
           metavar="SIZE"),
    Option("--cache-budget", "BuildKit's build cache is pruned to this between builds, least recently used "
           "first", "25%", shown="25% of the data root's filesystem", metavar="SIZE"),
    Option("--batch-size", "keep only the first N selected commits", kind="int", shown="all"),
    Option("--shard", "run the I-th of N disjoint slices of the commits (by SHA)", metavar="I/N"),
    Option("--skip-pushed", "skip commits whose image tag is already in the registry (listed once per session)",
           kind="flag"),
    Option("--show-build-logs", "stream build output prefixed by short SHA", kind="flag"),
    Option("--keep-contexts", "keep build contexts for inspection", kind="flag"),
    Option("--enable-fix", "apply a fix the profile leaves off", kind="list", metavar="NAME", shown="the profile's"),
    Option("--disable-fix", "skip a fix of the profile", kind="list", metavar="NAME", shown="the profile's"),
    Option("--freeze-deps", "pip/uv see only releases uploaded before the end of the commit's day (UTC)",
           kind="flag"),
    Option("--prepare-only", "write each commit's rendered Dockerfile, diff and fixes to --out-dir; build nothing",
           kind="flag"),
    Option("--out-dir", "folder for --prepare-only"),
    Option("--no-dependency-layer", "keep the project's dependency install in the same step as its source",
           kind="flag"),
    Option("--no-package-cache", "no BuildKit cache mount for pip and uv", kind="flag"),
)
DEFAULTS = {option.name: option.default for option in OPTIONS}


@dataclass(frozen=True)
class HarnessConfig:
    """Every option of a run, parsed and checked; made only by make_config (defaults: OPTIONS)."""

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
    push: bool
    no_push: bool  # --no-push: nothing goes to or comes from the registry
    local_registry: bool  # no registry or namespace given: the harness runs a registry itself
    verify_only: bool
    platform: str
    docker_client: str | None
    build_driver: str | None
    builder: str | None
    cache_from: tuple[str, ...]
    cache_to: tuple[str, ...]
    base_images: BaseImageMap
    build_timeout: float
    verify_timeout: float
    smoke_checks: bool  # --no-smoke-checks turns them off
    smoke_timeout: float
    accept_change_not_in_image: bool  # a PR commit whose change is not in the image passes (reported)
    build_changed_parts: bool  # the profile's parts a commit changed are built from its tree
    submodules: bool  # --no-submodules turns off fetching each submodule into the context
    serve: ServeOptions | None  # --serve-check
    git_timeout: float
    push_retries: int
    push_backoff: float
    keep_failed: bool
    keep_images: bool  # --keep-images: pushed images stay in the local engine
    min_free: Size
    cache_budget: Size
    show_build_logs: bool
    keep_contexts: bool
    skip_pushed: bool
    shard: tuple[int, int] | None
    fixes: frozenset[str]
    freeze_deps: bool
    prepare_only: bool
    out_dir: Path | None
    batch_size: int | None
    dependency_layer: bool
    package_cache: bool


def serve_options(options: dict, profile: Profile) -> ServeOptions | None:
    if not options.get("serve_check"):
        return None
    if not profile.serve_command:
        raise ConfigError(f"--serve-check: profile {profile.name!r} has no serve_command")
    volumes = []
    for text in options.get("serve_volume") or ():
        host, _, inside = text.partition(":")
        if not host.startswith("/") or not inside.startswith("/"):
            raise ConfigError(f"--serve-volume {text!r}: give HOST_PATH:CONTAINER_PATH, both absolute")
        volumes.append((host, inside))
    names = tuple(options.get("serve_env") or ())
    bad = [n for n in names if not (n.isascii() and n.isidentifier())]
    if bad:
        raise ConfigError(f"--serve-env takes variable names, not {bad}")
    return ServeOptions(str(options["serve_model"]), options.get("serve_gpus") or "",
                        positive("--serve-timeout", float(options["serve_timeout"])), names, tuple(volumes),
                        str(options["serve_shm_size"]))


def local_registry_port() -> int:
    return int(os.environ.get("HARNESS_LOCAL_REGISTRY_PORT") or 5000)


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(os.environ.get("HARNESS_CACHE_DIR") or Path(base) / "commit-image-harness")


def default_dataset(root: Path, profile: Profile) -> Path:
    """data/sglang_track_all.json for SGLang, data/<image name>.jsonl for every other project."""
    name = "sglang_track_all.json" if profile.name == "sglang" else f"{profile.image_name}.jsonl"
    return root / "data" / name


def default_blacklist(root: Path, profile: Profile) -> Path:
    """data/blacklist.txt for SGLang, data/<image name>-blacklist.txt for every other project."""
    name = "blacklist.txt" if profile.name == "sglang" else f"{profile.image_name}-blacklist.txt"
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


def destination(options: dict) -> tuple[str, str, bool]:
    """(registry, namespace, whether it is the harness's own registry): nowhere named means its own."""
    namespace = options.get("namespace")
    if namespace is None:
        namespace = os.environ.get("DOCKERHUB_USERNAME", "")
    if not options.get("registry") and not namespace:
        return f"localhost:{local_registry_port()}", "harness", True
    return options.get("registry") or "docker.io", namespace, False


def make_config(given: dict, root: Path, session_id: str) -> HarnessConfig:
    """Build the configuration from option values (None means: use the default, from OPTIONS)."""
    options = {**DEFAULTS, **{name: value for name, value in given.items() if value is not None}}
    profile = choose_profile(options)
    prepare_only = bool(options.get("prepare_only"))
    if prepare_only and not options.get("out_dir"):
        raise ConfigError("--prepare-only needs --out-dir DIR")
    work_dir = Path(options.get("work_dir") or default_work_dir()).resolve()
    if is_inside_work_tree(work_dir):
        raise ConfigError(f"--work-dir {work_dir} is inside a git work tree; build contexts must not be")
    registry, namespace, local_registry = destination(options)
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
        blacklist=Path(options.get("blacklist") or default_blacklist(root, profile)).resolve(),
        repo_url=valid_repo_url(options.get("repo_url") or profile.repo_url),
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
        platform=options["platform"],
        docker_client=options.get("docker_client") or os.environ.get("HARNESS_DOCKER_CLIENT") or None,
        build_driver=options.get("build_driver") or os.environ.get("HARNESS_BUILD_DRIVER") or None,
        builder=options.get("builder"),
        cache_from=tuple(options.get("cache_from") or ()),
        cache_to=tuple(options.get("cache_to") or ()),
        base_images=parse_mapping(list(options.get("base_image_map") or ())),
        build_timeout=positive("--build-timeout", float(options["build_timeout"])),
        verify_timeout=positive("--verify-timeout", float(options["verify_timeout"])),
        smoke_checks=not options.get("no_smoke_checks"),
        smoke_timeout=positive("--smoke-timeout", float(options["smoke_timeout"])),
        accept_change_not_in_image=bool(options.get("accept_change_not_in_image")),
        build_changed_parts=bool(options.get("build_changed_parts")),
        submodules=not options.get("no_submodules"),
        serve=serve_options(options, profile),
        git_timeout=positive("--git-timeout", float(options["git_timeout"])),
        push_retries=int(options["push_retries"]),
        push_backoff=positive("--push-backoff", float(options["push_backoff"])),
        keep_failed=bool(options.get("keep_failed")),
        keep_images=bool(options.get("keep_images")),
        min_free=parse_size(options["min_free"], "--min-free",
                            cap=None if given.get("min_free") else parse_size(MIN_FREE_CAP, "").of(None)),
        cache_budget=parse_size(options["cache_budget"], "--cache-budget"),
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
        batch_size=options.get("batch_size"),
    )
