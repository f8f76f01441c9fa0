"""Parts: with --build-changed-parts, the parts of the tree a commit changed (a profile's `parts`, such as
SGLang's `sgl-kernel/`) are built from the commit's own tree at the end of the final stage.

The Dockerfile takes such a part prebuilt (a wheel from an index); a commit that changes it would give an
image with its parent's part. One step after the project's source, as root, installs each changed part
from the copy of the tree without dependencies or build isolation, over whatever the Dockerfile installed:

    RUN cd /sgl-workspace/sglang/sgl-kernel && PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install \\
        --no-deps --no-build-isolation --force-reinstall .

(the compiler cache mount follows from helpers/render/caches.py: it compiles where the source is).
"""
from __future__ import annotations

import posixpath
import shlex

from helpers.render.dockerfile import SOURCE_MOUNT, insert_in_final_stage, parse, stages
from helpers.render.late import shell_commands
from helpers.render.shellwords import program, resolve

PART_INSTALL = "PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --no-deps --no-build-isolation --force-reinstall ."


def build_parts(text: str, parts: tuple[str, ...]) -> tuple[str, list[str]]:
    """The Dockerfile with one step that builds each part from the final stage's copy of the tree; unchanged,
    with a note saying why, when the final stage holds no copy whose place is known."""
    if not parts:
        return text, []
    doc = parse(text)
    copy = None
    for inst, state in stages(doc):
        if inst.stage != doc.final_stage or inst.cmd != "RUN":
            continue
        for _words, cmd, cwd in shell_commands(doc.text_of(inst), state.workdir):
            values = [w.value for w in cmd]
            if cmd and program(cmd[0]) == "cp" and f"{SOURCE_MOUNT}/." in values:
                copy = resolve(cwd, values[-1]) or copy
    named = ", ".join(f"{p}/" for p in parts)
    if copy is None:
        return text, [f"--build-changed-parts: {named} not built: the final stage holds no copy of the tree "
                      "whose place is known"]
    step = " \\\n    && ".join(f"cd {shlex.quote(posixpath.join(copy, part))} && {PART_INSTALL}" for part in parts)
    insert_in_final_stage(doc, f"RUN {step}")
    return doc.render(), [f"--build-changed-parts: {named} built from the commit's tree in {copy}, after the "
                          "project (over what the Dockerfile installed)"]
