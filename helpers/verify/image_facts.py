"""Image facts: what verification knows of an image, read from outside it and from one probe run inside.

The image is untrusted. Every file that is compared with the commit's git tree (the package,
the proof file, the install's metadata) is read by the harness from a created, never-started
container through the Engine API and hashed here; nothing the image runs can change those bytes.
Only what needs the image's interpreter (which copy `import` loads, with the image's own
environment) runs inside, in one container (helpers/verify/probe.py); helpers/verify/checks.py cross-checks
its report against the files read from outside.
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import posixpath
import re
import secrets
import socket
import tarfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import docker
import requests

from helpers.errors import ImageNotFound, InfraError
from helpers.profiles import Profile
from helpers.verify.probe import EARLY, MARK
from helpers.verify.smoke import SmokePlan

PROBE_PARTS = ("probe_code.py", "probe_smoke.py", "probe_paths.py", "probe.py")
PART_IMPORT = re.compile(r"^from helpers\.verify\.probe_\w+ import (?:\([^)]*\)|[^\n]*)", re.M)


def probe_script() -> str:
    """The probe's parts as one script: each part's imports of an earlier part are dropped (it is above)."""
    texts = [(Path(__file__).parent / name).read_text() for name in PROBE_PARTS]
    return "\n".join(PART_IMPORT.sub("", text) for text in texts)


PROBE_SOURCE = probe_script()


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


EMPTY_VOLUME = "commit-image-harness-empty"       # mounted over bytecode folders so the archive leaves them out


class Removals:
    """Containers removed in the background once they have served (the engine's clean-up is not on a
    verification's path); `wait()` returns when all asked so far are gone (the harness waits when a commit
    ends, so nothing of a commit outlives it)."""

    def __init__(self) -> None:
        self.pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="harness-removal")
        self.pending: list[Future] = []
        self.lock = threading.Lock()

    def remove(self, api, container_id: str) -> None:
        with self.lock:
            self.pending = [f for f in self.pending if not f.done()]
            self.pending.append(self.pool.submit(remove_container, api, container_id))

    def wait(self) -> None:
        with self.lock:
            pending, self.pending = self.pending, []
        for future in pending:
            future.result()


def remove_container(api, container_id: str) -> None:
    try:
        api.remove_container(container_id, force=True)
    except (docker.errors.DockerException, requests.RequestException):
        pass


REMOVALS = Removals()


class ImageFiles:
    """The image's filesystem as a created, never-started container shows it through the Engine API.

    `hidden` folders (a copy's `__pycache__`: the probe judges bytecode inside the image, and a wheel's
    RECORD lists it unhashed) are covered by an empty volume, read-only and never filled from the image, so
    the engine does not archive what the harness would not read: a wheel's copy with its bytecode is a
    third of the bytes. Covering a folder can only make files look missing, never make a file look like
    the commit's."""

    TEXT_LIMIT = 1 << 20

    def __init__(self, client: docker.DockerClient, image_id: str, labels: dict[str, str],
                 hidden: tuple[str, ...] = ()):
        self.api = client.api
        mounts = [docker.types.Mount(folder, EMPTY_VOLUME, type="volume", read_only=True, no_copy=True)
                  for folder in hidden if posixpath.basename(folder) == "__pycache__"]
        host_config = self.api.create_host_config(mounts=mounts) if mounts else None
        self.container = self.api.create_container(image_id, entrypoint=["/harness-never-started"], labels=labels,
                                                   network_disabled=True, host_config=host_config)["Id"]

    def close(self) -> None:
        REMOVALS.remove(self.api, self.container)

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

    def tree(self, path: str, texts: bool | frozenset[str] = False) -> dict[str, FileFacts]:
        """Every file below a directory, by path relative to it (a symlink by its link text, as git does);
        with `texts`, each file's text too (small metadata folders), or the text of the files it names (the
        version files a build writes). Bytecode in `__pycache__` is left out:
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
                wanted = rel in texts if isinstance(texts, frozenset) else texts
                files[rel] = facts_of(data, keep_text=wanted and len(data) <= self.TEXT_LIMIT)
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
    """The smoke checks asked of one image and the deadline of each (helpers/verify/smoke.py plans them)."""

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
    the bytecode verdicts it holds (helpers/verify/known.py)."""

    definitions: dict[str, list] = field(default_factory=dict)
    bytecode: tuple[str, ...] = ()
    blobs: dict[str, str] = field(default_factory=dict)      # the commit's blob of each package file


def probe_input(args: dict, nonce: str, known: Known) -> bytes:
    """What the probe reads on its standard input (never on a command line, in a file or in its environment,
    where the image's code could find the nonce)."""
    return json.dumps({"args": args, "nonce": nonce, "definitions": known.definitions,
                       "bytecode_known": list(known.bytecode), "blobs": known.blobs}, separators=(",", ":")).encode()


def run_probe(client: docker.DockerClient, image_id: str, profile: Profile, workdir: str, timeout: float,
              labels: dict[str, str], on_early: Callable[[dict], None] | None = None,
              smoke: Smoke = Smoke(), known: Known = Known()) -> tuple[dict, str]:
    """One container run, entrypoint overridden, no network: the probe's facts, or why they are missing.

    Its input goes in on standard input, attached before the start and closed after it is written (the
    container's stdin then stays at its end). `on_early` gets the trusted phase's facts as soon as the
    probe prints them, while it goes on. The smoke checks run last, within
    `timeout` plus their own budget."""
    nonce = secrets.token_hex(16)
    timeout += smoke.budget
    api = client.api
    # No bytecode written by the interpreter itself: the probe takes any file of the package whose status
    # changes while it runs as changed by the image's own start-up code.
    config = api.create_container_config(image_id, ["-S", "-c", PROBE_SOURCE], entrypoint=["python3"],
                                         stdin_open=True, network_disabled=True, labels=labels,
                                         working_dir=None if profile.import_from_workdir else "/",
                                         environment={"PYTHONDONTWRITEBYTECODE": "1"})
    config["StdinOnce"] = True
    container = api.create_container_from_config(config)["Id"]
    try:
        stdin = api.attach_socket(container, params={"stdin": 1, "stream": 1})
        api.start(container)
        send(stdin, probe_input(probe_args(profile, workdir, smoke), nonce, known))
        output, finished = follow_output(api, container, f"{EARLY}{nonce} ", f"{MARK}{nonce} ", on_early)
        status = {} if finished else api.wait(container, timeout=timeout)
        errors = "" if finished else api.logs(container, stdout=False, stderr=True).decode("utf-8", errors="replace")
    except (requests.exceptions.ConnectionError, requests.exceptions.ReadTimeout) as e:
        raise InfraError(f"verification container of {image_id[:19]} gave no answer within {timeout:.0f}s: {e}") from e
    finally:
        REMOVALS.remove(api, container)
    return read_probe_output(output, nonce, status.get("StatusCode"), errors)


def send(stdin, data: bytes) -> None:
    """Everything to an attached standard input, then its end (the engine closes the container's stdin)."""
    raw = getattr(stdin, "_sock", stdin)
    try:
        raw.sendall(data)
        raw.shutdown(socket.SHUT_WR)
    finally:
        stdin.close()


def follow_output(api, container: str, early_prefix: str, final_prefix: str,
                  on_early: Callable[[dict], None] | None) -> tuple[str, bool]:
    """The container's standard output, followed until the probe's final facts line is whole (the probe's
    last act: nothing of a verification waits for the container's own exit) or the container ends; the
    early facts line handed on at once. (output, whether the final line came)."""
    lines: list[str] = []
    pending: list[bytes] = []
    stream = api.logs(container, stdout=True, stderr=False, stream=True, follow=True)
    try:
        for chunk in stream:
            *complete, rest = chunk.split(b"\n")
            if complete:
                complete[0], pending = b"".join(pending) + complete[0], []
            pending.append(rest)
            for raw in complete:
                line = raw.decode("utf-8", errors="replace")
                lines.append(line)
                if on_early is not None and line.startswith(early_prefix):
                    on_early(json.loads(line[len(early_prefix):]))
                    on_early = None
                elif line.startswith(final_prefix):
                    return "\n".join(lines), True
    finally:
        stream.close()
    lines.append(b"".join(pending).decode("utf-8", errors="replace"))
    return "\n".join(lines), False


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


@dataclass(frozen=True)
class Layout:
    """Where an image of the project keeps what verification reads: the previous image's, read at once
    (before the probe names the real places; a guess the probe does not confirm is dropped)."""

    copies: tuple[str, ...] = ()
    metadata: str | None = None
    bytecode_dirs: dict[str, list[str]] = field(default_factory=dict)     # copy -> its __pycache__ folders

    @classmethod
    def of(cls, facts: Facts) -> Layout:
        return cls(tuple(facts.copies), facts.probe.get("dist_info"), dict(facts.probe.get("bytecode_dirs") or {}))

    @classmethod
    def read(cls, path: Path) -> Layout:
        """The layout kept on disk by an earlier session (a hint only: nothing is trusted from it)."""
        try:
            data = json.loads(path.read_text())
            return cls(tuple(str(c) for c in data["copies"]), data.get("metadata"),
                       {str(k): [str(f) for f in v] for k, v in data.get("bytecode_dirs", {}).items()})
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return cls()

    def write(self, path: Path) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(f".{path.name}.{os.getpid()}")
            partial.write_text(json.dumps({"copies": list(self.copies), "metadata": self.metadata,
                                           "bytecode_dirs": self.bytecode_dirs}))
            os.replace(partial, path)
        except OSError:
            pass


class SideBySideReads:
    """Reads from outside an image alongside the probe's run; a path asked for twice is read once.

    What the previous image's layout predicts (the proof file, the metadata folder, the copies) is read
    one after another through one created container: the engine serves one archive request per container
    at a time, and these are done long before the probe is, so one container is enough and saves the
    engine the others' creation. Anything the probe names beyond it is read through a container of its own,
    side by side."""

    def __init__(self, pool: ThreadPoolExecutor, client: docker.DockerClient, image_id: str,
                 labels: dict[str, str], profile: Profile, texts: frozenset[str] = frozenset()):
        self.pool, self.client, self.image_id, self.labels, self.profile = pool, client, image_id, labels, profile
        self.texts = texts          # files of a copy whose text is kept (by path in the package)
        self.copies: dict[str, Future] = {}
        self.trees: dict[str, Future] = {}
        self.proof: Future = Future()

    def reader(self, hidden: list[str] | None = None) -> ImageFiles:
        return ImageFiles(self.client, self.image_id, self.labels, tuple(hidden or ()))

    def start(self, layout: Layout) -> None:
        """The proof file, then the layout's metadata folder and copies, through one container."""
        plan: list[tuple[str, str, Future]] = [("file", self.profile.proof_file, self.proof)]
        if layout.metadata:
            self.trees[layout.metadata] = Future()
            plan.append(("tree", layout.metadata, self.trees[layout.metadata]))
        for path in layout.copies:
            self.copies[path] = Future()
            plan.append(("copy", path, self.copies[path]))
        hidden = [folder for path in layout.copies for folder in layout.bytecode_dirs.get(path, [])
                  if folder.startswith(f"{path}/")]
        self.pool.submit(read_in_turn, self.reader(hidden), plan, self.profile, self.texts)

    def read_copies(self, paths: list[str], bytecode_dirs: dict[str, list[str]]) -> None:
        for path in paths:
            if path not in self.copies:
                self.copies[path] = self.pool.submit(read_copy, self.reader(bytecode_dirs.get(path)), path,
                                                     self.profile, self.texts)

    def read_tree(self, path: str) -> Future:
        if path not in self.trees:
            self.trees[path] = self.pool.submit(read_tree, self.reader(), path, True)
        return self.trees[path]


def read_in_turn(outside: ImageFiles, plan: list[tuple[str, str, Future]], profile: Profile,
                 texts: frozenset[str] = frozenset()) -> None:
    """Each planned read through one container, in order, each result (or error) handed to its future."""
    try:
        for kind, path, future in plan:
            try:
                if kind == "file":
                    future.set_result(outside.file(path))
                elif kind == "tree":
                    future.set_result(outside.tree(path, texts=True))
                else:
                    future.set_result(copy_files(outside, path, profile, texts))
            except BaseException as e:       # noqa: BLE001 - handed to whoever waits for this read
                future.set_exception(e)
    finally:
        outside.close()


def collect_facts(client: docker.DockerClient, ref: str, profile: Profile, timeout: float,
                  labels: dict[str, str] | None = None, layout: Layout = Layout(), smoke: Smoke = Smoke(),
                  known: Known = Known(), texts: frozenset[str] = frozenset()) -> Facts:
    """Labels and environment from the image's config, files read from outside, one probe run inside.

    The reads go out alongside the probe's run: the previous image's `layout` at once, then what the probe's
    trusted parent names.
    The start-up hook files are the ones the probe read before any of the image's Python ran."""
    image = client.images.get(ref)
    config = image.attrs.get("Config") or {}
    env = dict(item.split("=", 1) for item in config.get("Env") or [] if "=" in item)
    try:
        client.volumes.create(EMPTY_VOLUME, labels={"commit-image-harness": "empty"})  # the same one if it exists
    except docker.errors.DockerException as e:
        raise InfraError(f"the engine refused the harness's empty volume {EMPTY_VOLUME}: {e}") from e
    with ThreadPoolExecutor(max_workers=8) as pool:
        reads = SideBySideReads(pool, client, image.id, labels or {}, profile, texts)

        def early(facts: dict) -> None:
            reads.read_copies(facts.get("copies") or [], facts.get("bytecode_dirs") or {})
        reads.start(layout)
        probed = pool.submit(run_probe, client, image.id, profile, config.get("WorkingDir") or "/", timeout,
                             labels or {}, early, smoke, known)
        try:
            probe, tampering = probed.result()
            if not reads.proof.done() and not reads.copies and not reads.trees:
                reads.start(Layout())           # the probe never got to run: the proof file is still read
            dist_info = probe.get("dist_info")
            metadata = reads.read_tree(dist_info) if dist_info else None
            confirmed = copies_to_read(probe, profile.import_name)
            reads.read_copies(confirmed, probe.get("bytecode_dirs") or {})
            read = named_files(probe, profile.proof_file, reads.proof.result(), metadata.result() if metadata else {})
            trees = {path: reads.copies[path].result() for path in confirmed}
        except (docker.errors.DockerException, requests.RequestException, tarfile.TarError) as e:
            raise InfraError(f"reading the files of {ref} from outside failed: {e}") from e
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


def read_copy(outside: ImageFiles, path: str, profile: Profile, texts: frozenset[str] = frozenset()
              ) -> dict[str, FileFacts]:
    """A copy read through a container of its own (the engine serves one archive request per container at a
    time), which is then removed."""
    try:
        return copy_files(outside, path, profile, texts)
    finally:
        outside.close()


def copy_files(outside: ImageFiles, path: str, profile: Profile, texts: frozenset[str] = frozenset()
               ) -> dict[str, FileFacts]:
    """A package directory's files (with the text of those `texts` names), or a module file named like the
    package (a shadow) by its name."""
    if not is_module_file(path, profile):
        return outside.tree(path, texts)
    found = outside.file(path)
    return {posixpath.basename(path): found} if found else {}


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
