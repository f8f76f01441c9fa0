"""A parsed Dockerfile that can be edited by instruction and printed back, comments intact, and the
one stage model every rewrite walks it with.

Parsing uses BuildKit's own parser (the `dockerfile` package wraps moby/buildkit's Go
parser), so line ranges, continuations and heredocs are read exactly as BuildKit reads them.
`stages` yields each instruction with what its stage holds at that point (working directory,
variables, user, whether the project's source is there), inherited from the stage it is built
FROM; `brings_source` is the one definition of a step that brings the source.
"""
from __future__ import annotations

import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

import dockerfile as buildkit_parser

from helpers.errors import UnpinnableDockerfile
from helpers.profiles import Profile
from helpers.render.shellwords import resolve

# The harness's copy of the build context: a read-only bind mount in the RUN that copies the source.
SOURCE_MOUNT = "/tmp/harness-src"
MOUNT_FLAG = f"--mount=type=bind,source=.,target={SOURCE_MOUNT}"
DEFAULT_INSTALL_MARK = "# harness: the Dockerfile never fetches the project; install the commit's source"
ROOT_USERS = ("root", "0", "0:0")


@dataclass(frozen=True)
class Instruction:
    index: int
    cmd: str                 # upper-case keyword: RUN, FROM, ...
    first: int               # 0-based first line
    last: int                # 0-based last line (inclusive)
    text: str                # the original lines, joined
    flags: tuple[str, ...]
    value: tuple[str, ...]
    is_json: bool
    stage: int               # -1 for global ARGs before the first FROM


@dataclass
class Document:
    """Original lines plus pending edits keyed by instruction index."""

    lines: list[str]
    instructions: list[Instruction]
    replaced: dict[int, str] = field(default_factory=dict)
    before: dict[int, list[str]] = field(default_factory=dict)
    appended: list[str] = field(default_factory=list)

    @property
    def final_stage(self) -> int:
        return max((i.stage for i in self.instructions), default=-1)

    def stage(self, number: int) -> list[Instruction]:
        return [i for i in self.instructions if i.stage == number]

    def text_of(self, inst: Instruction) -> str:
        return self.replaced.get(inst.index, inst.text)

    def replace(self, inst: Instruction, text: str) -> None:
        self.replaced[inst.index] = text

    def insert_before(self, inst: Instruction, text: str) -> None:
        self.before.setdefault(inst.index, []).append(text)

    def append(self, text: str) -> None:
        self.appended.append(text)

    def render(self) -> str:
        out: list[str] = []
        starts = {i.first: i for i in self.instructions}
        line = 0
        while line < len(self.lines):
            inst = starts.get(line)
            if inst is None:
                out.append(self.lines[line])
                line += 1
                continue
            out.extend(self.before.get(inst.index, []))
            out.append(self.replaced.get(inst.index, inst.text))
            line = inst.last + 1
        if self.appended and out and out[-1].strip():
            out.append("")
        out.extend(self.appended)
        return "\n".join(out) + "\n"


def parse(text: str) -> Document:
    """Parse with BuildKit's parser; a Dockerfile it rejects cannot be pinned."""
    try:
        commands = buildkit_parser.parse_string(text)
    except buildkit_parser.GoParseError as e:
        raise UnpinnableDockerfile(f"BuildKit's parser rejects the Dockerfile: {e}") from e
    lines = text.split("\n")        # BuildKit counts only \n as a line end
    if lines and lines[-1] == "":
        lines.pop()
    instructions, stage = [], -1
    for index, c in enumerate(commands):
        if c.cmd.upper() == "FROM":
            stage += 1
        first, last = c.start_line - 1, c.end_line - 1
        instructions.append(Instruction(index, c.cmd.upper(), first, last, "\n".join(lines[first:last + 1]),
                                        tuple(c.flags), tuple(c.value), c.json, stage))
    return Document(lines, instructions)


def keyword_end(text: str) -> int:
    """Offset just after the keyword and its `--flag` words, where the arguments begin."""
    match = re.match(r"\s*\S+", text)
    pos = match.end() if match else 0
    while True:
        flag = re.match(r"[ \t]*(?:\\\n[ \t]*)*(--\S+)", text[pos:])
        if not flag:
            return pos
        pos += flag.end()


def stage_names(doc: Document) -> dict[str, int]:
    """`FROM image AS name` -> {name: stage number}, lower-cased as BuildKit matches them."""
    names = {}
    for inst in doc.instructions:
        if inst.cmd == "FROM" and len(inst.value) >= 3 and inst.value[-2].lower() == "as":
            names[inst.value[-1].lower()] = inst.stage
    return names




_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?[-+][^}]*)?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def expand(text: str, variables: dict[str, str]) -> str:
    """Substitute $NAME and ${NAME} (and ${NAME:-default}) that have known values."""
    def sub(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        if name in variables:
            return variables[name]
        default = re.match(r"\$\{[A-Za-z_][A-Za-z0-9_]*:?-([^}]*)\}", match.group(0))
        return default.group(1) if default else match.group(0)
    return _VAR.sub(sub, text)


def declared_values(inst: Instruction) -> dict[str, str]:
    """Values an ARG or ENV instruction sets (ARG defaults, both ENV forms)."""
    if inst.cmd == "ARG":
        return dict(v.split("=", 1) for v in inst.value if "=" in v)
    if inst.cmd == "ENV":
        pairs = list(inst.value)
        return {pairs[i]: pairs[i + 1] for i in range(0, len(pairs) - 1, 2)}
    return {}


def references(text: str, name: str) -> bool:
    return re.search(r"\$\{?" + re.escape(name) + r"\b", text) is not None


@dataclass
class StageState:
    """What a stage holds at an instruction: inherited from the stage it is built FROM (or, for a base
    image, the global ARGs), then changed by its own WORKDIR, ARG, ENV and USER and by steps that bring
    the source. `pinned` is where pinning copied the source (pinning fills it in as it walks)."""

    workdir: str | None = "/"            # None once it depends on something unknown
    variables: dict[str, str] = field(default_factory=dict)
    user: str | None = None              # None: root
    has_source: bool = False
    pinned: list[str | None] = field(default_factory=list)

    def child(self) -> StageState:
        return StageState(self.workdir, dict(self.variables), self.user, self.has_source, list(self.pinned))

    @property
    def is_root(self) -> bool:
        return self.user is None or self.user in ROOT_USERS


def stages(doc: Document, profile: Profile | None = None) -> Iterator[tuple[Instruction, StageState]]:
    """Every instruction of every stage (global ARGs before the first FROM are not yielded) with its
    stage's state, the instruction's own effect included. With a profile, `has_source` is tracked
    too, from the instructions' current (edited) text."""
    names = stage_names(doc)
    states: dict[int, StageState] = {}
    global_variables: dict[str, str] = {}
    for inst in doc.instructions:
        if inst.stage < 0:
            global_variables.update(declared_values(inst))
            continue
        if inst.cmd == "FROM":
            parent = names.get(inst.value[0].lower()) if inst.value else None
            base = states.get(parent) if parent is not None else None
            states[inst.stage] = base.child() if base else StageState(variables=dict(global_variables))
        state = states[inst.stage]
        if inst.cmd == "WORKDIR" and inst.value:
            state.workdir = resolve(state.workdir, expand(inst.value[0], state.variables))
        elif inst.cmd == "USER" and inst.value:
            state.user = expand(inst.value[0], state.variables)
        state.variables.update(declared_values(inst))
        if profile is not None and not state.has_source:
            state.has_source = brings_source(inst, doc.text_of(inst), profile)
        yield inst, state


def source_paths(profile: Profile) -> frozenset[str]:
    """Context paths whose COPY brings the project's code (or what builds it)."""
    return frozenset({".", "*", "setup.py", "pyproject.toml", "setup.cfg", profile.package_path,
                      profile.source_subdir or "."})


def brings_source(inst: Instruction, text: str, profile: Profile) -> bool:
    """A COPY/ADD of the project's code from the build context, or the harness's pinned copy of it."""
    if inst.cmd in ("COPY", "ADD") and not any(f.startswith("--from") for f in inst.flags):
        return any(posixpath.normpath(src) in source_paths(profile) for src in inst.value[:-1])
    return inst.cmd == "RUN" and SOURCE_MOUNT in text


def insert_in_final_stage(doc: Document, text: str, after: int = -1) -> None:
    """Insert before the final stage's first CMD/ENTRYPOINT past `after`, as root; else append."""
    user = None
    for inst, state in stages(doc):
        if inst.stage != doc.final_stage:
            continue
        if inst.cmd in ("CMD", "ENTRYPOINT") and inst.index > after:
            doc.insert_before(inst, as_root(text, user))
            return
        user = state.user
    doc.append(as_root(text, user))


def as_root(text: str, user: str | None) -> str:
    """Steps that must run as root, with the stage's user set back after them."""
    if user is None or user in ROOT_USERS:
        return text
    return f"USER root\n{text}\nUSER {user}"
