"""Render one Dockerfile from standard input to standard output, to see what the harness changes.

    python -m helpers.render --project sglang --commit SHA < Dockerfile > Dockerfile.rendered

What changed (fixes and notes) goes to standard error; an unpinnable Dockerfile exits with 2.
"""
from __future__ import annotations

import argparse
import sys

from helpers.errors import ConfigError, HarnessError
from helpers.profiles import choose_fixes, choose_profile
from helpers.render import RenderOptions, parse_mapping, render


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.render", description=__doc__.splitlines()[0])
    parser.add_argument("--project", help="built-in profile: sglang (default) or vllm")
    parser.add_argument("--profile-file", help="a profile in TOML")
    parser.add_argument("--commit", default="0" * 40, help="the commit's full SHA (default: forty zeros)")
    parser.add_argument("--base-image-map", action="append", default=[], metavar="PATTERN=IMAGE")
    parser.add_argument("--enable-fix", action="append", metavar="NAME")
    parser.add_argument("--disable-fix", action="append", metavar="NAME")
    parser.add_argument("--freeze-until", metavar="ISO-DATETIME", help="as --freeze-deps would set it")
    parser.add_argument("--scm-version", metavar="VERSION", help="the version the commit's build configuration gets "
                        "from git, as a run computes it (default: none, a commit not versioned from git)")
    args = parser.parse_args(argv)
    try:
        profile = choose_profile({"project": args.project, "profile_file": args.profile_file})
        options = RenderOptions(profile=profile, sha=args.commit, base_images=parse_mapping(args.base_image_map),
                                fixes=choose_fixes(profile, args.enable_fix, args.disable_fix),
                                scm_version=args.scm_version,
                                freeze_until=args.freeze_until)
        rendered = render(sys.stdin.read(), options)
    except (ConfigError, HarnessError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    sys.stdout.write(rendered.text)
    for line in [*map(str, rendered.fixes), *rendered.notes]:
        print(f"# {line}", file=sys.stderr)
    print("# build args: " + " ".join(f"{k}={v}" for k, v in rendered.build_args.items()), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
