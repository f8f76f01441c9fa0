"""Dockerfile fixes: known breakages of real Dockerfiles, each a pure rewrite that says what it changed.

- dockerfile_syntax: `FROM image as name` -> `AS`; legacy `ENV key value` -> `ENV key=value`;
  a bare `RUN` line joined with the line that continues it;
- no_git_mount: `RUN --mount=type=bind,source=.git,...` removed (a `git archive` context has no .git);
- no_wheel_size_check: vLLM's `check-wheel-size.py` step becomes `true`.
"""
from __future__ import annotations

import re

from helpers.render.dockerfile import keyword_end, parse
from helpers.render.shellwords import command_words, program, scan

INSTRUCTIONS = {"ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK", "LABEL",
                "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR"}
Changes = list[str]


def join_bare_run(text: str) -> tuple[str, Changes]:
    """`RUN` alone on its line, its command on the next lines: join them (BuildKit rejects it)."""
    changes: Changes = []

    def join(match: re.Match) -> str:
        following = match.group(3).split(None, 1)
        if following and following[0].upper() in INSTRUCTIONS:
            return match.group(0)
        changes.append(f"line {text.count(chr(10), 0, match.start()) + 1}: joined a bare RUN with its next line")
        return f"{match.group(1)} {match.group(3)}"
    return re.sub(r"^([ \t]*RUN)[ \t]*(\\?)[ \t]*\n[ \t]*(\S[^\n]*)", lambda m: join(m) if not m.group(2)
                  else m.group(0), text, flags=re.M | re.I), changes


def normalise_syntax(text: str) -> tuple[str, Changes]:
    """Upper-case `AS` in FROM, and the one-pair legacy ENV form written as key=value."""
    text, changes = join_bare_run(text)
    doc = parse(text)
    for inst in doc.instructions:
        line = f"line {inst.first + 1}"
        if inst.cmd == "FROM" and len(inst.value) == 3 and inst.value[1] != "AS" and inst.value[1].lower() == "as":
            doc.replace(inst, re.sub(r"(\s)as(\s+\S+\s*)$", r"\1AS\2", inst.text, flags=re.I))
            changes.append(f"{line}: FROM ... {inst.value[1]} -> AS")
        elif inst.cmd == "ENV" and "\n" not in inst.text:
            legacy = re.match(r"^(\s*ENV\s+)([A-Za-z_][A-Za-z0-9_.-]*)\s+(\S.*?)\s*$", inst.text, re.I)
            if legacy and "=" not in inst.text[legacy.start(2):legacy.end(2)]:
                doc.replace(inst, f"{legacy.group(1)}{legacy.group(2)}={quote_env(legacy.group(3))}")
                changes.append(f"{line}: ENV {legacy.group(2)} <value> -> ENV {legacy.group(2)}=<value>")
    return doc.render(), changes


def quote_env(value: str) -> str:
    """A legacy ENV value as one key=value word: kept as written when it already is one word."""
    if re.fullmatch(r"\"(?:[^\"\\]|\\.)*\"|'[^']*'|\S+", value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _is_git_mount(flag: str) -> bool:
    options = dict(part.partition("=")[::2] for part in flag[len("--mount="):].split(","))
    source = options.get("source", options.get("src", ""))
    return options.get("type", "bind") == "bind" and "from" not in options and \
        source.strip("/").removeprefix("./") == ".git"


def remove_git_mounts(text: str) -> tuple[str, Changes]:
    """Drop `--mount` flags that bind the context's .git; a line left holding only `RUN \\` is joined."""
    doc = parse(text)
    changes: Changes = []
    for inst in doc.instructions:
        if inst.cmd != "RUN" or not any(f.startswith("--mount=") and _is_git_mount(f) for f in inst.flags):
            continue
        new = re.sub(r"--mount=\S+[ \t]*", lambda m: "" if _is_git_mount(m.group(0).rstrip()) else m.group(0),
                     inst.text, count=0)
        new = re.sub(r"^(\s*RUN(?:\s+--\S+)*)[ \t]*\\\n[ \t]*", r"\1 ", new, flags=re.I)
        doc.replace(inst, re.sub(r"^(\s*RUN) {2,}", r"\1 ", new, flags=re.I))
        changes.append(f"line {inst.first + 1}: removed the .git bind mount")
    return doc.render(), changes


def neutralise_wheel_size_check(text: str) -> tuple[str, Changes]:
    """`python3 check-wheel-size.py dist` (vLLM's upload limit check) becomes `true`."""
    doc = parse(text)
    changes: Changes = []
    for inst in doc.instructions:
        if inst.cmd != "RUN" or inst.is_json or "check-wheel-size" not in inst.text:
            continue
        new = inst.text
        for words in reversed(scan(inst.text, keyword_end(inst.text))):
            cmd = command_words(words)
            if cmd and program(cmd[0]).startswith("python") and any(
                    w.value.endswith("check-wheel-size.py") for w in cmd[1:3]):
                new = new[:cmd[0].start] + "true" + new[words[-1].end:]
        if new != inst.text:
            doc.replace(inst, new)
            changes.append(f"line {inst.first + 1}: wheel size check skipped")
    return doc.render(), changes


DOCKERFILE_FIXES = {
    "dockerfile_syntax": normalise_syntax,
    "no_git_mount": remove_git_mounts,
    "no_wheel_size_check": neutralise_wheel_size_check,
}
