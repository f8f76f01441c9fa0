"""The workflow's plan: how many commits, and which shards have work."""
import json

import pytest

from helpers.dataset import in_shard, parse_shard
from helpers.plan import main, shard_matrix

A, B, C = "a" * 40, "b" * 40, "1" * 40


def write(tmp_path, *shas):
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"commit": sha, "Dockerfile": None}) + "\n" for sha in shas))
    return path


def test_matrix_holds_only_shards_with_work(tmp_path):
    count, shards = shard_matrix(write(tmp_path, A, B, C), tmp_path / "none.txt", None, 8)
    assert count == 3 and len(shards) <= 3
    assert all(any(in_shard_of(sha, s) for sha in (A, B, C)) for s in shards)


def in_shard_of(sha, shard):
    from helpers.dataset import CommitSpec, DockerfileSource
    index, count = parse_shard(shard)
    return in_shard(CommitSpec(sha, ("commit",), DockerfileSource(), 1), index, count)


def test_batch_comes_before_sharding_and_no_work_is_count_zero(tmp_path):
    assert shard_matrix(write(tmp_path, A, B, C), tmp_path / "none.txt", 1, 4)[0] == 1
    assert shard_matrix(write(tmp_path), tmp_path / "none.txt", None, 4) == (0, [])


def test_plan_writes_github_outputs(tmp_path, monkeypatch):
    monkeypatch.setenv("GITHUB_OUTPUT", str(tmp_path / "out"))
    assert main(["--dataset", str(write(tmp_path, A)), "--shards", "3"]) == 0
    out = dict(line.split("=", 1) for line in (tmp_path / "out").read_text().splitlines())
    assert out["count"] == "1" and json.loads(out["matrix"]) == {"shard": ["1/1"]}
    assert main(["--project", "nope"]) == 2
    assert main(["--dataset", str(tmp_path / "missing.jsonl")]) == 2


@pytest.mark.parametrize("text", ["0/3", "4/3", "x", "1/0", "1-3"])
def test_bad_shards_are_refused(text):
    with pytest.raises(ValueError, match="expected I/N"):
        parse_shard(text)
