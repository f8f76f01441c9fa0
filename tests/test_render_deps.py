"""Dependencies read from the commit's specification, and the package caches: tables of pure functions."""
import pytest

from helpers.profiles import SGLANG
from helpers.render.caches import COMPILER_MOUNT, add_compiler_caches, add_package_caches
from helpers.render.deps import dependency_list

PYPROJECT = """[project]
name = "sglang"
version = "0.1"
dependencies = ["requests", "tqdm>=4"]
[project.optional-dependencies]
srt = ["torch==2.3.0", 'uvloop; sys_platform == "linux"', "sglang[openai]"]
openai = ["openai>=1.0"]
all = ["sglang[srt]", "sglang[openai]"]
"""
FILES = {"python/pyproject.toml": PYPROJECT}


@pytest.mark.parametrize("extras, expected", [
    (set(), ["requests", "tqdm>=4"]),
    ({"openai"}, ["requests", "tqdm>=4", "openai>=1.0"]),
    ({"all"}, ["requests", "tqdm>=4", "torch==2.3.0", 'uvloop; sys_platform == "linux"', "openai>=1.0"]),
])
def test_dependency_list_follows_extras_and_self_references(extras, expected):
    assert dependency_list(FILES, "python", extras) == expected


@pytest.mark.parametrize("files, extras", [
    ({}, set()),                                                              # no pyproject.toml
    ({"python/pyproject.toml": "not = [toml"}, set()),
    ({"python/pyproject.toml": PYPROJECT}, {"gpu"}),                          # an extra it does not have
    ({"python/pyproject.toml": '[project]\nname = "x"\ndynamic = ["dependencies"]\n'}, set()),  # from setup.py
    ({"python/pyproject.toml": '[project]\nname = "x"\ndynamic = ["dependencies"]\n'
                               '[tool.setuptools.dynamic]\ndependencies = {file = ["reqs.txt"]}\n',
      "python/reqs.txt": "-r other.txt\n"}, set()),
])
def test_what_cannot_be_read_exactly_is_none(files, extras):
    assert dependency_list(files, "python", extras) is None


def test_dynamic_dependencies_from_a_file():
    files = {"pyproject.toml": '[project]\nname = "vllm"\ndynamic = ["version", "dependencies"]\n'
                               '[tool.setuptools.dynamic]\ndependencies = {file = ["requirements.txt"]}\n',
             "requirements.txt": "# base\ntorch==2.4\n\nray>=2.9 # comment\n"}
    assert dependency_list(files, "", set()) == ["torch==2.4", "ray>=2.9"]


@pytest.mark.parametrize("text, expected", [
    ("FROM b\nRUN pip install --no-cache-dir x\n",
     "FROM b\nRUN --mount=type=cache,target=/root/.cache/pip pip install x\n"),
    ("FROM b\nRUN python3 -m pip --no-cache-dir install x && uv pip install --no-cache y\n",
     "FROM b\nRUN --mount=type=cache,target=/root/.cache/pip --mount=type=cache,target=/root/.cache/uv "
     "python3 -m pip install x && uv pip install y\n"),
    ("FROM b\nRUN --mount=type=cache,target=/root/.cache/pip pip install x\n",
     "FROM b\nRUN --mount=type=cache,target=/root/.cache/pip pip install x\n"),
    ("FROM b\nRUN apt-get install -y python3-pip\n", "FROM b\nRUN apt-get install -y python3-pip\n"),
    ("FROM b\nUSER app\nRUN pip install x\n", "FROM b\nUSER app\nRUN pip install x\n"),
    ("FROM b\nRUN echo --no-cache-dir && pip install x\n",
     "FROM b\nRUN --mount=type=cache,target=/root/.cache/pip echo --no-cache-dir && pip install x\n"),
])
def test_package_caches(text, expected):
    assert add_package_caches(text)[0] == expected


SOURCED = "FROM b\nRUN --mount=type=bind,source=.,target=/tmp/harness-src cp -a /tmp/harness-src/. /s\n"


@pytest.mark.parametrize("step, mounted", [
    ("RUN cd /s/sgl-kernel && make", True),
    ("RUN cmake -S /s -B /b && cmake --build /b", True),
    ("RUN python3 setup.py bdist_wheel --dist-dir=dist", True),
    ("RUN pip wheel /s -w /w", True),
    ("RUN pip install /s/sgl-kernel", True),
    ("RUN python3 -m build /s", True),
    ("RUN pip install torch", False),                                    # from an index: nothing compiled here
    ("RUN --mount=type=cache,target=/root/.cache/ccache make", False),   # it has one
    ("RUN sccache --show-stats && make", False),
    ("USER app\nRUN make", False),                                       # not root's cache folder
])
def test_compile_steps_where_the_source_is_get_a_compiler_cache(step, mounted):
    text, notes = add_compiler_caches(SOURCED + step + "\n", SGLANG)
    assert (COMPILER_MOUNT in text) is mounted and bool(notes) is mounted


def test_no_compiler_cache_before_the_stage_holds_the_source():
    assert add_compiler_caches("FROM b\nRUN make -C /opt/tool\n", SGLANG)[1] == []
