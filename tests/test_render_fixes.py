"""Dockerfile fixes: syntax normalisation, .git bind mounts, vLLM's wheel size check."""
import pytest

from helpers.render.fixes import neutralise_wheel_size_check, normalise_syntax, remove_git_mounts


@pytest.mark.parametrize("text, expected", [
    ("FROM base as build\n", "FROM base AS build\n"),
    ("FROM --platform=$BUILDPLATFORM base:1 As build\n", "FROM --platform=$BUILDPLATFORM base:1 AS build\n"),
    ("FROM base AS build\n", "FROM base AS build\n"),
    ("FROM base\n", "FROM base\n"),
    ("FROM base\nENV VLLM_USAGE_SOURCE production-docker-image\n",
     "FROM base\nENV VLLM_USAGE_SOURCE=production-docker-image\n"),
    ('FROM base\nENV A "quoted value"\n', 'FROM base\nENV A="quoted value"\n'),
    ("FROM base\nENV A 'single quoted'\n", "FROM base\nENV A='single quoted'\n"),
    ('FROM base\nENV A two words\n', 'FROM base\nENV A="two words"\n'),
    ('FROM base\nENV PATH /opt/bin:$PATH\n', 'FROM base\nENV PATH=/opt/bin:$PATH\n'),
    ("FROM base\nENV A=1 B=2\n", "FROM base\nENV A=1 B=2\n"),
    ("FROM base\nENV A=1\n", "FROM base\nENV A=1\n"),
    ("FROM base\nRUN\n    apt-get update && \\\n    apt-get install -y git\n",
     "FROM base\nRUN apt-get update && \\\n    apt-get install -y git\n"),
    ("FROM base\nRUN \\\n    apt-get update\n", "FROM base\nRUN \\\n    apt-get update\n"),
])
def test_syntax_is_normalised(text, expected):
    assert normalise_syntax(text)[0] == expected


def test_syntax_changes_are_reported_by_line():
    assert normalise_syntax("FROM a as b\nENV X y\n")[1] == ["line 1: FROM ... as -> AS",
                                                          "line 2: ENV X <value> -> ENV X=<value>"]


@pytest.mark.parametrize("run, expected", [
    ("RUN --mount=type=bind,source=.git,target=.git pip install .", "RUN pip install ."),
    ("RUN --mount=target=.git,type=bind,src=.git,readonly pip install .", "RUN pip install ."),
    ("RUN --mount=source=./.git/,target=/workspace/.git python3 setup.py bdist_wheel",
     "RUN python3 setup.py bdist_wheel"),
    ("RUN --mount=type=cache,target=/root/.cache/pip \\\n    --mount=type=bind,source=.git,target=.git \\\n"
     "    pip install .",
     "RUN --mount=type=cache,target=/root/.cache/pip \\\n    pip install ."),
    ("RUN --mount=type=bind,source=.git,target=.git \\\n    --mount=type=cache,target=/root/.cache/pip \\\n"
     "    pip install .",
     "RUN --mount=type=cache,target=/root/.cache/pip \\\n    pip install ."),
    ("RUN --mount=type=bind,source=.git,target=.git \\\n    python3 -m build",
     "RUN python3 -m build"),
])
def test_git_bind_mounts_are_removed_with_their_continuation(run, expected):
    assert remove_git_mounts(f"FROM base\n{run}\n")[0] == f"FROM base\n{expected}\n"


@pytest.mark.parametrize("run", [
    "RUN --mount=type=bind,from=build,src=/workspace/dist,target=/vllm-workspace/dist pip install dist/*.whl",
    "RUN --mount=type=bind,source=.github,target=/g ls /g",
    "RUN --mount=type=cache,target=.git ls",
    "RUN echo --mount=type=bind,source=.git,target=.git",
])
def test_other_mounts_stay(run):
    assert remove_git_mounts(f"FROM base\n{run}\n") == (f"FROM base\n{run}\n", [])


@pytest.mark.parametrize("run, expected", [
    ("RUN python3 check-wheel-size.py dist", "RUN true"),
    ('RUN if [ "$RUN_WHEEL_CHECK" = "true" ]; then \\\n        python3 check-wheel-size.py dist; \\\n    fi',
     'RUN if [ "$RUN_WHEEL_CHECK" = "true" ]; then \\\n        true; \\\n    fi'),
    ("RUN python3 /workspace/.buildkite/check-wheel-size.py dist && ls dist", "RUN true && ls dist"),
    ("RUN cat check-wheel-size.py", "RUN cat check-wheel-size.py"),
])
def test_wheel_size_check_is_neutralised(run, expected):
    assert neutralise_wheel_size_check(f"FROM base\n{run}\n")[0] == f"FROM base\n{expected}\n"
