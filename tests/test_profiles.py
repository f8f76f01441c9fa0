"""Project profiles: the built-ins, TOML files, and validation with clear errors."""
from dataclasses import replace

import pytest

from helpers.errors import ConfigError
from helpers.profiles import FIXES, SGLANG, VLLM, builtin_profile, load_profile_file, normalise_repo


def test_builtin_profiles():
    assert builtin_profile("sglang") is SGLANG and builtin_profile("vllm") is VLLM
    assert (VLLM.image_name, VLLM.proof_file, VLLM.build_arg, VLLM.editable_required) == (
        "nvidia-vllm-docker", "/opt/vllm_commit.txt", "VLLM_COMMIT", False)
    assert SGLANG.package_path == "python/sglang" and VLLM.package_path == "vllm"
    assert set(VLLM.fixes) == set(FIXES) and SGLANG.fixes == ("dockerfile_syntax", "no_git_mount")
    with pytest.raises(ConfigError, match="unknown project 'tgi'; built in: sglang, vllm"):
        builtin_profile("tgi")


@pytest.mark.parametrize("url, ident", [
    ("https://github.com/sgl-project/sglang.git", "github.com/sgl-project/sglang"),
    ("https://github.com/SGL-Project/SGLang/", "github.com/sgl-project/sglang"),
    ("git@github.com:sgl-project/sglang.git", "github.com/sgl-project/sglang"),
    ("ssh://git@github.com:22/sgl-project/sglang.git", "github.com/sgl-project/sglang"),
    ("https://user@github.com/sgl-project/sglang", "github.com/sgl-project/sglang"),
])
def test_repository_urls_are_normalised(url, ident):
    assert normalise_repo(url) == ident


def test_profile_file_from_scratch(tmp_path):
    path = tmp_path / "tgi.toml"
    path.write_text('name = "mini"\nrepo_url = "https://example.com/org/mini.git"\nimage_name = "mini-img"\n'
                    'distribution = "mini-pkg"\nimport_name = "mini"\nsource_subdir = ""\n'
                    'default_location = "/src"\nproof_file = "/opt/mini_commit.txt"\nbuild_arg = "MINI_COMMIT"\n'
                    'dockerfile_candidates = ["Dockerfile"]\neditable_required = false\nfixes = ["pin_outlines"]\n')
    profile = load_profile_file(path)
    assert profile.package_path == "mini" and profile.fixes == ("pin_outlines",) and not profile.editable_required


def test_profile_file_based_on_a_builtin(tmp_path):
    path = tmp_path / "fork.toml"
    path.write_text('base = "sglang"\nrepo_url = "https://github.com/me/sglang-fork.git"\nimage_name = "fork"\n')
    profile = load_profile_file(path)
    assert profile == replace(SGLANG, repo_url="https://github.com/me/sglang-fork.git", image_name="fork")


@pytest.mark.parametrize("content, message", [
    ('base = "sglang"\nimage = "x"\n', "unknown keys \\['image'\\]"),
    ('base = "sglang"\nfixes = "pin_outlines"\n', "fixes must be a list of strings"),
    ('base = "sglang"\neditable_required = "yes"\n', "editable_required must be a bool"),
    ('base = "sglang"\nfixes = ["make_it_work"]\n', "unknown fixes \\['make_it_work'\\]"),
    ('base = "sglang"\nproof_file = "relative.txt"\n', "must be an absolute path"),
    ('base = "sglang"\nbuild_arg = "1BAD"\n', "not a valid ARG name"),
    ('base = "sglang"\nimage_name = "Upper Case"\n', "not a valid image repository name"),
    ('base = "sglang"\nsource_subdir = "../up"\n', "relative path inside the repository"),
    ('base = "sglang"\nsmoke_imports = ["sglang.srt..x"]\n', "not dotted module names"),
    ('base = "sglang"\nsmoke_commands = ["python3 -c \'unclosed"]\n', "not closed"),
    ('base = "sglang"\nserve_port = "30000"\n', "serve_port must be an integer"),
    ('base = "sglang"\nserve_port = true\n', "serve_port must be an integer"),
    ('base = "sglang"\nserve_port = 70000\n', "must be a TCP port"),
    ('base = "sglang"\nserve_health_path = "health"\n', "must start with /"),
    ('base = "sglang"\nserve_request_body = "{text: 1}"\n', "is not JSON"),
    ('name = "x"\n', "missing keys"),
    ('base = "nope"\n', "unknown project"),
    ("not toml = = =\n", "profile file"),
])
def test_bad_profile_files_say_what_is_wrong(tmp_path, content, message):
    path = tmp_path / "p.toml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_profile_file(path)


def test_smoke_and_serve_fields_from_a_file(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('base = "sglang"\nsmoke_imports = ["sglang.srt.server", "deep_gemm"]\n'
                    'smoke_commands = ["python3 -m sglang.launch_server --help"]\nserve_port = 31000\n'
                    'serve_command = "python3 -m sglang.launch_server --model-path {model} --port {port}"\n')
    profile = load_profile_file(path)
    assert profile.smoke_imports == ("sglang.srt.server", "deep_gemm") and profile.serve_port == 31000
    assert profile.serve_request_path == SGLANG.serve_request_path


def test_the_builtin_profiles_have_smoke_lists_and_a_server():
    for profile in (SGLANG, VLLM):
        assert profile.smoke_imports and profile.smoke_commands and profile.serve_command and profile.serve_port
    assert {"sgl_kernel", "flashinfer", "sglang.launch_server"} <= set(SGLANG.smoke_imports)
    assert {"vllm._C", "vllm.entrypoints.openai.api_server"} <= set(VLLM.smoke_imports)


def test_a_base_passes_on_the_build_shape_but_not_its_own_modules_checks(tmp_path):
    other = tmp_path / "other.toml"
    other.write_text('base = "vllm"\nname = "other"\nimport_name = "other"\ndistribution = "other"\n'
                     'image_name = "other-img"\nrepo_url = "https://example.com/org/other.git"\n')
    profile = load_profile_file(other)
    assert (profile.editable_required, profile.import_from_workdir, profile.fixes, profile.build_products) == (
        VLLM.editable_required, VLLM.import_from_workdir, VLLM.fixes, VLLM.build_products)
    assert (profile.smoke_imports, profile.smoke_commands, profile.serve_command, profile.check_modules) == \
        ((), (), "", ())
    same = tmp_path / "same.toml"
    same.write_text('base = "vllm"\nname = "my-vllm"\nimage_name = "my-vllm-img"\n')
    assert load_profile_file(same).smoke_imports == VLLM.smoke_imports       # the same import name keeps them
    given = tmp_path / "given.toml"
    given.write_text('base = "vllm"\nname = "other"\nimport_name = "other"\nsmoke_imports = ["other.server"]\n')
    assert load_profile_file(given).smoke_imports == ("other.server",)


@pytest.mark.parametrize("package_dir, error", [
    ("src/mini", None),
    ("lib/mini/", None),
    ("src/other", "must be a relative path inside the repository ending in the package's folder 'mini'"),
    ("/abs/mini", "must be a relative path"),
    ("../mini", "must be a relative path"),
])
def test_package_dir_says_where_the_package_lives_apart_from_what_pip_installs(tmp_path, package_dir, error):
    path = tmp_path / "src-layout.toml"
    path.write_text(f'base = "sglang"\nname = "mini"\nimport_name = "mini"\ndistribution = "mini"\n'
                    f'source_subdir = ""\npackage_dir = "{package_dir}"\n')
    if error:
        with pytest.raises(ConfigError, match=error):
            load_profile_file(path)
        return
    profile = load_profile_file(path)
    assert profile.package_path == package_dir.strip("/") and profile.source_subdir == ""
