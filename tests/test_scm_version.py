"""The version injected into a build is what the project's own setuptools-scm says at the commit:
computed from the mirror, compared with `python -m setuptools_scm` run in a real checkout, the project's own
describe program included (SGLang's `python/tools/get_version_tag.py`, from its released source)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from helpers.source.build_config import read_build_config
from helpers.source.mirror import Mirror
from helpers.source.scm_version import DESCRIBE, describe_args, project_version, read_config
from testkit.minirepo import MiniRepo, git

PYPROJECT = '[project]\nname = "mini"\ndynamic = ["version"]\n[tool.setuptools_scm]\n{extra}\n'


def options(pyproject: str | None) -> dict:
    """setuptools-scm's options as the commit's build configuration gives them."""
    return read_build_config(lambda path: pyproject if path == "pyproject.toml" else None, "").versioning.options


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
        assert project_version(options((repo.path / "pyproject.toml").read_text()), sha, mirror) == \
            checkout_version(repo.path), sha


def test_the_projects_describe_command_is_used_without_dirty(tmp_path):
    config = read_config(options(PYPROJECT.format(extra='git_describe_command = "git describe --dirty --tags '
                                                         '--long --match rel-*"')), tmp_path)
    assert describe_args(config) == ("describe", "--tags", "--long", "--match", "rel-*")
    assert describe_args(read_config(options(None), tmp_path)) == DESCRIBE


@pytest.mark.e2e
@pytest.mark.parametrize("release", ["0.5.7", "0.5.10.post1"])
def test_sglangs_own_describe_command_gives_the_version_of_a_checkout(tmp_path, release):
    """SGLang's configuration as released (root "..", its describe command: git in 0.5.7, its own
    `python/tools/get_version_tag.py --tag-only` since), over a history with release candidates, a tag off the
    branch and commits after the last tag: the harness's version is the one setuptools-scm gives in a real
    checkout, where the project's program runs."""
    from testkit import corpus
    released = tmp_path / "released"
    corpus.unpack_sdist(corpus.sdist("sglang", release), released)
    files = {"python/pyproject.toml": (released / "pyproject.toml").read_text()}
    if (released / "tools" / "get_version_tag.py").exists():
        files["python/tools/get_version_tag.py"] = (released / "tools" / "get_version_tag.py").read_text()
    path = tmp_path / "repo"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    repo = MiniRepo(path)
    for i, tag in enumerate(["v0.5.9", "v0.5.10rc0", None, "v0.5.10", None]):
        repo.commit(f"c{i}", {**files, "python/n.txt": str(i)})
        if tag:
            git(path, "tag", tag)
    git(path, "checkout", "-q", "-b", "release", repo.commits[2])
    git(path, "commit", "-q", "--allow-empty", "-m", "release branch")
    git(path, "tag", "v0.5.10.post1")
    mirror = Mirror(str(path), tmp_path / "cache", "s", 60)
    mirror.ensure()
    config = read_build_config(lambda p: files.get(p), "python")
    assert config.versioning.tool == "setuptools-scm"
    assert config.versioning.version_files == ("python/sglang/_version.py",)
    seen = set()
    for sha in repo.commits:
        git(path, "checkout", "-q", sha)
        computed = project_version(config.versioning.options, sha, mirror, "")
        assert computed == checkout_version(path / "python"), sha
        seen.add(computed)
    if "tools/get_version_tag.py" in str(config.versioning.options):
        assert seen == {"0.5.10.post1"}     # its program names the highest version tag of all, on any branch
    else:
        assert len(seen) == len(repo.commits) and "0.0.0.dev0" not in seen
