"""Every distinct real Dockerfile of the field data (17 SGLang, 21 vLLM), read at test time, renders
pinned, with identity declared, into a Dockerfile BuildKit's parser accepts."""
import json
import re

import dockerfile as buildkit_parser
import pytest

from helpers.profiles import SGLANG, VLLM, Profile
from helpers.render import RenderOptions, render
from helpers.render.dockerfile import MOUNT_FLAG
from helpers.render.fixes import INSTRUCTIONS
from helpers.render.identity import proof_step
from tests.conftest import SHARED

# Independent of the rewriter: the ways the real files fetch SGLang.
CLONE = re.compile(r"git\s+clone[^&;|\n]*(sgl-project/sglang|vllm-project/vllm)", re.I)
INDEX_INSTALL = re.compile(r"pip3?\s[^&;|\n]*install[^&;|\n]*[\s\"'](sglang|vllm)(\[[^\]]*\])?[\"'=<>~!\s]", re.I)


def distinct(path, fields) -> list[tuple[str, str]]:
    """(short sha, content) of each distinct Dockerfile content in a JSON-lines file."""
    if not path.exists():
        return []
    found: dict[str, str] = {}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        for key, sha_key in fields:
            if record.get(key):
                found.setdefault(record[key], record[sha_key][:12])
    return [(sha, text) for text, sha in found.items()]


SGLANG_FILES = distinct(SHARED / "sglang" / "sglang_track_all.json",
                        (("dockerfile_content", "commit_hash"), ("parent_dockerfile_content", "parent_commit")))
VLLM_FILES = distinct(SHARED / "vllm" / "nvidia-vllm-docker.sample.jsonl", (("Dockerfile", "commit"),))
CASES = [pytest.param(SGLANG, text, id=f"sglang-{sha}") for sha, text in SGLANG_FILES] + \
        [pytest.param(VLLM, text, id=f"vllm-{sha}") for sha, text in VLLM_FILES]


def test_all_distinct_dockerfiles_are_found(shared_data):
    assert (len(SGLANG_FILES), len(VLLM_FILES)) == (17, 21)


def accepted_by_buildkit(text: str) -> None:
    """BuildKit's parser, plus the instruction checks BuildKit makes before building."""
    for command in buildkit_parser.parse_string(text):
        assert command.cmd.upper() in INSTRUCTIONS, command
        assert command.value or command.cmd.upper() not in ("RUN", "FROM", "COPY", "ENV"), command
        if command.cmd.upper() == "FROM":
            assert len(command.value) in (1, 3) and (len(command.value) == 1 or command.value[1] == "AS"), command
        if command.cmd.upper() == "ENV":
            assert "=" in command.original.split(None, 2)[1], command


@pytest.mark.parametrize("profile, text", CASES)
def test_real_dockerfile_renders_pinned_with_identity(profile: Profile, text: str):
    rendered = render(text, RenderOptions(profile, sha="a" * 40, fixes=frozenset(profile.fixes),
                                          scm_version="0.0.0+gaaaaaaaaaaaa")).text
    assert not CLONE.search(rendered)
    assert not INDEX_INSTALL.search(rendered + " ")
    if CLONE.search(text) or INDEX_INSTALL.search(text + " "):
        assert MOUNT_FLAG in rendered
    lines = rendered.splitlines()
    final_from = max(i for i, line in enumerate(lines) if line.startswith("FROM"))
    proof_at = lines.index(proof_step(profile))
    assert proof_at > final_from and lines[proof_at - 1] == f"ARG {profile.build_arg}"
    assert rendered.count(f"ARG {profile.build_arg}") == 1
    after_proof = [line.split()[0] for line in lines[proof_at + 1:] if line.strip() and not line.startswith("#")]
    assert set(after_proof) <= {"ENTRYPOINT", "CMD", "ENV", "WORKDIR", "EXPOSE", "LABEL", "USER"}
    accepted_by_buildkit(rendered)


# What a child's build runs again: every step from the first that reads the build context (a COPY or ADD
# from it, or the harness's bind mount of it) on, in the final stage; light: the source step, the
# identity (its ARG and the proof file) and instructions that only set the image's metadata.
LIGHT = {"ENV", "WORKDIR", "CMD", "ENTRYPOINT", "EXPOSE", "LABEL", "USER", "ARG", "STOPSIGNAL", "HEALTHCHECK"}


def rebuilt_by_a_child(rendered: str) -> list[str]:
    commands = buildkit_parser.parse_string(rendered)
    stage_starts = [i for i, c in enumerate(commands) if c.cmd.upper() == "FROM"]
    for start, end in zip(stage_starts, stage_starts[1:] + [len(commands)], strict=True):
        stage = commands[start:end]
        reads = [i for i, c in enumerate(stage) if MOUNT_FLAG in c.original or
                 c.cmd.upper() in ("COPY", "ADD") and not any(f.startswith("--from") for f in c.flags)
                 and not c.value[0].startswith("<<")]                    # a heredoc is not the context
        if reads and end != len(commands):
            return [f"stage {len(stage_starts)} reads the context: {stage[reads[0]].original[:80]}"]
        if reads:
            return [c.original for c in stage[reads[0]:]]
    return []


@pytest.fixture(scope="module")
def sglang_specification() -> dict[str, str]:
    """SGLang's real dependency specification (its released pyproject.toml: PEP 621, `all` naming
    `sglang[srt]` and the others), from the package index."""
    import tarfile

    from testkit import corpus
    with tarfile.open(corpus.sdist("sglang", "0.4.3")) as tar:
        return {"python/pyproject.toml": tar.extractfile("sglang-0.4.3/pyproject.toml").read().decode()}


@pytest.mark.parametrize("sha, text", SGLANG_FILES, ids=[sha for sha, _ in SGLANG_FILES])
def test_a_child_of_every_real_sglang_dockerfile_rebuilds_one_light_step(sha, text, sglang_specification):
    rendered = render(text, RenderOptions(SGLANG, sha="a" * 40, fixes=frozenset(SGLANG.fixes),
                                          project_files=sglang_specification)).text
    rebuilt = rebuilt_by_a_child(rendered)
    heavy = [step for step in rebuilt if step.split()[0].upper() not in LIGHT
             and MOUNT_FLAG not in step and step != proof_step(SGLANG)]
    assert [step for step in rebuilt if MOUNT_FLAG in step][:1], rebuilt
    assert heavy == [], "\n".join(rebuilt)
    assert not [s for s in rebuilt if MOUNT_FLAG in s][0].count("pip install") > 1


@pytest.mark.parametrize("sha, text", VLLM_FILES, ids=[sha for sha, _ in VLLM_FILES])
def test_every_real_vllm_compile_step_has_a_compiler_cache(sha, text):
    from helpers.render.caches import compiles
    from helpers.render.dockerfile import keyword_end, parse, stages
    from helpers.render.shellwords import walk
    rendered = render(text, RenderOptions(VLLM, sha="a" * 40, fixes=frozenset(VLLM.fixes),
                                          scm_version="0.0.0+gaaaaaaaaaaaa")).text
    doc = parse(rendered)
    for inst, state in stages(doc, VLLM):
        if inst.cmd == "RUN" and not inst.is_json and state.is_root and state.has_source and \
                any(compiles(cmd) for _, cmd, _ in walk(inst.text, keyword_end(inst.text), state.workdir)):
            assert "ccache" in inst.text, inst.text
