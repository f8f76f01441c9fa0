"""Pinning the source: every way a Dockerfile fetches SGLang becomes the build context's copy."""
import pytest

from helpers.errors import UnpinnableDockerfile
from helpers.profiles import SGLANG
from helpers.render import pin_source
from helpers.render.dockerfile import MOUNT_FLAG
from helpers.render.pin import pin_source_report

COPY = "cp -a /tmp/harness-src/."
URL = "https://github.com/sgl-project/sglang.git"


def body(text: str) -> str:
    """The rendered instructions after the FROM line."""
    return pin_source("FROM base\n" + text, SGLANG).split("\n", 1)[1]


@pytest.mark.parametrize("run, expected", [
    (f"RUN git clone {URL}", f"RUN {MOUNT_FLAG} mkdir -p sglang && {COPY} sglang"),
    ("RUN git clone https://github.com/sgl-project/sglang", f"RUN {MOUNT_FLAG} mkdir -p sglang && {COPY} sglang"),
    ("RUN git clone git@github.com:sgl-project/sglang.git", f"RUN {MOUNT_FLAG} mkdir -p sglang && {COPY} sglang"),
    ("RUN git clone ssh://git@github.com/sgl-project/sglang.git",
     f"RUN {MOUNT_FLAG} mkdir -p sglang && {COPY} sglang"),
    ("RUN git clone https://github.com/SGL-Project/SGLang.git/",
     f"RUN {MOUNT_FLAG} mkdir -p SGLang && {COPY} SGLang"),
    (f"RUN git clone --depth 1 -b v0.4.0 --recursive {URL} /opt/src",
     f"RUN {MOUNT_FLAG} mkdir -p /opt/src && {COPY} /opt/src"),
    (f"RUN git clone --depth=1 --single-branch --branch=main --filter blob:none {URL} sglang-src",
     f"RUN {MOUNT_FLAG} mkdir -p sglang-src && {COPY} sglang-src"),
    (f"RUN git -c http.sslVerify=false clone -q {URL} 2>&1",
     f"RUN {MOUNT_FLAG} mkdir -p sglang && {COPY} sglang"),
    (f'RUN git clone "{URL}" "/sgl workspace/sglang"',
     f'RUN {MOUNT_FLAG} mkdir -p "/sgl workspace/sglang" && {COPY} "/sgl workspace/sglang"'),
    (f"RUN apt-get update && git clone {URL} && cd sglang && pip install -e python",
     f"RUN {MOUNT_FLAG} apt-get update && mkdir -p sglang && {COPY} sglang && cd sglang && pip install -e python"),
    (f"RUN set -e; \\\n    git clone \\\n      --depth=1 {URL}; \\\n    cd sglang",
     f"RUN {MOUNT_FLAG} set -e; \\\n    mkdir -p sglang && {COPY} sglang; \\\n    cd sglang"),
    (f"ARG REPO={URL}\nRUN git clone ${{REPO}} src",
     f"ARG REPO={URL}\nRUN {MOUNT_FLAG} mkdir -p src && {COPY} src"),
])
def test_clone_of_the_project_becomes_a_copy_of_the_context(run, expected):
    assert body(run).rstrip("\n") == expected


@pytest.mark.parametrize("run", [
    "RUN git clone https://github.com/NVIDIA/gdrcopy.git -b v2.4.4",
    "RUN git clone https://github.com/sgl-project/sglang-router.git",
    "RUN git clone https://github.com/deepseek-ai/DeepEP.git && cd DeepEP && git checkout abc",
    "RUN echo git clone https://example.com/sglang.git is just text > /x",
])
def test_other_repositories_are_left_alone(run):
    text = "FROM base\nWORKDIR /w\n" + run + "\nCOPY . /sgl-workspace/sglang\n"
    assert pin_source(text, SGLANG) == text


@pytest.mark.parametrize("text, expected_tail", [
    (f"WORKDIR /w\nRUN git clone {URL} && cd sglang && git checkout v0.1.0 && pip install -e python",
     f"mkdir -p sglang && {COPY} sglang && cd sglang && true && pip install -e python"),
    (f"WORKDIR /w\nRUN git clone {URL} && git -C sglang fetch origin abc && git -C sglang reset --hard abc",
     f"mkdir -p sglang && {COPY} sglang && true && true"),
    (f"RUN git clone {URL} /src\nWORKDIR /src/python\nRUN git checkout main && pip install -e .",
     "WORKDIR /src/python\nRUN true && pip install -e ."),
    (f"WORKDIR /w\nRUN git clone {URL} && cd sglang && git submodule update --init && cd .. && "
     "git clone https://github.com/deepseek-ai/DeepEP.git && cd DeepEP && git checkout abc",
     "cd sglang && true && cd .. && git clone https://github.com/deepseek-ai/DeepEP.git && cd DeepEP && "
     "git checkout abc"),
])
def test_checkouts_inside_the_pinned_copy_are_neutralised_others_kept(text, expected_tail):
    assert body(text).rstrip("\n").endswith(expected_tail)


@pytest.mark.parametrize("run, expected", [
    ('RUN pip install "sglang[all]"',
     f'RUN {MOUNT_FLAG} mkdir -p /sgl-workspace/sglang && {COPY} /sgl-workspace/sglang && '
     'pip install -e "/sgl-workspace/sglang/python[all]"'),
    ("RUN pip3 --no-cache-dir install sglang",
     f'RUN {MOUNT_FLAG} mkdir -p /sgl-workspace/sglang && {COPY} /sgl-workspace/sglang && '
     'pip3 --no-cache-dir install -e "/sgl-workspace/sglang/python"'),
    ("RUN python3 -m pip install -U 'sglang[srt]>=0.4.0' vllm==0.6.0 -i https://pypi.org/simple",
     f'RUN {MOUNT_FLAG} mkdir -p /sgl-workspace/sglang && {COPY} /sgl-workspace/sglang && '
     'python3 -m pip install -U -e "/sgl-workspace/sglang/python[srt]" vllm==0.6.0 -i https://pypi.org/simple'),
    ("RUN uv pip install --system SGLang==0.4.1",
     f'RUN {MOUNT_FLAG} mkdir -p /sgl-workspace/sglang && {COPY} /sgl-workspace/sglang && '
     'uv pip install --system -e "/sgl-workspace/sglang/python"'),
    ("RUN pip install git+https://github.com/sgl-project/sglang.git@main#subdirectory=python",
     f'RUN {MOUNT_FLAG} mkdir -p /sgl-workspace/sglang && {COPY} /sgl-workspace/sglang && '
     'pip install -e "/sgl-workspace/sglang/python"'),
    ('RUN pip install -e "git+https://github.com/sgl-project/sglang.git#egg=sglang&subdirectory=python"',
     f'RUN {MOUNT_FLAG} mkdir -p /sgl-workspace/sglang && {COPY} /sgl-workspace/sglang && '
     'pip install -e "/sgl-workspace/sglang/python"'),
    ('RUN pip install "sglang[all] @ git+https://github.com/sgl-project/sglang.git#subdirectory=python"',
     f'RUN {MOUNT_FLAG} mkdir -p /sgl-workspace/sglang && {COPY} /sgl-workspace/sglang && '
     'pip install -e "/sgl-workspace/sglang/python[all]"'),
    ('RUN pip install --upgrade pip && pip install "sglang[${BUILD_TYPE}]" && pip cache purge',
     f'RUN {MOUNT_FLAG} pip install --upgrade pip && mkdir -p /sgl-workspace/sglang && {COPY} '
     '/sgl-workspace/sglang && pip install -e "/sgl-workspace/sglang/python[${BUILD_TYPE}]" && pip cache purge'),
])
def test_index_installs_of_the_project_become_editable_installs_of_the_context(run, expected):
    assert body(run).rstrip("\n") == expected


@pytest.mark.parametrize("run", [
    "RUN pip install sglang-router sgl-kernel",
    'RUN pip install -e "python[all]"',
    "RUN pip uninstall -y sglang",
    "RUN pip install --upgrade pip setuptools",
    "RUN pip download sglang",
])
def test_other_pip_commands_are_left_alone(run):
    text = f"FROM base\n{run}\nCOPY . /sgl-workspace/sglang\n"
    assert pin_source(text, SGLANG) == text


@pytest.mark.parametrize("text, message", [
    ("RUN git clone $SGLANG_REPO_URL", "cannot tell which repository"),
    ("RUN curl -L https://github.com/sgl-project/sglang/archive/refs/heads/main.tar.gz | tar xz",
     "downloads the project's code"),
    ("RUN wget -q https://codeload.github.com/sgl-project/sglang/tar.gz/main", "downloads the project's code"),
    ('RUN ["sh", "-c", "curl -L https://github.com/sgl-project/sglang/archive/main.tar.gz | tar xz"]',
     "exec-form RUN fetches the project"),
    ("ADD https://github.com/sgl-project/sglang/archive/main.tar.gz /src", "downloads the project's archive"),
    ("COPY <<EOF /x\nno end", "BuildKit's parser rejects"),
])
def test_what_cannot_be_pinned_is_refused(text, message):
    with pytest.raises(UnpinnableDockerfile, match=message):
        pin_source("FROM base\n" + text + "\n", SGLANG)


def test_dockerfile_that_never_fetches_the_source_gets_it_at_the_default_location():
    text = "FROM base\nRUN pip install torch\nUSER app\nCMD [\"serve\"]\n"
    pinned, notes = pin_source_report(text, SGLANG)
    assert pinned == ("FROM base\nRUN pip install torch\nUSER app\nUSER root\n"
                      "# harness: the Dockerfile never fetches the project; install the commit's source\n"
                      "COPY . /sgl-workspace/sglang\n"
                      "RUN PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install -e /sgl-workspace/sglang/python\n"
                      "USER app\nCMD [\"serve\"]\n")
    assert "never fetches sglang" in notes[0]


@pytest.mark.parametrize("copy", ["COPY . /workspace", "COPY python /w/python", "ADD ./ /src", "COPY --chown=1 . /x"])
def test_dockerfile_that_copies_the_context_is_already_pinned(copy):
    text = f"FROM base\n{copy}\nRUN pip install -e /workspace/python\n"
    assert pin_source(text, SGLANG) == text


def test_copy_from_another_stage_does_not_count_as_the_source():
    text = "FROM base AS b\nRUN true\nFROM base\nCOPY --from=b . /x\n"
    assert "COPY . /sgl-workspace/sglang" in pin_source(text, SGLANG)


def test_later_stage_inherits_the_pinned_destination_of_its_parent_stage():
    text = f"FROM base AS src\nRUN git clone {URL} /s\nFROM src\nWORKDIR /s\nRUN git checkout v1 && ls\n"
    assert pin_source(text, SGLANG).endswith("RUN true && ls\n")


def test_user_repo_url_is_recognised_too():
    text = "FROM base\nRUN git clone https://git.example.com/me/fork.git\n"
    from helpers.render.pin import pin_source_report as report
    pinned, _ = report(text, SGLANG, ("https://git.example.com/me/fork",))
    assert f"mkdir -p fork && {COPY} fork" in pinned


@pytest.mark.parametrize("line, destination", [
    ("ADD https://github.com/sgl-project/sglang.git#v0.4.0 sglang", "sglang"),
    ("ADD --keep-git-dir=true git@github.com:sgl-project/sglang.git /sgl-workspace/sglang", "/sgl-workspace/sglang"),
    ('RUN ["git", "clone", "--depth=1", "https://github.com/sgl-project/sglang.git"]', "sglang"),
    ('RUN ["git", "clone", "-b", "main", "https://github.com/sgl-project/sglang", "src"]', "src"),
])
def test_buildkit_git_add_and_exec_form_clones_are_pinned(line, destination):
    """Both used to be refused as unpinnable; the context's copy takes their place at the same path."""
    from helpers.render.dockerfile import SOURCE_MOUNT
    text = pin_source(f"FROM base\nWORKDIR /sgl-workspace\n{line}\nRUN cd {destination} && git checkout main\n",
                      SGLANG)
    assert f"cp -a {SOURCE_MOUNT}/. {destination}" in text
    assert "github.com" not in text
    assert f"RUN cd {destination} && true" in text


def test_an_exec_form_pip_install_of_the_project_is_pinned_editable():
    text = pin_source('FROM base\nRUN ["pip", "install", "sglang[all]"]\n', SGLANG)
    assert 'pip install -e "/sgl-workspace/sglang/python[all]"' in text
