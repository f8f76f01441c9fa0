"""Known: what verification already learnt, kept on disk so a commit pays only for what differs from the
commits verified before it (a pair shares almost every file).

- Definitions: what each module of the package defines (helpers/probe_code.source_definitions, the
  function the probe would otherwise run in the image), computed on the host once per git blob.
- Bytecode verdicts: "this interpreter compiles this source to this bytecode", learnt by the probe when
  it compared a `.pyc` with its source in an image that then passed every check; the probe does not
  compile that pair again.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

from helpers.source.mirror import Mirror
from helpers.verify import probe_code

# Tables made by another version of the definitions code are not reused.
DEFINITIONS_VERSION = hashlib.sha1(Path(probe_code.__file__).read_bytes()).hexdigest()[:12]
# One parse at a time in this process: CPython 3.11's AST constructor can raise a spurious SystemError when
# threads parse side by side (python/cpython#106905).
PARSING = threading.Lock()


def definitions_of(source: bytes) -> list | None:
    with PARSING:
        return probe_code.source_definitions(source)


class Definitions:
    """Each module's definitions by its blob hash: in memory, then on disk, else parsed from the mirror.

    Parsing a whole large package costs seconds (sympy's 1,500 modules: 8 s), so the host prepares only
    the modules an import of the package loaded the last time (a project's import rarely changes): the
    probe parses, with the image's own Python, any other module it loads. After each verification the
    modules it loaded and lacked are parsed in the background, for the next commit."""

    def __init__(self, folder: Path):
        self.folder = folder / "definitions" / DEFINITIONS_VERSION
        self.memory: dict[str, list | None] = {}
        self.background: threading.Thread | None = None

    def for_package(self, mirror: Mirror, sha: str, package_path: str, tree: dict[str, str],
                    patched: dict[str, bytes]) -> dict[str, list]:
        """Definitions of the package's modules the last import loaded (by path relative to the package);
        a module this Python cannot parse is left out (the probe parses it with the image's own)."""
        prefix = f"{package_path}/"
        patched_here = {path[len(prefix):]: data for path, data in patched.items() if path.startswith(prefix)}
        likely = self.likely(package_path)
        modules = {rel: blob for rel, blob in tree.items() if rel in likely and rel not in patched_here}
        self.parse(mirror, sha, package_path, {rel: blob for rel, blob in modules.items() if not self.load(blob)})
        tables = {rel: self.memory.get(blob) for rel, blob in modules.items()}
        tables.update({rel: definitions_of(data) for rel, data in patched_here.items()
                       if rel in likely})
        return {rel: table for rel, table in tables.items() if table is not None}

    def learn(self, mirror: Mirror, sha: str, package_path: str, tree: dict[str, str], loaded: list[str]) -> None:
        """What an import of the package loaded this time: remembered, and parsed in the background where
        no table exists yet (one background parse at a time)."""
        likely = sorted(rel for rel in loaded if rel in tree)
        if not likely:
            return
        self.write(self.likely_file(package_path), json.dumps(likely))
        missing = {rel: tree[rel] for rel in likely if not self.load(tree[rel])}
        if missing and (self.background is None or not self.background.is_alive()):
            self.background = threading.Thread(target=self.parse, args=(mirror, sha, package_path, missing),
                                               name="harness-definitions", daemon=True)
            self.background.start()

    def parse(self, mirror: Mirror, sha: str, package_path: str, modules: dict[str, str]) -> None:
        if not modules:
            return
        paths = [f"{package_path}/{rel}" for rel in modules]
        contents = mirror.read_files(sha, paths)
        for rel, blob in modules.items():
            data = contents.get(f"{package_path}/{rel}")
            if data is not None:
                self.store(blob, definitions_of(data))

    def likely_file(self, package_path: str) -> Path:
        return self.folder / f"loaded-{hashlib.sha1(package_path.encode()).hexdigest()[:12]}.json"

    def likely(self, package_path: str) -> set[str]:
        try:
            return set(json.loads(self.likely_file(package_path).read_text()))
        except (OSError, ValueError):
            return set()

    def path(self, blob: str) -> Path:
        return self.folder / blob[:2] / f"{blob}.json"

    def load(self, blob: str) -> bool:
        if blob in self.memory:
            return True
        try:
            self.memory[blob] = json.loads(self.path(blob).read_text())
            return True
        except (OSError, ValueError):
            return False

    def store(self, blob: str, table: list | None) -> None:
        self.memory[blob] = table
        self.write(self.path(blob), json.dumps(table, separators=(",", ":")))

    @staticmethod
    def write(path: Path, text: str) -> None:
        """Written beside its name and moved into place; a cache that cannot be written costs time, never a
        verdict."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
            partial.write_text(text)
            os.replace(partial, path)
        except OSError:
            pass


class BytecodeVerdicts:
    """Bytecode verdicts by interpreter, one line each in a file every worker appends to."""

    def __init__(self, folder: Path):
        self.file = folder / "bytecode-verdicts.txt"
        self.by_interpreter: dict[str, set[str]] | None = None
        self.last_interpreter: str | None = None

    def read(self) -> dict[str, set[str]]:
        if self.by_interpreter is None:
            self.by_interpreter = {}
            try:
                lines = self.file.read_text().splitlines()
            except OSError:
                lines = []
            for line in lines:
                interpreter, _, key = line.partition(" ")
                if key:
                    self.by_interpreter.setdefault(interpreter, set()).add(key)
        return self.by_interpreter

    def known(self) -> tuple[str, ...]:
        """The verdicts to hand the probe: the last interpreter's (images of one project share theirs)."""
        known = self.read()
        if self.last_interpreter in known:
            return tuple(sorted(known[self.last_interpreter]))
        return tuple(sorted(key for keys in known.values() for key in keys))

    def learn(self, interpreter: str | None, keys: list[str]) -> None:
        """Verdicts of an image that passed every check."""
        if not interpreter:
            return
        self.last_interpreter = interpreter
        have = self.read().setdefault(interpreter, set())
        new = [key for key in keys if key not in have]
        if not new:
            return
        have.update(new)
        try:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, "".join(f"{interpreter} {key}\n" for key in new).encode())   # one append
            finally:
                os.close(fd)
        except OSError:
            pass
