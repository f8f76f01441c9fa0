"""Submodules without an engine: URLs resolved as git resolves them, and real repositories on disk archived
at their recorded commits (nested ones too), an optional one that cannot be fetched left as a note."""
from __future__ import annotations

import pytest

from helpers.errors import SubmoduleUnavailable
from helpers.source.mirror import Mirror
from helpers.source.submodules import fetch, lfs_pointers, resolve_url
from testkit.minirepo import make_submodule_repos


@pytest.mark.parametrize("base, url, resolved", [
    ("https://github.com/sgl-project/sglang.git", "../cutlass.git", "https://github.com/sgl-project/cutlass.git"),
    ("https://github.com/org/proj", "./sub", "https://github.com/org/proj/sub"),
    ("git@github.com:org/proj.git", "../lib.git", "git@github.com:org/lib.git"),
    ("/srv/git/sglang", "../lib", "/srv/git/lib"),
    ("/srv/git/sglang/", "../../other/lib", "/srv/other/lib"),
    ("https://github.com/org/proj.git", "https://github.com/NVIDIA/cutlass.git", "https://github.com/NVIDIA/cutlass.git"),
])
def test_relative_urls_resolve_against_the_recording_repository(base, url, resolved):
    assert resolve_url(base, url) == resolved


def test_nested_submodules_at_their_recorded_commits_and_an_optional_one_as_a_note(tmp_path):
    repo, shas = make_submodule_repos(tmp_path / "repos")
    mirror = Mirror(str(repo.path), tmp_path / "cache", "session")
    mirror.ensure()
    dest = tmp_path / "context"
    mirror.archive_into(shas["recorded"], dest)
    fetched = fetch(mirror, shas["recorded"], dest)
    assert [s.path for s in fetched.submodules] == ["third_party/lib", "third_party/lib/deps/inner"]
    assert (dest / "third_party/lib/VERSION").read_text() == "lib v1\n"
    assert (dest / "third_party/lib/deps/inner/inner.txt").read_text() == "inner v1\n"
    assert lfs_pointers(dest) == ["models/weights.bin"]

    other = tmp_path / "other"
    mirror.archive_into(shas["unreachable"], other)
    with pytest.raises(SubmoduleUnavailable, match="submodule third_party/lib at .* could not be fetched"):
        fetch(mirror, shas["unreachable"], other)
    optional = fetch(mirror, shas["unreachable"], other, optional=("third_party/*",))
    assert optional.submodules == () and "(optional: the build goes on without it)" in optional.notes[0]
