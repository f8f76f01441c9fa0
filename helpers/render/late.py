"""Late source: the commit's own source enters the image last, so that a commit rebuilds one light step.

The pinned RUN (the context copied where the Dockerfile cloned the project, then installed) stays
where it is with two changes: the copy becomes `mkdir -p DEST` (a later `cd` still works), and each
install of the project, in whichever `if`/`case` branch it sits, installs the dependencies its own
extras ask instead, read from the commit's dependency specification (the chain keeps its other
commands). Then, at the end of the final stage (before the first later step that reads the source,
if one does), one step copies the source to the same place and installs it without dependencies,
from the same working directory, as the same user:

    RUN <the chain, with `mkdir -p DEST` and `pip install 'dep' ...` per branch>   # keyed by the spec
    ...                                        # the heavy steps after it, which never read the source
    RUN --mount=<context> mkdir -p DEST && cp -a ... DEST && cd CWD && pip install --no-deps -e ...

Whatever cannot be decided exactly keeps the Dockerfile's order, and the note says why.
"""
from __future__ import annotations

import posixpath
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass

from helpers.profiles import Profile
from helpers.render.deps import INDEX_OPTIONS, dependency_list, install_parts
from helpers.render.dockerfile import (
    MOUNT_FLAG,
    ROOT_USERS,
    SOURCE_MOUNT,
    Document,
    Instruction,
    expand,
    keyword_end,
    parse,
    stages,
)
from helpers.render.shellwords import PIP_VALUE_OPTIONS, Word, apply_edits, pip_install_index, program, resolve, walk

# Commands that read no file of the working directory: shell built-ins and tests.
READS_NOTHING = {"cd", "true", "false", ":", "export", "echo", "printf", "set", "unset", "[", "test", "exit",
                 "shift", "read", "local", "return", "sleep"}
# Variables that change what a `pip install --no-deps` of the source does: the source step must see them as
# the pinned step saw them.
INSTALL_VARIABLES = re.compile(r"PATH|VIRTUAL_ENV|CONDA_PREFIX|PYTHON\w*|PIP_\w+|UV_\w+|SETUPTOOLS\w*|HOME|"
                               r"LD_LIBRARY_PATH")


class Refused(Exception):
    """Why the source cannot move without changing what the image holds."""


@dataclass(frozen=True)
class Install:
    """One install of the project in the pinned chain: its words, where it runs, what it names."""

    words: list[Word]
    cmd: list[Word]
    cwd: str
    target: str          # the raw word naming the source ("python[${BUILD_TYPE}]")
    editable: bool
    extras: frozenset[str]


@dataclass(frozen=True)
class Pinned:
    """The pinned RUN and what the stage holds there."""

    inst: Instruction
    dest: str
    installs: tuple[Install, ...]
    workdir: str | None
    user: str | None
    variables: dict[str, str]


def late_source(text: str, profile: Profile, files: Mapping[str, str]) -> tuple[str, list[str]]:
    """The Dockerfile with the source entering last, and a note of what was done or why it was not."""
    doc = parse(text)
    found = [(inst, state.workdir, state.user, dict(state.variables)) for inst, state in stages(doc)
             if inst.cmd == "RUN" and MOUNT_FLAG in doc.text_of(inst)]
    if not found:
        return text, []
    try:
        if len(found) > 1:
            raise Refused(f"the source is brought in {len(found)} steps")
        pinned = read_pinned(doc, *found[0], profile)
        in_place = dependency_step(pinned, profile, files)
        reader = first_reader(doc, pinned, profile)
        step = source_step(doc, pinned, reader)
    except Refused as why:
        return text, [f"late source: not applied, the Dockerfile's order is kept: {why}"]
    doc.replace(pinned.inst, in_place)
    ending = reader or next((i for i in doc.stage(doc.final_stage) if i.index > pinned.inst.index
                             and i.cmd in ("CMD", "ENTRYPOINT")), None)
    if ending is not None:
        doc.insert_before(ending, step)
    else:
        doc.append(step)
    where = f"before line {reader.first + 1}, the first step that reads it" if reader else \
        "at the end of the final stage"
    return doc.render(), [f"late source: line {pinned.inst.first + 1} installs the dependencies its "
                          f"{len(pinned.installs)} install(s) of {profile.name} ask; the source enters {where}"]


def read_pinned(doc: Document, inst: Instruction, workdir: str | None, user: str | None,
                variables: dict[str, str], profile: Profile) -> Pinned:
    if inst.stage != doc.final_stage:
        raise Refused(f"the source is brought in stage {inst.stage}, not the final stage")
    text = doc.text_of(inst)
    commands = list(shell_commands(text, workdir))
    copies = [(i, cmd, cwd) for i, (_, cmd, cwd) in enumerate(commands)
              if cmd and program(cmd[0]) == "cp" and len(cmd) >= 4 and cmd[2].value == f"{SOURCE_MOUNT}/."]
    if len(copies) != 1:
        raise Refused("the pinned step does not copy the source exactly once")
    at, copy_cmd, copy_cwd = copies[0]
    dest = resolve(copy_cwd, copy_cmd[3].value)
    if dest is None:
        raise Refused("where the source goes depends on the shell (a `cd` to a variable)")
    source = posixpath.join(dest, profile.source_subdir).rstrip("/")
    installs = []
    for words, cmd, cwd in commands[at + 1:]:
        install = project_install(words, cmd, cwd, source, variables)
        if install is not None:
            installs.append(install)
        elif reads_source(cmd, cwd, dest):
            raise Refused(f"`{' '.join(w.raw for w in cmd)[:80]}` after the copy could read the source")
    if not installs:
        raise Refused("the pinned step does not install the project")
    if len({(i.editable, tuple(w.raw for w in i.cmd[:(pip_install_index(i.cmd) or 0) + 1])) for i in installs}) > 1:
        raise Refused("the project's installs differ between branches in more than their extras")
    return Pinned(inst, dest, tuple(installs), workdir, user, variables)


def shell_commands(text: str, workdir: str | None):
    """The simple commands of a RUN with the directory each runs in, as helpers.render.shellwords.walk gives
    them, less the patterns of a `case` (`12.6.1)`), which are not commands."""
    depth = 0
    for words, cmd, cwd in walk(text, keyword_end(text), workdir):
        first = words[0].raw if words else ""
        if first == "case":
            depth += 1
        elif first == "esac" or any(w.raw == "esac" for w in words[:1]):
            depth = max(0, depth - 1)
        if depth and words and text[words[-1].end:].lstrip(" \t\\\n").startswith(")"):
            continue
        yield words, cmd, cwd


def project_install(words: list[Word], cmd: list[Word], cwd: str | None, source: str,
                    variables: dict[str, str]) -> Install | None:
    """A pip or uv install whose target is the project's source (editable or not), else None."""
    at = pip_install_index(cmd) if cmd else None
    if at is None or cwd is None:
        return None
    args, skip = cmd[at + 1:], False
    for i, word in enumerate(args):
        if skip:
            skip = False
            continue
        if word.value in PIP_VALUE_OPTIONS - {"-e", "--editable"}:
            skip = True
            continue
        editable = i > 0 and args[i - 1].value in ("-e", "--editable")
        if word.value.startswith("-"):
            continue
        match = re.fullmatch(r"([^\[\]]+?)(?:\[([^\]]*)\])?", expand(word.value, variables))
        if match and "$" not in match.group(1) and posixpath.normpath(posixpath.join(cwd, match.group(1))) == source:
            if "$" in (match.group(2) or ""):
                raise Refused(f"the extras of `{word.raw}` depend on the shell")
            extras = frozenset(e.strip() for e in (match.group(2) or "").split(",") if e.strip())
            return Install(words, cmd, cwd, word.raw, editable, extras)
    return None


def is_local_path(value: str) -> bool:
    return value in (".", "..") or value.startswith(("/", "./", "../")) or "/" in value and "://" not in value


def reads_source(cmd: list[Word], cwd: str | None, dest: str, mentions: tuple[str, ...] = ()) -> bool:
    """Whether a command could read (or write) the source's folder: a command working inside it (other
    than the shell's built-ins), a path into it, an install of a local path there, or one naming the
    project (`import sglang`, `pip install sglang-router`)."""
    if not cmd:
        return False
    inside = cwd is None or within(cwd, dest)
    values = [w.value for w in cmd]
    if any(re.search(rf"\b{re.escape(name)}\b", v) for v in values for name in mentions):
        return True
    if program(cmd[0]) in READS_NOTHING:
        return False
    if pip_install_index(cmd) is not None:
        paths = [v for v in values[1:] if not v.startswith("-") and is_local_path(v)]
        return any(within(resolve(cwd, p), dest) for p in paths) or \
            inside and any(v in ("-r", "--requirement", "-c", "--constraint", "-e", "--editable", ".")
                           for v in values)
    return inside or any(within(resolve(cwd, v), dest) for v in values if v.startswith("/"))


def within(path: str | None, folder: str) -> bool:
    return path is None or path == folder or path.startswith(folder.rstrip("/") + "/")


def dependency_step(pinned: Pinned, profile: Profile, files: Mapping[str, str]) -> str:
    """The pinned RUN with the copy made `mkdir` only and each install of the project installing its
    dependencies instead (the mount of the context dropped: nothing there reads it now)."""
    text = pinned.inst.text
    edits = []
    for words, cmd, _ in shell_commands(text, pinned.workdir):
        if cmd and program(cmd[0]) == "cp" and len(cmd) >= 4 and cmd[2].value == f"{SOURCE_MOUNT}/.":
            edits.append((words[0].start, words[-1].end, "true"))
    for install in pinned.installs:
        deps = dependency_list(files, profile.source_subdir, set(install.extras))
        if deps is None:
            raise Refused(f"the dependencies of {profile.source_subdir or '.'}[{','.join(sorted(install.extras))}] "
                          "cannot be read exactly from the commit's pyproject.toml")
        edits.append((install.cmd[0].start, install.words[-1].end, deps_command(install, deps)))
    return apply_edits(text, edits).replace(MOUNT_FLAG + " ", "", 1)


# The dependencies go in as what they are, dependencies: of a stub wheel made on the spot that requires
# them, installed and then uninstalled. Named on pip's command line, pip would mark each as REQUESTED
# (in its dist-info and its RECORD), which the Dockerfile's own order never does.
STUB_DIR = "/tmp/harness-deps"
STUB = f"{STUB_DIR}/harness_deps-0-py3-none-any.whl"
MAKE_STUB = ("import sys, zipfile; d = 'harness_deps-0.dist-info/'; "
             "m = 'Metadata-Version: 2.1\\nName: harness-deps\\nVersion: 0\\n' + "
             "''.join('Requires-Dist: %s\\n' % r for r in sys.argv[2:]); "
             "w = 'Wheel-Version: 1.0\\nGenerator: commit-image-harness\\nRoot-Is-Purelib: true\\n"
             "Tag: py3-none-any\\n'; z = zipfile.ZipFile(sys.argv[1], 'w'); z.writestr(d + 'METADATA', m); "
             "z.writestr(d + 'WHEEL', w); z.writestr(d + 'RECORD', d + 'METADATA,,\\n' + d + 'WHEEL,,\\n' + d + "
             "'RECORD,,\\n'); z.close()")
# What tells an uninstall where the stub went (the same environment the install chose).
TARGETING = {"--break-system-packages", "--system", "--python", "-p", "--user"}


def deps_command(install: Install, deps: list[str]) -> str:
    head, options = install_parts(install.cmd, install.target)
    if "--no-deps" in options or not deps:
        return "true"
    if any(o in ("--target", "-t", "--prefix", "--root") for o in options):
        raise Refused("the project is installed with --target/--prefix/--root: its dependencies' stub could "
                      "not be uninstalled exactly")
    words = head.split()
    python = words[0] if words[0].rsplit("/", 1)[-1].startswith("python") else "python3"
    uv = any(w.rsplit("/", 1)[-1] == "uv" for w in words)
    targeting = [o for i, o in enumerate(options) if o in TARGETING or i and options[i - 1] in ("--python", "-p")]
    uninstall = " ".join([*words[:-1], "uninstall", *([] if uv else ["-y"]), *targeting, "harness-deps"])
    return " && ".join([f"mkdir -p {STUB_DIR}",
                        " ".join([python, "-c", shlex.quote(MAKE_STUB), STUB, *(shlex.quote(d) for d in deps)]),
                        " ".join([head, *options, STUB]), uninstall, f"rm -rf {STUB_DIR}"])


def first_reader(doc: Document, pinned: Pinned, profile: Profile) -> Instruction | None:
    """The first step after the pinned one that reads the source (it stays after the source), else None;
    a step the source must not come after (an ENV that changes how it installs) refuses."""
    mentions = (profile.import_name, profile.distribution)
    for inst, state in stages(doc):
        if inst.stage != pinned.inst.stage or inst.index <= pinned.inst.index:
            continue
        if inst.cmd == "RUN":
            text = doc.text_of(inst)
            runs = [(cmd, cwd) for _, cmd, cwd in shell_commands(text, state.workdir)] if not inst.is_json else \
                [([Word(v, 0, 0) for v in inst.value], state.workdir)]
            if any(reads_source(cmd, cwd, pinned.dest, mentions) for cmd, cwd in runs):
                return inst
        elif inst.cmd in ("COPY", "ADD") and inst.value:
            target = resolve(state.workdir, expand(inst.value[-1], state.variables))
            if target is None or within(target, pinned.dest) or within(pinned.dest, target):
                return inst
        elif inst.cmd == "WORKDIR" and within(state.workdir, pinned.dest):
            return inst
        elif inst.cmd in ("ENV", "ARG") and any(INSTALL_VARIABLES.fullmatch(name) and
                                                 state.variables.get(name) != pinned.variables.get(name)
                                                 for name in names_set(inst)):
            raise Refused(f"line {inst.first + 1} changes {', '.join(names_set(inst))}, which the source's "
                          "install would see otherwise")
    return None


def names_set(inst: Instruction) -> list[str]:
    if inst.cmd == "ARG":
        return [v.split("=", 1)[0] for v in inst.value]
    return list(inst.value[0::2])


def source_step(doc: Document, pinned: Pinned, reader: Instruction | None) -> str:
    """The copy of the source and its install without dependencies, as the pinned step's user, from its
    working directory (the stage's user set back after it)."""
    install = pinned.installs[0]
    head, options = install_parts(install.cmd, install.target)
    kept, i = [], 0
    while i < len(options):              # index options with the chain's shell variables: nothing is fetched
        pair = options[i:i + 2] if options[i] in PIP_VALUE_OPTIONS and i + 1 < len(options) else [options[i]]
        if not (options[i] in INDEX_OPTIONS and any("$" in p for p in pair)):
            kept += pair
        i += len(pair)
    if "--no-deps" not in kept:
        kept.append("--no-deps")
    assignments = [w.raw for w in install.words[:install.words.index(install.cmd[0])]
                   if re.match(r"[A-Za-z_][A-Za-z0-9_]*=", w.raw)]
    command = " ".join([*assignments, head, *kept, *(["-e"] if install.editable else []), install.target])
    dest = shlex.quote(pinned.dest)
    step = f"RUN {MOUNT_FLAG} mkdir -p {dest} && cp -a {SOURCE_MOUNT}/. {dest} && cd {shlex.quote(install.cwd)} && " \
           f"{command}"
    return as_user(step, pinned.user, user_at(doc, reader))


def user_at(doc: Document, reader: Instruction | None) -> str | None:
    """The final stage's user where the source step goes (before `reader`, or at the stage's end)."""
    user = None
    for inst, state in stages(doc):
        if inst.stage != doc.final_stage:
            continue
        if reader is not None and inst.index >= reader.index:
            break
        user = state.user
    return user


def as_user(step: str, wanted: str | None, current: str | None) -> str:
    if (wanted or "root") in ROOT_USERS and (current or "root") in ROOT_USERS or wanted == current:
        return step
    return f"USER {wanted or 'root'}\n{step}\nUSER {current or 'root'}"
