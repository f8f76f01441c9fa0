"""Identity, declared late: the commit's build arg is declared just before its first use, and the
proof file is written in the final stage after the source, so earlier layers stay shared.

The OCI labels are not written here: they go on the build command line (see helpers.build.driver).
"""
from __future__ import annotations

import posixpath
import re
import shlex
from collections.abc import Callable

from helpers.profiles import Profile
from helpers.render.dockerfile import (
    DEFAULT_INSTALL_MARK,
    SOURCE_MOUNT,
    Instruction,
    insert_in_final_stage,
    keyword_end,
    parse,
    references,
    stages,
)
from helpers.render.shellwords import Word, apply_edits, command_words, package_actions, program, scan


def proof_step(profile: Profile) -> str:
    """The RUN that writes the full SHA; it fails the build when the build arg is missing."""
    proof = shlex.quote(profile.proof_file)
    folder = shlex.quote(posixpath.dirname(profile.proof_file) or "/")
    arg = profile.build_arg
    return (f'RUN test -n "${arg}" && mkdir -p {folder} && printf \'%s\\n\' "${arg}" > {proof}')


def remove_declarations(text: str, name: str) -> str:
    """Drop every `ARG name[=default]` so the declaration can move to its first use."""
    doc = parse(text)
    for inst in doc.instructions:
        if inst.cmd != "ARG":
            continue
        kept = [v for v in inst.value if v.split("=", 1)[0] != name]
        if len(kept) != len(inst.value):
            doc.replace(inst, f"ARG {' '.join(kept)}" if kept else "")
    return doc.render()


def add_proof_file(text: str, profile: Profile) -> str:
    """Write the proof file in the final stage, after the last step that installs the source."""
    doc = parse(text)
    final = doc.stage(doc.final_stage)
    source_steps = [i.index for i in final if SOURCE_MOUNT in doc.text_of(i) or DEFAULT_INSTALL_MARK in i.text]
    after = max(source_steps, default=final[0].index if final else -1)
    insert_in_final_stage(doc, proof_step(profile), after)
    return doc.render()


def declare_before_first_use(text: str, name: str) -> str:
    """`ARG name` immediately before the first instruction of each stage that references it."""
    doc = parse(text)
    declared: set[int] = set()
    for inst in doc.instructions:
        if inst.cmd == "ARG" or not references(inst.text, name):
            continue
        if inst.cmd == "FROM" and -1 not in declared:       # a FROM sees only global ARGs
            declared.add(-1)
            doc.insert_before(doc.instructions[0], f"ARG {name}")
        elif inst.cmd != "FROM" and inst.stage not in declared:
            declared.add(inst.stage)
            doc.insert_before(inst, f"ARG {name}")
    return doc.render()


def writes_file(cmd: list[Word], path: str) -> bool:
    """The simple command writes `path`: a `>`/`>>` redirection to it, or `tee` naming it."""
    values = [w.value for w in cmd]
    for i, value in enumerate(values):
        target = re.sub(r"^\d?>>?", "", value) if re.match(r"^\d?>>?", value) else None
        if target == "" and i + 1 < len(values):
            target = values[i + 1]
        if target == path:
            return True
    return bool(cmd) and program(cmd[0]) == "tee" and path in values[1:]


def proof_writes(text: str, path: str) -> list[tuple[int, int, str]]:
    """Edits that turn every command writing `path` into `true`, with what pipes into it."""
    commands = scan(text, keyword_end(text))
    edits = []
    for i, words in enumerate(commands):
        if not writes_file(command_words(words), path):
            continue
        start = words[0].start
        while i > 0 and text[commands[i - 1][-1].end:start].strip() == "|":   # `echo $X | tee path`
            i -= 1
            start = commands[i][0].start
        edits.append((start, words[-1].end, "true"))
    return edits


def undo_early_identity(text: str, profile: Profile) -> tuple[str, list[str]]:
    """The old recipe's own identity steps, undone so the commit enters only the layers after the source:
    a RUN that writes the proof file (the harness writes it late), a LABEL with the revision or the
    build arg (the labels go on the command line), an ENV holding the build arg (moved to the end)."""
    doc, notes, arg = parse(text), [], profile.build_arg
    for inst in doc.instructions:
        if inst.cmd == "RUN" and not inst.is_json:
            edits = proof_writes(inst.text, profile.proof_file)
            if edits:
                rest = apply_edits(inst.text, edits)
                only_true = all(program(c[0]) == "true" for c in map(command_words, scan(rest, keyword_end(rest))) if c)
                doc.replace(inst, "" if only_true else rest)
                notes.append(f"line {inst.first + 1}: removed the early write of {profile.proof_file}")
        elif inst.cmd in ("LABEL", "ENV"):
            pairs = key_values(inst)
            moved = [(k, v) for k, v in pairs if references(v, arg) or k == "org.opencontainers.image.revision"]
            if not moved:
                continue
            kept = [f"{k}={v}" for k, v in pairs if (k, v) not in moved]
            doc.replace(inst, f"{inst.cmd} {' '.join(kept)}" if kept else "")
            if inst.cmd == "ENV":
                doc.append("ENV " + " ".join(f"{k}={v}" for k, v in moved))
            notes.append(f"line {inst.first + 1}: {'moved to the end' if inst.cmd == 'ENV' else 'removed'} "
                         f"{inst.cmd} {', '.join(k for k, _ in moved)} (it carries the commit)")
    return doc.render(), notes


def key_values(inst: Instruction) -> list[tuple[str, str]]:
    """`KEY=VALUE` pairs of a LABEL or ENV, as written (quotes kept)."""
    body = inst.text[keyword_end(inst.text):].replace("\\\n", " ")
    pairs = []
    for word in scan(body):
        for w in word:
            key, sep, value = w.raw.partition("=")
            if sep:
                pairs.append((key.strip("\"'"), value))
    return pairs


def declare_identity(text: str, profile: Profile) -> str:
    """Move the build arg to its first use and write the proof file late in the final stage."""
    text = remove_declarations(text, profile.build_arg)
    text = add_proof_file(text, profile)
    return declare_before_first_use(text, profile.build_arg)


def builds_project(inst: Instruction) -> bool:
    """A RUN that builds or installs a project (setuptools-scm runs there)."""
    return inst.cmd == "RUN" and any(tool in ("setup.py", "build") or action in ("install", "wheel", "build", "sync")
                                     for tool, action in package_actions(inst.text, keyword_end(inst.text)))


def installs_packages(inst: Instruction) -> bool:
    """A RUN where pip or uv fetches packages from an index."""
    return inst.cmd == "RUN" and any(tool in ("pip", "uv") and action in ("install", "wheel", "download", "sync")
                                     for tool, action in package_actions(inst.text, keyword_end(inst.text)))


def declare_late(text: str, names: tuple[str, ...], wants: Callable[[Instruction, bool], bool],
                 profile: Profile | None = None) -> str:
    """`ARG name` for each name right before the first instruction of each stage that `wants`
    (given the instruction and whether the stage holds the project's source by then)."""
    doc = parse(text)
    done: set[int] = set()
    for inst, state in stages(doc, profile):
        if inst.cmd != "FROM" and inst.stage not in done and wants(inst, state.has_source):
            done.add(inst.stage)
            for name in names:
                doc.insert_before(inst, f"ARG {name}")
    return doc.render()


def scm_arg_names(profile: Profile) -> tuple[str, str]:
    package = re.sub(r"[-.]+", "_", profile.distribution).upper()
    return "SETUPTOOLS_SCM_PRETEND_VERSION", f"SETUPTOOLS_SCM_PRETEND_VERSION_FOR_{package}"


def declare_scm_version(text: str, profile: Profile) -> str:
    """setuptools-scm's version, declared just before the project is built in each stage."""
    return declare_late(text, scm_arg_names(profile),
                        lambda inst, source: source and builds_project(inst),
                        profile)


FREEZE_ARGS = ("PIP_UPLOADED_PRIOR_TO", "UV_EXCLUDE_NEWER")


def declare_freeze(text: str) -> str:
    """The dependency cut-off date, declared just before the first package install of each stage."""
    return declare_late(text, FREEZE_ARGS,
                        lambda inst, _source: installs_packages(inst))
