"""The workflow's plan: how many commits, and which shards have work."""
import json

import pytest

from helpers.plan import main, shard_matrix
from helpers.source.dataset import in_shard, parse_shard

A, B, C = "a" * 40, "b" * 40, "1" * 40


def write(tmp_path, *shas):
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"commit": sha, "Dockerfile": None}) + "\n" for sha in shas))
    return path


def test_matrix_holds_only_shards_with_work_each_naming_exactly_its_commits(tmp_path):
    count, shards = shard_matrix(write(tmp_path, A, B, C), tmp_path / "none.txt", None, 8)
    with_work = {f"{i}/3" for i in range(1, 4) if any(in_shard_of(sha, f"{i}/3") for sha in (A, B, C))}
    assert count == 3 and {entry["shard"] for entry in shards} == with_work
    named = [sha for entry in shards for sha in entry["commits"].split(" or ")]
    assert sorted(named) == sorted([A, B, C])
    assert all(in_shard_of(sha, entry["shard"]) for entry in shards for sha in entry["commits"].split(" or "))


def in_shard_of(sha, shard):
    from helpers.source.dataset import CommitSpec, DockerfileSource
    index, count = parse_shard(shard)
    return in_shard(CommitSpec(sha, ("commit",), DockerfileSource(), 1), index, count)


def test_batch_comes_before_sharding_and_no_work_is_count_zero(tmp_path):
    assert shard_matrix(write(tmp_path, A, B, C), tmp_path / "none.txt", 1, 4)[0] == 1
    assert shard_matrix(write(tmp_path), tmp_path / "none.txt", None, 4) == (0, [])


def test_plan_writes_github_outputs(tmp_path, monkeypatch):
    monkeypatch.setenv("GITHUB_OUTPUT", str(tmp_path / "out"))
    assert main(["--dataset", str(write(tmp_path, A)), "--shards", "3"]) == 0
    out = dict(line.split("=", 1) for line in (tmp_path / "out").read_text().splitlines())
    assert out["count"] == "1" and json.loads(out["matrix"]) == {"include": [{"shard": "1/1", "commits": A}]}
    assert main(["--project", "nope"]) == 2
    assert main(["--dataset", str(tmp_path / "missing.jsonl")]) == 2


@pytest.mark.parametrize("text", ["0/3", "4/3", "x", "1/0", "1-3"])
def test_bad_shards_are_refused(text):
    with pytest.raises(ValueError, match="expected I/N"):
        parse_shard(text)


def tracking(tmp_path, pairs):
    path = tmp_path / "track.json"
    path.write_text("".join(json.dumps({"commit_hash": c, "parent_commit": p}) + "\n" for c, p in pairs))
    return path


def test_a_parent_and_its_child_share_a_shard_and_linked_pairs_too(tmp_path):
    from helpers.source.dataset import CommitSpec, DockerfileSource, load_plan
    shas = [f"{i:040x}" for i in range(1, 41)]
    pairs = [(shas[i], shas[i + 1]) for i in range(0, 40, 2)] + [(shas[5], shas[2])]   # 2-3 and 4-5 joined
    plan = load_plan(tracking(tmp_path, pairs), None)
    for count in (2, 3, 4, 7):
        def shard(sha, count=count):
            spec = CommitSpec(sha, ("human",), DockerfileSource(), 1)
            return next(i for i in range(1, count + 1) if in_shard(spec, i, count, plan.groups))
        for child, parent in pairs:
            assert shard(child) == shard(parent)
        assert shard(shas[2]) == shard(shas[4])            # joined through the shared record
    assert plan.groups[shas[5]] == min(shas[2:6])


def test_the_group_of_a_short_sha_is_found_from_its_full_sha(tmp_path):
    from helpers.source.dataset import load_plan
    full_child, full_parent = "ab" * 20, "cd" * 20
    plan = load_plan(tracking(tmp_path, [(full_child[:10], full_parent[:8])]), None)
    from helpers.source.dataset import group_of
    assert group_of(full_child, plan.groups) == group_of(full_parent, plan.groups) == full_child[:10]


def test_selection_counts_only_what_has_work_then_the_batch_then_the_shard():
    from helpers.source.dataset import CommitSpec, DockerfileSource, select
    specs = [CommitSpec(f"{i:040x}", ("commit",), DockerfileSource(), i) for i in range(1, 13)]
    pushed = {s.sha for s in specs[:4]}
    chosen = select(specs, lambda e: e.sha not in pushed, 4, None)
    assert [s.sha for s in chosen] == [s.sha for s in specs[:8]]     # 4 pushed (reported skipped), 4 to build
    sharded = [select(specs, lambda e: e.sha not in pushed, 4, (i, 2)) for i in (1, 2)]
    assert sorted(s.sha for part in sharded for s in part) == sorted(s.sha for s in chosen)
    assert not set(map(id, sharded[0])) & set(map(id, sharded[1]))


def test_the_real_datasets_pairs_stay_together_across_four_shards(shared_data):
    from helpers.source.dataset import CommitSpec, DockerfileSource, load_plan, record_links
    path = shared_data / "sglang" / "sglang_track_all.json"
    plan = load_plan(path, None)
    links = record_links(path.read_text().splitlines())
    assert len(links) == sum(1 for line in path.read_text().splitlines() if line.strip())

    def shard(sha, groups):
        spec = CommitSpec(sha, ("human",), DockerfileSource(), 1)
        return next(i for i in range(1, 5) if in_shard(spec, i, 4, groups))
    split_before = [c for c, p in links if shard(c, {}) != shard(p, {})]
    split_after = [c for c, p in links if shard(c, plan.groups) != shard(p, plan.groups)]
    assert split_before and split_after == []
