"""The mirror and the build context, on real git repositories made on disk."""
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from helpers.errors import CommitNotFound, ConfigError, ContextFailed, DockerfileMissing, InfraError
from helpers.source.mirror import Mirror, find_dockerfile, make_context, redact_url, unsafe_member, valid_repo_url
from testkit.minirepo import MiniRepo, git


def test_mirror_clones_once_and_fetches_once_per_session(mini_repo: MiniRepo, tmp_path: Path):
    first = Mirror(str(mini_repo.path), tmp_path / "cache", "session-1")
    first.ensure()
    assert first.resolve(mini_repo.commits[1]) == mini_repo.commits[1]
    new = mini_repo.commit("later", {"python/sglang/late.py": "X = 1\n"})
    same_session = Mirror(str(mini_repo.path), tmp_path / "cache", "session-1")
    same_session.ensure()
    assert same_session._lookup(new) is None                # the session already fetched: no second fetch
    assert same_session.resolve(new) == new                 # an unknown full SHA is fetched by itself
    newer = mini_repo.commit("even later", {"python/sglang/late.py": "X = 2\n"})
    next_session = Mirror(str(mini_repo.path), tmp_path / "cache", "session-2")
    next_session.ensure()
    assert next_session._lookup(newer[:12]) == newer        # a new session fetches again


def test_resolve_short_unknown_and_ambiguous_shas(mini_repo: MiniRepo, tmp_path: Path):
    mirror = Mirror(str(mini_repo.path), tmp_path / "cache", "s")
    mirror.ensure()
    parent = mini_repo.commits[0]
    assert mirror.resolve(parent[:10]) == parent
    with pytest.raises(CommitNotFound, match="is not in"):
        mirror.resolve("0123456789abcdef0123456789abcdef01234567")
    with pytest.raises(CommitNotFound, match="is not in"):
        mirror.resolve("deadbeef")


def test_concurrent_workers_clone_the_mirror_once(mini_repo: MiniRepo, tmp_path: Path):
    script = ("import sys; sys.path.insert(0, sys.argv[1]); from helpers.source.mirror import Mirror; "
              "from pathlib import Path; Mirror(sys.argv[2], Path(sys.argv[3]), 'same-session').ensure()")
    root = str(Path(__file__).resolve().parent.parent)
    procs = [subprocess.Popen([sys.executable, "-c", script, root, str(mini_repo.path), str(tmp_path / "c")])
             for _ in range(4)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0, 0]
    mirrors = list((tmp_path / "c" / "mirrors").glob("*.git"))
    assert len(mirrors) == 1
    assert not (mirrors[0] / "FETCH_HEAD").exists()           # cloned once, never fetched again


def test_context_is_exactly_the_commit_tree_outside_any_work_tree(mini_repo: MiniRepo, tmp_path: Path):
    mirror = Mirror(str(mini_repo.path), tmp_path / "cache", "s")
    parent, child = mini_repo.commits
    ctx = make_context(mirror_ready(mirror), parent, tmp_path / "work")
    files = sorted(str(p.relative_to(ctx.context)) for p in ctx.context.rglob("*") if p.is_file())
    tracked = sorted(git(mini_repo.path, "ls-tree", "-r", "--name-only", parent).splitlines())
    assert files == tracked
    assert (ctx.context / "python/sglang/srt/scheduler.py").read_text() == "BATCH = 8\n"
    assert not (ctx.context / ".git").exists()
    ctx.remove()
    assert not ctx.root.exists()


def test_project_dockerignore_is_moved_out_so_the_whole_tree_reaches_the_image(mini_repo: MiniRepo, tmp_path: Path):
    sha = mini_repo.commit("ignore python", {".dockerignore": "python/\n"})
    ctx = make_context(mirror_ready(Mirror(str(mini_repo.path), tmp_path / "c", "s")), sha, tmp_path / "w")
    assert not (ctx.context / ".dockerignore").exists()
    assert any("dockerignore" in note for note in ctx.notes)


def test_symlink_pointing_outside_the_tree_is_refused_and_nothing_is_written_outside(mini_repo: MiniRepo,
                                                                                     tmp_path: Path):
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(str(outside), mini_repo.path / "escape")
    os.symlink("/etc/passwd", mini_repo.path / "passwd-link")
    git(mini_repo.path, "add", "-A")
    git(mini_repo.path, "commit", "-q", "-m", "links")
    sha = git(mini_repo.path, "rev-parse", "HEAD")
    ctx = make_context(mirror_ready(Mirror(str(mini_repo.path), tmp_path / "c", "s")), sha, tmp_path / "w")
    assert list(outside.iterdir()) == []
    assert not (ctx.context / "escape").exists() and not (ctx.context / "passwd-link").exists()
    assert sum("refused unsafe archive member" in note for note in ctx.notes) == 2
    assert (ctx.context / "python/sglang/__init__.py").exists()


def test_dockerfile_from_path_or_candidates_or_missing(mini_repo: MiniRepo, tmp_path: Path):
    mirror = mirror_ready(Mirror(str(mini_repo.path), tmp_path / "c", "s"))
    sha = mini_repo.commits[0]
    assert find_dockerfile(mirror, sha, "docker/Dockerfile", ())[0] == "docker/Dockerfile"
    assert find_dockerfile(mirror, sha, None, ("Dockerfile", "docker/Dockerfile"))[0] == "docker/Dockerfile"
    with pytest.raises(DockerfileMissing, match="no/Dockerfile"):
        find_dockerfile(mirror, sha, "no/Dockerfile", ())
    with pytest.raises(DockerfileMissing, match="python"):
        find_dockerfile(mirror, sha, "python", ())          # a directory is not a Dockerfile


def test_blob_hashes_list_the_package_files(mini_repo: MiniRepo, tmp_path: Path):
    mirror = mirror_ready(Mirror(str(mini_repo.path), tmp_path / "c", "s"))
    hashes = mirror.blob_hashes(mini_repo.commits[1], "python/sglang")
    expected = git(mini_repo.path, "rev-parse", f"{mini_repo.commits[1]}:python/sglang/srt/scheduler.py")
    assert hashes["python/sglang/srt/scheduler.py"] == expected
    assert set(hashes) == {"python/sglang/__init__.py", "python/sglang/version.py",
                           "python/sglang/srt/__init__.py", "python/sglang/srt/scheduler.py"}


@pytest.mark.parametrize("url, shown", [
    ("https://user@github.com/org/repo.git", "https://github.com/org/repo.git"),
    ("/srv/mirror.git", "/srv/mirror.git"),
])
def test_urls_are_redacted(url, shown):
    assert redact_url(url) == shown


def test_url_with_password_is_refused():
    with pytest.raises(ConfigError, match="must not embed a password"):
        valid_repo_url("https://user:secret@github.com/org/repo.git")


def mirror_ready(mirror: Mirror) -> Mirror:
    mirror.ensure()
    return mirror


def test_crafted_tree_entry_that_climbs_out_fails_the_context_and_writes_nothing(mini_repo: MiniRepo, tmp_path: Path):
    repo = mini_repo.path
    blob = git(repo, "hash-object", "-w", "python/sglang/version.py")
    inner = subprocess.run(["git", "mktree"], cwd=repo, input=f"100644 blob {blob}\tevil\n", capture_output=True,
                           text=True, check=True).stdout.strip()
    head_tree = git(repo, "rev-parse", "HEAD^{tree}")
    listing = git(repo, "ls-tree", head_tree) + f"\n040000 tree {inner}\t..\n"
    tree = subprocess.run(["git", "mktree"], cwd=repo, input=listing, capture_output=True, text=True,
                          check=True).stdout.strip()
    crafted = git(repo, "commit-tree", tree, "-p", "HEAD", "-m", "crafted")
    git(repo, "update-ref", "refs/heads/crafted", crafted)
    work = tmp_path / "deep" / "work"
    with pytest.raises(ContextFailed, match="git archive"):
        make_context(mirror_ready(Mirror(str(repo), tmp_path / "c", "s")), crafted, work)
    assert not (work.parent / "evil").exists() and not (tmp_path / "deep" / "evil").exists()
    assert list(work.iterdir()) == []                       # the failed context is removed too


@pytest.mark.parametrize("name, kind, link, refused", [
    ("python/sglang/a.py", tarfile.REGTYPE, "", None),
    ("python/sglang", tarfile.DIRTYPE, "", None),
    ("docs/link", tarfile.SYMTYPE, "../README.md", None),
    ("docs/inner", tarfile.SYMTYPE, "sub/../x", None),
    ("/etc/passwd", tarfile.REGTYPE, "", "path leaves the tree"),
    ("../evil", tarfile.REGTYPE, "", "path leaves the tree"),
    ("a/../../evil", tarfile.REGTYPE, "", "path leaves the tree"),
    ("escape", tarfile.SYMTYPE, "/etc", "points outside the tree"),
    ("docs/escape", tarfile.SYMTYPE, "../../x", "points outside the tree"),
    ("hard", tarfile.LNKTYPE, "../x", "points outside the tree"),
    ("dev", tarfile.CHRTYPE, "", "not a file, a folder or a link"),
    ("fifo", tarfile.FIFOTYPE, "", "not a file, a folder or a link"),
])
def test_unsafe_members_are_told_apart(name, kind, link, refused):
    member = tarfile.TarInfo(name)
    member.type, member.linkname = kind, link
    reason = unsafe_member(member)
    assert reason is None if refused is None else refused in reason


def test_a_git_command_past_its_deadline_is_an_infra_error_naming_it(tmp_path):
    import socket
    import time

    from helpers.source.mirror import run_git
    silent = socket.create_server(("127.0.0.1", 0))        # accepts, never answers: the clone hangs
    try:
        started = time.monotonic()
        with pytest.raises(InfraError, match=r"`git clone` for a silent server ran over its deadline of 2s"):
            run_git(["clone", "--quiet", f"git://127.0.0.1:{silent.getsockname()[1]}/x.git", str(tmp_path / "x")],
                    2, "a silent server")
        assert time.monotonic() - started < 10
    finally:
        silent.close()
