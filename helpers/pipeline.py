"""Pipeline: one commit through every stage (source, render, build, publish, verify).

`Harness` holds what a session shares (engine client, build driver, mirror, credentials);
it is created lazily so that collecting tests needs neither docker nor the network.
"""
from __future__ import annotations

import difflib
import functools
import os
import posixpath
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import docker
import requests

from helpers import build, disk, image_facts, known, publish, render, report, serve, smoke, source, verify
from helpers.config import HarnessConfig
from helpers.context_fixes import CONTEXT_FIXES, AppliedFix, apply_context_fixes
from helpers.dataset import CommitSpec, InvalidEntry
from helpers.disk import COMMIT_LABEL, SESSION_LABEL
from helpers.errors import DatasetInvalid, DiskFull, HarnessError, ImageNotFound, InfraError
from helpers.render.scm_version import project_version

Record = Callable[[str, object], None]


@dataclass
class BuiltImage:
    """An image that claims to hold one commit, and what verification compares it with.

    `ref` is the tag (`<repository>:<sha>`); `verified_ref` what was verified (the registry's
    digest with --verify-only, else the tag)."""

    sha: str
    ref: str
    digest: str | None = None
    build_seconds: float | None = None
    patched: dict[str, bytes] = field(default_factory=dict)
    verified_ref: str | None = None
    scm_version: str | None = None      # the version its build was given (setuptools-scm projects)
    local: bool = False                 # this run put it in the engine (built it, or pulled it to verify)

    @property
    def subject(self) -> str:
        """What is verified: the registry's digest with --verify-only, else the local tag."""
        return self.verified_ref or self.ref


@dataclass(frozen=True)
class Produced:
    """What one commit gave: its image and its checks, or the failure that stopped it first."""

    image: BuiltImage | None = None
    checks: verify.Checks | None = None
    error: HarnessError | None = None

    def get(self) -> verify.Checks | None:
        """The checks for the test to assert (None when nothing was built: --prepare-only)."""
        if self.error is not None:
            raise self.error
        return self.checks


@dataclass(frozen=True)
class Prepared:
    """A commit ready to build: its Dockerfile before and after, and every change made."""

    spec: CommitSpec
    origin: str
    original: str
    rendered: render.Rendered
    fixes: tuple[AppliedFix, ...]
    notes: tuple[str, ...]

    def diff(self) -> str:
        return "".join(difflib.unified_diff(self.original.splitlines(True), self.rendered.text.splitlines(True),
                                            "original", "rendered"))

    def write_to(self, out_dir: Path, sha: str) -> Path:
        """--prepare-only: the rendered Dockerfile, the diff and the list of fixes, per commit."""
        folder = out_dir / sha
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "Dockerfile").write_text(self.rendered.text, encoding="utf-8")
        (folder / "Dockerfile.original").write_text(self.original, encoding="utf-8")
        (folder / "Dockerfile.diff").write_text(self.diff(), encoding="utf-8")
        lines = [f"dockerfile: {self.origin}", "fixes:", *[f"  - {f}" for f in self.fixes], "changes:",
                 *[f"  - {n}" for n in self.notes],
                 "build args:", *[f"  {k}={v}" for k, v in self.rendered.build_args.items()]]
        (folder / "fixes.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        return folder


class Harness:
    def __init__(self, config: HarnessConfig):
        self.config = config
        # where the last verified image had its package copies, their bytecode and its metadata folder
        self.layout_file = config.cache_dir / "layouts" / f"{config.profile.name}-{config.profile.import_name}.json"
        self.layout_seen = image_facts.Layout.read(self.layout_file)
        self.definitions = known.Definitions(config.cache_dir)
        self.bytecode = known.BytecodeVerdicts(config.cache_dir)

    @cached_property
    def docker(self) -> docker.DockerClient:
        """The engine client; an unreachable engine is one clear error naming the endpoint."""
        self.require_engine()
        # a read may wait as long as the verification's longest silence: a smoke check's deadline
        return docker.from_env(timeout=int(max(60, self.config.verify_timeout, self.config.smoke_timeout + 30)))

    def require_engine(self) -> None:
        """Raise InfraError naming the endpoint when the engine does not answer a new connection
        (a stopping engine keeps serving the connections it has, so a pooled one would lie)."""
        try:
            client = docker.from_env(timeout=15)
            try:
                client.ping()
            finally:
                client.close()
        except (docker.errors.DockerException, requests.RequestException) as e:
            raise InfraError(f"the Docker engine at {engine_endpoint()} does not answer: {e}") from e

    def engine_alive(self) -> bool:
        try:
            self.require_engine()
            return True
        except InfraError:
            return False

    def remove_image(self, ref: str) -> None:
        """Remove a local image tag; an image already gone or an engine gone is not an error."""
        try:
            self.docker.images.remove(ref, force=True)
        except (docker.errors.DockerException, requests.RequestException, InfraError):
            pass

    @cached_property
    def disk(self) -> disk.EngineDisk:
        return disk.EngineDisk(self.docker, self.config.min_free, self.config.cache_budget)

    @cached_property
    def driver(self) -> build.Driver:
        return build.detect_driver(self.config.docker_client, self.config.build_driver)

    @cached_property
    def mirror(self) -> source.Mirror:
        mirror = source.Mirror(self.config.repo_url, self.config.cache_dir, self.config.session_id,
                               self.config.git_timeout)
        mirror.ensure()
        return mirror

    @cached_property
    def credentials(self) -> publish.Credentials | None:
        return publish.resolve_credentials(self.config.image.registry)

    @cached_property
    def registry(self) -> publish.RegistryAPI:
        return publish.RegistryAPI(self.config.image.registry, self.credentials)

    def pushed_tags(self) -> set[str]:
        """Every tag of the image repository, from the registry's paginated tag list."""
        return set(self.registry.tags(self.config.image.repository))

    @staticmethod
    def has_work(sha: str, pushed: set[str] | None, verify_only: bool) -> bool:
        """--skip-pushed: a build has work when the tag is not pushed; --verify-only when it is."""
        if pushed is None:
            return True
        return (sha in pushed) if verify_only else (sha not in pushed)

    def skip_reason(self, sha: str, pushed: set[str] | None) -> str | None:
        """--skip-pushed: why this commit needs no work, or None when it does (or nothing was listed)."""
        if not sha or self.has_work(sha, pushed, self.config.verify_only):
            return None
        if self.config.verify_only:
            return f"not pushed to {self.config.image.ref(sha)}: nothing to verify"
        return f"already pushed: {self.config.image.ref(sha)}"

    @staticmethod
    def announce(entry: CommitSpec | InvalidEntry, record: Record) -> None:
        """What the report knows of an entry before anything runs (a skipped one too): roles and SHA."""
        record("roles", "+".join(entry.roles))
        if entry.sha:
            record("sha", entry.sha)

    def run_entry(self, entry: CommitSpec | InvalidEntry, record: Record) -> Produced:
        """One dataset entry's commit run; a malformed entry fails `dataset_invalid`."""
        if isinstance(entry, InvalidEntry):
            return Produced(error=DatasetInvalid(entry.reason))
        return self.run_commit(entry, record)

    def run_commit(self, spec: CommitSpec, record: Record) -> Produced:
        """Build, verify the local image, and only when every check passed, push and confirm the digest;
        then the engine lets go of what it no longer needs (`tidy`).

        An image that fails a check is never pushed: the registry's tag keeps what it served."""
        produced = self.attempt(spec, record)
        if not self.config.prepare_only:
            self.tidy(produced, record)
        return produced

    def attempt(self, spec: CommitSpec, record: Record) -> Produced:
        """The commit's stages in order; a failure is returned (with where it happened), not raised."""
        image, stage = None, "build"
        try:
            image = self.produce(spec, record)
            if self.config.prepare_only:
                return Produced(image)
            stage = "verify"
            checks = self.verify(image, record)
            for check in checks:
                record(f"check.{check.category}", check.line())
            if checks.passed and self.config.serve is not None:
                stage = "serve"
                record("serve", self.serve(image, self.config.serve).line())
            stage = "publish"
            if checks.passed and self.config.push and not self.config.verify_only:
                self.publish(image, record)
            if checks.passed:
                record("attestation", str(self.attest(image, checks)))
            return Produced(image, checks)
        except HarnessError as e:
            ref = image.subject if image else self.config.image.ref(spec.sha)
            return Produced(image, error=e.located(stage, spec.sha, ref))

    def tidy(self, produced: Produced, record: Record) -> None:
        """When a commit ends, the image this run put in the engine leaves it, unless it must stay: one that
        passed with --no-push (it is nowhere else) or --keep-images, a failed one with --keep-failed.
        Its layers stay in the build cache, which then goes back under --cache-budget."""
        image_facts.REMOVALS.wait()          # the verification's containers are gone before the commit ends
        image, cfg = produced.image, self.config
        passed = produced.error is None and produced.checks is not None and produced.checks.passed
        if cfg.verify_only:
            keep = cfg.keep_images
        else:
            keep = (cfg.no_push or cfg.keep_images) if passed else cfg.keep_failed
        if image is not None and image.local and not keep:
            self.remove_image(image.subject)
            record("removed", image.subject)
        if cfg.verify_only:
            return
        try:
            freed = self.disk.bound_cache()
        except (docker.errors.DockerException, requests.RequestException, InfraError) as e:
            record("cache_prune_failed", str(e)[:300])
            return
        if freed:
            record("cache_pruned", disk.human(freed))

    def produce(self, spec: CommitSpec, record: Record) -> BuiltImage:
        """Context, fixes, render, build: a local image tagged with the commit's full SHA (or, with
        --verify-only, the image the registry serves under that tag)."""
        if not self.config.prepare_only:
            self.require_engine()                     # a dead engine fails fast, with its endpoint
        sha = self.mirror.resolve(spec.sha)
        if sha != spec.sha:
            record("sha", sha)
        image = BuiltImage(sha, self.config.image.ref(sha), scm_version=self.scm_version(sha))
        if not self.config.prepare_only:
            record("image", image.ref)
        if self.config.verify_only:
            image.patched = self.patched_files(sha)
            self.fetch_existing(image, record)
            return image
        ctx = source.make_context(self.mirror, sha, self.config.work_dir)
        try:
            prepared = self.prepare(spec, ctx, image, record)
            if self.config.prepare_only:
                record("prepared", str(prepared.write_to(self.config.out_dir or Path("."), sha)))
            else:
                record("disk", self.disk.ensure_room())
                self.build(prepared, ctx, image, record)
        finally:
            if not self.config.keep_contexts:
                ctx.remove()
        return image

    def publish(self, image: BuiltImage, record: Record) -> None:
        """Push a verified image, then the registry must serve the pushed digest under the tag."""
        pushed = publish.push(self.docker, image.ref, self.credentials, self.config.push_retries,
                              self.config.push_backoff)
        record("push_attempts", pushed.attempts)
        publish.confirm_pushed(self.registry, self.config.image, image.sha, pushed.digest)
        image.digest = pushed.digest
        record("digest", image.digest)

    def patched_files(self, sha: str) -> dict[str, bytes]:
        """--verify-only: what the context fixes change in this commit (the image holds those bytes)."""
        if not self.config.fixes & CONTEXT_FIXES:
            return {}
        ctx = source.make_context(self.mirror, sha, self.config.work_dir)
        try:
            return apply_context_fixes(ctx.context, set(self.config.fixes))[0]
        finally:
            ctx.remove()

    def prepare(self, spec: CommitSpec, ctx: source.BuildContext, image: BuiltImage, record: Record) -> Prepared:
        """Fix the context's dependency files and render the Dockerfile; record every change."""
        image.patched, context_fixes = apply_context_fixes(ctx.context, set(self.config.fixes))
        original, origin = self.dockerfile_text(spec, image.sha)
        options = render.RenderOptions(
            profile=self.config.profile, sha=image.sha, base_images=self.config.base_images,
            repo_ids=(self.config.repo_url,), fixes=self.config.fixes,
            scm_version=image.scm_version,
            freeze_until=self.mirror.end_of_commit_day(image.sha) if self.config.freeze_deps else None,
            project_files=source.project_files(ctx.context, self.config.profile.source_subdir),
            dependency_layer=self.config.dependency_layer, package_cache=self.config.package_cache)
        rendered = render.render(original, options)
        ctx.dockerfile.write_text(rendered.text)
        fixes = tuple(context_fixes) + rendered.fixes
        if fixes:
            record("fixes", "; ".join(str(f) for f in fixes))
        return Prepared(spec, origin, original, rendered, fixes, tuple(ctx.notes) + rendered.notes)

    def build(self, prepared: Prepared, ctx: source.BuildContext, image: BuiltImage, record: Record) -> None:
        log_path = self.write_log_header(prepared, image)
        record("log", str(log_path))
        request = build.BuildRequest(
            dockerfile=ctx.dockerfile, context=ctx.context, tag=image.ref, build_args=prepared.rendered.build_args,
            labels={verify.REVISION_LABEL: image.sha, COMMIT_LABEL: image.sha,
                    "org.opencontainers.image.source": source.redact_url(self.config.repo_url)},
            platform=self.config.platform, builder=self.config.builder,
            cache_from=self.config.cache_from, cache_to=self.config.cache_to)
        try:
            result = build.run_build(build.build_argv(self.driver, request), log_path, self.config.build_timeout)
        except build.BuildFailed as e:
            if not self.engine_alive():
                raise InfraError(f"the Docker engine at {engine_endpoint()} stopped answering during the build",
                                 log_tail=e.log_tail, exit_status=e.exit_status) from e
            if disk.is_disk_full(e.log_tail):
                raise DiskFull(f"the engine ran out of disk during the build ({self.disk.describe()})",
                               log_tail=e.log_tail, exit_status=e.exit_status) from e
            raise
        image.local = True
        image.build_seconds = round(result.seconds, 2)
        record("build_seconds", image.build_seconds)

    def scm_version(self, sha: str) -> str | None:
        """The version the project's setuptools-scm gives the commit, when the scm_version fix is on."""
        if "scm_version" not in self.config.fixes:
            return None
        pyproject = self.mirror.read_file(sha, posixpath.join(self.config.profile.source_subdir, "pyproject.toml"))
        return project_version(pyproject, sha, self.mirror)

    def attest(self, image: BuiltImage, checks: verify.Checks) -> Path:
        """An in-toto statement of what was verified, for the image users pull (its registry digest;
        the local image ID when nothing was pushed)."""
        profile = self.config.profile
        digest = image.digest or self.docker.images.get(image.subject).id
        files = self.mirror.blob_hashes(image.sha, profile.package_path)
        return report.write_attestation(self.config.attestation_dir, report.Verification(
            repository=image.ref.rsplit(":", 1)[0], digest=digest, commit=image.sha,
            source=source.redact_url(self.config.repo_url), package_path=profile.package_path,
            package_tree=self.mirror.tree_id(image.sha, profile.package_path), package_files=len(files),
            checks=tuple((c.category, c.passed, c.found) for c in checks), harness_version=harness_version(),
            verified_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())))

    def dockerfile_text(self, spec: CommitSpec, sha: str) -> tuple[str, str]:
        if spec.dockerfile.content is not None:
            return spec.dockerfile.content, "dataset content"
        path, text = source.find_dockerfile(self.mirror, sha, spec.dockerfile.path,
                                            self.config.profile.dockerfile_candidates)
        return text, f"{path} in the commit's tree"

    def write_log_header(self, prepared: Prepared, image: BuiltImage) -> Path:
        self.config.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.config.log_dir / f"{image.sha}.log"
        spec = prepared.spec
        lines = [f"commit:     {image.sha} ({'+'.join(spec.roles)}, dataset line {spec.line})",
                 f"repository: {source.redact_url(self.config.repo_url)}",
                 f"image:      {image.ref}", f"dockerfile: {prepared.origin}", f"driver:     {self.driver.describe()}",
                 f"started:    {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}",
                 "fixes:", *[f"  - {f}" for f in prepared.fixes], "changes:", *[f"  - {n}" for n in prepared.notes],
                 "--- rendered vs original ---"]
        fresh = log_path.with_name(f".{log_path.name}.{os.getpid()}")
        fresh.write_text("\n".join(lines) + "\n" + prepared.diff() + "--- build ---\n", encoding="utf-8")
        os.replace(fresh, log_path)       # a new file: followers of the previous run's log skip it
        (self.config.log_dir / f"{image.sha}.Dockerfile").write_text(prepared.rendered.text, encoding="utf-8")
        return log_path

    def fetch_existing(self, image: BuiltImage, record: Record) -> None:
        """--verify-only: the image users pull, i.e. the digest the registry serves under the tag (pulled
        when the local image is another); with --no-push, the local image, which was never pushed."""
        if self.config.no_push:
            image_facts.find_image(self.docker, image.ref)
            return
        repository = image.ref.rsplit(":", 1)[0]
        digest = self.registry.manifest_digest(self.config.image.repository, image.sha)
        if digest is None:
            raise ImageNotFound(f"the registry serves no image under {image.ref}")
        image.digest, image.verified_ref = digest, f"{repository}@{digest}"
        record("digest", digest)
        record("verified", image.verified_ref)

        def pull() -> None:
            auth = self.credentials.auth_config() if self.credentials else None
            self.docker.images.pull(repository, tag=digest, auth_config=auth)
            image.local = True
        image_facts.find_image(self.docker, image.verified_ref, pull)

    def labels(self, image: BuiltImage) -> dict[str, str]:
        """The labels of every container the harness starts for an image (the disk stage finds them by these)."""
        return {SESSION_LABEL: self.config.session_id, COMMIT_LABEL: image.sha}

    def serve(self, image: BuiltImage, options: serve.ServeOptions) -> serve.Served:
        """--serve-check: the image's server answers its health path and one tiny request."""
        return serve.serve_check(self.docker, image.subject, self.config.profile, options, self.labels(image))

    def verify(self, image: BuiltImage, record: Record | None = None) -> verify.Checks:
        """Files read from outside the image, one probe run inside (the smoke checks last), then every check;
        nothing raised yet."""
        profile = self.config.profile
        blobs = self.mirror.blob_hashes(image.sha, profile.package_path)
        tree = verify.expected_tree(profile, blobs, image.patched)
        asked = smoke.plan(profile, tree) if self.config.smoke_checks else smoke.SmokePlan(skipped=smoke.TURNED_OFF)
        want = verify.Expected(image.sha, profile, tree, version=image.scm_version, smoke=asked)
        package_blobs = {path[len(profile.package_path) + 1:]: blob for path, blob in blobs.items()}
        what_is_known = image_facts.Known(
            self.definitions.for_package(self.mirror, image.sha, profile.package_path, package_blobs, image.patched),
            self.bytecode.known(), package_blobs)
        try:
            facts = image_facts.collect_facts(self.docker, image.subject, profile, self.config.verify_timeout,
                                              labels=self.labels(image), layout=self.layout_seen,
                                              smoke=image_facts.Smoke(want.smoke, self.config.smoke_timeout),
                                              known=what_is_known)
            self.layout_seen = image_facts.Layout.of(facts)         # a project keeps its layout
            self.layout_seen.write(self.layout_file)
        except (docker.errors.DockerException, requests.RequestException) as e:
            if disk.is_disk_full(str(e)):
                raise DiskFull(f"the verification of {image.subject} could not run: {e}") from e
            raise InfraError(f"the verification of {image.subject} could not run: {e}") from e
        seconds = (facts.probe.get("smoke") or {}).get("seconds")
        if record is not None and seconds is not None:
            record("smoke_seconds", seconds)
        checks = verify.evaluate(facts, want)
        if checks.passed:
            self.bytecode.learn(facts.probe.get("interpreter"), facts.probe.get("bytecode_verified") or [])
            self.definitions.learn(self.mirror, image.sha, profile.package_path, package_blobs,
                                   image_facts.loaded_sources(facts.probe, profile.import_name))
        return checks


@functools.cache
def harness_version() -> str:
    """The harness's own commit (its checkout's HEAD), `unknown` outside a git checkout."""
    try:
        done = source.run_git(["-C", str(Path(__file__).resolve().parent.parent), "rev-parse", "HEAD"], 10,
                              "the harness's own version")
    except (OSError, InfraError):
        return "unknown"
    return done.text.strip() if done.status == 0 else "unknown"


def engine_endpoint() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
