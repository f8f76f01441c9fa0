"""The version injected into a build is what the project's own setuptools-scm says at the commit:
computed from the mirror, compared with `python -m setuptools_scm` run in a real checkout."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from helpers.render.scm_version import DESCRIBE, describe_args, project_version, read_config
from helpers.source import Mirror
from testkit.minirepo import MiniRepo, git

PYPROJECT = '[project]\nname = "mini"\ndynamic = ["version"]\n[tool.setuptools_scm]\n{extra}\n'


def checkout_version(path: Path) -> str:
    """setuptools-scm itself, in a checkout with .git: the reference."""
    done = subprocess.run([sys.executable, "-m", "setuptools_scm"], cwd=path, capture_output=True, text=True,
                          check=True)
    return done.stdout.strip().splitlines()[-1]


def history(path: Path, extra: str, tags: dict[int, str], commits: int = 4) -> MiniRepo:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    repo = MiniRepo(path)
    for i in range(commits):
        repo.commit(f"c{i}", {"pyproject.toml": PYPROJECT.format(extra=extra), "n.txt": str(i)})
        if i in tags:
            git(path, "tag", tags[i])
    return repo


@pytest.mark.parametrize("extra, tags", [
    ("", {0: "v3.16.2"}),                                    # after a tag: the next version's dev release
    ("", {3: "v0.4.0"}),                                     # on a tag: the tag
    ("", {}),                                                # no tag at all
    ("", {1: "nightly", 0: "v1.2"}),                         # a tag setuptools-scm does not match is skipped
    ('version_scheme = "post-release"', {0: "v2.0"}),       # the project's own schemes
    ('local_scheme = "no-local-version"', {0: "v2.0"}),
    ('tag_regex = "^release-(?P<version>[0-9.]+)$"\ngit_describe_command = "git describe --dirty --tags --long '
     '--match release-*"', {0: "release-5.1", 1: "v9.9"}),
], ids=["after-tag", "on-tag", "no-tag", "unmatched-tag", "post-release", "no-local", "own-tag-regex"])
def test_the_version_is_what_setuptools_scm_gives_in_a_checkout(tmp_path, extra, tags):
    repo = history(tmp_path / "repo", extra, tags)
    mirror = Mirror(str(repo.path), tmp_path / "cache", "s", 60)
    mirror.ensure()
    for sha in repo.commits[1:]:
        git(repo.path, "checkout", "-q", sha)
        assert project_version((repo.path / "pyproject.toml").read_text(), sha, mirror) == \
            checkout_version(repo.path), sha


def test_the_projects_describe_command_is_used_without_dirty(tmp_path):
    config = read_config(PYPROJECT.format(extra='git_describe_command = "git describe --dirty --tags --long '
                                                 '--match rel-*"'), tmp_path)
    assert describe_args(config) == ("describe", "--tags", "--long", "--match", "rel-*")
    assert describe_args(read_config(None, tmp_path)) == DESCRIBE
