"""Kinds: what a path of the tree is (runtime code, test, docs, ci, benchmark, other), by the profile's own
patterns first, then the built-in rules: only runtime code a commit changes must reach its image."""
from __future__ import annotations

import fnmatch
import posixpath
import re

from helpers.profiles import Profile

CI_FOLDERS = {".github", ".gitlab", ".buildkite", ".circleci", ".ci", ".devcontainer", ".jenkins", ".azure-pipelines"}
CI_FILES = {".gitlab-ci.yml", ".travis.yml", ".pre-commit-config.yaml", "azure-pipelines.yml", "Jenkinsfile",
            ".gitignore", ".gitattributes", "CODEOWNERS", ".clang-format", ".clang-tidy", ".flake8", ".isort.cfg",
            ".codespellrc", ".editorconfig", ".readthedocs.yaml", ".readthedocs.yml", ".coveragerc", ".yamllint"}
TEST_FOLDERS = {"test", "tests", "testing", "unittest", "unittests", "e2e"}
TEST_FILES = re.compile(r"test_.*\.py|.*_tests?\.py|conftest\.py|pytest\.ini|tox\.ini")
DOCS_FOLDERS = {"docs", "doc", "documentation", "examples", "example", "assets"}
DOCS_FILES = re.compile(r".*\.(md|rst|adoc|txt)|(LICENSE|COPYING|NOTICE|AUTHORS|CHANGELOG|CONTRIBUTING)(\..*)?",
                        re.IGNORECASE)
BENCHMARK_FOLDERS = {"benchmark", "benchmarks", "bench"}
CODE_SUFFIXES = {".py", ".pyx", ".pxd", ".pyi", ".c", ".cc", ".cpp", ".cxx", ".cu", ".cuh", ".h", ".hh", ".hpp",
                 ".hxx", ".inl", ".inc", ".s", ".S", ".metal", ".rs", ".go", ".cmake", ".so", ".ptx", ".cubin"}
BUILD_FILES = re.compile(r"setup\.py|setup\.cfg|pyproject\.toml|CMakeLists\.txt|Makefile|meson\.build|"
                         r"MANIFEST\.in|build\.sh|BUILD(\.bazel)?|WORKSPACE|Cargo\.toml|requirements.*\.(txt|in)")
# What a build compiles (the compiled part a prebuilt install takes from a wheel instead).
COMPILED_SUFFIXES = CODE_SUFFIXES - {".py", ".pyi", ".go", ".so"}
# A Dockerfile is how an image is made, not code it runs: the one in use is *built*, any other is other.
DOCKERFILES = re.compile(r"Dockerfile.*|.*\.dockerfile|docker-compose.*\.ya?ml")


def kind_of(path: str, profile: Profile) -> str:
    """What a path is: runtime code, test, docs, ci, benchmark or other (the profile's patterns first)."""
    for rule in profile.path_kinds:
        pattern, _, kind = rule.rpartition("=")
        if fnmatch.fnmatchcase(path, pattern):
            return kind
    folders, name = path.split("/")[:-1], posixpath.basename(path)
    if folders[:1] and folders[0] in CI_FOLDERS or not folders and name in CI_FILES:
        return "ci"
    if TEST_FOLDERS & set(folders) or TEST_FILES.fullmatch(name):
        return "test"
    if BENCHMARK_FOLDERS & set(folders):
        return "benchmark"
    if DOCKERFILES.fullmatch(name):
        return "other"
    if BUILD_FILES.fullmatch(name) or posixpath.splitext(name)[1] in CODE_SUFFIXES:
        return "runtime" if not DOCS_FOLDERS & set(folders) else "docs"
    if DOCS_FOLDERS & set(folders) or DOCS_FILES.fullmatch(name):
        return "docs"
    return "other"
