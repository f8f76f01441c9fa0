"""Options become one frozen configuration; bad values stop the run before any commit."""
import re
from pathlib import Path

import pytest

from helpers.config import make_config
from helpers.errors import ConfigError

ROOT = Path("/nonexistent-root")


def config(**options):
    defaults = {"no_push": True, "work_dir": "/tmp/harness-config-test", "dataset": __file__}
    return make_config({**defaults, **options}, ROOT, "sid")


def test_defaults():
    c = config()
    assert c.profile.name == "sglang" and c.image.name == "nvidia-sglang-docker"
    assert c.repo_url == "https://github.com/sgl-project/sglang.git"
    assert c.platform == "linux/amd64" and c.push is False


@pytest.mark.parametrize("options, message", [
    ({"project": "nope"}, "unknown project"),
    ({"base_image_map": ["x"]}, "PATTERN=IMAGE"),
    ({"build_timeout": -1}, "must be positive"),
    ({"repo_url": "https://u:p@h/x.git"}, "must not embed a password"),
    ({"dataset": "/nonexistent/d.jsonl"}, "does not exist"),
    ({"prepare_only": True}, "needs --out-dir"),
    ({"project": "vllm", "profile_file": "/x.toml"}, "not both"),
    ({"disable_fix": ["bogus"]}, "unknown fix 'bogus'"),
    ({"work_dir": str(Path(__file__).parent)}, "inside a git work tree"),
    ({"no_push": False, "registry": "docker.io", "namespace": ""}, "needs a namespace"),
    ({"smoke_timeout": 0}, "--smoke-timeout must be positive"),
    ({"serve_check": True, "serve_timeout": 0}, "--serve-timeout must be positive"),
    ({"serve_check": True, "serve_volume": ["cache:/root/.cache"]}, "both absolute"),
    ({"serve_check": True, "serve_env": ["HF_TOKEN=hf_secret"]}, "variable names"),
])
def test_bad_options_are_config_errors(options, message, monkeypatch):
    monkeypatch.delenv("DOCKERHUB_USERNAME", raising=False)
    with pytest.raises(ConfigError, match=message):
        config(**options)


def test_the_serve_check_is_off_unless_asked_and_takes_its_options():
    assert config().serve is None and config().smoke_timeout == 300
    serve = config(serve_check=True, serve_gpus="all", serve_env=["HF_TOKEN"],
                   serve_volume=["/data/hf:/root/.cache/huggingface"]).serve
    assert serve is not None and (serve.gpus, serve.env_names, serve.volumes, serve.timeout) == (
        "all", ("HF_TOKEN",), (("/data/hf", "/root/.cache/huggingface"),), 1200)


def test_namespace_defaults_to_the_docker_hub_user(monkeypatch):
    monkeypatch.setenv("DOCKERHUB_USERNAME", "alice")
    assert config(no_push=False).image.ref("s") == "docker.io/alice/nvidia-sglang-docker:s"


def test_verify_only_never_pushes(monkeypatch):
    monkeypatch.setenv("DOCKERHUB_USERNAME", "alice")
    c = config(no_push=False, verify_only=True)
    assert c.verify_only and not c.push


def test_fixes_are_the_profiles_plus_enabled_minus_disabled():
    c = config(project="vllm", disable_fix=["pin_outlines"])
    assert "pin_outlines" not in c.fixes and "no_git_mount" in c.fixes
    assert config(enable_fix=["pin_outlines"]).fixes == {"dockerfile_syntax", "no_git_mount", "pin_outlines",
                                                         "scm_version"}
    assert "scm_version" not in config(disable_fix=["scm_version"]).fixes


def test_the_vllm_role_marker_is_registered():
    import configparser
    from pathlib import Path
    ini = configparser.ConfigParser()
    ini.read(Path(__file__).resolve().parent.parent / "pytest.ini")
    markers = [line.split(":")[0].strip() for line in ini["pytest"]["markers"].splitlines() if line.strip()]
    assert {"human", "parent", "commit", "dataset"} <= set(markers)


def readme_defaults() -> dict[str, str]:
    """`--flag` -> the default column of README's options table."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    table = readme.split("### Options", 1)[1].split("\n## ", 1)[0]
    found = {}
    for row in table.splitlines():
        cells = [cell.strip() for cell in row.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`--"):
            for flag in re.findall(r"`(--[a-z][a-z-]*)", cells[0]):
                found[flag] = cells[1].replace("`", "")
    return found


def test_every_option_and_its_default_are_written_once_and_the_readme_shows_them():
    from helpers.config import OPTIONS
    shown = readme_defaults()
    assert sorted(shown) == sorted([o.flag for o in OPTIONS] + ["--junitxml"])       # pytest's own, with ours
    wrong = {o.flag: (o.default_text, shown[o.flag]) for o in OPTIONS if o.default_text != shown[o.flag]}
    assert not wrong, "README default column differs from OPTIONS: " + repr(wrong)
