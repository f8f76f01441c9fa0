"""Pin the source: every way a Dockerfile fetches the project's own code becomes the context's copy.

- `git clone <project>` (any URL form, flags, destination) -> copy of the context at the
  same destination, from a read-only bind mount of the build context;
- `git checkout|switch|reset|pull|fetch|submodule` inside that copy -> `true`;
- `pip install <project>[extras]` from an index or VCS -> editable install of the context's copy;
- BuildKit's `ADD <project git URL>[#ref] <dest>`, and exec-form `RUN ["git", "clone", ...]`, alike;
- no fetch at all -> the context is copied to the profile's default location and installed.
What cannot be rewritten safely raises UnpinnableDockerfile: nothing unpinned is ever built.
"""
from __future__ import annotations

import posixpath
import re
import shlex
from dataclasses import dataclass

from packaging.utils import canonicalize_name

from helpers.errors import UnpinnableDockerfile
from helpers.profiles import Profile, normalise_repo
from helpers.render.dockerfile import (
    DEFAULT_INSTALL_MARK,
    MOUNT_FLAG,
    SOURCE_MOUNT,
    Document,
    Instruction,
    StageState,
    expand,
    insert_in_final_stage,
    keyword_end,
    parse,
    stages,
)
from helpers.render.shellwords import (
    PIP_VALUE_OPTIONS,
    Word,
    apply_edits,
    pip_install_index,
    program,
    resolve,
    split_options,
    walk,
)

CLONE_VALUE_OPTIONS = {"-b", "--branch", "-o", "--origin", "-u", "--upload-pack", "--depth", "--shallow-since",
                       "--shallow-exclude", "--reference", "--reference-if-able", "--separate-git-dir", "-c",
                       "--config", "--template", "-j", "--jobs", "--filter", "--server-option", "--bundle-uri",
                       "--ref-format"}
GIT_GLOBAL_VALUE_OPTIONS = {"-C", "-c", "--git-dir", "--work-tree", "--namespace", "--exec-path"}
GIT_IN_CLONE = {"checkout", "switch", "reset", "pull", "fetch", "submodule", "restore"}
_REQUIREMENT = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?\s*(.*)$", re.S)
_URL = re.compile(r"(?:[a-z+]+://|git@)[^\s\"']+")


@dataclass(frozen=True)
class Target:
    """What pinning needs to know about the project."""

    profile: Profile
    repo_ids: tuple[str, ...]

    def is_project_url(self, url: str) -> bool:
        url = re.sub(r"^git\+", "", url.strip())
        url = url.split("#", 1)[0]
        ident = normalise_repo(re.sub(r"@[^/@:]+$", "", url) if "://" in url else url)
        ident = ident.replace("raw.githubusercontent.com/", "github.com/").replace("codeload.github.com/",
                                                                                  "github.com/")
        return any(ident == r or ident.startswith(r + "/") for r in self.repo_ids)

    def is_project_requirement(self, value: str) -> bool:
        match = _REQUIREMENT.match(value.strip())
        if match is None or value.startswith(("-", ".", "/")):
            return False
        return canonicalize_name(match.group(1)) == canonicalize_name(self.profile.distribution)

    def mentions_project(self, text: str) -> bool:
        return self.profile.name.lower() in text.lower() or self.profile.import_name.lower() in text.lower()


def within(path: str | None, roots: list[str | None]) -> bool:
    return path is not None and any(r is not None and (path == r or path.startswith(r.rstrip("/") + "/"))
                                    for r in roots)


class RunRewriter:
    """Rewrites the shell text of one RUN; collects (start, end, replacement) edits."""

    def __init__(self, target: Target, state: StageState, notes: list[str]):
        self.target, self.state, self.notes = target, state, notes
        self.edits: list[tuple[int, int, str]] = []
        self.copies = False              # a copy of the context was inserted: the RUN needs the mount
        self.cwd = state.workdir

    def rewrite(self, text: str) -> str:
        for words, cmd, cwd in walk(text, keyword_end(text), self.state.workdir):
            self.cwd = cwd
            self.command(words, cmd)
        if not self.edits:
            return text
        text = apply_edits(text, self.edits)
        if not self.copies:
            return text
        keyword = re.match(r"\s*\S+", text)
        assert keyword is not None
        return text[:keyword.end()] + " " + MOUNT_FLAG + text[keyword.end():]

    def command(self, words: list[Word], cmd: list[Word]) -> None:
        if not cmd:
            return
        name = program(cmd[0])
        if name == "git":
            self.git(words, cmd)
        elif pip_install_index(cmd) is not None:
            self.pip(words, cmd, pip_install_index(cmd) or 0)
        else:
            self.refuse_downloads(cmd)

    def git(self, words: list[Word], cmd: list[Word]) -> None:
        subcommand, where = None, self.cwd
        i = 1
        while i < len(cmd):
            value = cmd[i].value
            if value in GIT_GLOBAL_VALUE_OPTIONS and i + 1 < len(cmd):
                if value == "-C":
                    where = resolve(where, cmd[i + 1].value)
                i += 2
            elif value.startswith("-"):
                i += 1
            else:
                subcommand = value
                break
        if subcommand == "clone":
            self.clone(words, cmd[i + 1:], where)
        elif subcommand in GIT_IN_CLONE and within(where, self.state.pinned):
            self.edits.append((words[0].start, words[-1].end, "true"))
            self.notes.append(f"neutralised `git {subcommand}` in the pinned source ({where})")

    def clone(self, words: list[Word], args: list[Word], where: str | None) -> None:
        positional, _ = split_options(args, CLONE_VALUE_OPTIONS)
        if not positional:
            return
        url = positional[0]
        value = expand(url.value, self.state.variables)
        if not self.target.is_project_url(value):
            if "$" in value and self.target.mentions_project(url.raw):
                raise UnpinnableDockerfile(f"cannot tell which repository `{url.raw}` is; it may be the project")
            return
        if len(positional) > 1:
            dest_raw = positional[1].raw
            dest = resolve(where, positional[1].value)
        else:
            dest_raw = re.sub(r"\.git$", "", value.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1])
            dest = resolve(where, dest_raw)
        self.state.pinned.append(dest)
        self.copies = True
        copy = f"mkdir -p {dest_raw} && cp -a {SOURCE_MOUNT}/. {dest_raw}"
        self.edits.append((words[0].start, words[-1].end, copy))
        self.notes.append(f"pinned `git clone {url.raw}` to the commit's source at {dest or dest_raw}")

    def pip(self, words: list[Word], cmd: list[Word], install_at: int) -> None:
        args = cmd[install_at + 1:]
        location = self.target.profile.default_location
        found = False
        for i, word in enumerate(args):
            previous = args[i - 1].value if i else ""
            if previous in PIP_VALUE_OPTIONS - {"-e", "--editable"}:
                continue
            if word.value.startswith("-") and word.value not in ("-e", "--editable"):
                continue
            replacement = self.requirement_replacement(word, editable_flag=previous in ("-e", "--editable"))
            if replacement:
                self.edits.append((word.start, word.end, replacement))
                found = True
        if found:
            self.copies = True
            self.edits.append((words[0].start, words[0].start,
                               f"mkdir -p {location} && cp -a {SOURCE_MOUNT}/. {location} && "))
            self.state.pinned.append(location)

    def requirement_replacement(self, word: Word, editable_flag: bool) -> str | None:
        value = word.value
        extras = ""
        url = _URL.search(value)
        requirement = _REQUIREMENT.match(value)
        if requirement and self.target.is_project_requirement(value):
            extras = f"[{requirement.group(2)}]" if requirement.group(2) else ""
        elif url and self.target.is_project_url(url.group(0)):
            extras_match = re.match(r"^[A-Za-z0-9._-]+\s*(\[[^\]]*\])\s*@", value)
            extras = extras_match.group(1) if extras_match else ""
        else:
            return None
        path = posixpath.join(self.target.profile.default_location, self.target.profile.source_subdir)
        self.notes.append(f"pinned `pip install {word.raw}` to an editable install of {path}")
        quoted = f'"{path}{extras}"'
        return quoted if editable_flag else f"-e {quoted}"

    def refuse_downloads(self, cmd: list[Word]) -> None:
        if program(cmd[0]) not in ("curl", "wget", "git-lfs", "aria2c"):
            return
        for word in cmd[1:]:
            url = _URL.search(expand(word.value, self.state.variables))
            if url and self.target.is_project_url(url.group(0)):
                raise UnpinnableDockerfile(f"`{program(cmd[0])} {word.raw}` downloads the project's code "
                                           "from the network; the harness cannot pin it")


ARCHIVE = re.compile(r"\.(tar(\.\w+)?|tgz|zip|whl)$|/(archive|tarball|zipball)/", re.I)


def pin_add_from_git(inst: Instruction, target: Target, state: StageState, notes: list[str]) -> str | None:
    """BuildKit's `ADD <project git URL>[#ref] <dest>` -> the context's copy at the same destination."""
    if inst.cmd != "ADD" or len(inst.value) != 2:
        return None
    url, dest = inst.value
    if not target.is_project_url(url) or ARCHIVE.search(url.split("#", 1)[0]):
        return None
    chown = next((f.split("=", 1)[1] for f in inst.flags if f.startswith("--chown=")), None)
    quoted = shlex.quote(dest)
    step = f"RUN {MOUNT_FLAG} mkdir -p {quoted} && cp -a {SOURCE_MOUNT}/. {quoted}"
    step += f" && chown -R {shlex.quote(chown)} {quoted}" if chown else ""
    state.pinned.append(resolve(state.workdir, dest))
    notes.append(f"pinned `ADD {url}` to the commit's source at {resolve(state.workdir, dest) or dest}")
    return step


def pin_exec_form_run(inst: Instruction, target: Target, state: StageState, notes: list[str]) -> str | None:
    """An exec-form `RUN ["git", "clone", ...]` (or pip) of the project, pinned as its shell form."""
    if inst.cmd != "RUN" or not inst.is_json or not inst.value:
        return None
    shell_form = "RUN " + shlex.join(inst.value)
    pinned = RunRewriter(target, state, notes).rewrite(shell_form)
    return pinned if pinned != shell_form else None


def check_exec_form(inst: Instruction, target: Target) -> None:
    words = " ".join(inst.value)
    for url in _URL.findall(words):
        if target.is_project_url(url):
            how = "downloads the project's archive" if inst.cmd == "ADD" else \
                f"exec-form {inst.cmd} fetches the project"
            raise UnpinnableDockerfile(f"line {inst.first + 1}: {how} ({url}); the harness cannot pin it")
    if inst.cmd == "RUN" and "pip" in words and any(target.is_project_requirement(v) for v in inst.value):
        raise UnpinnableDockerfile(f"line {inst.first + 1}: exec-form RUN installs the project from an index")


def pin_source_report(text: str, profile: Profile, repo_ids: tuple[str, ...] = ()) -> tuple[str, list[str]]:
    """The Dockerfile with the project's source pinned to the build context, and what was changed."""
    target = Target(profile, tuple(dict.fromkeys(profile.repo_ids + tuple(normalise_repo(r) for r in repo_ids))))
    doc = parse(text)
    notes: list[str] = []
    pinned_any = obtained = False
    for inst, state in stages(doc, profile):
        obtained = obtained or state.has_source           # the Dockerfile brings the source itself
        pinned = pin_add_from_git(inst, target, state, notes) or pin_exec_form_run(inst, target, state, notes)
        if pinned:
            doc.replace(inst, pinned)
        else:
            if inst.is_json or inst.cmd in ("ADD", "ONBUILD"):
                check_exec_form(inst, target)
            if inst.cmd == "RUN" and not inst.is_json:
                new = RunRewriter(target, state, notes).rewrite(inst.text)
                if new != inst.text:
                    doc.replace(inst, new)
        pinned_any = pinned_any or bool(state.pinned)
    if not pinned_any and not obtained:
        install_default(doc, profile)
        notes.append(f"the Dockerfile never fetches {profile.name}: copied the context to "
                     f"{profile.default_location} and installed it editable")
    return doc.render(), notes


def install_default(doc: Document, profile: Profile) -> None:
    """Copy the context to the default location and install it editable, in the final stage."""
    if doc.final_stage < 0:
        raise UnpinnableDockerfile("the Dockerfile has no FROM instruction")
    location = profile.default_location
    path = posixpath.join(location, profile.source_subdir)
    lines = [DEFAULT_INSTALL_MARK, f"COPY . {location}",
             f"RUN PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install -e {shlex.quote(path)}"]
    insert_in_final_stage(doc, "\n".join(lines))
