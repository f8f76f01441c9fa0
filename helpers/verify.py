"""Verify: one container run per image collects the facts; each check is a pure comparison on the host.

The decisive check compares the code, not the claim: git blob hashes of the package's files
inside the image against `git ls-tree` of the commit (patched files against their patched bytes).
"""
from __future__ import annotations

import fnmatch
import hashlib
import json
import posixpath
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import docker
import requests

from helpers.errors import ImageNotFound, InfraError, VerificationFailed
from helpers.probe import MARK
from helpers.profiles import Profile

PROBE_SOURCE = (Path(__file__).parent / "probe.py").read_text()
REVISION_LABEL = "org.opencontainers.image.revision"


def blob_hash(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass(frozen=True)
class Facts:
    """What the image says about itself: its labels and what the probe found inside."""

    labels: dict[str, str]
    probe: dict


@dataclass(frozen=True)
class Expected:
    sha: str
    profile: Profile
    tree: dict[str, str]            # path under the package dir -> blob hash


@dataclass(frozen=True)
class CheckResult:
    category: str
    passed: bool
    found: str

    def line(self) -> str:
        return f"{'ok  ' if self.passed else 'FAIL'} {self.category}: {self.found}"


def expected_tree(profile: Profile, ls_tree: dict[str, str], patched: dict[str, bytes]) -> dict[str, str]:
    """Blob hashes relative to the package directory, patched files replaced by their new content.

    An installed wheel carries the package's code, not necessarily its data files: for profiles
    whose images install a wheel, only the Python files are compared."""
    prefix = profile.package_path + "/"
    tree = {path[len(prefix):]: blob for path, blob in ls_tree.items() if path.startswith(prefix)}
    for path, content in patched.items():
        if path.startswith(prefix):
            tree[path[len(prefix):]] = blob_hash(content)
    keep = (lambda p: True) if profile.editable_required else (lambda p: p.endswith(".py"))
    return {p: h for p, h in tree.items() if keep(p) and not generated(profile, p)}


def generated(profile: Profile, path: str) -> bool:
    return any(fnmatch.fnmatchcase(path, pattern) for pattern in profile.generated_files)


def probe_args(profile: Profile) -> dict[str, object]:
    package_rel = posixpath.relpath(profile.package_path, profile.source_subdir or ".")
    return {"proof_file": profile.proof_file, "distribution": profile.distribution,
            "import_name": profile.import_name, "package_rel": package_rel,
            "import_from_workdir": profile.import_from_workdir}


def find_image(client: docker.DockerClient, ref: str, pull: Callable[[], None] | None = None):
    """The local image, else pulled (when a pull is given); ImageNotFound when neither works."""
    try:
        return client.images.get(ref)
    except docker.errors.ImageNotFound:
        if pull is None:
            raise ImageNotFound(f"image {ref} is not in the local engine") from None
    try:
        pull()
        return client.images.get(ref)
    except docker.errors.DockerException as e:
        raise ImageNotFound(f"image {ref} is neither local nor pullable: {e}") from e


def collect_facts(client: docker.DockerClient, ref: str, profile: Profile, timeout: float,
                  labels: dict[str, str] | None = None) -> Facts:
    """One container run, entrypoint overridden, no network: returns the probe's JSON."""
    image = client.images.get(ref)
    command = ["-c", PROBE_SOURCE, json.dumps(probe_args(profile))]
    workdir = None if profile.import_from_workdir else "/"
    container = client.containers.create(image.id, entrypoint=["python3"], command=command,
                                         network_disabled=True, working_dir=workdir, labels=labels or {})
    try:
        container.start()
        status = container.wait(timeout=timeout)
        output = container.logs(stdout=True, stderr=False).decode("utf-8", errors="replace")
        errors = container.logs(stdout=False, stderr=True).decode("utf-8", errors="replace")
    except (requests.exceptions.ConnectionError, requests.exceptions.ReadTimeout) as e:
        raise InfraError(f"verification container of {ref} gave no answer within {timeout:.0f}s: {e}") from e
    finally:
        try:
            container.remove(force=True)
        except docker.errors.DockerException:
            pass
    for line in reversed(output.splitlines()):
        if line.startswith(MARK):
            return Facts(image.labels or {}, json.loads(line[len(MARK):]))
    raise VerificationFailed("verify_import", f"the probe printed no facts (exit status "
                             f"{status.get('StatusCode')}); is python3 on the image's PATH?\n{errors[-2000:]}")


def check_label(facts: Facts, want: Expected) -> CheckResult:
    found = facts.labels.get(REVISION_LABEL)
    return CheckResult("verify_label", found == want.sha, f"label {REVISION_LABEL}={found or '(none)'}")


def check_proof_file(facts: Facts, want: Expected) -> CheckResult:
    proof = facts.probe.get("proof")
    if proof is None:
        return CheckResult("verify_proof_file", False, f"{want.profile.proof_file}: {facts.probe.get('proof_error')}")
    return CheckResult("verify_proof_file", proof.strip() == want.sha,
                       f"{want.profile.proof_file} holds {proof.strip()[:80]!r}")


def check_editable_install(facts: Facts, want: Expected) -> CheckResult:
    probe = facts.probe
    direct_url = probe.get("direct_url")
    if not want.profile.editable_required:
        return CheckResult("verify_editable_install", True, "not required by the profile")
    if direct_url is None:
        reason = probe.get("dist_error") or "no PEP 610 direct_url.json (not installed by pip from a directory)"
        return CheckResult("verify_editable_install", False, f"{want.profile.distribution}: {reason}")
    editable = bool((direct_url.get("dir_info") or {}).get("editable"))
    source, module = probe.get("source_dir"), probe.get("module_file")
    source = (source or "").rstrip("/")
    under = bool(source and module and module.startswith(source + "/"))
    subdir = want.profile.source_subdir
    pinned = bool(source) and (not subdir or source.endswith("/" + subdir))
    found = f"direct_url {direct_url.get('url')} editable={editable}; {want.profile.import_name} from {module}"
    return CheckResult("verify_editable_install", editable and under and pinned, found)


def check_import(facts: Facts, want: Expected) -> CheckResult:
    error = facts.probe.get("import_error")
    if error:
        return CheckResult("verify_import", False, f"import {want.profile.import_name} failed:\n{error.strip()}")
    return CheckResult("verify_import", True, f"import {want.profile.import_name} -> {facts.probe.get('module_file')}")


def check_source(facts: Facts, want: Expected) -> CheckResult:
    image = facts.probe.get("hashes")
    if image is None:
        return CheckResult("verify_source_mismatch", False, "no package directory found in the image to compare")
    missing = sorted(p for p in want.tree if p not in image)
    differ = sorted(p for p in want.tree if p in image and image[p] != want.tree[p])
    extra = sorted(p for p in image if p not in want.tree and p.endswith(".py") and not generated(want.profile, p))
    if not (missing or differ or extra):
        return CheckResult("verify_source_mismatch", True,
                           f"{len(want.tree)} files of {want.profile.package_path} identical to {want.sha[:12]}")
    parts = [f"{label} ({len(paths)}): {', '.join(paths[:20])}{' ...' if len(paths) > 20 else ''}"
             for label, paths in (("differ", differ), ("missing", missing), ("not in the commit", extra)) if paths]
    return CheckResult("verify_source_mismatch", False,
                       f"{facts.probe.get('package_dir')} vs {want.profile.package_path}@{want.sha[:12]}: "
                       + "; ".join(parts))


CHECKS = (check_label, check_proof_file, check_editable_install, check_import, check_source)


def evaluate(facts: Facts, want: Expected) -> list[CheckResult]:
    return [check(facts, want) for check in CHECKS]


def summary(results: list[CheckResult]) -> str:
    return "\n".join(r.line() for r in results)
