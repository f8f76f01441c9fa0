"""Identity declared late: the build arg right before its first use, the proof file late in the final stage."""
import pytest

from helpers.profiles import SGLANG
from helpers.render import declare_identity
from helpers.render.identity import proof_step

PROOF = proof_step(SGLANG)


@pytest.mark.parametrize("text, expected", [
    ("FROM base\nRUN a\n", f"FROM base\nRUN a\n\nARG SGLANG_COMMIT\n{PROOF}\n"),
    # an early declaration (the old recipe) moves down to the proof file
    ("FROM base\nARG SGLANG_COMMIT\nRUN slow\nRUN b\n",
     f"FROM base\n\nRUN slow\nRUN b\n\nARG SGLANG_COMMIT\n{PROOF}\n"),
    ("FROM base\nARG A=1 SGLANG_COMMIT=main B\nRUN b\n",
     f"FROM base\nARG A=1 B\nRUN b\n\nARG SGLANG_COMMIT\n{PROOF}\n"),
    # before the first CMD / ENTRYPOINT of the final stage
    ('FROM base\nRUN a\nENTRYPOINT ["x"]\nCMD ["y"]\n',
     f'FROM base\nRUN a\nARG SGLANG_COMMIT\n{PROOF}\nENTRYPOINT ["x"]\nCMD ["y"]\n'),
    # only the final stage gets the proof file
    ("FROM base AS build\nCMD a\nFROM base\nCOPY --from=build /x /x\n",
     f"FROM base AS build\nCMD a\nFROM base\nCOPY --from=build /x /x\n\nARG SGLANG_COMMIT\n{PROOF}\n"),
    # a non-root user gets root for the write, then back
    ("FROM base\nUSER app\nCMD x\n", f"FROM base\nUSER app\nUSER root\nARG SGLANG_COMMIT\n{PROOF}\nUSER app\nCMD x\n"),
    # a RUN that uses the arg earlier gets the declaration right before it
    ("FROM base\nRUN slow\nRUN echo $SGLANG_COMMIT > /x\nRUN c\n",
     f"FROM base\nRUN slow\nARG SGLANG_COMMIT\nRUN echo $SGLANG_COMMIT > /x\nRUN c\n\n{PROOF}\n"),
    # a FROM that uses it needs a global declaration
    ("FROM img:${SGLANG_COMMIT}\nRUN a\n",
     f"ARG SGLANG_COMMIT\nFROM img:${{SGLANG_COMMIT}}\nRUN a\n\nARG SGLANG_COMMIT\n{PROOF}\n"),
])
def test_identity_is_declared_late(text, expected):
    assert declare_identity(text, SGLANG) == expected


def test_proof_file_comes_after_the_source_install_even_past_a_cmd():
    text = ('FROM base\nCMD ["a"]\nRUN --mount=type=bind,source=.,target=/tmp/harness-src cp -a /tmp/harness-src/. /s\n'
            'ENTRYPOINT ["b"]\n')
    rendered = declare_identity(text, SGLANG)
    assert rendered.endswith(f"/s\nARG SGLANG_COMMIT\n{PROOF}\nENTRYPOINT [\"b\"]\n")


def test_proof_step_refuses_an_empty_commit_and_writes_the_full_sha():
    assert PROOF == ('RUN test -n "$SGLANG_COMMIT" && mkdir -p /opt && '
                     "printf '%s\\n' \"$SGLANG_COMMIT\" > /opt/sglang_commit.txt")


def test_heredoc_content_is_untouched():
    text = 'FROM base\nCOPY <<-"EOF" /x\nline\n\n\n\nEOF\nRUN a\n'
    assert declare_identity(text, SGLANG).startswith('FROM base\nCOPY <<-"EOF" /x\nline\n\n\n\nEOF\nRUN a\n')


def test_scm_version_is_declared_only_where_the_project_is_built_after_its_source():
    from helpers.profiles import VLLM
    from helpers.render.identity import declare_scm_version
    text = ("FROM base AS build\nCOPY requirements.txt requirements.txt\nRUN pip install -r requirements.txt\n"
            "COPY vllm vllm\nCOPY setup.py setup.py\nRUN echo building\nRUN python3 setup.py bdist_wheel\n"
            "FROM build AS test\nRUN pip install -e .\nFROM base\nRUN pip install accelerate\n")
    assert declare_scm_version(text, VLLM) == (
        "FROM base AS build\nCOPY requirements.txt requirements.txt\nRUN pip install -r requirements.txt\n"
        "COPY vllm vllm\nCOPY setup.py setup.py\nRUN echo building\nARG SETUPTOOLS_SCM_PRETEND_VERSION\n"
        "ARG SETUPTOOLS_SCM_PRETEND_VERSION_FOR_VLLM\nRUN python3 setup.py bdist_wheel\n"
        "FROM build AS test\nARG SETUPTOOLS_SCM_PRETEND_VERSION\nARG SETUPTOOLS_SCM_PRETEND_VERSION_FOR_VLLM\n"
        "RUN pip install -e .\nFROM base\nRUN pip install accelerate\n")


def test_freeze_date_is_declared_before_the_first_install_of_each_stage_only():
    from helpers.render.identity import declare_freeze
    text = "FROM base\nRUN apt-get update\nRUN pip install torch\nRUN pip install x\nFROM other\nRUN uv pip sync r\n"
    assert declare_freeze(text) == (
        "FROM base\nRUN apt-get update\nARG PIP_UPLOADED_PRIOR_TO\nARG UV_EXCLUDE_NEWER\nRUN pip install torch\n"
        "RUN pip install x\nFROM other\nARG PIP_UPLOADED_PRIOR_TO\nARG UV_EXCLUDE_NEWER\nRUN uv pip sync r\n")


OLD_RECIPE = """\
FROM base
ARG SGLANG_COMMIT
LABEL org.opencontainers.image.revision=$SGLANG_COMMIT maintainer=me
ENV SGLANG_COMMIT=${SGLANG_COMMIT} FOO=bar
RUN echo $SGLANG_COMMIT > /opt/sglang_commit.txt
RUN apt-get update && echo "$SGLANG_COMMIT" | tee /opt/sglang_commit.txt && echo done
RUN pip install -r requirements.txt
COPY . /sgl-workspace/sglang
CMD ["python3"]
"""


def test_the_old_recipes_early_identity_is_undone_so_the_commit_enters_only_after_the_source():
    from helpers.render import RenderOptions, render
    rendered = render(OLD_RECIPE, RenderOptions(SGLANG, sha="a" * 40, package_cache=False))
    lines = rendered.text.splitlines()
    first_use = next(i for i, line in enumerate(lines) if "SGLANG_COMMIT" in line)
    source = lines.index("COPY . /sgl-workspace/sglang")
    assert first_use > source, rendered.text                       # nothing before the source knows the commit
    assert "LABEL maintainer=me" in lines and "ENV FOO=bar" in lines
    assert "RUN apt-get update && true && echo done" in lines
    assert lines[-1] == "ENV SGLANG_COMMIT=${SGLANG_COMMIT}"
    assert sum("removed the early write of /opt/sglang_commit.txt" in n for n in rendered.notes) == 2


@pytest.mark.parametrize("run, writes", [
    ("RUN echo $SGLANG_COMMIT > /opt/sglang_commit.txt", True),
    ("RUN printf %s $SGLANG_COMMIT >/opt/sglang_commit.txt", True),
    ("RUN echo $SGLANG_COMMIT 1>> '/opt/sglang_commit.txt'", True),
    ("RUN echo x | tee -a /opt/sglang_commit.txt", True),
    ("RUN cat /opt/sglang_commit.txt", False),
    ("RUN echo $SGLANG_COMMIT > /opt/other.txt", False),
])
def test_what_counts_as_an_early_write_of_the_proof_file(run, writes):
    from helpers.render.identity import undo_early_identity
    text, notes = undo_early_identity(f"FROM base\n{run}\n", SGLANG)
    assert bool(notes) == writes
    assert (run not in text) == writes
