"""Late source: a table of Dockerfile shapes, each rendered as a pure function; what cannot be decided
exactly keeps the order and says why. (Equivalence with the original order, built for real, is in
tests/test_late_equivalence.py; the real Dockerfiles in tests/test_render_real_dockerfiles.py.)"""
import shlex

import pytest

from helpers.profiles import SGLANG, VLLM
from helpers.render import pin_source
from helpers.render.dockerfile import MOUNT_FLAG
from helpers.render.late import MAKE_STUB, STUB, late_source
from tests.test_render_deps import FILES  # the same specification: srt asks openai, all asks both

ALL = "requests 'tqdm>=4' torch==2.3.0 'uvloop; sys_platform == \"linux\"' 'openai>=1.0'"
SRT = ALL           # srt asks for openai too
OPENAI = "requests 'tqdm>=4' 'openai>=1.0'"


def stub(deps: str, install: str = "pip install", uninstall: str = "pip uninstall -y") -> str:
    """The dependency install as the late source writes it: a stub wheel requiring them, installed, removed."""
    return (f"mkdir -p /tmp/harness-deps && python3 -c {shlex.quote(MAKE_STUB)} {STUB} {deps} && {install} {STUB} "
            f"&& {uninstall} harness-deps && rm -rf /tmp/harness-deps")
CLONE = "git clone https://github.com/sgl-project/sglang.git"
SOURCE = f"RUN {MOUNT_FLAG} mkdir -p /sgl-workspace/sglang && cp -a /tmp/harness-src/. /sgl-workspace/sglang && "


def late(body: str, head: str = "FROM base\nARG BUILD_TYPE=all\nWORKDIR /sgl-workspace\n") -> tuple[str, list[str]]:
    return late_source(pin_source(head + body, SGLANG), SGLANG, FILES)


def test_the_dependencies_take_the_source_s_place_and_the_source_comes_last():
    text, notes = late(f"RUN pip install -U pip && {CLONE} && cd sglang && PIP_X=1 pip install --no-cache-dir "
                       "-i https://idx -e \"python[${BUILD_TYPE}]\" && echo done\n"
                       "RUN apt-get install -y cmake && make -C /opt/nvshmem\n"
                       "ENV DEBIAN_FRONTEND=interactive\nCMD [\"serve\"]\n")
    assert text == (
        "FROM base\nARG BUILD_TYPE=all\nWORKDIR /sgl-workspace\n"
        "RUN pip install -U pip && mkdir -p sglang && true && cd sglang && PIP_X=1 "
        f"{stub(ALL, 'pip install --no-cache-dir -i https://idx')} && echo done\n"
        "RUN apt-get install -y cmake && make -C /opt/nvshmem\n"
        "ENV DEBIAN_FRONTEND=interactive\n"
        f"{SOURCE}cd /sgl-workspace/sglang && PIP_X=1 pip install --no-cache-dir -i https://idx --no-deps "
        "-e \"python[${BUILD_TYPE}]\"\n"
        "CMD [\"serve\"]\n")
    assert notes == ["late source: line 4 installs the dependencies its 1 install(s) of sglang ask; the source "
                     "enters at the end of the final stage"]


def test_each_branch_installs_what_its_own_extras_ask():
    text, _ = late(f"RUN {CLONE} && cd sglang && if [ \"$BUILD_TYPE\" = \"srt\" ]; then "
                   "pip install -e \"python[srt]\"; else pip install -e \"python[openai]\"; fi\n")
    assert f"then {stub(SRT)}; else {stub(OPENAI)}; fi\n" in text
    assert text.endswith(f"{SOURCE}cd /sgl-workspace/sglang && pip install --no-deps -e \"python[srt]\"\n")


def test_a_case_chain_and_a_wheel_installed_after_the_project_stay_in_the_chain():
    text, notes = late(f"RUN {CLONE} && cd sglang && case \"$CUDA_VERSION\" in 12.6.1) CU=126 ;; "
                       "*) echo unsupported && exit 1 ;; esac "
                       "&& pip install -e \"python[all]\" --extra-index-url https://x/cu${CU} "
                       "&& if [ \"$CUDA_VERSION\" = \"12.8.1\" ]; then pip install https://w/k.whl --no-deps; fi\n")
    assert f"&& {stub(ALL, 'pip install --extra-index-url https://x/cu${CU}')} && if [" in text
    assert text.endswith(f"{SOURCE}cd /sgl-workspace/sglang && pip install --no-deps -e \"python[all]\"\n"), text
    assert "enters at the end of the final stage" in notes[0]


@pytest.mark.parametrize("later, reason", [
    ("RUN cd /sgl-workspace/sglang/sgl-kernel && make", "compiles the kernel from the tree"),
    ("RUN python3 -c 'import sglang'", "imports the package"),
    ("RUN pip install sglang-router", "installs something named like the project"),
    ("COPY config.yaml /sgl-workspace/sglang/python/", "writes into the tree"),
    ("WORKDIR /sgl-workspace/sglang", "works inside it"),
    ("RUN pip install -r sglang/python/requirements.txt", "reads a file of the tree"),
])
def test_a_later_step_that_reads_the_source_stays_after_it(later, reason):
    text, notes = late(f"RUN {CLONE} && cd sglang && pip install -e python\nRUN apt-get install -y gcc\n"
                       f"{later}\nRUN echo last\n")
    before_reader = text.index(later.split("\n")[0])
    assert text.index(SOURCE) < before_reader, reason
    assert text.index("RUN apt-get install -y gcc") < text.index(SOURCE), reason
    assert "the first step that reads it" in notes[0]


def test_the_source_installs_as_the_user_and_from_the_place_the_dockerfile_chose():
    text, _ = late(f"USER app\nRUN {CLONE} && cd sglang && pip install --user -e python\nUSER root\n"
                   "RUN apt-get install -y gcc\nWORKDIR /elsewhere\n")
    assert text.endswith(f"USER app\n{SOURCE}cd /sgl-workspace/sglang && pip install --user --no-deps -e python\n"
                         "USER root\n")


@pytest.mark.parametrize("body, reason", [
    (f"RUN {CLONE} && cd $SOMEWHERE && pip install -e python\n", "after the copy could read the source"),
    (f"RUN {CLONE} && cd sglang && pip install -e \"python[gpu]\"\n", "cannot be read exactly"),
    (f"RUN {CLONE} && cd sglang && pip install -e /elsewhere/python\n", "after the copy could read the source"),
    (f"RUN {CLONE} /src\nRUN pip install -e /elsewhere/python\n", "does not install the project"),
    (f"RUN {CLONE} && cd sglang && pip install -e python && cp -r sgl-kernel/x /usr/lib/\n",
     "after the copy could read the source"),
    (f"RUN {CLONE} && cd sglang && pip install -e python && pip install -r python/requirements-extra.txt\n",
     "after the copy could read the source"),
    (f"RUN {CLONE} && cd sglang && pip install -e python\nENV PATH=/opt/venv/bin:$PATH\n",
     "changes PATH, which the source's install would see otherwise"),
    (f"RUN {CLONE} && cd sglang && if [ x ]; then pip install -e python; else uv pip install -e python; fi\n",
     "differ between branches"),
])
def test_what_cannot_be_decided_exactly_keeps_the_order_and_says_why(body, reason):
    pinned = pin_source("FROM base\nARG BUILD_TYPE=all\nWORKDIR /sgl-workspace\n" + body, SGLANG)
    text, notes = late_source(pinned, SGLANG, FILES)
    assert text == pinned
    assert len(notes) == 1 and notes[0].startswith("late source: not applied, the Dockerfile's order is kept: ")
    assert reason in notes[0]


def test_a_multi_stage_build_whose_source_is_in_an_earlier_stage_keeps_its_order():
    pinned = pin_source(f"FROM base AS builder\nRUN {CLONE} /src && pip wheel -e /src/python -w /wheels\n"
                        "FROM base\nCOPY --from=builder /wheels /wheels\n", SGLANG)
    text, notes = late_source(pinned, SGLANG, FILES)
    assert text == pinned and "stage 0, not the final stage" in notes[0]


def test_a_multi_stage_build_whose_final_stage_brings_the_source_moves_it_within_that_stage():
    text, _ = late_source(pin_source(f"FROM base AS tools\nRUN make -C /opt/tool\nFROM base\nWORKDIR /w\n"
                                     f"RUN {CLONE} && cd sglang && pip install -e python\n"
                                     "COPY --from=tools /opt/tool /opt/tool\nRUN apt-get install -y gcc\n", SGLANG),
                          SGLANG, FILES)
    assert text.index("COPY --from=tools") < text.index("RUN apt-get") < text.index(MOUNT_FLAG)


def test_a_non_editable_install_of_the_root_project_moves_too():
    pinned = pin_source("FROM base\nWORKDIR /w\nRUN git clone https://github.com/vllm-project/vllm.git && "
                        "cd vllm && pip install .\nRUN pip install ray\n", VLLM)
    text, _ = late_source(pinned, VLLM, {"pyproject.toml": '[project]\nname = "vllm"\ndependencies = ["torch"]\n'})
    assert f"cd vllm && {stub('torch')}\nRUN pip install ray\n" in text
    assert text.endswith("cd /w/vllm && pip install --no-deps .\n")


def test_no_pinned_step_means_nothing_to_move():
    assert late_source("FROM base\nCOPY . /app\nRUN pip install -e /app\n", SGLANG, FILES) == (
        "FROM base\nCOPY . /app\nRUN pip install -e /app\n", [])
