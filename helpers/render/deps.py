"""Dependency layer: install the project's dependencies in a layer keyed by their specification,
then copy and install the commit's own source without dependencies.

The pinned RUN (copy of the context, then `pip install -e <source>[extras]`) is split in two:

    RUN <the original chain, with `mkdir -p DEST` for the copy and `pip install <flags> 'dep' ...`
         in place of the project's install>            # its text is the spec: shared by commits
    RUN --mount=<context> cp -a ... DEST && cd ... && pip install --no-deps <flags> -e <source>[extras]

The dependency list is read from the commit's pyproject.toml (PEP 621 `dependencies`, the
requested `optional-dependencies`, recursive self-references, setuptools' `dynamic` files).
Whatever cannot be read exactly leaves the RUN as it was: correctness first.
"""
from __future__ import annotations

import posixpath
import re
import shlex
from collections.abc import Mapping

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from helpers.profiles import Profile
from helpers.render.dockerfile import MOUNT_FLAG, SOURCE_MOUNT, Instruction, expand, keyword_end, parse, stages
from helpers.render.shellwords import (
    PIP_VALUE_OPTIONS,
    Word,
    apply_edits,
    package_actions,
    pip_install_index,
    program,
    resolve,
    walk,
)

try:
    import tomllib
except ModuleNotFoundError:                      # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

INDEX_OPTIONS = {"-i", "--index-url", "--extra-index-url", "-f", "--find-links", "--no-index", "--trusted-host",
                 "--pre", "--prefer-binary", "--only-binary", "--no-binary"}


def dependency_list(files: Mapping[str, str], subdir: str, extras: set[str]) -> list[str] | None:
    """The requirement strings pip would install for `<subdir>[extras]`, or None if unknowable."""
    pyproject = files.get(posixpath.join(subdir, "pyproject.toml"))
    if pyproject is None:
        return None
    try:
        data = tomllib.loads(pyproject)
    except tomllib.TOMLDecodeError:
        return None
    project = data.get("project") or {}
    name = canonicalize_name(project.get("name", ""))
    dynamic = set(project.get("dynamic") or ())
    base = _dynamic(data, files, subdir, "dependencies") if "dependencies" in dynamic else \
        project.get("dependencies", [])                  # PEP 621: absent and not dynamic means none
    optional = project.get("optional-dependencies") or {}
    if not name or base is None or "optional-dependencies" in dynamic:
        return None
    wanted, seen, out = sorted(extras), set(), list(base)
    while wanted:                                         # breadth first, in the order they are written
        extra = wanted.pop(0)
        if extra in seen:
            continue
        seen.add(extra)
        if extra not in optional:
            return None                                   # pip would warn; do not guess
        for text in optional[extra]:
            req = _parse(text)
            if req is None:
                return None
            if canonicalize_name(req.name) == name:               # "sglang[srt]" inside sglang's own extras
                wanted += sorted(req.extras)
            else:
                out.append(text)
    return list(dict.fromkeys(out))


def _parse(text: str) -> Requirement | None:
    try:
        return Requirement(text)
    except InvalidRequirement:
        return None


def _dynamic(data: dict, files: Mapping[str, str], subdir: str, key: str) -> list[str] | None:
    spec = ((data.get("tool") or {}).get("setuptools") or {}).get("dynamic", {}).get(key)
    if not isinstance(spec, dict) or not spec.get("file"):
        return None
    out: list[str] = []
    for name in [spec["file"]] if isinstance(spec["file"], str) else spec["file"]:
        text = files.get(posixpath.normpath(posixpath.join(subdir, name)))
        if text is None:
            return None
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            if line.startswith("-"):
                return None                              # -r, -c, --index-url inside: not a plain list
            if line:
                out.append(line)
    return out


def split_dependency_layer(text: str, profile: Profile, files: Mapping[str, str]) -> tuple[str, list[str]]:
    """Every pinned RUN that installs the project editable, split into a dependency layer and a source layer."""
    doc = parse(text)
    notes: list[str] = []
    for inst, state in stages(doc):
        if inst.cmd == "RUN" and MOUNT_FLAG in inst.text:
            split = _split(inst, state.workdir, state.variables, profile, files)
            if split:
                doc.replace(inst, split[0])
                notes.append(split[1])
    return doc.render(), notes


def _split(inst: Instruction, cwd: str | None, variables: dict[str, str], profile: Profile,
           files: Mapping[str, str]) -> tuple[str, str] | None:
    text = inst.text
    commands = list(walk(text, keyword_end(text), cwd))
    copies = [(words, cmd, where) for words, cmd, where in commands
              if cmd and program(cmd[0]) == "cp" and len(cmd) >= 4 and cmd[2].value == f"{SOURCE_MOUNT}/."]
    installs = [(words, cmd, where) for words, cmd, where in commands
                if cmd and pip_install_index(cmd) is not None and any(w.value in ("-e", "--editable") for w in cmd)]
    if len(copies) != 1 or len(installs) != 1 or not _only_source_steps(commands, copies[0], installs[0]):
        return None
    copy_words, copy_cmd, copy_where = copies[0]
    dest = resolve(copy_where, copy_cmd[3].value)
    words, cmd, where = installs[0]
    target = _editable_target(cmd, where, variables)
    if dest is None or where is None or target is None or \
            target[0] != posixpath.join(dest, profile.source_subdir).rstrip("/"):
        return None
    deps = dependency_list(files, profile.source_subdir, target[1])
    if deps is None:
        return None
    first = apply_edits(text, [(copy_cmd[0].start, copy_words[-1].end, "true"),
                               (cmd[0].start, words[-1].end, _deps_command(cmd, deps))])
    first = first.replace(MOUNT_FLAG + " ", "", 1)
    assignments = [w.raw for w in words[:words.index(cmd[0])] if re.match(r"[A-Za-z_][A-Za-z0-9_]*=", w.raw)]
    second = f"RUN {MOUNT_FLAG} mkdir -p {shlex.quote(dest)} && cp -a {SOURCE_MOUNT}/. {shlex.quote(dest)} && " \
             f"cd {shlex.quote(where)} && {' '.join([*assignments, _project_command(cmd)])}"
    return f"{first}\n{second}", f"dependencies ({len(deps)}) in a layer keyed by their specification; " \
                                 f"the source installed after them with --no-deps"


SOURCE_FREE = {"cd", "true", ":", "export", "echo", "printf", "set", "unset"}


def _only_source_steps(commands: list, copy: tuple, install: tuple) -> bool:
    """From the copy of the source on, no step but the project's install that could read the source (the
    dependency layer runs them without it): only shell built-ins that read no files (`cd`, `export`, `echo`)."""
    start, end = commands.index(copy), commands.index(install)
    others = commands[start + 1:end] + commands[end + 1:]
    return all(not cmd or program(cmd[0]) in SOURCE_FREE for _, cmd, _ in others)


def _editable_target(cmd: list[Word], where: str | None, variables: dict[str, str]) -> tuple[str, set[str]] | None:
    """(absolute source path, extras) of the `-e` argument, variables expanded; None if not exact."""
    values = [w.value for w in cmd]
    flag = next(i for i, v in enumerate(values) if v in ("-e", "--editable"))
    if flag + 1 >= len(values):
        return None
    argument = expand(values[flag + 1], variables)
    match = re.fullmatch(r"([^\[\]$]+?)(?:\[([^\]$]*)\])?", argument)
    if not match or where is None and not match.group(1).startswith("/"):
        return None
    path = posixpath.normpath(posixpath.join(where or "/", match.group(1)))
    extras = {e.strip() for e in (match.group(2) or "").split(",") if e.strip()}
    return path, extras


def _install_parts(cmd: list[Word]) -> tuple[str, list[str], str]:
    """(pip up to `install`, pip's options without -e, the raw -e argument)."""
    install_at = pip_install_index(cmd) or 0
    head = " ".join(w.raw for w in cmd[:install_at + 1])
    options, editable, skip = [], "", False
    args = cmd[install_at + 1:]
    for i, word in enumerate(args):
        if skip:
            skip = False
            continue
        if word.value in ("-e", "--editable"):
            editable, skip = args[i + 1].raw, True
            continue
        options.append(word.raw)
        if word.value in PIP_VALUE_OPTIONS and i + 1 < len(args):
            options.append(args[i + 1].raw)
            skip = True
    return head, options, editable


def _deps_command(cmd: list[Word], deps: list[str]) -> str:
    head, options, _ = _install_parts(cmd)
    if "--no-deps" in options or not deps:
        return "true"
    return " ".join([head, *options, *(shlex.quote(d) for d in deps)])


def _project_command(cmd: list[Word]) -> str:
    """The project's own install, no dependencies; index options with shell variables set earlier
    in the original chain (unset here) are dropped, as a --no-deps install downloads nothing."""
    head, options, editable = _install_parts(cmd)
    kept, i = [], 0
    while i < len(options):
        option = options[i]
        pair = options[i:i + 2] if option in PIP_VALUE_OPTIONS and i + 1 < len(options) else [option]
        if not (option in INDEX_OPTIONS and any("$" in p for p in pair)):
            kept += pair
        i += len(pair)
    if "--no-deps" not in kept:
        kept.append("--no-deps")
    return " ".join([head, *kept, "-e", editable])


CACHES = {"pip": "/root/.cache/pip", "uv": "/root/.cache/uv"}
NO_CACHE = {"--no-cache-dir", "--no-cache"}


def add_package_caches(text: str) -> tuple[str, list[str]]:
    """A BuildKit cache mount for pip's and uv's download caches on every RUN that installs as root,
    and `--no-cache-dir` dropped (the cache lives in the mount, never in the image)."""
    doc = parse(text)
    notes: list[str] = []
    for inst, state in stages(doc):
        if inst.cmd != "RUN" or inst.is_json or not state.is_root:
            continue
        current = doc.text_of(inst)
        actions = package_actions(current, keyword_end(current))
        tools = [tool for tool in CACHES if (tool, "install") in actions or (tool, "wheel") in actions
                 or (tool, "sync") in actions]
        mounts = [f"--mount=type=cache,target={CACHES[t]}" for t in tools if f"target={CACHES[t]}" not in current]
        if not tools:
            continue
        edits = [(w.start - 1 if current[w.start - 1] == " " else w.start, w.end, "")
                 for _, cmd, _ in walk(current, keyword_end(current), "/")
                 if cmd and program(cmd[0]).startswith(("pip", "python", "uv")) for w in cmd if w.value in NO_CACHE]
        new = apply_edits(current, edits)
        if mounts:
            keyword = re.match(r"\s*RUN", new, re.I)
            assert keyword is not None
            new = new[:keyword.end()] + " " + " ".join(mounts) + new[keyword.end():]
        if new != current:
            doc.replace(inst, new)
            notes.append(f"line {inst.first + 1}: package cache mounted for {', '.join(tools)}")
    return doc.render(), notes
