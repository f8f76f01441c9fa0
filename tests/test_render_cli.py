"""`python -m helpers.render`: one Dockerfile from standard input, rendered to standard output."""
import subprocess
import sys

from tests.conftest import ROOT

DOCKERFILE = ("FROM nvcr.io/nvidia/tritonserver:24.04-py3-min as base\nENV A b\nWORKDIR /sgl-workspace\n"
              "RUN git clone --depth=1 https://github.com/sgl-project/sglang.git && cd sglang \\\n"
              "    && pip install -e python\n")


def render_cli(*args: str, stdin: str = DOCKERFILE) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "helpers.render", *args], input=stdin, capture_output=True,
                          text=True, cwd=ROOT, timeout=60)


def test_cli_renders_stdin_to_stdout_and_reports_changes_on_stderr():
    sha = "ab" * 20
    done = render_cli("--project", "sglang", "--commit", sha, "--base-image-map", "nvcr.io/*=local/base")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("FROM local/base AS base\nENV A=b\n")
    assert "cp -a /tmp/harness-src/. sglang" in done.stdout
    assert 'printf \'%s\\n\' "$SGLANG_COMMIT" > /opt/sglang_commit.txt' in done.stdout
    assert "# dockerfile_syntax: line 1: FROM ... as -> AS" in done.stderr
    assert f"SGLANG_COMMIT={sha}" in done.stderr


def test_cli_exits_2_with_the_reason_when_the_dockerfile_cannot_be_pinned():
    done = render_cli(stdin='FROM x\nADD https://github.com/sgl-project/sglang/archive/main.tar.gz /s\n')
    assert done.returncode == 2 and done.stdout == ""
    assert "[unpinnable_dockerfile]" in done.stderr and "archive" in done.stderr


def test_cli_rejects_unknown_fixes():
    done = render_cli("--disable-fix", "everything")
    assert done.returncode == 2 and "unknown fix 'everything'" in done.stderr


def test_the_scm_version_is_declared_only_when_given():
    """A run computes it from the commit's configuration; the CLI takes it as a run would give it."""
    dockerfile = "FROM base\nRUN git clone https://github.com/sgl-project/sglang.git /w && pip install -e /w/python\n"
    plain = subprocess.run([sys.executable, "-m", "helpers.render"], input=dockerfile, capture_output=True, text=True,
                           cwd=ROOT, timeout=60)
    given = subprocess.run([sys.executable, "-m", "helpers.render", "--scm-version", "0.5.10.post1"], input=dockerfile,
                           capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert plain.returncode == given.returncode == 0, plain.stderr + given.stderr
    assert "SETUPTOOLS_SCM_PRETEND_VERSION" not in plain.stdout + plain.stderr
    assert "ARG SETUPTOOLS_SCM_PRETEND_VERSION" in given.stdout
    assert "SETUPTOOLS_SCM_PRETEND_VERSION=0.5.10.post1" in given.stderr
