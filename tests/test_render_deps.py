"""The dependency layer and the package caches: tables of pure rewrites."""
import pytest

from helpers.profiles import SGLANG, VLLM
from helpers.render import pin_source
from helpers.render.deps import add_package_caches, dependency_list, split_dependency_layer
from helpers.render.dockerfile import MOUNT_FLAG

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


def pinned(run: str) -> str:
    return pin_source(f"FROM base\nARG BUILD_TYPE=all\nWORKDIR /sgl-workspace\n{run}\n", SGLANG)


def test_pinned_install_is_split_into_dependency_and_source_layers():
    text = pinned("RUN pip install -U pip && git clone https://github.com/sgl-project/sglang.git && cd sglang "
                  "&& PIP_X=1 pip install --no-cache-dir -i https://idx -e \"python[${BUILD_TYPE}]\" && echo done")
    split, notes = split_dependency_layer(text, SGLANG, FILES)
    assert split == (
        "FROM base\nARG BUILD_TYPE=all\nWORKDIR /sgl-workspace\n"
        "RUN pip install -U pip && mkdir -p sglang && true && cd sglang && PIP_X=1 pip install --no-cache-dir "
        "-i https://idx requests 'tqdm>=4' torch==2.3.0 'uvloop; sys_platform == \"linux\"' 'openai>=1.0' "
        "&& echo done\n"
        f"RUN {MOUNT_FLAG} mkdir -p /sgl-workspace/sglang && cp -a /tmp/harness-src/. /sgl-workspace/sglang && "
        "cd /sgl-workspace/sglang && PIP_X=1 pip install --no-cache-dir -i https://idx --no-deps "
        "-e \"python[${BUILD_TYPE}]\"\n")
    assert notes == ["dependencies (5) in a layer keyed by their specification; the source installed after them "
                     "with --no-deps"]


def test_no_deps_install_and_index_flags_with_shell_variables():
    text = pinned("RUN git clone https://github.com/sgl-project/sglang.git && cd sglang && export CU=124 && "
                  "pip install --no-deps --extra-index-url https://x/cu${CU} -e python")
    split, _ = split_dependency_layer(text, SGLANG, FILES)
    assert "export CU=124 && true\n" in split
    assert split.endswith("cd /sgl-workspace/sglang && pip install --no-deps -e python\n")


@pytest.mark.parametrize("run", [
    "RUN git clone https://github.com/sgl-project/sglang.git && cd $SOMEWHERE && pip install -e python",
    "RUN git clone https://github.com/sgl-project/sglang.git && cd sglang && pip install -e \"python[gpu]\"",
    "RUN git clone https://github.com/sgl-project/sglang.git && cd sglang && pip install python",
    "RUN git clone https://github.com/sgl-project/sglang.git && cd sglang && pip install -e /elsewhere/python",
])
def test_what_cannot_be_split_exactly_stays_as_it_was(run):
    text = pinned(run)
    assert split_dependency_layer(text, SGLANG, FILES) == (text, [])


def test_vllm_style_root_project_is_split_too():
    text = pin_source("FROM base\nWORKDIR /w\nRUN git clone https://github.com/vllm-project/vllm.git && "
                      "cd vllm && pip install -e .\n", VLLM)
    files = {"pyproject.toml": '[project]\nname = "vllm"\ndependencies = ["ray"]\n'}
    split, notes = split_dependency_layer(text, VLLM, files)
    assert "cd vllm && pip install ray\n" in split and split.endswith("cd /w/vllm && pip install --no-deps -e .\n")


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


@pytest.mark.parametrize("after", ["cp -r sgl-kernel/python/sgl_kernel /usr/lib/python3/dist-packages/",
                                   "pip install -r python/requirements-extra.txt"])
def test_a_chain_whose_later_steps_read_the_source_is_not_split(after):
    """The dependency layer runs without the source: a step after the copy that may read it keeps the RUN whole."""
    text = pinned("RUN git clone https://github.com/sgl-project/sglang.git && cd sglang "
                  f"&& pip install -e \"python[${{BUILD_TYPE}}]\" && {after}")
    split, notes = split_dependency_layer(text, SGLANG, FILES)
    assert split == text and notes == []
