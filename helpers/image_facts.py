"""Image facts: what verification knows of an image, read from outside it and from one probe run inside.

The image is untrusted. Every file that is compared with the commit's git tree (the package,
the proof file, the install's metadata) is read by the harness from a created, never-started
container through the Engine API and hashed here; nothing the image runs can change those bytes.
Only what needs the image's interpreter (which copy `import` loads, with the image's own
environment) runs inside, in one container (helpers/probe.py); helpers/verify.py cross-checks
its report against the files read from outside.
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import posixpath
import re
import secrets
import tarfile
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import docker
import requests

from helpers.errors import ImageNotFound, InfraError
from helpers.probe import EARLY, MARK
from helpers.profiles import Profile
from helpers.smoke import SmokePlan

PROBE_PARTS = ("probe_code.py", "probe_smoke.py", "probe_paths.py", "probe.py")
PART_IMPORT = re.compile(r"^from helpers\.probe_\w+ import (?:\([^)]*\)|[^\n]*)", re.M)


def probe_script() -> str:
    """The probe's parts as one script: each part's imports of an earlier part are dropped (it is above)."""
    texts = [(Path(__file__).parent / name).read_text() for name in PROBE_PARTS]
    return "\n".join(PART_IMPORT.sub("", text) for text in texts)


PROBE_SOURCE = probe_script()
INPUT_FILE = "/.harness-probe-input.json"      # put into the container before it starts; the probe removes it


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

    def _archive(self, path: str, skip: Callable[[str], bool] = lambda name: False
                 ) -> Iterator[tuple[tarfile.TarInfo, bytes | None]]:
        """Each member of the path's archive with its bytes (none for a member `skip` names: never read)."""
        try:
            chunks, _ = self.api.get_archive(self.container, path)
        except docker.errors.NotFound:
            return
        with tarfile.open(fileobj=io.BufferedReader(_Stream(iter(chunks))), mode="r|") as tar:
            for member in tar:
                if skip(member.name):
                    continue
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
        with `texts`, each file's text too (small metadata folders). Bytecode in `__pycache__` is left out:
        the probe judges it against its source inside the image (and a wheel's RECORD lists it unhashed)."""
        files: dict[str, FileFacts] = {}
        top = posixpath.basename(path.rstrip("/"))
        for member, data in self._archive(path, skip=lambda name: "/__pycache__/" in name):
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


@dataclass(frozen=True)
class Smoke:
    """The smoke checks asked of one image and the deadline of each (helpers/smoke.py plans them)."""

    plan: SmokePlan = SmokePlan()
    deadline: float = 300.0

    @property
    def budget(self) -> float:
        """The longest the checks can take: each command, and the imports' child, hang at most once each."""
        if self.plan.empty:
            return 0.0
        return self.deadline * (len(self.plan.commands) + len(self.plan.imports))


def probe_args(profile: Profile, workdir: str, smoke: Smoke) -> dict[str, object]:
    return {"distribution": profile.distribution, "import_name": profile.import_name,
            "modules": list(profile.check_modules), "import_from_workdir": profile.import_from_workdir,
            "extra_dirs": [workdir or "/", "/"], "smoke_imports": [name for name, _ in smoke.plan.imports],
            "smoke_commands": [list(words) for words in smoke.plan.commands], "smoke_timeout": smoke.deadline,
            "command_cwd": workdir or "/"}


@dataclass(frozen=True)
class Known:
    """What the harness already knows for the probe: each module's definitions (by path in the package) and
    the bytecode verdicts it holds (helpers/known.py)."""

    definitions: dict[str, list] = field(default_factory=dict)
    bytecode: tuple[str, ...] = ()
    blobs: dict[str, str] = field(default_factory=dict)      # the commit's blob of each package file


def input_archive(args: dict, nonce: str, known: Known) -> bytes:
    """The probe's input file as a tar archive for the Engine API (the nonce never on a command line)."""
    data = json.dumps({"args": args, "nonce": nonce, "definitions": known.definitions,
                       "bytecode_known": list(known.bytecode), "blobs": known.blobs}, separators=(",", ":")).encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo(INPUT_FILE.lstrip("/"))
        info.size, info.mode = len(data), 0o644
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def run_probe(client: docker.DockerClient, image_id: str, profile: Profile, workdir: str, timeout: float,
              labels: dict[str, str], on_early: Callable[[dict], None] | None = None,
              smoke: Smoke = Smoke(), known: Known = Known()) -> tuple[dict, str]:
    """One container run, entrypoint overridden, no network: the probe's facts, or why they are missing.

    `on_early` gets the trusted phase's facts as soon as the probe prints them, while it goes on. The
    smoke checks run last, within `timeout` plus their own budget."""
    nonce = secrets.token_hex(16)
    timeout += smoke.budget
    command = ["-S", "-c", PROBE_SOURCE, INPUT_FILE]
    # No bytecode written by the interpreter itself: any file that changes under the package while
    # the probe runs was changed by the image's own start-up code (the probe compares each file's
    # status before and after; the engine's own container diff costs ~0.5 s on Docker 20.10).
    container = client.containers.create(image_id, entrypoint=["python3"], command=command, network_disabled=True,
                                         working_dir=None if profile.import_from_workdir else "/", labels=labels,
                                         environment={"PYTHONDONTWRITEBYTECODE": "1"})
    try:
        container.put_archive("/", input_archive(probe_args(profile, workdir, smoke), nonce, known))
        container.start()
        output = follow_output(container, f"{EARLY}{nonce} ", on_early)
        status = container.wait(timeout=timeout)
        errors = "" if f"{MARK}{nonce} " in output else \
            container.logs(stdout=False, stderr=True).decode("utf-8", errors="replace")
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
    """The final facts line tagged with this run's nonce (the probe's trusted parent prints it; the image's
    code never runs in that process); any other facts line is the image's forgery."""
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
    return final, ""


class SideBySideReads:
    """Reads from outside an image, side by side, each through a created container of its own; a path
    asked for twice is read once."""

    def __init__(self, pool: ThreadPoolExecutor, client: docker.DockerClient, image_id: str,
                 labels: dict[str, str], profile: Profile):
        self.pool, self.client, self.image_id, self.labels, self.profile = pool, client, image_id, labels, profile
        self.copies: dict[str, Future] = {}

    def reader(self) -> ImageFiles:
        return ImageFiles(self.client, self.image_id, self.labels)

    def read_copies(self, paths: list[str]) -> None:
        for path in paths:
            if path not in self.copies:
                self.copies[path] = self.pool.submit(read_copy, self.reader(), path, self.profile)

    def read_tree(self, path: str) -> Future:
        return self.pool.submit(read_tree, self.reader(), path, True)


def collect_facts(client: docker.DockerClient, ref: str, profile: Profile, timeout: float,
                  labels: dict[str, str] | None = None, likely_copies: tuple[str, ...] = (),
                  likely_metadata: str | None = None, smoke: Smoke = Smoke(), known: Known = Known()) -> Facts:
    """Labels and environment from the image's config, files read from outside, one probe run inside.

    The Engine API answers each archive request in tens of milliseconds (one request per container
    at a time), so the reads go out side by side alongside the probe's run. The start-up hook files
    are the ones the probe read before any of the image's Python ran. `likely_copies` and
    `likely_metadata` (the previous image's layout) are read at once, before the probe names the real
    ones; a guess the probe does not confirm is dropped."""
    image = client.images.get(ref)
    config = image.attrs.get("Config") or {}
    env = dict(item.split("=", 1) for item in config.get("Env") or [] if "=" in item)
    with ThreadPoolExecutor(max_workers=8) as pool:
        reads = SideBySideReads(pool, client, image.id, labels or {}, profile)
        reads.read_copies(list(likely_copies))
        guessed_metadata = reads.read_tree(likely_metadata) if likely_metadata else None
        probed = pool.submit(run_probe, client, image.id, profile, config.get("WorkingDir") or "/", timeout,
                             labels or {}, lambda early: reads.read_copies(early.get("copies") or []), smoke, known)
        outside = reads.reader()
        try:
            proof = pool.submit(outside.file, profile.proof_file)
            probe, tampering = probed.result()
            dist_info = probe.get("dist_info")
            metadata = None
            if dist_info:
                metadata = guessed_metadata if dist_info == likely_metadata else reads.read_tree(dist_info)
            confirmed = copies_to_read(probe, profile.import_name)
            reads.read_copies(confirmed)
            read = named_files(probe, profile.proof_file, proof.result(), metadata.result() if metadata else {})
            trees = {path: reads.copies[path].result() for path in confirmed}
        except (docker.errors.DockerException, requests.RequestException, tarfile.TarError) as e:
            raise InfraError(f"reading the files of {ref} from outside failed: {e}") from e
        finally:
            outside.close()
    return Facts(image.labels or {}, probe, env, read, trees, tampering)


def named_files(probe: dict, proof_file: str, proof: FileFacts | None,
                metadata: dict[str, FileFacts]) -> dict[str, FileFacts | None]:
    """The single files verification compares, by path: the start-up hook files (as the probe read them
    before any of the image's Python ran), the proof file and the metadata folder's files."""
    read: dict[str, FileFacts | None] = {path: facts_of(text.encode("utf-8"), keep_text=True)
                                         for path, text in (probe.get("hook_texts") or {}).items()}
    read[proof_file] = proof
    read.update({f"{probe.get('dist_info')}/{name}": found for name, found in metadata.items()})
    return read


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


def loaded_sources(probe: dict, import_name: str) -> list[str]:
    """The source files the import loaded from the loaded copy, by path relative to it."""
    loaded = loaded_from(probe, import_name)
    origins = [m.get("origin") or "" for m in (probe.get("modules") or {}).values()]
    return sorted(o[len(loaded) + 1:] for o in origins if loaded and o.startswith(f"{loaded}/") and o.endswith(".py"))


def copies_to_read(probe: dict, import_name: str) -> list[str]:
    """Every copy an import could reach, plus the one that was loaded (wherever it came from)."""
    paths = list(probe.get("copies") or [])
    loaded = loaded_from(probe, import_name)
    return paths + [loaded] if loaded and loaded not in paths else paths
