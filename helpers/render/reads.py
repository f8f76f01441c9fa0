"""Reads: which paths of the commit's tree the rendered build reads, and where it installs named packages from.

Only stages whose output reaches the final image count (the final stage, the stages it is built FROM, and
those it copies or mounts from, transitively). A path is read when

- a COPY/ADD from the build context names it (a folder: everything under it); copying the whole context,
  like the harness's own copy of the tree, is not evidence that any one path is used;
- a command names it (`pip install -e python[all]`, `-r requirements.txt`, `cp sgl-kernel/x.h /usr/include`,
  `bash scripts/build.sh`), relative to the directory the command runs in, inside a copy of the tree;
- a build tool (make, cmake, pip, python, a shell script, a compiler, ...) runs inside a folder of a copy of
  the tree: that folder is what it builds.

A command run with a `*PRECOMPILED*` variable set true (vLLM's `VLLM_USE_PRECOMPILED=1 pip install .`, inline,
or an ENV or ARG default of the stage) reads its paths *prebuilt*: its Python is installed from the tree, its
compiled part comes from a prebuilt wheel (helpers/verify/changes.py decides which of its paths that makes not in
the image, asking the commit's setup.py whether it reads the variable).
"""
from __future__ import annotations

import fnmatch
import posixpath
import re
from dataclasses import dataclass, field

from packaging.utils import canonicalize_name

from helpers.render.dockerfile import Document, Instruction, StageState, expand, parse, stage_names, stages
from helpers.render.late import READS_NOTHING, is_local_path, shell_commands
from helpers.render.shellwords import PIP_VALUE_OPTIONS, Word, pip_install_index, program, resolve

SOURCE_COPY = "/tmp/harness-src/."
BUILD_TOOLS = re.compile(r"make|cmake|ninja|meson|scons|bazel|cargo|go|python[0-9.]*|pip[0-9.]*|uv|bash|sh|"
                         r"nvcc|gcc|g\+\+|cc|c\+\+|clang|clang\+\+|.*\.sh|setup\.py|maturin|tox|nox")
NAMES_A_PATH = {"-e", "--editable", "-r", "--requirement", "-c", "--constraint"}
INDEX_OPTIONS = {"-i", "--index-url", "--extra-index-url", "-f", "--find-links"}
PRECOMPILED = re.compile(r"[A-Za-z0-9_]*PRECOMPILED[A-Za-z0-9_]*")
TRUE_VALUES = {"1", "true", "yes", "on"}
WHEEL_NAME = re.compile(r"([A-Za-z0-9][A-Za-z0-9._]*?)-\d[^/]*\.(?:whl|tar\.gz|zip)$")
REQUIREMENT_NAME = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)")


@dataclass(frozen=True)
class PackageSource:
    """Where the build installs a named package from (not from the commit's tree)."""

    name: str           # canonical distribution name
    source: str         # "the package index", "https://docs.sglang.ai/whl/cu118", "a wheel at <url>"
    line: int           # 1-based line of the RUN in the rendered Dockerfile
    command: str

    def describe(self) -> str:
        return f"{self.name} from {self.source} (line {self.line}: `{self.command}`)"


@dataclass(frozen=True)
class TreeReads:
    roots: tuple[str, ...]                 # tree paths read: files, or folders read whole ("" is the whole tree)
    patterns: tuple[str, ...]              # COPY sources with wildcards
    packages: tuple[PackageSource, ...]    # named installs from elsewhere
    # Roots read only by commands that take the compiled part prebuilt: (root, `VAR=value (line N: command)`).
    prebuilt: tuple[tuple[str, str], ...] = ()

    def reader_of(self, path: str) -> str | None:
        """The root or pattern that covers a tree path, None when no build step reads it."""
        for root in [*self.roots, *(root for root, _ in self.prebuilt)]:
            if covers(root, path):
                return root or "."
        return next((p for p in self.patterns if fnmatch.fnmatchcase(path, p)), None)

    def prebuilt_by(self, path: str) -> str | None:
        """What makes every step that reads the path take the compiled part prebuilt; None when a step builds it."""
        if any(covers(root, path) for root in self.roots) or any(fnmatch.fnmatchcase(path, p) for p in self.patterns):
            return None
        return next((why for root, why in self.prebuilt if covers(root, path)), None)

    def sources_of(self, name: str) -> list[PackageSource]:
        wanted = canonicalize_name(name)
        return [p for p in self.packages if p.name == wanted]


def tree_reads(text: str) -> TreeReads:
    """What the rendered Dockerfile's build reads from the commit's tree (see the module's text)."""
    doc = parse(text)
    reaching = stages_reaching_final(doc)
    names = stage_names(doc)
    copies: dict[int, list[str]] = {}         # stage -> where a whole copy of the tree is
    found = Found([], [], [])
    for inst, state in stages(doc):
        if inst.cmd == "FROM":
            parent = names.get(inst.value[0].lower()) if inst.value else None
            copies[inst.stage] = list(copies.get(parent, [])) if parent is not None else []
        elif inst.stage in reaching and inst.cmd in ("COPY", "ADD"):
            copy_reads(inst, state, copies[inst.stage], found)
        elif inst.stage in reaching and inst.cmd == "RUN":
            run_reads(doc.text_of(inst), inst.first + 1, state, copies[inst.stage], found)
    return TreeReads(tuple(dict.fromkeys(found.roots)), tuple(dict.fromkeys(found.patterns)), tuple(found.packages),
                     tuple(dict.fromkeys(found.prebuilt)))


def covers(root: str, path: str) -> bool:
    return root == "" or path == root or path.startswith(root.rstrip("/") + "/")


@dataclass
class Found:
    roots: list[str]
    patterns: list[str]
    packages: list[PackageSource]
    prebuilt: list[tuple[str, str]] = field(default_factory=list)


def copy_reads(inst: Instruction, state: StageState, copies: list[str], found: Found) -> None:
    """A COPY/ADD from the build context: each source it names, or (the whole context) a copy of the tree."""
    if any(f.startswith("--from") for f in inst.flags) or len(inst.value) < 2:
        return
    for src in inst.value[:-1]:
        if src.startswith("<<") or "://" in src:
            continue            # a here-document's text, a download
        path = posixpath.normpath(src.lstrip("/")) if src.strip("/") else "."
        if path in (".", "*"):
            dest = resolve(state.workdir or "/", expand(inst.value[-1], state.variables))
            if dest:
                copies.append(dest)
        elif any(c in path for c in "*?["):
            found.patterns.append(path)
        else:
            found.roots.append(path)


def run_reads(text: str, line: int, state: StageState, copies: list[str], found: Found) -> None:
    """A RUN: the harness's copies of the tree it makes, the tree paths its commands read, what it installs."""
    for words, cmd, cwd in shell_commands(text, state.workdir):
        if not cmd:
            continue
        values = [expand(w.value, state.variables) for w in cmd]
        if program(cmd[0]) == "cp" and SOURCE_COPY in values:
            dest = resolve(cwd, values[-1])
            if dest:
                copies.append(dest)
        elif program(cmd[0]) not in READS_NOTHING | {"mkdir", "rm", "chmod", "chown", "ln", "touch"}:
            roots = read_paths(cmd, values, cwd, copies)
            prebuilt = precompiled_setting(words[:words.index(cmd[0])], state.variables)
            if prebuilt:
                command = " ".join(w.raw for w in cmd)[:120]
                found.prebuilt += [(root, f"{prebuilt} (line {line}: `{command}`)") for root in roots]
            else:
                found.roots += roots
            found.packages += named_installs(cmd, values, line)


def precompiled_setting(assignments: list[Word], variables: dict[str, str]) -> str | None:
    """`VLLM_USE_PRECOMPILED=1` when the command runs with such a variable set true (its own assignment, else
    the stage's ENV or ARG value)."""
    values = dict(variables)
    for word in assignments:
        name, _, value = word.value.partition("=")
        values[name] = expand(value, variables)
    return next((f"{name}={value}" for name, value in values.items()
                 if PRECOMPILED.fullmatch(name) and value.strip().strip("'\"").lower() in TRUE_VALUES), None)


def stages_reaching_final(doc: Document) -> set[int]:
    """The final stage and every stage its output is made from (FROM, COPY --from, RUN --mount=from)."""
    names = stage_names(doc)
    by_stage: dict[int, set[int]] = {}
    for inst in doc.instructions:
        refs = []
        if inst.cmd == "FROM" and inst.value:
            refs.append(inst.value[0])
        for flag in inst.flags:
            refs += re.findall(r"(?:^--from=|[,=]from=)([^,\s]+)", flag)
        for ref in refs:
            target = names.get(ref.lower())
            if target is None and ref.isdigit():
                target = int(ref)
            if target is not None and target != inst.stage:
                by_stage.setdefault(inst.stage, set()).add(target)
    reaching, todo = set(), [doc.final_stage]
    while todo:
        stage = todo.pop()
        if stage not in reaching:
            reaching.add(stage)
            todo += by_stage.get(stage, ())
    return reaching


def read_paths(cmd: list[Word], values: list[str], cwd: str | None, copies: list[str]) -> list[str]:
    """Tree paths one command reads from any copy of the tree (see the module's text)."""
    if not copies:
        return []
    found = []
    install = pip_install_index(cmd)
    words = values[install + 1:] if install is not None else values[1:]
    if install is None and is_local_path(values[0]):
        words = values                   # a script of the tree run by its path
    skip = False
    for i, value in enumerate(words):
        if skip:
            skip = False
            continue
        if install is not None and value in PIP_VALUE_OPTIONS - {"-e", "--editable", "-r", "--requirement", "-c",
                                                                   "--constraint"}:
            skip = True
            continue
        value = re.sub(r"\[[^\]]*\]$", "", value)          # extras
        if value.startswith("-") or "$" in value or "://" in value or re.match(r"\d*[<>]", value):
            continue                     # an option, a variable, a URL, a redirection or here-document
        if install is not None and not (is_local_path(value) or i and words[i - 1] in NAMES_A_PATH):
            continue                     # a requirement by name
        path = resolve(cwd, value)
        found += [tree_path(path, copy) for copy in copies if path and inside(path, copy)]
    if install is None and cwd is not None and re.fullmatch(BUILD_TOOLS, program(cmd[0])):
        found += [tree_path(cwd, copy) for copy in copies if inside(cwd, copy)]
    return found


def inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def tree_path(path: str, copy: str) -> str:
    relative = posixpath.relpath(path, copy)
    return "" if relative == "." else relative


def named_installs(cmd: list[Word], values: list[str], line: int) -> list[PackageSource]:
    """The packages a pip/uv install takes by name or URL, and from where."""
    install = pip_install_index(cmd)
    if install is None:
        return []
    index, found, skip = "the package index", [], False
    args = values[install + 1:]
    for i, value in enumerate(args):
        if value in ("-i", "--index-url", "--extra-index-url") and i + 1 < len(args):
            index = args[i + 1]
        elif value in ("-f", "--find-links") and i + 1 < len(args) and index == "the package index":
            index = f"--find-links {args[i + 1]}"
    command = " ".join(w.raw for w in cmd)[:160]
    for value in args:
        if skip:
            skip = False
            continue
        if value in PIP_VALUE_OPTIONS or value in INDEX_OPTIONS or value in NAMES_A_PATH:
            skip = True             # an option's value, or a local path (-e, -r, -c)
            continue
        if value.startswith("-") or "$" in value and not WHEEL_NAME.search(value):
            continue
        wheel = WHEEL_NAME.search(value.rsplit("/", 1)[-1])
        if "://" in value or value.endswith((".whl", ".tar.gz", ".zip")):
            if wheel:
                where = f"a wheel at {value}" if "://" in value else f"the file {value}"
                found.append(PackageSource(canonicalize_name(wheel.group(1)), where, line, command))
            continue
        if is_local_path(value):
            continue
        name = REQUIREMENT_NAME.match(value)
        if name:
            found.append(PackageSource(canonicalize_name(name.group(1)), index, line, command))
    return found
