"""Plan: how many commits a run has and which shards hold some, for the workflow's job matrix.

    python -m helpers.plan --project sglang --batch-size 20 --shards 4

Writes `count`, `matrix` (`{"shard": ["1/4", "3/4", ...]}`, only shards with work) and
`dataset` to $GITHUB_OUTPUT when it is set, else to standard output. A run with no commits
gives count 0; the workflow then skips the build jobs and says so.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from helpers.config import default_dataset
from helpers.dataset import CommitSpec, in_shard, load_plan
from helpers.errors import ConfigError
from helpers.profiles import builtin_profile

ROOT = Path(__file__).resolve().parent.parent


def shard_matrix(dataset: Path, blacklist: Path, batch_size: int | None, shards: int) -> tuple[int, list[str]]:
    """(commits in the run, the shards that hold at least one), with the run's own selection rules."""
    entries = list(load_plan(dataset, blacklist).entries)
    commits = [e for e in entries if isinstance(e, CommitSpec)]
    if batch_size is not None:
        commits = commits[:max(batch_size, 0)]
    invalid = [e for e in entries if not isinstance(e, CommitSpec)]
    work = commits + invalid
    if not commits:
        return 0, []
    count = max(1, min(shards, len(work)))
    return len(commits), [f"{i}/{count}" for i in range(1, count + 1) if any(in_shard(e, i, count) for e in work)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.plan", description=__doc__.splitlines()[0])
    parser.add_argument("--project", default="sglang")
    parser.add_argument("--dataset", default="", help="default: the project's dataset in data/")
    parser.add_argument("--blacklist", default=str(ROOT / "data" / "blacklist.txt"))
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--shards", type=int, default=1)
    args = parser.parse_args(argv)
    try:
        profile = builtin_profile(args.project)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    dataset = Path(args.dataset) if args.dataset else default_dataset(ROOT, profile).relative_to(ROOT)
    try:
        count, shards = shard_matrix(dataset.resolve(), Path(args.blacklist), args.batch_size, max(args.shards, 1))
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    lines = [f"count={count}", f"matrix={json.dumps({'shard': shards})}", f"dataset={dataset}"]
    target = os.environ.get("GITHUB_OUTPUT")
    if target:
        with open(target, "a", encoding="utf-8") as out:
            out.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
