"""The benchmark: every performance figure of the harness as a ratio measured side by side in one run.

    python -m bench                     # all figures (a few minutes)
    python -m bench --only pair,verify  # some of them

Needs a Docker engine with BuildKit and a local base image with python3 and pip
(`--base-image`, default harness-base:bookworm, which `bash .ci/setup` makes); the scale figure
also needs the `registry:2` image. Nothing is downloaded and nothing on the machine is pruned:
each build that must be cold is made cold by a fresh salt in its first layer.
"""
