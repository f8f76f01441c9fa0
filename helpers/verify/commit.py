"""Commit: what one commit's image must hold, and where the commit's change went.

Takes the commit's tree (its blobs, from the mirror), the files the context fixes patched, what its build
configuration says and the version it was given; hands on `Expected` for the checks, and the `ChangeReport`
of the paths it changed against its parent, each placed (verified, built, not in the image) and kinded.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping

from helpers.errors import HarnessError
from helpers.profiles import Profile
from helpers.render import RenderOptions, render
from helpers.render.reads import tree_reads
from helpers.source.build_config import BuildConfig
from helpers.source.commit import dockerfile_of
from helpers.source.dataset import CommitSpec
from helpers.source.mirror import Change, Mirror
from helpers.source.submodules import recorded
from helpers.verify.changes import BUILT, CATEGORY, NOT_IN_IMAGE, VERIFIED, ChangeReport, place
from helpers.verify.checks import CheckResult, Expected, expected_tree
from helpers.verify.smoke import TURNED_OFF, SmokePlan, plan

Record = Callable[[str, object], None]


def version_files(profile: Profile, config: BuildConfig | None) -> tuple[str, ...]:
    """The files the build writes with the version, by path in the package (outside it: not verified)."""
    prefix = profile.package_path + "/"
    files = config.versioning.version_files if config else ()
    return tuple(path[len(prefix):] for path in files if path.startswith(prefix))


def expected(sha: str, profile: Profile, blobs: Mapping[str, str], patched: Mapping[str, bytes],
             config: BuildConfig | None, scm_version: str | None, smoke_checks: bool) -> Expected:
    """What the commit's image must hold: its tree (patched files as patched), the files its build writes and
    the compiled modules it declares, the version it was given, the smoke checks its tree allows."""
    written = version_files(profile, config)
    tree = expected_tree(profile, dict(blobs), dict(patched), written)
    asked = plan(profile, tree) if smoke_checks else SmokePlan(skipped=TURNED_OFF)
    versioning = config.versioning.line() if config else ""
    if config and config.versioning.from_git and scm_version is None:
        versioning += "; the scm_version fix is off, so the build computed its own"
    products = config.product_paths(profile.import_name) if config else frozenset()
    return Expected(sha, profile, tree, version=scm_version, smoke=asked, version_files=written,
                    versioning=versioning, products=products)


def dockerfile_as_built(original: str, profile: Profile, sha: str, repo_url: str, fixes: frozenset[str]) -> str:
    """--verify-only: the Dockerfile rendered again as it would be built (what the change check reads)."""
    return render(original, RenderOptions(profile=profile, sha=sha, repo_ids=(repo_url,), fixes=fixes,
                                          dependency_layer=False, package_cache=False)).text


def where_the_change_went(diff: tuple[str | None, list[Change]], profile: Profile, rendered: str,
                          dockerfile_path: str | None, read_file: Callable[[str], str | None],
                          gitlinks: frozenset[str]) -> ChangeReport:
    """The commit's paths against its parent, placed by what the rendered build reads, and kinded."""
    base, changed = diff
    return place(changed, profile, tree_reads(rendered), dockerfile_path, base, read_file, gitlinks)


def judge_change(report: ChangeReport, roles: tuple[str, ...], accept: bool, record: Record) -> CheckResult:
    """The change check, with where each path went recorded (`change`, `change.<where>`)."""
    record("change", report.counts())
    for where in (VERIFIED, BUILT, NOT_IN_IMAGE):
        if report.of(where):
            record(f"change.{where.replace(' ', '_')}", report.listing(where))
    return report.check(roles, accept)


def not_judged(why: str) -> CheckResult:
    return CheckResult(CATEGORY, True, True, f"not judged: {why[:300]}")


def check_change(mirror: Mirror, spec: CommitSpec, sha: str, rendered: str | None, dockerfile_path: str | None,
                 profile: Profile, repo_url: str, fixes: frozenset[str],
                 diff: Callable[[], tuple[str | None, list[Change]]], accept: bool,
                 record: Record) -> tuple[CheckResult, ChangeReport | None]:
    """Where the commit's change went, placed by what its build reads (with --verify-only, its Dockerfile rendered
    again as it would be built), and the verdict; a change that cannot be placed is not judged."""
    try:
        if rendered is None:
            dockerfile = dockerfile_of(mirror, spec, sha, profile.dockerfile_candidates)
            rendered, dockerfile_path = dockerfile_as_built(dockerfile.text, profile, sha, repo_url, fixes), \
                dockerfile.path
        report = where_the_change_went(diff(), profile, rendered, dockerfile_path,
                                       lambda path: mirror.read_file(sha, path),
                                       frozenset(path for path, _, _ in recorded(mirror, sha)))
    except HarnessError as e:
        return not_judged(e.message), None
    return judge_change(report, spec.roles, accept, record), report
