"""Shell words: split the text of a RUN into simple commands and words, keeping offsets.

Only as much of the POSIX shell grammar as rewriting needs: quotes, escapes, `$(...)`,
`${...}`, backticks, line continuations, comments and the operators that end a command.
Each word keeps its raw text and its offsets, so a rewrite replaces exactly that text.
"""
from __future__ import annotations

import posixpath
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass

PIP_VALUE_OPTIONS = {"-i", "--index-url", "--extra-index-url", "-f", "--find-links", "-c", "--constraint", "-r",
                     "--requirement", "-t", "--target", "--prefix", "--root", "--platform", "--python-version",
                     "--implementation", "--abi", "--src", "--upgrade-strategy", "--progress-bar", "-C",
                     "--config-settings", "--global-option", "--install-option", "--trusted-host", "--cache-dir",
                     "--log", "--proxy", "--retries", "--timeout", "--exists-action", "--cert", "--client-cert",
                     "--python", "--report", "--no-binary", "--only-binary", "--extra-index", "--index"}
RESERVED = {"if", "then", "else", "elif", "fi", "do", "done", "while", "until", "!", "{", "}", "time"}
PREFIXES = {"sudo", "exec", "command", "nohup", "env"}
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
_OPERATORS = ("&&", "||", ";;", ";", "|", "&", "(", ")", "\n")


@dataclass(frozen=True)
class Word:
    raw: str
    start: int
    end: int

    @property
    def value(self) -> str:
        """The word with quotes and escapes removed; variables stay as written."""
        try:
            parts = shlex.split(self.raw.replace("\\\n", ""))
        except ValueError:
            return self.raw
        return parts[0] if len(parts) == 1 else self.raw

    @property
    def is_dynamic(self) -> bool:
        return any(c in self.raw for c in "$`")


def _skip_quoted(text: str, pos: int) -> int:
    """Offset just past the quoted or substituted region that starts at pos."""
    char = text[pos]
    if char == "'":
        end = text.find("'", pos + 1)
        return len(text) if end < 0 else end + 1
    if char in '"`':
        i = pos + 1
        while i < len(text) and text[i] != char:
            if text[i] == "\\":
                i += 1
            elif char == '"' and (text.startswith("$(", i) or text.startswith("${", i)):
                i = _skip_quoted(text, i) - 1
            i += 1
        return min(i + 1, len(text))
    # $( ... ) or ${ ... }: balance the brackets, honouring quotes inside
    opener, closer = text[pos + 1], ")" if text[pos + 1] == "(" else "}"
    depth, i = 0, pos + 1
    while i < len(text):
        c = text[i]
        if c in "'\"`":
            i = _skip_quoted(text, i)
            continue
        if c == "\\":
            i += 2
            continue
        depth += (c == opener) - (c == closer)
        i += 1
        if depth == 0:
            return i
    return len(text)


def scan(text: str, start: int = 0) -> list[list[Word]]:
    """Simple commands of a shell text, each a list of words with offsets into text."""
    commands: list[list[Word]] = [[]]
    word_start, i = None, start

    def end_word(at: int) -> None:
        nonlocal word_start
        if word_start is not None:
            commands[-1].append(Word(text[word_start:at], word_start, at))
            word_start = None

    while i < len(text):
        c = text[i]
        if text.startswith("\\\n", i):
            end_word(i)
            i += 2
        elif c in " \t\r":
            end_word(i)
            i += 1
        elif c == "#" and word_start is None:
            newline = text.find("\n", i)
            i = len(text) if newline < 0 else newline
        elif c in "'\"`" or (c == "$" and text[i + 1:i + 2] in ("(", "{")):
            word_start = i if word_start is None else word_start
            i = _skip_quoted(text, i)
        elif c == "&" and (text[i - 1:i] in "<>" and i > start or text[i + 1:i + 2] == ">"):
            word_start = i if word_start is None else word_start     # 2>&1, &>file
            i += 1
        elif any(text.startswith(op, i) for op in _OPERATORS):
            end_word(i)
            op = next(op for op in _OPERATORS if text.startswith(op, i))
            if commands[-1]:
                commands.append([])
            i += len(op)
        else:                                   # a word's character; a backslash escapes the next one
            word_start = i if word_start is None else word_start
            i += 2 if c == "\\" else 1
    end_word(len(text))
    return [c for c in commands if c]


def command_words(words: list[Word]) -> list[Word]:
    """The words from the command name on: reserved words, assignments and sudo/env dropped."""
    rest = list(words)
    while rest:
        head = rest[0].raw
        if head in RESERVED or _ASSIGNMENT.match(head):
            rest.pop(0)
        elif head in PREFIXES:
            rest.pop(0)
            while rest and rest[0].raw.startswith("-"):
                rest.pop(0)
        else:
            break
    if rest and rest[0].raw in ("for", "case", "in", "esac", "done", "fi"):
        return []
    return rest


def program(word: Word) -> str:
    """Base name of the command word: `/usr/bin/python3` -> `python3`."""
    return word.value.rsplit("/", 1)[-1]


def resolve(cwd: str | None, path: str | None) -> str | None:
    """Where `cd path` from cwd leads, or None when it cannot be known without running the shell."""
    if cwd is None or path is None or any(c in path for c in "$`~") or path == "-":
        return None
    return posixpath.normpath(posixpath.join(cwd, path))


def walk(text: str, start: int, cwd: str | None) -> Iterator[tuple[list[Word], list[Word], str | None]]:
    """Each simple command of a shell text, its command words, and the directory it runs in
    (None once a `cd` goes where it cannot be known without running the shell)."""
    for words in scan(text, start):
        cmd = command_words(words)
        yield words, cmd, cwd
        if cmd and program(cmd[0]) in ("cd", "pushd"):
            cwd = resolve(cwd, cmd[1].value if len(cmd) > 1 else None)
        elif cmd and program(cmd[0]) == "popd":
            cwd = None


def apply_edits(text: str, edits: list[tuple[int, int, str]]) -> str:
    """Replace (start, end) spans of text, given in any order and not overlapping."""
    for start, end, replacement in sorted(edits, reverse=True):
        text = text[:start] + replacement + text[end:]
    return text


def split_options(args: list[Word], value_options: set[str]) -> tuple[list[Word], dict[str, Word]]:
    """Positional words and {option: value word} of a command line, redirections dropped."""
    positional: list[Word] = []
    options: dict[str, Word] = {}
    i = 0
    while i < len(args):
        value = args[i].value
        if re.match(r"^\d*[<>]", value):
            i += 2 if re.fullmatch(r"\d*[<>]+&?", value) else 1
            continue
        if value == "--":
            positional.extend(args[i + 1:])
            break
        if value.startswith("-") and value != "-":
            if value in value_options and i + 1 < len(args):
                options[value] = args[i + 1]
                i += 1
            i += 1
            continue
        positional.append(args[i])
        i += 1
    return positional, options


SHELLS = {"sh", "bash", "dash", "zsh"}


def _subcommand(cmd: list[Word]) -> tuple[str, int] | None:
    """(tool, index of its subcommand word) of pip (any spelling, `python -m pip`) or uv (`uv pip` too)."""
    values = [w.value for w in cmd]
    name = program(cmd[0])
    if re.fullmatch(r"pip[0-9.]*", name):
        tool, start = "pip", 1
    elif re.fullmatch(r"python[0-9.]*", name) and values[1:3] == ["-m", "pip"]:
        tool, start = "pip", 3
    elif name == "uv":
        tool, start = "uv", 2 if values[1:2] == ["pip"] else 1
    else:
        return None
    i = start
    while i < len(values) and values[i].startswith("-"):
        i += 2 if values[i] in PIP_VALUE_OPTIONS else 1
    return (tool, i) if i < len(values) else None


def pip_install_index(cmd: list[Word]) -> int | None:
    """Index of the `install` word of a pip (or `python -m pip`, `uv pip`) command, else None."""
    found = _subcommand(cmd)
    if found is None or found[1] >= len(cmd) or cmd[found[1]].value != "install":
        return None
    if found[0] == "uv" and [w.value for w in cmd[1:2]] != ["pip"]:
        return None
    return found[1]


def package_action(cmd: list[Word]) -> tuple[str, str] | None:
    """What a command does with packages: (`pip` or `uv`, its subcommand: install, wheel, download,
    sync, ...), or a build of a project: (`setup.py`, its command) and (`build`, `build`) for
    `python -m build`; None for any other command."""
    values = [w.value for w in cmd]
    if re.fullmatch(r"python[0-9.]*", program(cmd[0])):
        if values[1:3] == ["-m", "build"]:
            return "build", "build"
        if len(values) > 1 and values[1].endswith("setup.py"):
            return "setup.py", values[2] if len(values) > 2 else ""
    found = _subcommand(cmd)
    return (found[0], values[found[1]]) if found else None


def package_actions(text: str, start: int = 0) -> list[tuple[str, str]]:
    """Every package command of a shell text, those inside `sh -c '...'` / `bash -c "..."` too: the one
    definition of "this RUN installs or builds with pip or uv" every rewrite uses."""
    found = []
    for words in scan(text, start):
        cmd = command_words(words)
        if not cmd:
            continue
        values = [w.value for w in cmd]
        if program(cmd[0]) in SHELLS and "-c" in values[1:-1]:
            found += package_actions(values[values.index("-c", 1) + 1])
        elif action := package_action(cmd):
            found.append(action)
    return found
