"""Verify: read the image's files from outside it, run one probe inside it, then compare on the host.

The image is untrusted. Every file that is compared with the commit's git tree (the package,
the proof file, the install's metadata, the start-up hooks) is read by the harness from a
created, never-started container through the Engine API and hashed here; nothing the image
runs can change those bytes. Only what needs the image's interpreter (which copy `import`
loads, with the image's own environment) runs inside, in one container (helpers/probe.py), and
its report is cross-checked against the files read from outside. Checks are pure functions of
those facts.
"""
from __future__ import annotations

import base64
import fnmatch
import hashlib
import io
import json
import posixpath
import re
import secrets
import tarfile
import urllib.parse
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import docker
import requests

from helpers.errors import ImageNotFound, InfraError
from helpers.probe import EARLY, MARK
from helpers.profiles import Profile

PROBE_SOURCE = (Path(__file__).parent / "probe.py").read_text()
REVISION_LABEL = "org.opencontainers.image.revision"
STARTUP_ENV = ("PYTHONPATH", "PYTHONSTARTUP", "PYTHONHOME", "PYTHONUSERBASE", "PYTHONSAFEPATH", "PYTHONINSPECT")
EXTENSION = re.compile(r"\.(so|pyd)$|\.cpython-[^/]*\.so$|\.abi3\.so$")


def blob_hash(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def record_hash(data: bytes) -> str:
    """A wheel RECORD's hash field: sha256, urlsafe base64 without padding."""
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


@dataclass(frozen=True)
class FileFacts:
    """One file read from outside the image: its git blob hash, its RECORD hash and, if small, its text."""

    blob: str
    record: str
    text: str | None = None


@dataclass(frozen=True)
class Facts:
    """What was read from the image (outside) and what the probe reported (inside)."""

    labels: dict[str, str]
    probe: dict
    env: dict[str, str] = field(default_factory=dict)
    files: dict[str, FileFacts | None] = field(default_factory=dict)           # single files by path
    copies: dict[str, dict[str, FileFacts]] = field(default_factory=dict)      # package copy -> its files
    tampering: str = ""


@dataclass(frozen=True)
class Expected:
    sha: str
    profile: Profile
    tree: dict[str, str]            # path under the package dir -> blob hash
    version: str | None = None      # the version the build was given (setuptools-scm projects)


@dataclass(frozen=True)
class CheckResult:
    """One named fact of the image (`actual`), what the commit needs it to be, and a sentence about it."""

    category: str
    actual: object
    expected: object
    found: str

    @property
    def passed(self) -> bool:
        return self.actual == self.expected

    def line(self) -> str:
        return f"{'ok  ' if self.passed else 'FAIL'} {self.category}: {self.found}"

    def why(self) -> str:
        """The assertion message: the category first (the reports read it), then what was found."""
        return f"{self.category}: {self.found}"


class Checks(NamedTuple):
    """Every check of one image, by name, in the order a failure's category is chosen."""

    label: CheckResult
    proof_file: CheckResult
    source_tree: CheckResult
    imported: CheckResult
    editable_install: CheckResult
    version: CheckResult

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self)

    def first_failure(self) -> CheckResult | None:
        return next((c for c in self if not c.passed), None)


def expected_tree(profile: Profile, ls_tree: dict[str, str], patched: dict[str, bytes]) -> dict[str, str]:
    """Blob hashes relative to the package directory, patched files replaced by their new content."""
    prefix = profile.package_path + "/"
    tree = {path[len(prefix):]: blob for path, blob in ls_tree.items() if path.startswith(prefix)}
    for path, content in patched.items():
        if path.startswith(prefix):
            tree[path[len(prefix):]] = blob_hash(content)
    return {p: h for p, h in tree.items() if not declared(profile, p)}


def declared(profile: Profile, path: str) -> bool:
    """A file a build writes into the package (generated source, compiled extension), not compared."""
    return any(fnmatch.fnmatchcase(path, pattern) for pattern in profile.generated_files + profile.build_products)


# --- reading from outside -------------------------------------------------------------------------


class _Stream(io.RawIOBase):
    """A file object over the Engine API's chunked archive stream, read once, front to back."""

    def __init__(self, chunks: Iterator[bytes]):
        self.chunks, self.buffer, self.offset = chunks, memoryview(b""), 0

    def readable(self) -> bool:
        return True

    def readinto(self, target) -> int:
        while self.offset >= len(self.buffer):
            try:
                self.buffer, self.offset = memoryview(next(self.chunks)), 0
            except StopIteration:
                return 0
        n = min(len(target), len(self.buffer) - self.offset)
        target[:n] = self.buffer[self.offset:self.offset + n]
        self.offset += n
        return n


class ImageFiles:
    """The image's filesystem as a created, never-started container shows it through the Engine API."""

    TEXT_LIMIT = 1 << 20

    def __init__(self, client: docker.DockerClient, image_id: str, labels: dict[str, str]):
        self.api = client.api
        self.container = self.api.create_container(image_id, entrypoint=["/harness-never-started"], labels=labels,
                                                   network_disabled=True)["Id"]

    def close(self) -> None:
        try:
            self.api.remove_container(self.container, force=True)
        except docker.errors.DockerException:
            pass

    def _archive(self, path: str) -> Iterator[tuple[tarfile.TarInfo, bytes | None]]:
        try:
            chunks, _ = self.api.get_archive(self.container, path)
        except docker.errors.NotFound:
            return
        with tarfile.open(fileobj=io.BufferedReader(_Stream(iter(chunks))), mode="r|") as tar:
            for member in tar:
                data = tar.extractfile(member).read() if member.isfile() else None  # type: ignore[union-attr]
                yield member, data

    def file(self, path: str, hops: int = 8) -> FileFacts | None:
        """One regular file (symbolic links followed inside the image's root), None when absent."""
        for member, data in self._archive(path):
            if member.issym() and hops:
                target = member.linkname if member.linkname.startswith("/") else \
                    posixpath.join(posixpath.dirname(path), member.linkname)
                return self.file(posixpath.normpath(target), hops - 1)
            if data is None:
                return None
            return facts_of(data, keep_text=len(data) <= self.TEXT_LIMIT)
        return None

    def tree(self, path: str, texts: bool = False) -> dict[str, FileFacts]:
        """Every file below a directory, by path relative to it (a symlink by its link text, as git does);
        with `texts`, each file's text too (small metadata folders)."""
        files: dict[str, FileFacts] = {}
        top = posixpath.basename(path.rstrip("/"))
        for member, data in self._archive(path):
            rel = member.name[len(top) + 1:] if member.name.startswith(top + "/") else ""
            if not rel:
                continue
            if member.issym():
                files[rel] = facts_of(member.linkname.encode())
            elif data is not None:
                files[rel] = facts_of(data, keep_text=texts and len(data) <= self.TEXT_LIMIT)
        return files


def facts_of(data: bytes, keep_text: bool = False) -> FileFacts:
    return FileFacts(blob_hash(data), record_hash(data), data.decode("utf-8", "replace") if keep_text else None)


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


# --- collecting ---------------------------------------------------------------------------------


def probe_args(profile: Profile, workdir: str) -> dict[str, object]:
    return {"distribution": profile.distribution, "import_name": profile.import_name,
            "modules": list(profile.check_modules), "import_from_workdir": profile.import_from_workdir,
            "extra_dirs": [workdir or "/", "/"]}


def run_probe(client: docker.DockerClient, image_id: str, profile: Profile, workdir: str, timeout: float,
              labels: dict[str, str], on_early: Callable[[dict], None] | None = None) -> tuple[dict, str]:
    """One container run, entrypoint overridden, no network: the probe's facts, or why they are missing.

    `on_early` gets the trusted phase's facts as soon as the probe prints them, while it goes on."""
    nonce = secrets.token_hex(16)
    command = ["-S", "-c", PROBE_SOURCE, json.dumps(probe_args(profile, workdir)), nonce]
    container = client.containers.create(image_id, entrypoint=["python3"], command=command, network_disabled=True,
                                         working_dir=None if profile.import_from_workdir else "/", labels=labels)
    try:
        container.start()
        output = follow_output(container, f"{EARLY}{nonce} ", on_early)
        status = container.wait(timeout=timeout)
        errors = container.logs(stdout=False, stderr=True).decode("utf-8", errors="replace")
    except (requests.exceptions.ConnectionError, requests.exceptions.ReadTimeout) as e:
        raise InfraError(f"verification container of {image_id[:19]} gave no answer within {timeout:.0f}s: {e}") from e
    finally:
        try:
            container.remove(force=True)
        except docker.errors.DockerException:
            pass
    return read_probe_output(output, nonce, status.get("StatusCode"), errors)


def follow_output(container, early_prefix: str, on_early: Callable[[dict], None] | None) -> str:
    """The container's standard output, followed until it exits; the early facts line handed on at once."""
    lines: list[str] = []
    pending = b""
    for chunk in container.logs(stdout=True, stderr=False, stream=True, follow=True):
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for raw in complete:
            line = raw.decode("utf-8", errors="replace")
            if on_early is not None and line.startswith(early_prefix):
                on_early(json.loads(line[len(early_prefix):]))
                on_early = None
            lines.append(line)
    lines.append(pending.decode("utf-8", errors="replace"))
    return "\n".join(lines)


def read_probe_output(output: str, nonce: str, status: object, errors: str) -> tuple[dict, str]:
    """The facts lines tagged with this run's nonce; any other facts line is the image's forgery.

    The trusted phase's facts (printed before any of the image's code ran) win over the same
    fields of the final line."""
    lines = output.splitlines()
    found: dict[str, dict | None] = {}
    for marker in (EARLY, MARK):
        marked = [line[len(marker):] for line in lines if line.startswith(marker)]
        genuine = [line[len(nonce) + 1:] for line in marked if line.startswith(nonce + " ")]
        if len(marked) > 1 or (marked and not genuine):
            return {}, (f"the image printed {len(marked) - len(genuine)} facts line(s) of its own beside the "
                        "probe's: start-up code tampers with verification")
        found[marker] = json.loads(genuine[0]) if genuine else None
    final = found[MARK]
    if final is None:
        return {"probe_error": f"the probe printed no facts (exit status {status}); is python3 on the "
                               f"image's PATH?\n{errors[-2000:]}"}, ""
    return {**final, **(found[EARLY] or {})}, ""


def collect_facts(client: docker.DockerClient, ref: str, profile: Profile, timeout: float,
                  labels: dict[str, str] | None = None, likely_copies: tuple[str, ...] = (),
                  likely_metadata: str | None = None) -> Facts:
    """Labels and environment from the image's config, files read from outside, one probe run inside.

    The Engine API answers each archive request in tens of milliseconds (it mounts the container's
    filesystem each time, one request per container at a time), so the reads go out side by side,
    each through a container of its own, alongside the probe's run. The start-up hook files (.pth,
    customize modules, egg-links) are the ones the probe read before any of the image's Python
    ran; they decide what is listed, never what is compared. `likely_copies` and `likely_metadata`
    (where the previous image of the project had its copies and its metadata folder) are read at
    once, before the probe names the real ones; a guess the probe does not confirm is dropped."""
    image = client.images.get(ref)
    config = image.attrs.get("Config") or {}
    env = dict(item.split("=", 1) for item in config.get("Env") or [] if "=" in item)
    with ThreadPoolExecutor(max_workers=8) as pool:
        copies: dict[str, Future] = {}

        def read_copies(paths: list[str]) -> None:
            for path in paths:
                if path not in copies:
                    copies[path] = pool.submit(read_copy, ImageFiles(client, image.id, labels or {}), path, profile)

        read_copies(list(likely_copies))
        guessed_metadata = pool.submit(read_tree, ImageFiles(client, image.id, labels or {}), likely_metadata, True) \
            if likely_metadata else None
        probed = pool.submit(run_probe, client, image.id, profile, config.get("WorkingDir") or "/", timeout,
                             labels or {}, lambda early: read_copies(early.get("copies") or []))
        outside = ImageFiles(client, image.id, labels or {})
        try:
            proof = pool.submit(outside.file, profile.proof_file)
            probe, tampering = probed.result()
            dist_info = probe.get("dist_info")
            metadata = None
            if dist_info:
                metadata = guessed_metadata if dist_info == likely_metadata else \
                    pool.submit(read_tree, ImageFiles(client, image.id, labels or {}), dist_info, True)
            confirmed = copies_to_read(probe, profile.import_name)
            read_copies(confirmed)
            read: dict[str, FileFacts | None] = {path: facts_of(text.encode("utf-8"), keep_text=True)
                                                 for path, text in (probe.get("hook_texts") or {}).items()}
            read[profile.proof_file] = proof.result()
            if metadata is not None:
                read.update({f"{dist_info}/{name}": found for name, found in metadata.result().items()})
            trees = {path: copies[path].result() for path in confirmed}
        except (docker.errors.DockerException, requests.RequestException, tarfile.TarError) as e:
            raise InfraError(f"reading the files of {ref} from outside failed: {e}") from e
        finally:
            outside.close()
    return Facts(image.labels or {}, probe, env, read, trees, tampering)


def read_tree(outside: ImageFiles, path: str, texts: bool) -> dict[str, FileFacts]:
    try:
        return outside.tree(path, texts)
    finally:
        outside.close()


def read_copy(outside: ImageFiles, path: str, profile: Profile) -> dict[str, FileFacts]:
    """A package directory's files, or a module file named like the package (a shadow) by its name.

    Each copy is read through a container of its own: the engine serves one archive request per
    container at a time."""
    try:
        if not is_module_file(path, profile):
            return outside.tree(path)
        found = outside.file(path)
        return {posixpath.basename(path): found} if found else {}
    finally:
        outside.close()


def is_module_file(path: str, profile: Profile) -> bool:
    return posixpath.basename(path) != profile.import_name


def loaded_from(probe: dict, import_name: str) -> str | None:
    """The directory (or module file) the package was loaded from, by its spec's origin."""
    origin = ((probe.get("modules") or {}).get(import_name) or {}).get("origin") or probe.get("spec_origin")
    if not origin or not origin.startswith("/"):
        return None
    return posixpath.dirname(origin) if origin.endswith("/__init__.py") else origin


def copies_to_read(probe: dict, import_name: str) -> list[str]:
    """Every copy an import could reach, plus the one that was loaded (wherever it came from)."""
    paths = list(probe.get("copies") or [])
    loaded = loaded_from(probe, import_name)
    return paths + [loaded] if loaded and loaded not in paths else paths


# --- the checks ----------------------------------------------------------------------------------


def check_label(facts: Facts, want: Expected) -> CheckResult:
    found = facts.labels.get(REVISION_LABEL)
    return CheckResult("verify_label", found, want.sha, f"label {REVISION_LABEL}={found or '(none)'}")


def check_proof_file(facts: Facts, want: Expected) -> CheckResult:
    proof = facts.files.get(want.profile.proof_file)
    if proof is None or proof.text is None:
        return CheckResult("verify_proof_file", None, want.sha, f"{want.profile.proof_file}: not in the image")
    return CheckResult("verify_proof_file", proof.text.strip(), want.sha,
                       f"{want.profile.proof_file} holds {proof.text.strip()[:80]!r}")


def check_import(facts: Facts, want: Expected) -> CheckResult:
    errors = dict(facts.probe.get("import_errors") or {})
    if facts.probe.get("probe_error"):
        errors["(probe)"] = facts.probe["probe_error"]
    if errors:
        name, error = next(iter(errors.items()))
        return CheckResult("verify_import", errors, {}, f"import {name} failed:\n{error.strip()}")
    names = [want.profile.import_name, *want.profile.check_modules]
    loaded = loaded_from(facts.probe, want.profile.import_name)
    return CheckResult("verify_import", errors, {}, f"import {', '.join(names)} -> {loaded or '?'}")


def install_kind(facts: Facts, want: Expected) -> tuple[str, str | None]:
    """How the distribution is installed, and the source directory an editable install points at."""
    dist_info = facts.probe.get("dist_info") or ""
    direct = facts.files.get(f"{dist_info}/direct_url.json") if dist_info else None
    data = json.loads(direct.text) if direct and direct.text else {}
    canonical = re.sub(r"[-_.]+", "_", want.profile.distribution).lower()
    listing = facts.probe.get("listing") or {}
    names = [n for entries in listing.values() for n in entries]
    if (data.get("dir_info") or {}).get("editable") and str(data.get("url", "")).startswith("file://"):
        path = urllib.parse.unquote(data["url"][len("file://"):])
        finders = (re.fullmatch(r"__editable___(\w+)_finder\.py", n) for n in names)
        finder = any(m and m.group(1).lower().startswith(canonical + "_") for m in finders)
        return ("PEP 660 editable (import finder)" if finder else "PEP 660/610 editable (.pth path)"), path
    for folder, entries in listing.items():
        for name in entries:
            if name.endswith(".egg-link") and re.sub(r"[-_.]+", "_", name[:-9]).lower() == canonical:
                link = facts.files.get(f"{folder}/{name}")
                target = (link.text or "").splitlines()[0].strip() if link and link.text else ""
                return "setup.py develop (egg-link)", target or None
    if data:
        return f"not editable (installed from {data.get('url', '?')})", None
    return "not editable", None


def check_editable_install(facts: Facts, want: Expected) -> CheckResult:
    if not want.profile.editable_required:
        return CheckResult("verify_editable_install", None, None, "not required by the profile")
    kind, source = install_kind(facts, want)
    loaded = loaded_from(facts.probe, want.profile.import_name)
    if source is None:
        where = facts.probe.get("dist_info") or facts.probe.get("dist_error") or "no metadata"
        return CheckResult("verify_editable_install", kind, "an editable install",
                           f"{want.profile.distribution}: {kind}; metadata at {where}; the imported copy lives at "
                           f"{loaded or '(nothing imported)'}")
    source = source.rstrip("/")
    subdir = want.profile.source_subdir
    package_rel = posixpath.relpath(want.profile.package_path, subdir or ".")
    pinned = not subdir or source.endswith("/" + subdir)
    expected = posixpath.normpath(posixpath.join(source, package_rel))
    found = f"{kind} of {source}; {want.profile.import_name} loaded from {loaded or '(nothing)'}"
    if not pinned:
        return CheckResult("verify_editable_install", source, f".../{subdir}", found + f" (not the source's {subdir}/)")
    return CheckResult("verify_editable_install", loaded, expected,
                       found + ("" if loaded == expected else f" (expected {expected})"))


def startup_hooks(facts: Facts) -> list[str]:
    """Every start-up hook the image has: environment variables, .pth files, customize modules."""
    hooks = [f"{k}={facts.env[k]}" for k in STARTUP_ENV if facts.env.get(k)]
    for folder, entries in (facts.probe.get("listing") or {}).items():
        for name in sorted(entries):
            if name.endswith(".pth") or name.startswith(("sitecustomize", "usercustomize")):
                hooks.append(f"{folder}/{name}")
    return hooks


def hook_code(facts: Facts, path: str) -> list[str]:
    """The code a hook file runs at start-up: a .pth file's import lines, a customize module whole."""
    found = facts.files.get(path)
    if found is None or found.text is None:
        return []
    if path.endswith(".pth"):
        return [line for line in found.text.splitlines() if line.startswith(("import ", "import\t"))]
    return [found.text]


def hook_findings(facts: Facts, want: Expected) -> list[str]:
    """Start-up code that reaches for the package: named in a hook, imported early, or import machinery replaced."""
    name = want.profile.import_name
    pattern = re.compile(rf"\b{re.escape(name)}\b")
    findings = []
    for hook in startup_hooks(facts):
        if "=" in hook.split("/")[0]:
            continue
        package_init = f"{hook}/__init__.py"
        for code in hook_code(facts, package_init if package_init in facts.files else hook):
            if pattern.search(code):      # an editable finder's own name (__editable___x_finder) is one word
                findings.append(f"{hook} names {name}: {code.strip()[:200]!r}")
    probe = facts.probe
    if probe.get("preloaded"):
        findings.append(f"start-up code imported {', '.join(probe['preloaded'])} before the probe did")
    findings += [c for c in probe.get("startup_changes") or [] if "gained" not in c]
    return findings


def copy_findings(want: Expected, path: str, files: dict[str, FileFacts], pycs: dict[str, str]) -> list[str]:
    """How one copy of the package differs from the commit: changed, missing, extra, shadowing files."""
    profile = want.profile
    if posixpath.basename(path) != profile.import_name:
        return [f"{path}: a module file named like the package shadows it"]
    code = [p for p in files if not p.startswith("__pycache__/") and "/__pycache__/" not in p]
    full = profile.editable_required
    missing = sorted(p for p in want.tree if p not in files and (full or p.endswith(".py")))
    differ = sorted(p for p in want.tree if p in files and files[p].blob != want.tree[p])
    extra = sorted(p for p in code if p not in want.tree and not declared(profile, p)
                   and (full or p.endswith((".py", ".pyc")) or EXTENSION.search(p)))
    sources = {p[:-3] for p in want.tree if p.endswith(".py")}
    shadows = sorted(p for p in code if p.endswith(".pyc") or EXTENSION.search(p) and (
        not declared(profile, p) or posixpath.join(posixpath.dirname(p), posixpath.basename(p).split(".")[0])
        in sources))
    parts = [f"{label} ({len(paths)}): {', '.join(paths[:20])}{' ...' if len(paths) > 20 else ''}"
             for label, paths in (("differ", differ), ("missing", missing),
                                  ("not in the commit", [p for p in extra if p not in shadows]),
                                  ("bytecode or extension modules loaded instead of source", shadows),
                                  ("bytecode that is not its source's",
                                   [f"{p}: {v}" for p, v in sorted(pycs.items())])) if paths]
    return [f"{path}: " + "; ".join(parts)] if parts else []


def record_findings(facts: Facts, want: Expected, copy: str, files: dict[str, FileFacts]) -> list[str]:
    """An installed copy's files against its wheel's RECORD (what the installer wrote): a changed file or
    one the installer did not write (an extra module dropped in later) is found even where the commit's
    tree is silent, e.g. a data file a wheel carries."""
    dist_info = facts.probe.get("dist_info") or ""
    record = facts.files.get(f"{dist_info}/RECORD")
    if not record or not record.text or posixpath.dirname(dist_info) != posixpath.dirname(copy):
        return []
    base = posixpath.basename(copy)
    listed = {}
    for row in record.text.splitlines():
        parts = row.rsplit(",", 2)
        if len(parts) == 3 and parts[0].startswith(base + "/") and parts[1]:
            listed[parts[0][len(base) + 1:]] = parts[1]
    if not listed:
        return []                   # the distribution did not install this copy (an editable install's RECORD)
    changed = sorted(p for p, h in listed.items() if p in files and files[p].record != h)
    unlisted = sorted(p for p in files if p not in listed and "__pycache__/" not in p)
    parts = [f"{label} ({len(paths)}): {', '.join(paths[:20])}"
             for label, paths in (("differ from RECORD", changed), ("not in RECORD", unlisted)) if paths]
    return [f"{copy}: " + "; ".join(parts)] if parts else []


def module_findings(facts: Facts, want: Expected) -> list[str]:
    """Every loaded module of the package comes from the loaded copy, through a source loader, unpatched."""
    loaded = loaded_from(facts.probe, want.profile.import_name)
    findings = []
    if loaded and loaded not in facts.copies:
        findings.append(f"{want.profile.import_name} was loaded from {loaded}, which no import path leads to")
    for name, module in (facts.probe.get("modules") or {}).items():
        origin = module.get("origin") or ""
        rel = posixpath.relpath(origin, loaded) if loaded and origin.startswith("/") else ""
        if not loaded or not origin.startswith(loaded + "/") and origin != loaded:
            findings.append(f"{name} was loaded from {origin or module.get('loader')}, outside {loaded}")
        elif module.get("extension") and declared(want.profile, rel):
            continue
        elif module.get("loader_patched"):
            findings.append(f"{name} was loaded from {origin} by a loader whose "
                            f"{', '.join(module['loader_patched'])} start-up code replaced")
        elif not module.get("source_loader"):
            findings.append(f"{name} was loaded by {module.get('loader')} from {origin}, not from its source")
        findings += [f"{name}.{f} is not the code of {origin}" for f in module.get("foreign") or []]
    return findings


def check_source(facts: Facts, want: Expected) -> CheckResult:
    """Every copy of the package an import could reach is the commit's, and the import loads one of them."""
    if facts.tampering:
        return CheckResult("verify_source_mismatch", [facts.tampering], [], facts.tampering)
    if not facts.copies:
        missing = f"no copy of {want.profile.import_name} found in the image to compare"
        return CheckResult("verify_source_mismatch", [missing], [], missing)
    pycs = facts.probe.get("pycs") or {}
    findings = hook_findings(facts, want) + module_findings(facts, want)
    for path, files in facts.copies.items():
        findings += copy_findings(want, path, files, pycs.get(path) or {})
        findings += record_findings(facts, want, path, files)
    hooks = startup_hooks(facts)
    listed = f"; start-up hooks: {', '.join(hooks)}" if hooks else ""
    if findings:
        return CheckResult("verify_source_mismatch", findings, [],
                           f"vs {want.profile.package_path}@{want.sha[:12]}: " + " | ".join(findings) + listed)
    return CheckResult("verify_source_mismatch", findings, [],
                       f"{len(want.tree)} files of {want.profile.package_path} identical to {want.sha[:12]} in "
                       f"{', '.join(facts.copies)}{listed}")


def installed_version(facts: Facts) -> str | None:
    """The version in the distribution's metadata, read from outside."""
    dist_info = facts.probe.get("dist_info") or ""
    for name in ("METADATA", "PKG-INFO"):
        found = facts.files.get(f"{dist_info}/{name}")
        match = re.search(r"^Version:\s*(\S+)", found.text or "", re.M) if found else None
        if match:
            return match.group(1)
    return facts.probe.get("version")


def check_version(facts: Facts, want: Expected) -> CheckResult:
    if want.version is None:
        return CheckResult("verify_version", None, None, "no version to compare (the project is not versioned by scm)")
    found = installed_version(facts)
    return CheckResult("verify_version", found, want.version,
                       f"{want.profile.distribution} {found or '(not installed)'}, the commit's is {want.version}")


def evaluate(facts: Facts, want: Expected) -> Checks:
    return Checks(check_label(facts, want), check_proof_file(facts, want), check_source(facts, want),
                  check_import(facts, want), check_editable_install(facts, want), check_version(facts, want))


def summary(results: Checks) -> str:
    return "\n".join(r.line() for r in results)

