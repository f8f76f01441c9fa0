"""Identity, declared late: the commit's build arg is declared just before its first use, and the
proof file is written in the final stage after the source, so earlier layers stay shared.

The OCI labels are not written here: they go on the build command line (see helpers.build).
"""
from __future__ import annotations

import posixpath
import re
import shlex
from collections.abc import Callable

from helpers.profiles import Profile
from helpers.render.dockerfile import Instruction, parse, references, stage_parent
from helpers.render.pin import DEFAULT_INSTALL_MARK, SOURCE_MOUNT, insert_in_final_stage


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


def declare_identity(text: str, profile: Profile) -> str:
    """Move the build arg to its first use and write the proof file late in the final stage."""
    text = remove_declarations(text, profile.build_arg)
    text = add_proof_file(text, profile)
    return declare_before_first_use(text, profile.build_arg)


BUILDS_PROJECT = re.compile(r"setup\.py|\b(pip[0-9.]*|uv)\b[^\n]*\b(install|wheel|build)\b|-m\s+build\b")
INSTALLS_PACKAGES = re.compile(r"\b(pip[0-9.]*|uv)\b[^\n]*\b(install|wheel|download|sync)\b")


def declare_late(text: str, names: tuple[str, ...], wants: Callable[[Instruction, bool], bool],
                 source_paths: frozenset[str] = frozenset()) -> str:
    """`ARG name` for each name right before the first instruction of each stage that `wants`
    (given the instruction and whether the stage holds the project's source by then)."""
    doc = parse(text)
    has_source: dict[int, bool] = {}
    done: set[int] = set()
    for inst in doc.instructions:
        if inst.stage < 0:
            continue
        if inst.cmd == "FROM":
            parent = stage_parent(doc, inst.stage)
            has_source[inst.stage] = parent is not None and has_source.get(parent, False)
            continue
        has_source[inst.stage] = has_source[inst.stage] or brings_source(inst, doc.text_of(inst), source_paths)
        if inst.stage not in done and wants(inst, has_source[inst.stage]):
            done.add(inst.stage)
            for name in names:
                doc.insert_before(inst, f"ARG {name}")
    return doc.render()


def brings_source(inst: Instruction, text: str, source_paths: frozenset[str]) -> bool:
    """A COPY/ADD of the project's code from the context, or the harness's pinned copy."""
    if inst.cmd in ("COPY", "ADD") and not any(f.startswith("--from") for f in inst.flags):
        return any(posixpath.normpath(src) in source_paths for src in inst.value[:-1])
    return inst.cmd == "RUN" and SOURCE_MOUNT in text


def source_paths(profile: Profile) -> frozenset[str]:
    return frozenset({".", "setup.py", "pyproject.toml", "setup.cfg", profile.package_path,
                      profile.source_subdir or "."})


def scm_arg_names(profile: Profile) -> tuple[str, str]:
    package = re.sub(r"[-.]+", "_", profile.distribution).upper()
    return "SETUPTOOLS_SCM_PRETEND_VERSION", f"SETUPTOOLS_SCM_PRETEND_VERSION_FOR_{package}"


def declare_scm_version(text: str, profile: Profile) -> str:
    """setuptools-scm's version, declared just before the project is built in each stage."""
    return declare_late(text, scm_arg_names(profile),
                        lambda inst, source: inst.cmd == "RUN" and source and bool(BUILDS_PROJECT.search(inst.text)),
                        source_paths(profile))


FREEZE_ARGS = ("PIP_UPLOADED_PRIOR_TO", "UV_EXCLUDE_NEWER")


def declare_freeze(text: str) -> str:
    """The dependency cut-off date, declared just before the first package install of each stage."""
    return declare_late(text, FREEZE_ARGS,
                        lambda inst, _source: inst.cmd == "RUN" and bool(INSTALLS_PACKAGES.search(inst.text)))
