"""Plan: how many commits a run has and which shards hold some, for the workflow's job matrix.

    python -m helpers.plan --project sglang --batch-size 20 --shards 4 [--skip-pushed --namespace U]

Writes `count`, `matrix` (`{"include": [{"shard": "1/4", "commits": "<sha> or <sha> ..."}, ...]}`,
only shards with work, each with the `-k` expression of its commits) and
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
from helpers.errors import ConfigError, HarnessError
from helpers.profiles import builtin_profile
from helpers.publish.registry import ImageName, RegistryAPI, resolve_credentials
from helpers.source.dataset import CommitSpec, in_shard, load_plan, select

ROOT = Path(__file__).resolve().parent.parent


def shard_matrix(dataset: Path, blacklist: Path, batch_size: int | None, shards: int,
                 pushed: set[str] | None = None) -> tuple[int, list[dict[str, str]]]:
    """(commits the run will build, one matrix entry per shard with work), chosen by the run's own
    selection (dataset.select: already pushed, then the batch, then the shards, pairs together).
    Each entry names its commits as a `-k` expression, so a shard builds exactly what was planned
    even when other shards push while it starts."""
    plan = load_plan(dataset, blacklist)
    work = select(plan.entries, lambda e: pushed is None or e.sha not in pushed, batch_size, None)
    building = [e for e in work if not isinstance(e, CommitSpec) or pushed is None or e.sha not in pushed]
    commits = [e for e in building if isinstance(e, CommitSpec)]
    if not commits:
        return 0, []
    count = max(1, min(shards, len(building)))
    matrix = []
    for i in range(1, count + 1):
        mine = [e.sha if e.sha else e.test_id for e in building if in_shard(e, i, count, plan.groups)]
        if mine:
            matrix.append({"shard": f"{i}/{count}", "commits": " or ".join(dict.fromkeys(mine))})
    return len(commits), matrix


def pushed_tags(registry: str, namespace: str, image_name: str) -> set[str]:
    """The image repository's tags, listed as the run lists them (credentials for Docker Hub only)."""
    image = ImageName(registry, namespace, image_name)
    api = RegistryAPI(registry, resolve_credentials(registry))
    return set(api.tags(image.repository))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.plan", description=__doc__.splitlines()[0])
    parser.add_argument("--project", default="sglang")
    parser.add_argument("--dataset", default="", help="default: the project's dataset in data/")
    parser.add_argument("--blacklist", default=str(ROOT / "data" / "blacklist.txt"))
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--shards", type=int, default=1)
    parser.add_argument("--skip-pushed", action="store_true", help="count only commits not yet pushed")
    parser.add_argument("--registry", default="docker.io")
    parser.add_argument("--namespace", default=os.environ.get("DOCKERHUB_USERNAME", ""))
    parser.add_argument("--image-name", help="default: the project's image name")
    args = parser.parse_args(argv)
    try:
        profile = builtin_profile(args.project)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    dataset = Path(args.dataset) if args.dataset else default_dataset(ROOT, profile).relative_to(ROOT)
    try:
        pushed = pushed_tags(args.registry, args.namespace, args.image_name or profile.image_name) \
            if args.skip_pushed else None
        count, shards = shard_matrix(dataset.resolve(), Path(args.blacklist), args.batch_size, max(args.shards, 1),
                                     pushed)
    except (OSError, HarnessError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    lines = [f"count={count}", f"matrix={json.dumps({'include': shards})}", f"dataset={dataset}"]
    target = os.environ.get("GITHUB_OUTPUT")
    if target:
        with open(target, "a", encoding="utf-8") as out:
            out.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
