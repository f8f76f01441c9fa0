"""Identity, declared late: the commit's build arg is declared just before its first use, and the
proof file is written in the final stage after the source, so earlier layers stay shared.

The OCI labels are not written here: they go on the build command line (see helpers.build).
"""
from __future__ import annotations

import posixpath
import shlex

from helpers.profiles import Profile
from helpers.render.dockerfile import parse, references
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
