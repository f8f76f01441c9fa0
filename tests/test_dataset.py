"""Dataset parsing: records, roles, Dockerfile sources, bad lines, the blacklist."""
import json

import pytest

from helpers.source.dataset import (
    CommitSpec,
    DockerfileSource,
    InvalidEntry,
    load_plan,
    parse_blacklist,
    parse_dataset,
    valid_dockerfile_path,
    valid_sha,
    with_full_shas,
)

A, B, C = "a" * 40, "b" * 40, "c" * 40


def line(**fields) -> str:
    return json.dumps(fields)


@pytest.mark.parametrize("value, expected", [
    (A, A),
    ("ABCDEF1", "abcdef1"),
    ("  " + B + "\n", B),
])
def test_valid_sha_accepts(value, expected):
    assert valid_sha(value) == expected


@pytest.mark.parametrize("value, message", [
    ("xyz1234", "not hexadecimal"),
    ("abc", "7 to 40"),
    ("a" * 41, "7 to 40"),
    ("", "empty"),
    (None, "must be a string"),
    (1234567, "must be a string"),
    ("éé12345", "not hexadecimal"),
])
def test_valid_sha_rejects(value, message):
    with pytest.raises(ValueError, match=message):
        valid_sha(value)


@pytest.mark.parametrize("value, expected", [
    ("docker/Dockerfile", "docker/Dockerfile"),
    ("./docker//Dockerfile", "docker/Dockerfile"),
    ("a/../Dockerfile", "Dockerfile"),
])
def test_dockerfile_path_accepts(value, expected):
    assert valid_dockerfile_path(value) == expected


@pytest.mark.parametrize("value, message", [
    ("/etc/passwd", "absolute"),
    ("../outside/Dockerfile", "climbs out"),
    ("docker/../../x", "climbs out"),
    ("", "non-empty"),
    ("a\\b", "backslash"),
])
def test_dockerfile_path_rejects(value, message):
    with pytest.raises(ValueError, match=message):
        valid_dockerfile_path(value)


def test_record_yields_human_then_parent_with_their_dockerfiles():
    entries = parse_dataset([line(commit_hash=A, parent_commit=B, dockerfile_content="FROM x\n",
                                  parent_dockerfile_path="docker/Dockerfile")])
    assert entries == [CommitSpec(A, ("human",), DockerfileSource(content="FROM x\n"), 1, parent=B),
                       CommitSpec(B, ("parent",), DockerfileSource(path="docker/Dockerfile"), 1, children=(A,))]


def test_a_commit_in_several_records_keeps_its_parent_and_every_child():
    entries = parse_dataset([line(commit_hash=A, parent_commit=B), line(commit_hash=C, parent_commit=B),
                             line(commit_hash=B, parent_commit="d" * 40)])
    by_sha = {e.sha: e for e in entries}
    assert by_sha[B].roles == ("human", "parent") and by_sha[B].parent == "d" * 40
    assert by_sha[B].children == (A, C)
    assert by_sha[A].parent == B and by_sha[A].children == ()


def test_content_wins_over_path_and_missing_both_means_profile_candidates():
    entries = parse_dataset([line(commit_hash=A, dockerfile_content="FROM y", dockerfile_path="x/Dockerfile",
                                  parent_commit=B, parent_dockerfile_content=None, parent_dockerfile_path=None)])
    assert entries[0].dockerfile == DockerfileSource(content="FROM y")
    assert entries[1].dockerfile == DockerfileSource()
    assert entries[1].dockerfile.describe() == "profile candidates"


def test_shared_commits_are_built_once_with_all_their_roles():
    entries = parse_dataset([line(commit_hash=A, parent_commit=B), line(commit_hash=C, parent_commit=A)])
    assert [(e.sha, e.roles) for e in entries] == [(A, ("human", "parent")), (B, ("parent",)), (C, ("human",))]
    assert entries[0].test_id == f"human+parent-{A}"


def test_bad_lines_fail_alone_with_their_line_numbers():
    lines = [line(commit_hash=A), "{not json", "[1, 2]", line(parent_commit=B), "", line(commit_hash=C)]
    entries = parse_dataset(lines)
    invalid = [e for e in entries if isinstance(e, InvalidEntry)]
    assert [e.sha for e in entries if isinstance(e, CommitSpec)] == [A, C]
    assert [(e.line, e.reason.split(":")[0]) for e in invalid] == [(2, "line 2 is not JSON"),
                                                                     (3, "line 3 is a JSON list, not an object"),
                                                                     (4, "line 4")]
    assert "no commit_hash" in invalid[2].reason
    assert invalid[0].test_id == "dataset-line2-invalid"


@pytest.mark.parametrize("fields, message", [
    ({"dockerfile_content": ""}, "empty"),
    ({"dockerfile_content": "FROM x\n\x00"}, "NUL"),
    ({"dockerfile_content": "#" * (1024 * 1024 + 1)}, "over the 1 MiB limit"),
    ({"dockerfile_path": "/abs/Dockerfile"}, "absolute"),
    ({"dockerfile_path": "../../Dockerfile"}, "climbs out"),
    ({"dockerfile_content": 12}, "must be a string"),
])
def test_bad_dockerfile_fields_fail_that_commit_only(fields, message):
    entries = parse_dataset([line(commit_hash=A, parent_commit=B, **fields)])
    bad, parent = entries
    assert isinstance(bad, InvalidEntry) and bad.sha == A and message in bad.reason
    assert bad.test_id == f"human-{A}"
    assert isinstance(parent, CommitSpec) and parent.sha == B


def test_bad_parent_sha_fails_only_the_parent():
    entries = parse_dataset([line(commit_hash=A, parent_commit="zz-not-a-sha")])
    assert isinstance(entries[0], CommitSpec)
    assert isinstance(entries[1], InvalidEntry) and "parent_commit" in entries[1].reason


def test_duplicate_record_is_flagged_and_built_once():
    entries = parse_dataset([line(commit_hash=A, parent_commit=B), line(commit_hash=A, parent_commit=B)])
    assert [type(e).__name__ for e in entries] == ["CommitSpec", "CommitSpec", "InvalidEntry"]
    assert "duplicate of the record on line 1" in entries[2].reason


def test_non_ascii_text_is_just_data():
    entries = parse_dataset([line(commit_hash=A, commit_subject="⚡ faster 調整", dockerfile_content="FROM x # é\n")])
    assert entries[0].dockerfile.content == "FROM x # é\n"


def test_blacklist_comments_prefixes_and_garbage():
    shas, garbage = parse_blacklist(["# header", A + "  # flaky", "", "bbbbbbb", "not-a-sha", "12"])
    assert shas == {A, "bbbbbbb"}
    assert [g.line for g in garbage] == [5, 6]
    assert garbage[0].test_id == "blacklist-line5-invalid"


def test_load_plan_drops_blacklisted_commits(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text(line(commit_hash=A, parent_commit=B) + "\n")
    blacklist = tmp_path / "b.txt"
    blacklist.write_text(B[:10] + "\n")
    plan = load_plan(data, blacklist)
    assert [e.sha for e in plan.entries] == [A]
    assert plan.blacklisted == (B,)


def test_shared_dataset_has_93_distinct_commits(shared_data):
    plan = load_plan(shared_data / "sglang" / "sglang_track_all.json", shared_data / "sglang" / "blacklist.txt")
    assert len(plan.entries) == 93
    assert all(isinstance(e, CommitSpec) for e in plan.entries)


def test_short_shas_become_full_where_the_resolver_knows_them():
    def resolve(sha):
        if sha == "aaaaaaa":
            return A
        raise LookupError(sha)

    entries = parse_dataset([line(commit_hash="aaaaaaa", parent_commit="bbbbbbb"), line(commit_hash=C,
                                                                                        parent_commit=A)])
    resolved = with_full_shas(entries, resolve)
    assert [(e.sha, e.roles) for e in resolved] == [(A, ("human", "parent")), ("bbbbbbb", ("parent",)),
                                                    (C, ("human",))]


def test_vllm_records_yield_one_commit_with_its_dockerfile_or_the_candidates():
    entries = parse_dataset([line(commit=A, commit_date="2024-05-01T10:00:00-07:00", Dockerfile="FROM v\n"),
                             line(commit=B, commit_date="2024-05-02T10:00:00+00:00", Dockerfile=None),
                             line(commit="nothex!", Dockerfile=None), line(commit=A, Dockerfile=None)])
    assert entries[:2] == [CommitSpec(A, ("commit",), DockerfileSource(content="FROM v\n"), 1),
                           CommitSpec(B, ("commit",), DockerfileSource(), 2)]
    assert "not hexadecimal" in entries[2].reason and "duplicate of the record on line 1" in entries[3].reason
    assert entries[0].test_id == f"commit-{A}"


def test_commit_list_one_sha_per_line(tmp_path):
    path = tmp_path / "commits.txt"
    path.write_text(f"# vLLM commits\n{A}\n\n{B}  # flaky\nnot-a-sha\n{A}\n")
    plan = load_plan(path, None)
    assert [(getattr(e, "sha", None), type(e).__name__) for e in plan.entries] == [
        (A, "CommitSpec"), (B, "CommitSpec"), (None, "InvalidEntry")]
    assert plan.entries[2].line == 5


def test_real_vllm_sample_with_its_blacklist(shared_data):
    plan = load_plan(shared_data / "vllm" / "nvidia-vllm-docker.sample.jsonl", shared_data / "vllm" / "blacklist.txt")
    assert len(plan.entries) + len(plan.blacklisted) == 40
    assert all(isinstance(e, CommitSpec) and e.roles == ("commit",) for e in plan.entries)


def test_missing_dataset_is_an_error_that_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_plan(tmp_path / "nope.jsonl", None)


def test_the_vllm_job_carries_the_field_sample_as_facts_and_its_blacklist(shared_data):
    """data/nvidia-vllm-docker.jsonl: the 40 records of the field's vLLM sample, commit and date only (each
    commit's own Dockerfile is read from its tree), and the field's blacklist beside it, the project's default."""
    import json

    from helpers.config import default_blacklist
    from helpers.profiles import VLLM
    from tests.conftest import ROOT
    sample = [json.loads(line) for line in (shared_data / "vllm" / "nvidia-vllm-docker.sample.jsonl").open()]
    carried = [json.loads(line) for line in (ROOT / "data" / "nvidia-vllm-docker.jsonl").open()]
    assert [(r["commit"], r["commit_date"]) for r in carried] == [(r["commit"], r["commit_date"]) for r in sample]
    assert len(carried) == 40 and all(r["Dockerfile"] is None for r in carried)
    blacklist = default_blacklist(ROOT, VLLM)
    field = {line.strip() for line in (shared_data / "vllm" / "blacklist.txt").open() if line.strip()}
    assert {line.strip() for line in blacklist.open() if line.strip() and not line.startswith("#")} == field
    plan = load_plan(ROOT / "data" / "nvidia-vllm-docker.jsonl", blacklist)
    assert len(plan.entries) == len({r["commit"] for r in carried} - field)
