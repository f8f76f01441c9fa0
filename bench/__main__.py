"""Run the benchmark and print each figure with the machine it ran on (see bench/__init__.py)."""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys

import docker

from bench import runtime, scenarios
from helpers.build.driver import detect_driver

ALL = ("pair", "job", "second-machine", "verify", "overhead", "collect", "skip-pushed", "parallel", "disk")
# On request only: build-path writes a 2 GB layer; real-runtime downloads about 5 GB of wheels once (cached).
EXTRA = ("build-path", "real-runtime")


def machine(client: docker.DockerClient) -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor() or "unknown cpu")
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30
    driver = detect_driver()
    return (f"{platform.machine()}, {os.cpu_count()} cores ({cpu}), {memory:.1f} GiB, Linux {platform.release()}, "
            f"Docker engine {client.version()['Version']}, build driver {driver.describe()}, "
            f"Python {platform.python_version()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--only", default=",".join(ALL), help=f"comma-separated, from: {', '.join(ALL + EXTRA)}")
    parser.add_argument("--base-image", default=os.environ.get("HARNESS_TEST_BASE_IMAGE", "harness-base:bookworm"))
    parser.add_argument("--slow", type=int, default=150, help="units of real work (millions of squares summed, about "
                        "a second per 10) of each heavy step of the 2025-shaped Dockerfile")
    parser.add_argument("--rounds", type=int, default=9, help="measurements per figure that takes a median (>= 1)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    wanted = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(wanted) - set(ALL + EXTRA)
    if unknown:
        parser.error(f"unknown figures: {', '.join(sorted(unknown))}")
    client = docker.from_env()
    print(f"machine: {machine(client)}", flush=True)
    ws = scenarios.Workspace(args.base_image)
    rounds = max(1, args.rounds)
    runs = {"pair": lambda: scenarios.pair(ws, args.slow), "verify": lambda: scenarios.verification(ws, client, rounds),
            "overhead": lambda: scenarios.overhead(ws), "collect": lambda: scenarios.collection(ws),
            "skip-pushed": lambda: scenarios.skip_pushed(ws, client), "parallel": lambda: scenarios.parallel(ws),
            "job": lambda: scenarios.job(ws, args.slow),
            "second-machine": lambda: scenarios.second_machine(ws, client, args.slow),
            "build-path": lambda: scenarios.build_path(ws, client), "disk": lambda: scenarios.disk(ws, client),
            "real-runtime": lambda: runtime.real_runtime(ws.root / "runtime", client, args.base_image, ws.namespace,
                                                         rounds)}
    figures = []
    try:
        for name in wanted:
            for figure in runs[name]():
                figures.append(figure)
                ratio = f"{figure.ratio:.2f}" if figure.ratio is not None else "-"
                verdict = {True: "met", False: "MISSED", None: ""}[figure.met]
                print(f"{figure.name:18} {ratio:>6}  target {figure.target:22} {verdict:6}  {figure.measured}",
                      flush=True)
    finally:
        ws.cleanup(client)
    if args.json:
        with open(args.json, "w") as out:
            json.dump([f.__dict__ for f in figures], out, indent=2)
    return 0 if all(f.met is not False for f in figures) else 1


if __name__ == "__main__":
    sys.exit(main())
