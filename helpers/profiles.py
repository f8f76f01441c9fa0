"""Project profiles: what the harness must know about a project to pin, build and verify it."""
from __future__ import annotations

import dataclasses
import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from helpers.errors import ConfigError

try:
    import tomllib
except ModuleNotFoundError:                      # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

@dataclass(frozen=True)
class Fix:
    """One fix the harness knows: its name, what it changes, and what it does."""

    name: str
    kind: str       # "context": the context's dependency files; "dockerfile": the Dockerfile; "version": build args
    does: str


# Every fix, in the order it is applied; a profile names the ones it applies by default.
FIX_REGISTRY = (
    Fix("drop_sparse_deps", "context", "drop the `sparsezoo`/`sparseml` requirements that no longer install"),
    Fix("pin_outlines", "context", "cap `outlines` below 0.0.43, whose later releases break old commits"),
    Fix("scm_version", "version", "give the build the version the commit's configuration gets from git (the context "
        "has no .git), and verify it; on for every profile"),
    Fix("dockerfile_syntax", "dockerfile", "normalise legacy syntax BuildKit rejects"),
    Fix("no_git_mount", "dockerfile", "remove `.git` bind mounts (the context has no .git)"),
    Fix("no_wheel_size_check", "dockerfile", "skip the wheel size check"),
)
FIXES = tuple(fix.name for fix in FIX_REGISTRY)
# On for every profile unless a run turns them off: they follow what the commit's configuration says.
ALWAYS_ON = frozenset({"scm_version"})
# What a path a commit changed can be (helpers/verify/changes.py): only runtime code must reach the image.
PATH_KINDS = ("runtime", "test", "docs", "ci", "benchmark", "other")


def fixes_of_kind(kind: str) -> frozenset[str]:
    return frozenset(fix.name for fix in FIX_REGISTRY if fix.kind == kind)


@dataclass(frozen=True)
class Profile:
    """Everything project-specific; the pipeline stages take this, never a project name."""

    name: str
    repo_url: str
    image_name: str
    distribution: str          # the name pip knows it by ("sglang")
    import_name: str           # what `import` takes ("sglang")
    source_subdir: str         # tree path pip installs ("python"); "" for the root
    default_location: str      # where the source goes when the Dockerfile never fetches it
    proof_file: str            # the file in the image holding the full SHA
    build_arg: str             # the build arg carrying the SHA ("SGLANG_COMMIT")
    dockerfile_candidates: tuple[str, ...]
    # Where the package lives in the tree, when that is not <source_subdir>/<import_name>: "src/click" for
    # a src layout (pyproject.toml at the root), "lib/pkg" for a flat layout with several packages.
    package_dir: str = ""
    editable_required: bool = True   # False: images install a built wheel; compare the installed files
    import_from_workdir: bool = False  # import as the image's entrypoint would: from its WORKDIR
    fixes: tuple[str, ...] = ()      # context fixes applied unless a run turns them off
    generated_files: tuple[str, ...] = ()  # package files a build writes (e.g. _version.py), not compared
    build_products: tuple[str, ...] = ()   # compiled files a build adds to the package (globs), e.g. "*.so"
    check_modules: tuple[str, ...] = ()    # submodules imported too; each must load from the checked copy
    # Smoke checks, in the verification container (no GPU, no network): deep imports (a module of the
    # project the commit's tree lacks is skipped, any other one checked when the image has it) and
    # commands that must exit 0 in time (split into words like a shell would, never run by one).
    smoke_imports: tuple[str, ...] = ()
    smoke_commands: tuple[str, ...] = ()
    # --serve-check: the server (`{model}` and `{port}` replaced word by word), its port, the path that
    # answers 200 once it is ready, and one tiny POST (none when the path is empty; `{model}` replaced).
    serve_command: str = ""
    serve_port: int = 0
    serve_health_path: str = "/health"
    serve_request_path: str = ""
    serve_request_body: str = ""
    # What a changed path is, before the built-in rules ("glob=kind", first match wins; kinds in PATH_KINDS):
    # "sgl-router/*=runtime", "scripts/*=other". Runtime code a commit changes must reach its image.
    path_kinds: tuple[str, ...] = ()
    # Folders of the tree the Dockerfile may take prebuilt (a wheel from an index) that --build-changed-parts
    # builds from the commit's tree when the commit changes them: SGLang's "sgl-kernel".
    parts: tuple[str, ...] = ()
    # Submodules (paths, globs) the build does without: one that cannot be fetched is a note, not a failure.
    optional_submodules: tuple[str, ...] = ()

    @property
    def package_path(self) -> str:
        """Tree path of the importable package, compared file by file with the image."""
        return self.package_dir.strip("/") or f"{self.source_subdir}/{self.import_name}".strip("/")

    @property
    def repo_ids(self) -> tuple[str, ...]:
        """Normalised forms of the project's repository, for recognising clones of it."""
        return (normalise_repo(self.repo_url),)

    def validate(self) -> Profile:
        """Raise ConfigError naming the first value that cannot work."""
        checks = [
            (bool(re.fullmatch(r"[a-z0-9][a-z0-9._-]*", self.image_name)),
             f"image_name {self.image_name!r} is not a valid image repository name"),
            (self.import_name.isidentifier(), f"import_name {self.import_name!r} is not a Python identifier"),
            (bool(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.build_arg)),
             f"build_arg {self.build_arg!r} is not a valid ARG name"),
            (self.proof_file.startswith("/"), f"proof_file {self.proof_file!r} must be an absolute path"),
            (self.default_location.startswith("/"),
             f"default_location {self.default_location!r} must be an absolute path"),
            (not self.source_subdir.startswith("/") and ".." not in self.source_subdir.split("/"),
             f"source_subdir {self.source_subdir!r} must be a relative path inside the repository"),
            (not self.package_dir or (not self.package_dir.startswith("/") and ".." not in self.package_dir.split("/")
                                      and self.package_dir.rstrip("/").split("/")[-1] == self.import_name),
             f"package_dir {self.package_dir!r} must be a relative path inside the repository ending in the "
             f"package's folder {self.import_name!r}"),
            (bool(self.dockerfile_candidates), "dockerfile_candidates must name at least one path"),
            (bool(self.distribution), "distribution must not be empty"),
            (not set(self.fixes) - set(FIXES), f"unknown fixes {sorted(set(self.fixes) - set(FIXES))}; "
                                               f"known: {', '.join(FIXES)}"),
            (bool(re.match(r"^[a-z+]+://|^git@|^/|^\.", self.repo_url)),
             f"repo_url {self.repo_url!r} is neither a URL nor a path"),
            *self.smoke_and_serve_checks(),
            *[(bool(part) and not part.startswith("/") and ".." not in part.split("/") and "$" not in part,
               f"parts entry {part!r} must be a folder of the repository (relative, no `..`)") for part in self.parts],
            *[(bool(rule.rpartition("=")[0]) and rule.rpartition("=")[2] in PATH_KINDS,
               f"path_kinds entry {rule!r} is not GLOB=KIND with KIND one of {', '.join(PATH_KINDS)}")
              for rule in self.path_kinds],
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"profile {self.name!r}: {message}")
        return self

    def smoke_and_serve_checks(self) -> list[tuple[bool, str]]:
        bad_modules = [m for m in self.smoke_imports if not all(p.isidentifier() for p in m.split("."))]
        bad_commands = [c for c in self.smoke_commands if not command_words(c)]
        return [
            (not bad_modules, f"smoke_imports {bad_modules} are not dotted module names"),
            (not bad_commands, f"smoke_commands {bad_commands} are empty or not closed (quotes)"),
            (not self.serve_command or bool(command_words(self.serve_command)),
             f"serve_command {self.serve_command!r} is not closed (quotes)"),
            (not self.serve_command or 0 < self.serve_port < 65536,
             f"serve_port {self.serve_port} must be a TCP port (1-65535) when serve_command is set"),
            (all(p.startswith("/") for p in (self.serve_health_path, self.serve_request_path) if p),
             "serve_health_path and serve_request_path must start with /"),
            (not self.serve_request_path or valid_json(self.serve_request_body.replace("{model}", "m")),
             f"serve_request_body {self.serve_request_body!r} is not JSON"),
        ]


def command_words(command: str) -> list[str]:
    """A command's words as a POSIX shell would split them (no shell ever runs it); [] when unclosed."""
    try:
        return shlex.split(command)
    except ValueError:
        return []


def valid_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def normalise_repo(url: str) -> str:
    """`git@github.com:Org/Repo.git`, `https://github.com/org/repo/` -> `github.com/org/repo`."""
    text = url.strip()
    text = re.sub(r"^[a-z+]+://", "", text)           # scheme
    text = re.sub(r"^[^@/]+@", "", text)                # user@ (also credentials)
    text = re.sub(r"^([^/:]+):(?!\d)", r"\1/", text)    # scp-like host:path
    text = re.sub(r"^([^/:]+):\d+/", r"\1/", text)      # host:port/
    text = text.rstrip("/")
    text = re.sub(r"\.git$", "", text)
    host, _, path = text.partition("/")
    return f"{host.lower()}/{path}".lower() if path else host.lower()


SGLANG = Profile(
    name="sglang",
    repo_url="https://github.com/sgl-project/sglang.git",
    image_name="nvidia-sglang-docker",
    distribution="sglang",
    import_name="sglang",
    source_subdir="python",
    default_location="/sgl-workspace/sglang",
    proof_file="/opt/sglang_commit.txt",
    build_arg="SGLANG_COMMIT",
    dockerfile_candidates=("docker/Dockerfile", "Dockerfile"),
    fixes=("dockerfile_syntax", "no_git_mount"),
    parts=("sgl-kernel",),
    smoke_imports=("sglang.launch_server", "sglang.srt.server_args", "sglang.srt.entrypoints.http_server",
                   "sglang.srt.server", "sglang.srt.managers.scheduler", "sglang.srt.managers.tp_worker",
                   "sglang.srt.model_executor.model_runner", "sgl_kernel", "flashinfer"),
    smoke_commands=("python3 -m sglang.launch_server --help",),
    serve_command="python3 -m sglang.launch_server --model-path {model} --host 0.0.0.0 --port {port}",
    serve_port=30000,
    serve_request_path="/generate",
    serve_request_body='{"text": "The capital of France is", "sampling_params": {"max_new_tokens": 1}}',
)

VLLM = Profile(
    name="vllm",
    repo_url="https://github.com/vllm-project/vllm.git",
    image_name="nvidia-vllm-docker",
    distribution="vllm",
    import_name="vllm",
    source_subdir="",
    default_location="/vllm-workspace",
    proof_file="/opt/vllm_commit.txt",
    build_arg="VLLM_COMMIT",
    dockerfile_candidates=("docker/Dockerfile", "Dockerfile"),
    editable_required=False,
    import_from_workdir=True,
    fixes=FIXES,
    generated_files=("_version.py",),
    build_products=("*.so",),
    smoke_imports=("vllm.entrypoints.openai.api_server", "vllm.engine.arg_utils", "vllm.engine.llm_engine",
                   "vllm.v1.engine.core", "vllm.worker.model_runner", "vllm._C", "vllm._moe_C", "flashinfer"),
    smoke_commands=("python3 -m vllm.entrypoints.openai.api_server --help",),
    serve_command="python3 -m vllm.entrypoints.openai.api_server --model {model} --host 0.0.0.0 --port {port}",
    serve_port=8000,
    serve_request_path="/v1/completions",
    serve_request_body='{"model": "{model}", "prompt": "The capital of France is", "max_tokens": 1}',
)

BUILTIN_PROFILES = {SGLANG.name: SGLANG, VLLM.name: VLLM}


def builtin_profile(name: str) -> Profile:
    try:
        return BUILTIN_PROFILES[name]
    except KeyError:
        known = ", ".join(sorted(BUILTIN_PROFILES))
        raise ConfigError(f"unknown project {name!r}; built in: {known}") from None


# What a `base` profile does not pass on to a project with another import name: checks of its own modules.
OWN_CHECKS = ("check_modules", "smoke_imports", "smoke_commands", "serve_command", "serve_port", "serve_health_path",
              "serve_request_path", "serve_request_body", "path_kinds", "parts",
              "optional_submodules")
PROFILE_DEFAULTS = {f.name: f.default for f in dataclasses.fields(Profile) if f.default is not dataclasses.MISSING}


def load_profile_file(path: Path) -> Profile:
    """A profile from TOML: top-level keys are Profile fields; `base = "sglang"` starts from a built-in."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"profile file {path}: {e}") from e
    base = builtin_profile(str(data.pop("base"))) if "base" in data else None
    if base is not None and data.get("import_name", base.import_name) != base.import_name:
        base = dataclasses.replace(base, **{name: PROFILE_DEFAULTS[name] for name in OWN_CHECKS})
    fields = {f.name: f for f in dataclasses.fields(Profile)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"profile file {path}: unknown keys {unknown}; known: {', '.join(fields)}")
    values = dataclasses.asdict(base) if base else {}
    for key, value in data.items():
        values[key] = _checked(path, key, value, fields[key].type)
    missing = sorted(set(fields) - set(values) - {f.name for f in fields.values()
                                                  if f.default is not dataclasses.MISSING})
    if missing:
        raise ConfigError(f"profile file {path}: missing keys {missing}")
    return Profile(**values).validate()


def _checked(path: Path, key: str, value: object, annotation: object) -> object:
    if "tuple" in str(annotation):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"profile file {path}: {key} must be a list of strings")
        return tuple(value)
    wanted = bool if "bool" in str(annotation) else int if str(annotation) == "int" else str
    if not isinstance(value, wanted) or isinstance(value, bool) is not (wanted is bool):
        kind = {bool: "a bool", int: "an integer", str: "a string"}[wanted]
        raise ConfigError(f"profile file {path}: {key} must be {kind}, got {value!r}")
    return value


def choose_profile(options: dict) -> Profile:
    """--profile-file, else --project (default sglang)."""
    if options.get("profile_file"):
        if options.get("project"):
            raise ConfigError("give --project or --profile-file, not both")
        return load_profile_file(Path(options["profile_file"]))
    return builtin_profile(options.get("project") or "sglang").validate()


def choose_fixes(profile: Profile, enable: list[str] | None, disable: list[str] | None) -> frozenset[str]:
    """The profile's fixes and those always on, plus --enable-fix, minus --disable-fix (names checked)."""
    for name in [*(enable or []), *(disable or [])]:
        if name not in FIXES:
            raise ConfigError(f"unknown fix {name!r}; known: {', '.join(FIXES)}")
    return (frozenset(profile.fixes) | ALWAYS_ON | frozenset(enable or [])) - frozenset(disable or [])
