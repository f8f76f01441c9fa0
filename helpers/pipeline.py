"""Pipeline: one commit through every stage (source, render, build, verify, publish, report).

`Harness` is a run: its shared resources (helpers/resources.py), which commits have work, and each commit's
journey, a `CommitRun`: one call per stage, each stage's own glue in its package, and frozen values between
them (`CommitSource`, `Prepared`, `Built`, `BuiltImage`, `Checks`).
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import docker
import requests

from helpers.build import disk
from helpers.build.disk import COMMIT_LABEL, SESSION_LABEL
from helpers.build.image import BuildSettings, build_image, write_log
from helpers.errors import DatasetInvalid, DiskFull, HarnessError, InfraError
from helpers.publish.image import fetch_published, publish_image
from helpers.render import RenderOptions
from helpers.render.prepared import Prepared, prepare
from helpers.report.results import Verification, attested_build, write_attestation
from helpers.resources import Resources, engine_endpoint, harness_version
from helpers.source import commit as source
from helpers.source.build_config import BuildConfig
from helpers.source.commit import CommitSource
from helpers.source.dataset import CommitSpec, InvalidEntry
from helpers.source.mirror import BuildContext, Change, make_context, project_files, redact_url
from helpers.source.submodules import Submodule
from helpers.verify import commit as expect
from helpers.verify.changes import ChangeReport
from helpers.verify.checks import REVISION_LABEL, CheckResult, Checks, Expected, evaluate
from helpers.verify.image_facts import REMOVALS, Facts, Smoke, collect_facts, find_image
from helpers.verify.serve import serve_check

Record = Callable[[str, object], None]
SUBMODULES_LABEL = "commit-image-harness.submodules"      # `path=commit` of each submodule, space-separated


@dataclass(frozen=True)
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
    scm_version: str | None = None      # the version its build was given (versioned from git by its configuration)
    build_config: BuildConfig | None = None     # what the commit's build configuration says it writes and compiles
    cache_tags: tuple[str, ...] = ()    # pushed too, for other machines' builds
    local: bool = False                 # this run put it in the engine (built it, or pulled it to verify)
    rendered: str | None = None         # the Dockerfile as built (what the change check reads)
    submodules: tuple[Submodule, ...] = ()      # archived into its context, each at its commit
    dockerfile_path: str | None = None  # the Dockerfile's path in the tree, when it is the tree's

    @property
    def subject(self) -> str:
        """What is verified: the registry's digest with --verify-only, else the local tag."""
        return self.verified_ref or self.ref


@dataclass(frozen=True)
class Produced:
    """What one commit gave: its image and its checks, or the failure that stopped it first."""

    image: BuiltImage | None = None
    checks: Checks | None = None
    error: HarnessError | None = None

    def get(self) -> Checks | None:
        """The checks for the test to assert (None when nothing was built: --prepare-only)."""
        if self.error is not None:
            raise self.error
        return self.checks


class Harness(Resources):
    """A run of the harness: its resources, which commits have work, and each commit's run."""

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
        return self.commit(entry, record).run()

    def commit(self, spec: CommitSpec, record: Record = lambda name, value: None) -> CommitRun:
        """One commit's journey on this run's resources."""
        return CommitRun(self, spec, record)

    def build_settings(self) -> BuildSettings:
        cfg = self.config
        return BuildSettings(self.driver, cfg.log_dir, cfg.build_timeout, cfg.platform, cfg.builder, cfg.cache_from,
                             cfg.cache_to, share_layers=cfg.push and not cfg.verify_only)

    def labels(self, sha: str) -> dict[str, str]:
        """The labels of every container the harness starts for an image (the disk stage finds them by these)."""
        return {SESSION_LABEL: self.config.session_id, COMMIT_LABEL: sha}

    def keep(self, produced: Produced) -> bool:
        """Whether the image a commit put in the engine stays when the commit ends: one that passed with --no-push
        (it is nowhere else) or --keep-images, a failed one with --keep-failed."""
        cfg = self.config
        if cfg.verify_only:
            return cfg.keep_images
        passed = produced.error is None and produced.checks is not None and produced.checks.passed
        return (cfg.no_push or cfg.keep_images) if passed else cfg.keep_failed


    def describe(self, sha: str, record: Record) -> CommitSource:
        """What the commit's build configuration says, recorded as `build_config` (and `scm_version`)."""
        commit = source.describe(self.mirror, self.config.profile, self.config.fixes, sha)
        record("build_config", "; ".join(commit.build_config.lines())[:2000])
        if commit.scm_version:
            record("scm_version", commit.scm_version)
        return commit

    def published(self, image: BuiltImage, record: Record) -> BuiltImage:
        """--verify-only: the image users pull, i.e. the digest the registry serves under the tag (pulled when
        the local image is another); with --no-push, the local image, which was never pushed."""
        if self.config.no_push:
            find_image(self.docker, image.ref)
            return image
        digest, verified, pulled = fetch_published(self.docker, self.registry, self.config.image, image.sha,
                                                   self.credentials, record)
        return dataclasses.replace(image, digest=digest, verified_ref=verified, local=pulled)

    def render_options(self, ctx: BuildContext, commit: CommitSource, build_parts: tuple[str, ...]) -> RenderOptions:
        """What rendering the commit's Dockerfile depends on besides its text."""
        cfg, sha = self.config, commit.sha
        return RenderOptions(
            profile=cfg.profile, sha=sha, base_images=cfg.base_images, repo_ids=(cfg.repo_url,), fixes=cfg.fixes,
            scm_version=commit.scm_version,
            freeze_until=self.mirror.end_of_commit_day(sha) if cfg.freeze_deps else None,
            project_files=project_files(ctx.context, cfg.profile.source_subdir),
            dependency_layer=cfg.dependency_layer, package_cache=cfg.package_cache, build_parts=build_parts)

    def tidy(self, produced: Produced, record: Record) -> None:
        """When a commit ends, the image this run put in the engine leaves it unless it must stay; its layers stay
        in the build cache, which then goes back under --cache-budget."""
        REMOVALS.wait()                     # the verification's containers are gone before the commit ends
        image = produced.image
        if image is not None and image.local and not self.keep(produced):
            self.remove_image(image.subject)
            record("removed", image.subject)
        if self.config.verify_only:
            return
        try:
            freed = self.disk.bound_cache()
        except (docker.errors.DockerException, requests.RequestException, InfraError) as e:
            record("cache_prune_failed", str(e)[:300])
            return
        if freed:
            record("cache_pruned", disk.human(freed))

    def attest(self, image: BuiltImage, checks: Checks, change: ChangeReport | None) -> Path:
        """An in-toto statement of what was verified, for the image users pull (its registry digest; the local
        image ID when nothing was pushed)."""
        profile, mirror, cfg = self.config.profile, self.mirror, self.config
        digest = image.digest or self.docker.images.get(image.subject).id
        return write_attestation(cfg.attestation_dir, Verification(
            repository=image.ref.rsplit(":", 1)[0], digest=digest, commit=image.sha, source=redact_url(cfg.repo_url),
            package_path=profile.package_path, package_tree=mirror.tree_id(image.sha, profile.package_path),
            package_files=len(mirror.blob_hashes(image.sha, profile.package_path)),
            checks=tuple((c.category, c.passed, c.found) for c in checks), harness_version=harness_version(),
            verified_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            change=change.attested() if change else None,
            submodules=tuple({"path": s.path, "url": s.url, "commit": s.commit} for s in image.submodules),
            build=attested_build(image.build_config, image.scm_version) if image.build_config else None))

    def image_labels(self, image: BuiltImage) -> dict[str, str]:
        """What a built image carries: the commit (OCI revision, and the harness's own label), the repository,
        each submodule's commit."""
        sha, submodules = image.sha, image.submodules
        source_url = redact_url(self.config.repo_url)
        return {REVISION_LABEL: sha, COMMIT_LABEL: sha, "org.opencontainers.image.source": source_url,
                **({SUBMODULES_LABEL: " ".join(f"{s.path}={s.commit}" for s in submodules)} if submodules else {})}

    def facts(self, image: BuiltImage, want: Expected, package_blobs: dict[str, str]) -> Facts:
        """The image's facts; an engine that cannot run the verification is the infrastructure's failure."""
        cfg = self.config
        try:
            return collect_facts(self.docker, image.subject, cfg.profile, cfg.verify_timeout,
                                 labels=self.labels(image.sha), layout=self.layout,
                                 smoke=Smoke(want.smoke, cfg.smoke_timeout), known=self.known(image, package_blobs),
                                 texts=frozenset(want.version_files))
        except (docker.errors.DockerException, requests.RequestException) as e:
            if disk.is_disk_full(str(e)):
                raise DiskFull(f"the verification of {image.subject} could not run: {e}") from e
            raise InfraError(f"the verification of {image.subject} could not run: {e}") from e


class CommitRun:
    """One commit's journey: source, render, build, verify, serve, publish, attest, then tidy. Its stages use the
    run's resources (`self.harness`) and report through `record` (the JUnit properties)."""

    def __init__(self, harness: Harness, spec: CommitSpec, record: Record):
        self.harness, self.spec, self.record = harness, spec, record
        self.config, self.mirror = harness.config, harness.mirror
        self.change_report: ChangeReport | None = None
        self.diff_found: tuple[str | None, list[Change]] | None = None

    def run(self) -> Produced:
        """Build, verify the local image, and only when every check passed, push and confirm the digest; then the
        engine lets go of what it no longer needs. An image that fails a check is never pushed."""
        produced = self.attempt()
        if not self.config.prepare_only:
            self.harness.tidy(produced, self.record)
        return produced

    def attempt(self) -> Produced:
        """The commit's stages in order; a failure is returned (with where it happened), not raised."""
        image, stage, record, cfg = None, "build", self.record, self.config
        try:
            image = self.produce()
            if cfg.prepare_only:
                return Produced(image)
            stage = "verify"
            checks = self.verify(image)
            for check in checks:
                record(f"check.{check.category}", check.line())
            if checks.passed and cfg.serve is not None:
                stage = "serve"
                served = serve_check(self.harness.docker, image.subject, cfg.profile, cfg.serve,
                                     self.harness.labels(image.sha))
                record("serve", served.line())
            stage = "publish"
            if checks.passed and cfg.push and not cfg.verify_only:
                image = self.publish(image)
            if checks.passed:
                record("attestation", str(self.harness.attest(image, checks, self.change_report)))
            return Produced(image, checks)
        except HarnessError as e:
            ref = image.subject if image else cfg.image.ref(self.spec.sha)
            return Produced(image, error=e.located(stage, self.spec.sha, ref))

    def produce(self) -> BuiltImage:
        """Source, render, build: a local image tagged with the commit's full SHA (or, with --verify-only, the
        image the registry serves under that tag)."""
        cfg, record = self.config, self.record
        if not cfg.prepare_only:
            self.harness.require_engine()                # a dead engine fails fast, with its endpoint
        sha = self.mirror.resolve(self.spec.sha)
        if sha != self.spec.sha:
            record("sha", sha)
        commit = self.harness.describe(sha, record)
        image = BuiltImage(sha, cfg.image.ref(sha), scm_version=commit.scm_version, build_config=commit.build_config)
        if not cfg.prepare_only:
            record("image", image.ref)
        if cfg.verify_only:
            return self.harness.published(dataclasses.replace(
                image, patched=source.patched_files(self.mirror, sha, cfg.work_dir, cfg.fixes)), record)
        ctx = make_context(self.mirror, sha, cfg.work_dir)
        try:
            return self.build_from(ctx, image, commit)
        finally:
            if not cfg.keep_contexts:
                ctx.remove()

    def build_from(self, ctx: BuildContext, image: BuiltImage, commit: CommitSource) -> BuiltImage:
        """The context completed (submodules), fixed and its Dockerfile rendered; then built (--prepare-only:
        written out instead)."""
        cfg, record, sha = self.config, self.record, image.sha
        fetched = source.add_submodules(self.mirror, sha, ctx, cfg.profile, cfg.submodules, record)
        dockerfile = source.dockerfile_of(self.mirror, self.spec, sha, cfg.profile.dockerfile_candidates)
        prepared = prepare(ctx, self.spec, dockerfile.text, dockerfile.origin, cfg.fixes,
                           lambda: self.harness.render_options(ctx, commit, self.changed_parts(sha)), record)
        image = dataclasses.replace(image, patched=dict(prepared.patched), rendered=prepared.rendered.text,
                                    submodules=fetched, dockerfile_path=dockerfile.path)
        if cfg.prepare_only:
            record("prepared", str(prepared.write_to(cfg.out_dir or Path("."), sha)))
            return image
        record("disk", self.harness.disk.ensure_room())
        return self.build(prepared, ctx, image, commit)

    def build(self, prepared: Prepared, ctx: BuildContext, image: BuiltImage, commit: CommitSource) -> BuiltImage:
        harness, cfg = self.harness, self.config
        header = [f"commit:     {image.sha} ({'+'.join(self.spec.roles)}, dataset line {self.spec.line})",
                  f"repository: {redact_url(cfg.repo_url)}", f"image:      {image.ref}",
                  f"dockerfile: {prepared.origin}", f"driver:     {harness.driver.describe()}"]
        log_path = write_log(cfg.log_dir, prepared, image.sha, header, commit.lines())
        self.record("log", str(log_path))
        built = build_image(harness.build_settings(), prepared, ctx, image.ref, harness.image_labels(image), log_path,
                            self.record, harness.engine_alive, harness.disk.describe, engine_endpoint())
        return dataclasses.replace(image, local=True, build_seconds=built.seconds, cache_tags=built.cache_tags)

    def verify(self, image: BuiltImage) -> Checks:
        """Files read from outside the image, one probe run inside (the smoke checks last), then every check;
        nothing raised yet. What verification learns from an image that passed serves the next commit."""
        harness, profile, cfg = self.harness, self.config.profile, self.config
        blobs = self.mirror.blob_hashes(image.sha, profile.package_path)
        want = expect.expected(image.sha, profile, blobs, image.patched, image.build_config, image.scm_version,
                               cfg.smoke_checks)
        package_blobs = {path[len(profile.package_path) + 1:]: blob for path, blob in blobs.items()}
        facts = harness.facts(image, want, package_blobs)
        seconds = (facts.probe.get("smoke") or {}).get("seconds")
        if seconds is not None:
            self.record("smoke_seconds", seconds)
        checks = evaluate(facts, want)
        harness.learn(image, package_blobs, facts, checks.passed)
        return checks._replace(change=self.change_check(image))

    def change_check(self, image: BuiltImage) -> CheckResult:
        """Where the commit's change went (recorded as `change` and `change.<where>`), and the verdict."""
        cfg = self.config
        check, self.change_report = expect.check_change(
            self.mirror, self.spec, image.sha, image.rendered, image.dockerfile_path, cfg.profile, cfg.repo_url,
            cfg.fixes, lambda: self.diff(image.sha), cfg.accept_change_not_in_image, self.record)
        return check

    def publish(self, image: BuiltImage) -> BuiltImage:
        """The verified image pushed under its tag, the digest confirmed; then its cache tags."""
        harness, cfg = self.harness, self.config
        digest = publish_image(harness.docker, harness.registry, cfg.image, image.sha, harness.credentials,
                               cfg.push_retries, cfg.push_backoff, image.cache_tags, self.record)
        return dataclasses.replace(image, digest=digest)

    def changed_parts(self, sha: str) -> tuple[str, ...]:
        """--build-changed-parts: the profile's parts the commit (or its PR commits) changed runtime code in."""
        if not self.config.build_changed_parts or not self.config.profile.parts:
            return ()
        parts = source.changed_parts(self.mirror, self.spec, sha, self.config.profile, self.diff(sha)[1])
        if parts:
            self.record("built_parts", ", ".join(parts))
        return parts

    def diff(self, sha: str) -> tuple[str | None, list[Change]]:
        """(parent, what the commit changed against it): the record's parent, else git's first (once)."""
        if self.diff_found is None:
            self.diff_found = source.commit_diff(self.mirror, self.spec, sha)
        return self.diff_found
