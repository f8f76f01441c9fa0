"""Every distinct real SGLang Dockerfile of the field data renders pinned, read at test time."""
import json
import re

import dockerfile as buildkit_parser
import pytest

from helpers.profiles import SGLANG
from helpers.render import RenderOptions, render
from helpers.render.identity import proof_step
from helpers.render.pin import MOUNT_FLAG
from tests.conftest import SHARED

# Independent of the rewriter: the two ways the real files fetch SGLang.
CLONE = re.compile(r"git\s+clone[^&;|\n]*sgl-project/sglang", re.I)
INDEX_INSTALL = re.compile(r"pip3?\s[^&;|\n]*install[^&;|\n]*[\s\"']sglang(\[[^\]]*\])?[\"'=<>~!\s]", re.I)


def real_dockerfiles() -> list[tuple[str, str]]:
    path = SHARED / "sglang" / "sglang_track_all.json"
    if not path.exists():
        return []
    found: dict[str, str] = {}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        for key, sha_key in (("dockerfile_content", "commit_hash"), ("parent_dockerfile_content", "parent_commit")):
            if record.get(key):
                found.setdefault(record[key], record[sha_key][:12])
    return [(sha, text) for text, sha in found.items()]


REAL = real_dockerfiles()


def test_all_17_distinct_dockerfiles_are_found(shared_data):
    assert len(REAL) == 17


@pytest.mark.parametrize("sha, text", REAL, ids=[sha for sha, _ in REAL])
def test_real_dockerfile_renders_pinned(sha, text):
    assert CLONE.search(text) or INDEX_INSTALL.search(text + " "), "the original fetches SGLang"
    rendered = render(text, RenderOptions(SGLANG, sha="a" * 40)).text
    assert not CLONE.search(rendered)
    assert not INDEX_INSTALL.search(rendered + " ")
    assert MOUNT_FLAG in rendered
    lines = rendered.splitlines()
    final_from = max(i for i, line in enumerate(lines) if line.startswith("FROM"))
    proof_at = lines.index(proof_step(SGLANG))
    assert proof_at > final_from and lines[proof_at - 1] == "ARG SGLANG_COMMIT"
    assert rendered.count("ARG SGLANG_COMMIT") == 1
    assert proof_at > max(i for i, line in enumerate(lines) if MOUNT_FLAG in line)
    buildkit_parser.parse_string(rendered)
