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
