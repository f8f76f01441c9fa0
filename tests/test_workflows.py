"""The GitHub workflows: valid against GitHub's schema (offline, as check-jsonschema vendors it), clean
for actionlint (which knows each action's inputs and runtime: none on the node20 runtime GitHub removed
from its runners in September 2026), and every pytest option they pass is one the harness knows."""
import re
import shlex
import subprocess
import sys

import pytest
import yaml

from tests.conftest import ROOT

WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
# Example values for the variables the workflows' run steps use; a new variable must be added here.
EXAMPLES = {"PARALLEL": "2", "PROJECT": "sglang", "DATASET": "data/sglang_track_all.json", "BATCH": "5",
            "SHARD": "1/1", "push_flag": "--skip-pushed", "JUNIT": "{junit}", "REGISTRY": "ghcr.io",
            "NAMESPACE": "someone",
            "COMMITS": "6b231325b9782555eb8e1cfcf27820003a98382b or b1c8d4e9f31953560f2db45a3b6e68099ef00c13"}


def test_both_workflows_exist():
    assert [w.name for w in WORKFLOWS] == ["build-images.yml", "ci.yml"]


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_is_valid_against_the_github_schema(workflow):
    done = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows",
                           str(workflow)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_workflows_are_clean_for_actionlint():
    """actionlint checks expressions, inputs, shell scripts' quoting and each action's runtime."""
    import shutil
    from pathlib import Path
    beside = Path(sys.executable).parent / "actionlint"        # in a virtual environment that is not activated
    actionlint = str(beside) if beside.exists() else shutil.which("actionlint") or "actionlint"
    done = subprocess.run([actionlint, "-no-color", *map(str, WORKFLOWS)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def pytest_commands(workflow) -> list[list[str]]:
    """Every `python -m pytest ...` of the workflow's run steps, as argv with variables filled in."""
    commands = []
    for job in yaml.safe_load(workflow.read_text())["jobs"].values():
        for step in job.get("steps", []):
            script = step.get("run", "").replace("\\\n", " ")
            for line in script.splitlines():
                if "-m pytest" not in line:
                    continue
                def fill(match):
                    name = match.group(1) or match.group(2)
                    assert name in EXAMPLES, f"{workflow.name}: no example value for ${name}"
                    return EXAMPLES[name]
                line = re.sub(r"\$\{(\w+)\}|\$(\w+)", fill, line)
                commands.append(shlex.split(line.split("-m pytest", 1)[1]))
    return commands


def test_the_build_workflow_runs_pytest():
    assert pytest_commands(ROOT / ".github" / "workflows" / "build-images.yml")


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_every_pytest_option_a_workflow_passes_exists(workflow, tmp_path):
    for args in pytest_commands(workflow):
        args = [a.replace("{junit}", str(tmp_path / "junit.xml")) for a in args]
        done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                               *args], cwd=ROOT, capture_output=True, text=True, timeout=300,
                              env={"PATH": "/usr/bin:/bin:/usr/local/bin", "HOME": str(tmp_path),
                                   "DOCKERHUB_USERNAME": "someone"})
        assert done.returncode == 0, f"pytest {' '.join(args)}:\n{done.stdout}{done.stderr}"
        assert "test_commit[" in done.stdout


def test_build_workflow_never_runs_an_empty_matrix_and_always_reports():
    jobs = yaml.safe_load((ROOT / ".github" / "workflows" / "build-images.yml").read_text())["jobs"]
    assert jobs["build"]["if"] == "needs.prepare.outputs.count != '0'"
    assert jobs["report"]["if"] == "always()"
    moves = [s for s in jobs["build"]["steps"] if "data-root" in s.get("run", "")]
    assert moves and "/mnt/docker" in moves[0]["run"]
    assert any("helpers.report fold" in s.get("run", "") for s in jobs["report"]["steps"])


def test_ci_workflow_runs_what_ci_runs():
    steps = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())["jobs"]["tests"]["steps"]
    assert any(s.get("run") == "bash .ci/run" for s in steps)


def test_each_verified_image_is_attested_with_the_harness_predicate(tmp_path):
    from helpers.report.results import PREDICATE_TYPE, Verification, attestation_matrix, write_attestation
    jobs = yaml.safe_load((ROOT / ".github" / "workflows" / "build-images.yml").read_text())["jobs"]
    attest = next(s for s in jobs["attest"]["steps"] if s.get("uses", "").startswith("actions/attest@"))
    assert attest["with"]["predicate-type"] == PREDICATE_TYPE and attest["with"]["push-to-registry"] is True
    assert jobs["attest"]["permissions"]["id-token"] == "write"
    statements = [write_attestation(tmp_path / "att", Verification(
        f"docker.io/u/img{i}", f"sha256:{str(i) * 64}", str(i) * 40, "https://x/y.git", "python/sglang", "t" * 40, 3,
        (("verify_label", True, "ok"),), "h" * 40, "2026-11-28T00:00:00Z")) for i in (1, 2)]
    matrix = attestation_matrix(statements, tmp_path / "predicates")
    assert [m["name"] for m in matrix] == ["docker.io/u/img1", "docker.io/u/img2"]
    assert matrix[0]["digest"] == "sha256:" + "1" * 64
    predicate = (tmp_path / "predicates" / f"{'1' * 40}.json").read_text()
    assert '"commit": "' + "1" * 40 in predicate and '"checks"' in predicate
    assert attest["with"]["predicate-path"] == "predicates/${{ matrix.commit }}.json"


def test_the_status_lists_accumulate_in_git_one_folder_per_project():
    jobs = yaml.safe_load((ROOT / ".github" / "workflows" / "build-images.yml").read_text())["jobs"]
    steps = jobs["report"]["steps"]
    fold = next(s["run"] for s in steps if "helpers.report fold" in s.get("run", ""))
    assert '--status-dir "commit-status/$PROJECT"' in fold
    commit = next(s["run"] for s in steps if "git push" in s.get("run", ""))
    assert 'git add "commit-status/$PROJECT"' in commit and "git pull -q --rebase" in commit
    assert jobs["report"]["permissions"]["contents"] == "write"
    assert "commit-status/" not in (ROOT / ".gitignore").read_text()


def test_the_build_jobs_run_where_asked_build_into_the_engine_and_can_push_to_ghcr():
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "build-images.yml").read_text())
    inputs = workflow[True]["workflow_dispatch"]["inputs"]         # YAML reads the `on` key as True
    assert inputs["registry"]["options"] == ["docker.io", "ghcr.io"] and inputs["runner"]["type"] == "string"
    build = workflow["jobs"]["build"]
    assert "needs.track.outputs.runner" in build["runs-on"] and build["permissions"]["packages"] == "write"
    buildx = next(s for s in build["steps"] if s.get("uses", "").startswith("docker/setup-buildx-action"))
    assert buildx["with"]["driver"] == "docker"                     # no export and re-import of each image
    logins = [s for s in build["steps"] if s.get("uses", "").startswith("docker/login-action")]
    ghcr = next(s for s in logins if s["with"].get("registry") == "ghcr.io")
    assert ghcr["with"]["password"] == "${{ secrets.GITHUB_TOKEN }}"
    run = next(s for s in build["steps"] if "-m pytest" in s.get("run", ""))
    assert '-k "$COMMITS"' in run["run"] and "DOCKERHUB_TOKEN" not in run.get("env", {})


def test_the_serve_check_input_turns_on_options_that_exist(tmp_path):
    text = (ROOT / ".github" / "workflows" / "build-images.yml").read_text()
    options = shlex.split(re.search(r'PYTEST_ADDOPTS="([^"]+)"', text).group(1))
    assert options[0] == "--serve-check" and "--serve-gpus" in options
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                           "--no-push", *options], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin:/usr/local/bin", "HOME": str(tmp_path)})
    assert done.returncode == 0 and "test_commit[" in done.stdout, done.stdout + done.stderr


def test_nightly_the_branch_is_tracked_built_and_the_dataset_committed(tmp_path):
    """A schedule and a dispatch input run helpers.track before the plan; what it appends is committed and is
    what the plan and the shards read; a scheduled run (no inputs) gets the dispatch defaults and pushes."""
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "build-images.yml").read_text())
    assert workflow[True]["schedule"][0]["cron"].count(" ") == 4
    assert workflow[True]["workflow_dispatch"]["inputs"]["track"]["type"] == "boolean"
    jobs = workflow["jobs"]
    steps = jobs["track"]["steps"]
    settings = next(s for s in steps if s.get("id") == "settings")
    assert settings["env"]["PUSH"] == "${{ github.event_name == 'schedule' || inputs.push }}"
    tracking = next(s["run"] for s in steps if "helpers.track" in s.get("run", ""))
    args = shlex.split(tracking.replace("\\\n", " ").split("helpers.track", 1)[1].split("|")[0])
    assert {"--runtime-only", "--skip-reverts", "--max"} <= set(args)
    done = subprocess.run([sys.executable, "-m", "helpers.track", "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert all(a in done.stdout for a in args if a.startswith("--")), done.stdout
    commit = next(s for s in steps if s.get("id") == "commit")
    assert "git add data/" in commit["run"] and "git push" in commit["run"]
    assert jobs["track"]["permissions"]["contents"] == "write"
    for name in ("prepare", "build"):
        checkout = next(s for s in jobs[name]["steps"] if s.get("uses", "").startswith("actions/checkout"))
        assert checkout["with"]["ref"] == "${{ needs.track.outputs.ref }}"
    assert all("track" in (job["needs"] if isinstance(job["needs"], list) else [job["needs"]])
               for name, job in jobs.items() if name != "track")
