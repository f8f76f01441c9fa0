"""A parsed Dockerfile that can be edited by instruction and printed back, comments intact.

Parsing uses BuildKit's own parser (the `dockerfile` package wraps moby/buildkit's Go
parser), so line ranges, continuations and heredocs are read exactly as BuildKit reads them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import dockerfile as buildkit_parser

from helpers.errors import UnpinnableDockerfile


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


def stage_parent(doc: Document, stage: int) -> int | None:
    """The stage a stage is built FROM, when it is built from an earlier stage."""
    names = stage_names(doc)
    for inst in doc.stage(stage):
        if inst.cmd == "FROM" and inst.value:
            return names.get(inst.value[0].lower())
    return None


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
