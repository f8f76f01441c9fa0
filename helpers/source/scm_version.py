"""The version a setuptools-scm project gives itself at a commit, computed on the host by setuptools-scm.

A `git archive` context has no `.git`, so a build cannot ask git; the harness asks the mirror
and lets setuptools-scm itself turn the answer into a version, honouring the commit's
`[tool.setuptools_scm]` (tag regex, version and local schemes, describe command). It is given
the facts as a `.git_archival.txt` (setuptools-scm's own format for archives) in a scratch
folder, with the options the commit's build configuration gives (helpers/source/build_config.py). A describe
command of the project's own that is a program, not git (SGLang's `python/tools/get_version_tag.py`), is
run by the mirror in a scratch clone of the commit (helpers/source/mirror.py). The build gets this version
(SETUPTOOLS_SCM_PRETEND_VERSION) and verification compares the installed one with it.
"""
from __future__ import annotations

import dataclasses
import shlex
import tempfile
import warnings
from pathlib import Path
from typing import Protocol

import setuptools_scm

# setuptools-scm's own `git describe` (without --dirty: the mirror has no work tree).
DESCRIBE = ("describe", "--tags", "--long", "--abbrev=40", "--match", "*[0-9]*")


class GitAnswers(Protocol):
    """What setuptools-scm would ask git in a checkout of the commit (the mirror answers)."""

    def scm_describe(self, sha: str, args: tuple[str, ...]) -> str | None: ...

    def run_describe_program(self, sha: str, argv: tuple[str, ...], root: str) -> str | None: ...

    def commit_count(self, sha: str) -> int: ...

    def commit_date(self, sha: str) -> str: ...


def read_config(options: dict, folder: Path) -> setuptools_scm.Configuration:
    """The commit's setuptools-scm configuration (its options as its build configuration gives them), with a
    scratch `folder` as its root; setuptools-scm's defaults where the options do not load."""
    path = folder / "pyproject.toml"
    path.write_text("", encoding="utf-8")
    kept = {k: v for k, v in options.items() if k not in ("root", "version_file", "write_to", "relative_to")}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            config = setuptools_scm.Configuration.from_data(relative_to=path, data=kept)
    except Exception:                   # an option this setuptools-scm does not know: its defaults
        config = setuptools_scm.Configuration()
    return dataclasses.replace(config, root=".", relative_to=str(path))


def describe_command(config: setuptools_scm.Configuration) -> list[str]:
    """The project's describe command as words ([] when it has none of its own)."""
    command = getattr(getattr(getattr(config, "scm", None), "git", None), "describe_command", None)
    if not command:
        return []
    return shlex.split(command) if isinstance(command, str) else [str(w) for w in command]


def describe_args(config: setuptools_scm.Configuration) -> tuple[str, ...]:
    """The project's describe command (`scm.git.describe_command`) as git arguments, else the default."""
    words = describe_command(config)
    words = [w for w in (words[1:] if words and words[0] == "git" else words) if w != "--dirty"]
    return tuple(words) if words and words[0] == "describe" else DESCRIBE


def runs_a_program(config: setuptools_scm.Configuration) -> bool:
    """The describe command is a program of the project's own (SGLang's `python3 python/tools/...`), not git."""
    words = describe_command(config)
    return bool(words) and words[0] != "git" and words[0] != "describe"


def project_version(options: dict, sha: str, git: GitAnswers, root: str = "") -> str:
    """What `python -m setuptools_scm` prints in a clean checkout of the commit, for setuptools-scm `options`
    whose root is the tree folder `root` (where the project's own describe program runs)."""
    with tempfile.TemporaryDirectory(prefix="harness-scm-") as folder:
        config = read_config(options, Path(folder))
        if runs_a_program(config):
            describe = git.run_describe_program(sha, tuple(describe_command(config)), root)
        else:
            describe = git.scm_describe(sha, describe_args(config))
        describe = describe or f"0.0-{git.commit_count(sha)}-g{sha}"
        (Path(folder) / ".git_archival.txt").write_text(
            f"node: {sha}\nnode-date: {git.commit_date(sha)}\ndescribe-name: {describe}\n", encoding="utf-8")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            version = setuptools_scm._get_version(config, force_write_version_files=False)
    if not version:
        raise ValueError(f"setuptools-scm gave no version for {sha}")
    return version
