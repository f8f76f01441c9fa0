"""Pipeline: one commit through every stage (source, render, build, verify, publish).

`Harness` is a run: its shared resources (helpers/resources.py), which commits have work, and each
commit's journey, a `CommitRun`, through the stages on those resources.
"""
from __future__ import annotations

import difflib
import hashlib
import os
import posixpath
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import docker
import requests

from helpers import render
from helpers.build import disk
from helpers.build import driver as build
from helpers.build.disk import COMMIT_LABEL, SESSION_LABEL
from helpers.errors import DatasetInvalid, DiskFull, HarnessError, ImageNotFound, InfraError
from helpers.publish import registry as publish
from helpers.render import reads
from helpers.render.scm_version import project_version
from helpers.report import results as report
from helpers.resources import Resources, engine_endpoint, harness_version
from helpers.source import mirror as source
from helpers.source import submodules
from helpers.source.build_config import BuildConfig, read_build_config
from helpers.source.context_fixes import CONTEXT_FIXES, AppliedFix, apply_context_fixes
from helpers.source.dataset import CommitSpec, InvalidEntry
from helpers.verify import changes, image_facts, serve, smoke
from helpers.verify import checks as verify
from helpers.verify.checks import CheckResult, Expected

Record = Callable[[str, object], None]
SUBMODULES_LABEL = "commit-image-harness.submodules"      # `path=commit` of each submodule, space-separated


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
    scm_version: str | None = None      # the version its build was given (versioned from git by its configuration)
    build_config: BuildConfig | None = None     # what the commit's build configuration says it writes and compiles
    cache_tags: list[str] = field(default_factory=list)     # pushed too, for other machines' builds
    local: bool = False                 # this run put it in the engine (built it, or pulled it to verify)
    rendered: str | None = None         # the Dockerfile as built (what the change check reads)
    submodules: tuple[submodules.Submodule, ...] = ()   # archived into its context, each at its commit

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



class CommitRun:
    """One commit's journey: context, fixes, render, build, verify, serve, publish, attest, then tidy. Its
    stages use the run's resources (`self.harness`) and report through `record` (the JUnit properties)."""

    def __init__(self, harness: Harness, spec: CommitSpec, record: Record):
        self.harness, self.spec, self.record = harness, spec, record
        self.config = harness.config
        self.dockerfile_path: str | None = None      # the Dockerfile's path in the tree, when read from it
        self.change_report: changes.ChangeReport | None = None
        self.commit_diff: tuple[str | None, list[source.Change]] | None = None

    def run(self) -> Produced:
        """Build, verify the local image, and only when every check passed, push and confirm the digest;
        then the engine lets go of what it no longer needs (`tidy`).

        An image that fails a check is never pushed: the registry's tag keeps what it served."""
        produced = self.attempt()
        if not self.config.prepare_only:
            self.tidy(produced)
        return produced

    def attempt(self) -> Produced:
        """The commit's stages in order; a failure is returned (with where it happened), not raised."""
        image, stage, record = None, "build", self.record
        try:
            image = self.produce()
            if self.config.prepare_only:
                return Produced(image)
            stage = "verify"
            checks = self.verify(image)
            for check in checks:
                record(f"check.{check.category}", check.line())
            if checks.passed and self.config.serve is not None:
                stage = "serve"
                record("serve", self.serve(image, self.config.serve).line())
            stage = "publish"
            if checks.passed and self.config.push and not self.config.verify_only:
                self.publish(image)
            if checks.passed:
                record("attestation", str(self.attest(image, checks)))
            return Produced(image, checks)
        except HarnessError as e:
            ref = image.subject if image else self.config.image.ref(self.spec.sha)
            return Produced(image, error=e.located(stage, self.spec.sha, ref))

    def tidy(self, produced: Produced) -> None:
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
            self.harness.remove_image(image.subject)
            self.record("removed", image.subject)
        if cfg.verify_only:
            return
        try:
            freed = self.harness.disk.bound_cache()
        except (docker.errors.DockerException, requests.RequestException, InfraError) as e:
            self.record("cache_prune_failed", str(e)[:300])
            return
        if freed:
            self.record("cache_pruned", disk.human(freed))

    def produce(self) -> BuiltImage:
        """Context, fixes, render, build: a local image tagged with the commit's full SHA (or, with
        --verify-only, the image the registry serves under that tag)."""
        harness, record = self.harness, self.record
        if not self.config.prepare_only:
            harness.require_engine()                     # a dead engine fails fast, with its endpoint
        sha = harness.mirror.resolve(self.spec.sha)
        if sha != self.spec.sha:
            record("sha", sha)
        config = self.build_config(sha)
        image = BuiltImage(sha, self.config.image.ref(sha), scm_version=self.scm_version(sha, config),
                           build_config=config)
        record("build_config", "; ".join(config.lines())[:2000])
        if image.scm_version:
            record("scm_version", image.scm_version)
        if not self.config.prepare_only:
            record("image", image.ref)
        if self.config.verify_only:
            image.patched = self.patched_files(sha)
            self.fetch_existing(image)
            return image
        ctx = source.make_context(harness.mirror, sha, self.config.work_dir)
        try:
            self.add_submodules(ctx, image)
            prepared = self.prepare(ctx, image)
            image.rendered = prepared.rendered.text
            if self.config.prepare_only:
                record("prepared", str(prepared.write_to(self.config.out_dir or Path("."), sha)))
            else:
                record("disk", harness.disk.ensure_room())
                self.build(prepared, ctx, image)
        finally:
            if not self.config.keep_contexts:
                ctx.remove()
        return image

    def add_submodules(self, ctx: source.BuildContext, image: BuiltImage) -> None:
        """Each submodule the commit records, at its commit, into its folder of the context (recorded as
        `submodules`); Git LFS pointers in the context are recorded as `lfs_pointers`."""
        if self.config.submodules:
            fetched = submodules.fetch(self.harness.mirror, image.sha, ctx.context,
                                       self.config.profile.optional_submodules)
            image.submodules = fetched.submodules
            ctx.notes += list(fetched.notes)
            if fetched.submodules:
                self.record("submodules", ", ".join(s.line() for s in fetched.submodules))
            if fetched.notes:
                self.record("submodule_notes", "; ".join(fetched.notes)[:2000])
        elif submodules.recorded(self.harness.mirror, image.sha):
            ctx.notes.append("--no-submodules: the submodules' folders are left empty")
            self.record("submodules", "left empty (--no-submodules)")
        pointers = submodules.lfs_pointers(ctx.context)
        if pointers:
            self.record("lfs_pointers", ", ".join(pointers))
            ctx.notes.append(f"Git LFS pointer files (the objects were not fetched) reach the image: "
                             f"{', '.join(pointers)}")

    def publish(self, image: BuiltImage) -> None:
        """Push a verified image, then the registry must serve the pushed digest under the tag; then its cache
        tags, for other machines' builds."""
        harness = self.harness
        pushed = publish.push(harness.docker, image.ref, harness.credentials, self.config.push_retries,
                              self.config.push_backoff)
        self.record("push_attempts", pushed.attempts)
        publish.confirm_pushed(harness.registry, self.config.image, image.sha, pushed.digest)
        image.digest = pushed.digest
        self.record("digest", image.digest)
        if image.cache_tags:
            failed = publish.push_cache_tags(harness.docker, image.ref, image.cache_tags, harness.credentials,
                                             self.config.push_retries, self.config.push_backoff)
            self.record("cache_tags", ", ".join(image.cache_tags))
            if failed:
                self.record("cache_tags_failed", "; ".join(failed))

    def patched_files(self, sha: str) -> dict[str, bytes]:
        """--verify-only: what the context fixes change in this commit (the image holds those bytes)."""
        if not self.config.fixes & CONTEXT_FIXES:
            return {}
        ctx = source.make_context(self.harness.mirror, sha, self.config.work_dir)
        try:
            return apply_context_fixes(ctx.context, set(self.config.fixes))[0]
        finally:
            ctx.remove()

    def prepare(self, ctx: source.BuildContext, image: BuiltImage) -> Prepared:
        """Fix the context's dependency files and render the Dockerfile; record every change."""
        image.patched, context_fixes = apply_context_fixes(ctx.context, set(self.config.fixes))
        original, origin = self.dockerfile_text(image.sha)
        mirror = self.harness.mirror
        options = render.RenderOptions(
            profile=self.config.profile, sha=image.sha, base_images=self.config.base_images,
            repo_ids=(self.config.repo_url,), fixes=self.config.fixes,
            scm_version=image.scm_version,
            freeze_until=mirror.end_of_commit_day(image.sha) if self.config.freeze_deps else None,
            project_files=source.project_files(ctx.context, self.config.profile.source_subdir),
            dependency_layer=self.config.dependency_layer, package_cache=self.config.package_cache,
            build_parts=self.changed_parts(image.sha))
        rendered = render.render(original, options)
        ctx.dockerfile.write_text(rendered.text)
        fixes = tuple(context_fixes) + rendered.fixes
        if fixes:
            self.record("fixes", "; ".join(str(f) for f in fixes))
        return Prepared(self.spec, origin, original, rendered, fixes, tuple(ctx.notes) + rendered.notes)

    def cache_tags(self, prepared: Prepared) -> list[str]:
        """The image repository's tags this build can take layers from, and that its image is pushed under
        too: one per layers key (commits with the same Dockerfile and dependency set), one per Dockerfile
        as written (the layers before the dependencies). None when nothing goes to a registry."""
        if not self.config.push or self.config.verify_only:
            return []
        written = hashlib.sha256(prepared.original.encode()).hexdigest()[:16]
        return [f"cache-{prepared.rendered.layers_key()}", f"cache-dockerfile-{written}"]

    def build(self, prepared: Prepared, ctx: source.BuildContext, image: BuiltImage) -> None:
        harness = self.harness
        log_path = self.write_log_header(prepared, image)
        self.record("log", str(log_path))
        repository = image.ref.rsplit(":", 1)[0]
        shared = tuple(f"{repository}:{tag}" for tag in self.cache_tags(prepared))
        inline = bool(shared) and not self.config.cache_to
        request = build.BuildRequest(
            dockerfile=ctx.dockerfile, context=ctx.context, tag=image.ref, build_args=prepared.rendered.build_args,
            labels={verify.REVISION_LABEL: image.sha, COMMIT_LABEL: image.sha,
                    "org.opencontainers.image.source": source.redact_url(self.config.repo_url),
                    **({SUBMODULES_LABEL: " ".join(f"{s.path}={s.commit}" for s in image.submodules)}
                       if image.submodules else {})},
            platform=self.config.platform, builder=self.config.builder,
            cache_from=self.config.cache_from + shared, cache_to=self.config.cache_to, inline_cache=inline)
        if shared:
            self.record("cache_from", ", ".join(shared))
            image.cache_tags = self.cache_tags(prepared)
        try:
            result = build.run_build(build.build_argv(harness.driver, request), log_path, self.config.build_timeout)
        except build.BuildFailed as e:
            if not harness.engine_alive():
                raise InfraError(f"the Docker engine at {engine_endpoint()} stopped answering during the build",
                                 log_tail=e.log_tail, exit_status=e.exit_status) from e
            if disk.is_disk_full(e.log_tail):
                raise DiskFull(f"the engine ran out of disk during the build ({harness.disk.describe()})",
                               log_tail=e.log_tail, exit_status=e.exit_status) from e
            raise
        image.local = True
        image.build_seconds = round(result.seconds, 2)
        self.record("build_seconds", image.build_seconds)
        self.record("build_steps", result.describe_steps())
        if result.heavy:
            self.record("rebuilt_heavy", "; ".join(f"{s.name[:100]} ({s.seconds:.0f} s)" for s in result.heavy))

    def build_config(self, sha: str) -> BuildConfig:
        """What the commit's own build configuration says: its versioning, the files it writes, what it compiles."""
        mirror, subdir = self.harness.mirror, self.config.profile.source_subdir
        return read_build_config(lambda path: mirror.read_file(sha, path), subdir,
                                 lambda: mirror.blob_hashes(sha, subdir or "."))

    def scm_version(self, sha: str, config: BuildConfig) -> str | None:
        """The version the commit's configuration gets from git (setuptools-scm, hatch-vcs), computed by
        setuptools-scm from the mirror; None when it is not versioned from git or `scm_version` is turned off."""
        versioning = config.versioning
        if not versioning.from_git or "scm_version" not in self.config.fixes:
            return None
        root = posixpath.normpath(posixpath.join(config.project_dir or ".", str(versioning.options.get("root", "."))))
        return project_version(versioning.options, sha, self.harness.mirror, "" if root == "." else root)

    def attest(self, image: BuiltImage, checks: verify.Checks) -> Path:
        """An in-toto statement of what was verified, for the image users pull (its registry digest;
        the local image ID when nothing was pushed)."""
        profile, mirror = self.config.profile, self.harness.mirror
        digest = image.digest or self.harness.docker.images.get(image.subject).id
        files = mirror.blob_hashes(image.sha, profile.package_path)
        return report.write_attestation(self.config.attestation_dir, report.Verification(
            repository=image.ref.rsplit(":", 1)[0], digest=digest, commit=image.sha,
            source=source.redact_url(self.config.repo_url), package_path=profile.package_path,
            package_tree=mirror.tree_id(image.sha, profile.package_path), package_files=len(files),
            checks=tuple((c.category, c.passed, c.found) for c in checks), harness_version=harness_version(),
            verified_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            change=self.change_report.attested() if self.change_report else None,
            submodules=tuple({"path": s.path, "url": s.url, "commit": s.commit} for s in image.submodules),
            build=self.attested_build(image)))

    @staticmethod
    def attested_build(image: BuiltImage) -> dict | None:
        """The build configuration's word in the attestation: versioning, version, written files, products."""
        config = image.build_config
        if config is None:
            return None
        versioning = config.versioning
        return {"versioning": versioning.tool or "not from git", "saidBy": versioning.said_by,
                **({"version": image.scm_version} if image.scm_version else {"why": versioning.why} if
                   not versioning.from_git else {}),
                "versionFiles": list(versioning.version_files),
                "compiled": [{"module": p.module, "declaredBy": p.declared_by} for p in config.products],
                "notRead": list(config.unread)}

    def dockerfile_text(self, sha: str) -> tuple[str, str]:
        if self.spec.dockerfile.content is not None:
            content, mirror = self.spec.dockerfile.content, self.harness.mirror
            for path in [self.spec.dockerfile.path] if self.spec.dockerfile.path else \
                    self.config.profile.dockerfile_candidates:
                if mirror.read_file(sha, path) == content:       # the tree's own Dockerfile: the commit's change
                    self.dockerfile_path = path
                    break
            return content, "dataset content"
        path, text = source.find_dockerfile(self.harness.mirror, sha, self.spec.dockerfile.path,
                                            self.config.profile.dockerfile_candidates)
        self.dockerfile_path = path
        return text, f"{path} in the commit's tree"

    def write_log_header(self, prepared: Prepared, image: BuiltImage) -> Path:
        self.config.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.config.log_dir / f"{image.sha}.log"
        spec = prepared.spec
        lines = [f"commit:     {image.sha} ({'+'.join(spec.roles)}, dataset line {spec.line})",
                 f"repository: {source.redact_url(self.config.repo_url)}",
                 f"image:      {image.ref}", f"dockerfile: {prepared.origin}",
                 f"driver:     {self.harness.driver.describe()}",
                 f"started:    {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}",
                 "fixes:", *[f"  - {f}" for f in prepared.fixes], "changes:", *[f"  - {n}" for n in prepared.notes],
                 "build configuration:", *[f"  - {line}" for line in (image.build_config.lines()
                                                                       if image.build_config else [])],
                 *([f"  - version given to the build: {image.scm_version}"] if image.scm_version else []),
                 "--- rendered vs original ---"]
        fresh = log_path.with_name(f".{log_path.name}.{os.getpid()}")
        fresh.write_text("\n".join(lines) + "\n" + prepared.diff() + "--- build ---\n", encoding="utf-8")
        os.replace(fresh, log_path)       # a new file: followers of the previous run's log skip it
        (self.config.log_dir / f"{image.sha}.Dockerfile").write_text(prepared.rendered.text, encoding="utf-8")
        return log_path

    def fetch_existing(self, image: BuiltImage) -> None:
        """--verify-only: the image users pull, i.e. the digest the registry serves under the tag (pulled
        when the local image is another); with --no-push, the local image, which was never pushed."""
        harness = self.harness
        if self.config.no_push:
            image_facts.find_image(harness.docker, image.ref)
            return
        repository = image.ref.rsplit(":", 1)[0]
        digest = harness.registry.manifest_digest(self.config.image.repository, image.sha)
        if digest is None:
            raise ImageNotFound(f"the registry serves no image under {image.ref}")
        image.digest, image.verified_ref = digest, f"{repository}@{digest}"
        self.record("digest", digest)
        self.record("verified", image.verified_ref)

        def pull() -> None:
            auth = harness.credentials.auth_config() if harness.credentials else None
            harness.docker.images.pull(repository, tag=digest, auth_config=auth)
            image.local = True
        image_facts.find_image(harness.docker, image.verified_ref, pull)

    def labels(self, image: BuiltImage) -> dict[str, str]:
        """The labels of every container the harness starts for an image (the disk stage finds them by these)."""
        return {SESSION_LABEL: self.config.session_id, COMMIT_LABEL: image.sha}

    def serve(self, image: BuiltImage, options: serve.ServeOptions) -> serve.Served:
        """--serve-check: the image's server answers its health path and one tiny request."""
        return serve.serve_check(self.harness.docker, image.subject, self.config.profile, options, self.labels(image))

    def verify(self, image: BuiltImage) -> verify.Checks:
        """Files read from outside the image, one probe run inside (the smoke checks last), then every check;
        nothing raised yet. What verification learns from an image that passed serves the next commit."""
        harness, profile = self.harness, self.config.profile
        blobs = harness.mirror.blob_hashes(image.sha, profile.package_path)
        tree = verify.expected_tree(profile, blobs, image.patched, self.version_files(image))
        asked = smoke.plan(profile, tree) if self.config.smoke_checks else smoke.SmokePlan(skipped=smoke.TURNED_OFF)
        want = self.expected(image, tree, asked)
        package_blobs = {path[len(profile.package_path) + 1:]: blob for path, blob in blobs.items()}
        try:
            facts = image_facts.collect_facts(harness.docker, image.subject, profile, self.config.verify_timeout,
                                              labels=self.labels(image), layout=harness.layout,
                                              smoke=image_facts.Smoke(want.smoke, self.config.smoke_timeout),
                                              known=harness.known(image, package_blobs),
                                              texts=frozenset(want.version_files))
        except (docker.errors.DockerException, requests.RequestException) as e:
            if disk.is_disk_full(str(e)):
                raise DiskFull(f"the verification of {image.subject} could not run: {e}") from e
            raise InfraError(f"the verification of {image.subject} could not run: {e}") from e
        seconds = (facts.probe.get("smoke") or {}).get("seconds")
        if seconds is not None:
            self.record("smoke_seconds", seconds)
        checks = verify.evaluate(facts, want)
        harness.learn(image, package_blobs, facts, checks.passed)
        return checks._replace(change=self.change_check(image))

    def version_files(self, image: BuiltImage) -> tuple[str, ...]:
        """The files the build writes with the version, by path in the package (outside it: not verified)."""
        prefix = self.config.profile.package_path + "/"
        files = image.build_config.versioning.version_files if image.build_config else ()
        return tuple(path[len(prefix):] for path in files if path.startswith(prefix))

    def expected(self, image: BuiltImage, tree: dict[str, str], asked: smoke.SmokePlan) -> Expected:
        """What the commit's image must hold: its tree, and what its build configuration says the build adds."""
        config, profile = image.build_config, self.config.profile
        versioning = config.versioning.line() if config else ""
        if config and config.versioning.from_git and image.scm_version is None:
            versioning += "; the scm_version fix is off, so the build computed its own"
        return Expected(image.sha, profile, tree, version=image.scm_version, smoke=asked,
                               version_files=self.version_files(image), versioning=versioning,
                               products=config.product_paths(profile.import_name) if config else frozenset())

    def change_check(self, image: BuiltImage) -> CheckResult:
        """Where the commit's change went (recorded as `change` and `change.<where>`), and the verdict."""
        try:
            report = self.changes(image)
        except HarnessError as e:
            return CheckResult(changes.CATEGORY, True, True, f"not judged: {e.message[:300]}")
        self.record("change", report.counts())
        for where in (changes.VERIFIED, changes.BUILT, changes.NOT_IN_IMAGE):
            if report.of(where):
                self.record(f"change.{where.replace(' ', '_')}", report.listing(where))
        self.change_report = report
        return report.check(self.spec.roles, self.config.accept_change_not_in_image)

    def changed_parts(self, sha: str) -> tuple[str, ...]:
        """--build-changed-parts: the profile's parts in which the commit changed runtime code, and those its PR
        commits in the dataset change (a baseline builds them from its tree too, so that a pair differs in the
        change only, not in how the part was built)."""
        if not self.config.build_changed_parts or not self.config.profile.parts:
            return ()
        mirror, profile = self.harness.mirror, self.config.profile
        changed = list(self.diff(sha)[1])
        for child in self.spec.children:
            changed += mirror.changes(sha, mirror.resolve(child))
        parts = tuple(part for part in profile.parts
                      if any(c.path.startswith(part.rstrip("/") + "/") and changes.kind_of(c.path, profile) == "runtime"
                             for c in changed))
        if parts:
            self.record("built_parts", ", ".join(parts))
        return parts

    def diff(self, sha: str) -> tuple[str | None, list[source.Change]]:
        """(parent, what the commit changed against it): the record's parent, else git's first (once)."""
        if self.commit_diff is None:
            mirror = self.harness.mirror
            base = mirror.resolve(self.spec.parent) if self.spec.parent else mirror.first_parent(sha)
            self.commit_diff = (base, mirror.changes(base, sha))
        return self.commit_diff

    def changes(self, image: BuiltImage) -> changes.ChangeReport:
        """The commit's paths against its parent (the record's, else git's first), placed and kinded."""
        mirror, sha = self.harness.mirror, image.sha
        base, changed = self.diff(sha)
        if image.rendered is None:                   # --verify-only: the Dockerfile as it would be built
            original, _ = self.dockerfile_text(sha)
            image.rendered = render.render(original, render.RenderOptions(
                profile=self.config.profile, sha=sha, repo_ids=(self.config.repo_url,), fixes=self.config.fixes,
                dependency_layer=False, package_cache=False)).text
        return changes.place(changed, self.config.profile, reads.tree_reads(image.rendered),
                             self.dockerfile_path, base, lambda path: mirror.read_file(sha, path),
                             frozenset(path for path, _, _ in submodules.recorded(mirror, sha)))
