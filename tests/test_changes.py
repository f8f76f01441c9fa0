"""Where a commit's change went: the paths a build reads from the tree (every real Dockerfile of the field
data), the kind of each changed path, and the verdict on a PR commit whose change is not in its image."""
from __future__ import annotations

import dataclasses

import pytest

from helpers.errors import ConfigError
from helpers.profiles import SGLANG, VLLM, load_profile_file
from helpers.render import RenderOptions, render
from helpers.render.reads import tree_reads
from helpers.source.mirror import Change
from helpers.verify.changes import BUILT, NOT_IN_IMAGE, VERIFIED, ChangeReport, PathChange, kind_of, place
from tests.test_render_real_dockerfiles import SGLANG_FILES, VLLM_FILES


@pytest.mark.parametrize("path, kind", [
    ("python/sglang/srt/layers/attention.py", "runtime"),
    ("sgl-kernel/csrc/allreduce/custom_all_reduce.cu", "runtime"),
    ("sgl-kernel/include/utils.h", "runtime"),
    ("sgl-kernel/CMakeLists.txt", "runtime"),
    ("python/pyproject.toml", "runtime"),
    ("requirements-cuda.txt", "runtime"),
    ("test/srt/test_moe.py", "test"),
    ("python/sglang/test/test_utils.py", "test"),
    ("sgl-kernel/tests/test_norm.py", "test"),
    ("docs/backend/server_arguments.md", "docs"),
    ("docs/conf.py", "docs"),
    ("README.md", "docs"),
    ("examples/runtime/engine/offline_batch_inference.py", "docs"),
    (".github/workflows/pr-test.yml", "ci"),
    (".pre-commit-config.yaml", "ci"),
    ("benchmark/gsm8k/bench_sglang.py", "benchmark"),
    ("scripts/killall_sglang.sh", "other"),
    ("docker/Dockerfile.rocm", "other"),           # how an image is made: the one in use is placed *built*
    ("docker/Dockerfile", "other"),
    ("assets/logo.png", "docs"),
])
def test_each_path_has_its_kind(path, kind):
    assert kind_of(path, SGLANG) == kind


def test_a_profile_names_kinds_of_its_own_first(tmp_path):
    profile = dataclasses.replace(SGLANG, path_kinds=("scripts/*=runtime", "python/sglang/test/*=other"))
    assert kind_of("scripts/killall_sglang.sh", profile) == "runtime"
    assert kind_of("python/sglang/test/test_utils.py", profile) == "other"
    bad = tmp_path / "profile.toml"
    bad.write_text('base = "sglang"\npath_kinds = ["scripts/*=code"]\n')
    with pytest.raises(ConfigError, match="path_kinds entry 'scripts/\\*=code'"):
        load_profile_file(bad)


def reads_of(profile, text):
    return tree_reads(render(text, RenderOptions(profile=profile, sha="0" * 40, fixes=frozenset(profile.fixes))).text)


@pytest.mark.parametrize("sha, text", SGLANG_FILES, ids=[sha for sha, _ in SGLANG_FILES])
def test_every_real_sglang_dockerfile_builds_python_and_never_the_kernel_from_the_tree(sha, text):
    reads = reads_of(SGLANG, text)
    assert reads.roots == ("python",)
    assert reads.reader_of("python/pyproject.toml") == "python"
    assert reads.reader_of("sgl-kernel/csrc/gemm/fp8_gemm.cu") is None
    if "sgl-kernel" in text:                # where the image gets the kernel instead
        assert reads.sources_of("sgl_kernel"), [p.describe() for p in reads.packages]


@pytest.mark.parametrize("sha, text", VLLM_FILES, ids=[sha for sha, _ in VLLM_FILES])
def test_every_real_vllm_dockerfile_compiles_its_kernels_from_the_tree(sha, text):
    reads = reads_of(VLLM, text)
    assert reads.reader_of("csrc/attention/attention_kernels.cu") == "csrc"
    assert reads.reader_of("setup.py") == "setup.py"
    assert reads.reader_of("tests/kernels/test_attention.py") is None


def test_only_stages_that_reach_the_final_image_count():
    text = ("FROM base AS unused\nCOPY tools /tools\nRUN make -C /tools\n"
            "FROM base AS kernels\nCOPY kernels /src/kernels\nRUN cd /src/kernels && make\n"
            "FROM base\nCOPY --from=kernels /src/kernels/out.so /opt/\nCOPY docs/*.md /usr/share/doc/\n"
            "RUN --mount=type=bind,source=.,target=/tmp/harness-src mkdir -p /w && cp -a /tmp/harness-src/. /w "
            "&& cd /w && pip install -e python && cp scripts/run.sh /usr/local/bin/ "
            "&& cat <<-\"EOF\" > /etc/motd\nhello\nEOF\n")
    reads = tree_reads(text)
    assert reads.roots == ("kernels", "python", "scripts/run.sh")
    assert reads.patterns == ("docs/*.md",)
    assert reads.reader_of("tools/build.c") is None
    assert reads.reader_of("docs/index.md") == "docs/*.md"


def test_installs_by_name_say_where_they_come_from():
    reads = tree_reads("FROM base\nRUN pip install --no-deps sgl-kernel==0.1.0 -i https://docs.sglang.ai/whl/cu124 "
                       "&& pip install https://github.com/x/releases/download/v1/flashinfer_python-0.2.5-cp39-abi3-"
                       "linux_x86_64.whl && pip install --no-index -f /opt/wheels deep_gemm && pip install -r "
                       "requirements.txt\n")
    described = [p.describe() for p in reads.packages]
    assert [(p.name, p.source) for p in reads.packages] == [
        ("sgl-kernel", "https://docs.sglang.ai/whl/cu124"),
        ("flashinfer-python", "a wheel at https://github.com/x/releases/download/v1/flashinfer_python-0.2.5-cp39-"
                              "abi3-linux_x86_64.whl"),
        ("deep-gemm", "--find-links /opt/wheels")], described


def report(*paths: tuple[str, str, str], elsewhere=()) -> ChangeReport:
    return ChangeReport("a" * 40, tuple(PathChange(Change("M", p), where, kind) for p, where, kind in paths), elsewhere)


KERNEL_ONLY = report(("sgl-kernel/csrc/norm.cu", NOT_IN_IMAGE, "runtime"), ("test/test_norm.py", NOT_IN_IMAGE, "test"))


def test_a_pr_commit_whose_runtime_change_is_not_in_the_image_fails_and_a_baseline_does_not():
    failed = KERNEL_ONLY.check(("human",), accept=False)
    assert not failed.passed and failed.category == "change_not_in_image"
    assert "sgl-kernel/csrc/norm.cu" in failed.found and "test_norm" not in failed.found
    assert KERNEL_ONLY.check(("parent",), accept=False).passed
    assert KERNEL_ONLY.check(("human", "parent"), accept=False).passed is False     # a PR commit first
    accepted = KERNEL_ONLY.check(("human",), accept=True)
    assert accepted.passed and accepted.found.startswith("accepted")


def test_no_runtime_change_is_reported_as_the_parents_code():
    docs = report(("docs/a.md", NOT_IN_IMAGE, "docs"), ("test/test_a.py", NOT_IN_IMAGE, "test"))
    result = docs.check(("human",), accept=False)
    assert result.passed and "no runtime change" in result.found and "2 not in the image (1 test, 1 docs)" \
        in result.found


def test_some_runtime_change_in_the_image_passes_and_names_the_rest():
    mixed = report(("python/sglang/a.py", VERIFIED, "runtime"), ("sgl-kernel/csrc/norm.cu", NOT_IN_IMAGE, "runtime"))
    result = mixed.check(("human",), accept=False)
    assert result.passed and "not in it: sgl-kernel/csrc/norm.cu" in result.found


def test_placing_uses_the_package_the_reads_and_the_dockerfile():
    reads = tree_reads("FROM base\nRUN --mount=type=bind,source=.,target=/tmp/harness-src mkdir -p /w && "
                       "cp -a /tmp/harness-src/. /w && cd /w && pip install -e python && "
                       "pip install sgl-kernel -i https://example.org/whl\n")
    files = {"sgl-kernel/pyproject.toml": '[project]\nname = "sgl-kernel"\n'}
    changes = [Change("M", "python/sglang/a.py"), Change("M", "python/pyproject.toml"),
               Change("R", "sgl-kernel/csrc/new.cu", "sgl-kernel/csrc/old.cu"), Change("M", "docker/Dockerfile")]
    placed = place(changes, SGLANG, reads, "docker/Dockerfile", "b" * 40, files.get)
    assert [(p.change.path, p.where) for p in placed.paths] == [
        ("python/sglang/a.py", VERIFIED), ("python/pyproject.toml", BUILT), ("sgl-kernel/csrc/new.cu", NOT_IN_IMAGE),
        ("docker/Dockerfile", BUILT)]
    assert placed.elsewhere[0][:2] == ("sgl-kernel", "sgl-kernel")
    assert "sgl-kernel from https://example.org/whl" in placed.instead()
    assert placed.attested()["not_in_the_image"] == [{"status": "R", "path": "sgl-kernel/csrc/new.cu",
                                                      "kind": "runtime", "from": "sgl-kernel/csrc/old.cu"}]


@pytest.mark.parametrize("sha, text", SGLANG_FILES, ids=[sha for sha, _ in SGLANG_FILES])
def test_a_changed_part_is_built_from_the_tree_after_the_project_on_every_real_sglang_dockerfile(sha, text):
    options = RenderOptions(profile=SGLANG, sha="0" * 40, fixes=frozenset(SGLANG.fixes), build_parts=("sgl-kernel",))
    rendered = render(text, options)
    step = next(line for line in rendered.text.splitlines() if "--force-reinstall ." in line)
    assert "id=harness-ccache" in step and "cd /sgl-workspace/sglang/sgl-kernel && " in step
    lines = rendered.text.splitlines()
    assert lines.index(step) > max(i for i, line in enumerate(lines) if "cp -a /tmp/harness-src/." in line)
    assert lines.index(step) < next(i for i, line in enumerate(lines) if "/opt/sglang_commit.txt" in line)
    assert any("--build-changed-parts: sgl-kernel/ built from the commit's tree" in n for n in rendered.notes)
    assert tree_reads(rendered.text).reader_of("sgl-kernel/csrc/gemm/fp8_gemm.cu") == "sgl-kernel"


def test_parts_are_folders_of_the_tree(tmp_path):
    bad = tmp_path / "profile.toml"
    bad.write_text('base = "sglang"\nparts = ["../kernels"]\n')
    with pytest.raises(ConfigError, match="parts entry '../kernels' must be a folder of the repository"):
        load_profile_file(bad)


PREBUILT_SETUP = "import os\nif os.environ.get('VLLM_USE_PRECOMPILED'):\n    pass  # the wheel's .so files\n"
COPY_TREE = "RUN --mount=type=bind,source=.,target=/tmp/harness-src mkdir -p /w && cp -a /tmp/harness-src/. /w && cd /w"


@pytest.mark.parametrize("dockerfile", [
    f"FROM base\n{COPY_TREE} && VLLM_USE_PRECOMPILED=1 pip install .\n",
    f"FROM base\nENV VLLM_USE_PRECOMPILED=1\n{COPY_TREE} && pip install .\n",
    f"FROM base\nARG VLLM_USE_PRECOMPILED=true\n{COPY_TREE} && pip install --no-build-isolation .\n",
], ids=["inline", "env", "arg-default"])
def test_a_prebuilt_install_leaves_the_compiled_sources_out_of_the_image(dockerfile):
    """vLLM's `VLLM_USE_PRECOMPILED=1 pip install .`: its Python comes from the tree, its kernels from a wheel,
    so a pull request that changes only csrc/ is not in its image."""
    reads = tree_reads(dockerfile)
    files = {"setup.py": PREBUILT_SETUP}
    changes = [Change("M", "csrc/attention/kernels.cu"), Change("M", "CMakeLists.txt"), Change("M", "setup.py")]
    placed = place(changes, VLLM, reads, None, "b" * 40, files.get)
    assert [(p.change.path, p.where) for p in placed.paths] == [
        ("csrc/attention/kernels.cu", NOT_IN_IMAGE), ("CMakeLists.txt", NOT_IN_IMAGE), ("setup.py", BUILT)]
    kernels_only = place(changes[:1], VLLM, reads, None, "b" * 40, files.get).check(("human",), accept=False)
    assert not kernels_only.passed
    assert "csrc/attention/kernels.cu" in kernels_only.found and "VLLM_USE_PRECOMPILED=" in kernels_only.found
    assert "which setup.py reads" in kernels_only.found


@pytest.mark.parametrize("dockerfile, setup", [
    (f"FROM base\n{COPY_TREE} && VLLM_USE_PRECOMPILED=1 pip install .\n", "import os\n"),
    (f"FROM base\n{COPY_TREE} && VLLM_USE_PRECOMPILED=0 pip install .\n", PREBUILT_SETUP),
    (f"FROM base\n{COPY_TREE} && python3 setup.py build_ext --inplace && VLLM_USE_PRECOMPILED=1 pip install .\n",
     PREBUILT_SETUP),
], ids=["setup-ignores-it", "set-false", "compiled-by-another-step"])
def test_compiled_sources_are_built_unless_every_reader_takes_them_prebuilt(dockerfile, setup):
    placed = place([Change("M", "csrc/attention/kernels.cu")], VLLM, tree_reads(dockerfile), None, "b" * 40,
                   {"setup.py": setup}.get)
    assert placed.paths[0].where == BUILT


def test_a_prebuilt_install_is_seen_through_the_rendered_dockerfile():
    """The harness's own rendering (the clone replaced by the commit's tree) keeps the install's variable."""
    text = ("FROM nvidia/cuda:12.1.0-devel-ubuntu22.04\nWORKDIR /vllm-workspace\nRUN git clone "
            "https://github.com/vllm-project/vllm.git vllm && cd vllm && VLLM_USE_PRECOMPILED=1 pip install .\n")
    reads = reads_of(VLLM, text)
    assert (reads.prebuilt_by("csrc/attention/kernels.cu") or "").startswith("VLLM_USE_PRECOMPILED=1 (line ")
    placed = place([Change("M", "csrc/attention/kernels.cu")], VLLM, reads, None, "b" * 40,
                   {"setup.py": PREBUILT_SETUP}.get)
    assert placed.paths[0].where == NOT_IN_IMAGE and placed.paths[0].reader.startswith("prebuilt: ")
