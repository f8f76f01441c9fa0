"""The version a setuptools-scm project gives itself at a commit, computed on the host by setuptools-scm.

A `git archive` context has no `.git`, so a build cannot ask git; the harness asks the mirror
and lets setuptools-scm itself turn the answer into a version, honouring the commit's
`[tool.setuptools_scm]` (tag regex, version and local schemes, describe command). It is given
the facts as a `.git_archival.txt` (setuptools-scm's own format for archives) in a scratch
folder beside a copy of the commit's `pyproject.toml`. The build gets this version
(SETUPTOOLS_SCM_PRETEND_VERSION) and verification compares the installed one with it.
"""
from __future__ import annotations

import dataclasses
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

    def commit_count(self, sha: str) -> int: ...

    def commit_date(self, sha: str) -> str: ...


def read_config(pyproject: str | None, folder: Path) -> setuptools_scm.Configuration:
    """The commit's setuptools-scm configuration, from a copy of its pyproject.toml in `folder`."""
    path = folder / "pyproject.toml"
    try:
        if pyproject is None:
            raise FileNotFoundError("no pyproject.toml")
        path.write_text(pyproject, encoding="utf-8")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            config = setuptools_scm.Configuration.from_file(path)
    except Exception:                   # no pyproject or no [tool.setuptools_scm]: setuptools-scm's defaults
        config = setuptools_scm.Configuration()
    return dataclasses.replace(config, root=".", relative_to=str(path))


def describe_args(config: setuptools_scm.Configuration) -> tuple[str, ...]:
    """The project's describe command (`scm.git.describe_command`) as git arguments, else the default."""
    command = getattr(getattr(getattr(config, "scm", None), "git", None), "describe_command", None)
    if not command:
        return DESCRIBE
    words = command.split() if isinstance(command, str) else [str(w) for w in command]
    words = [w for w in (words[1:] if words and words[0] == "git" else words) if w != "--dirty"]
    return tuple(words) if words and words[0] == "describe" else DESCRIBE


def project_version(pyproject: str | None, sha: str, git: GitAnswers) -> str:
    """What `python -m setuptools_scm` prints in a clean checkout of the commit."""
    with tempfile.TemporaryDirectory(prefix="harness-scm-") as folder:
        config = read_config(pyproject, Path(folder))
        describe = git.scm_describe(sha, describe_args(config)) or f"0.0-{git.commit_count(sha)}-g{sha}"
        (Path(folder) / ".git_archival.txt").write_text(
            f"node: {sha}\nnode-date: {git.commit_date(sha)}\ndescribe-name: {describe}\n", encoding="utf-8")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            version = setuptools_scm._get_version(config, force_write_version_files=False)
    if not version:
        raise ValueError(f"setuptools-scm gave no version for {sha}")
    return version
