"""Fixes of the context's dependency files."""
import pytest
from packaging.specifiers import SpecifierSet

from helpers.source.context_fixes import (
    apply_context_fixes,
    constrain_outlines,
    fix_pyproject_text,
    fix_requirement,
    fix_requirements_text,
    is_requirements_file,
)

BOTH = {"drop_sparse_deps", "pin_outlines"}


@pytest.mark.parametrize("text, expected", [
    ("outlines == 0.0.46", "outlines<0.0.43"),
    ("outlines", "outlines<0.0.43"),
    ("outlines>=0.0.46", "outlines<0.0.43"),
    ("outlines>=0.0.40", "outlines<0.0.43,>=0.0.40"),
    ("outlines~=0.0.40", "outlines<0.0.43,>=0.0.40"),
    ("outlines != 0.0.42", "outlines!=0.0.42,<0.0.43"),
    ('outlines[serve]>=0.0.34 ; python_version > "3.8"', 'outlines[serve]<0.0.43,>=0.0.34; python_version > "3.8"'),
    ("Outlines==0.0.99", "Outlines<0.0.43"),
    # already below the bound: kept exactly as written, never `outlines<0.0.43==0.0.41`
    ("outlines==0.0.41", "outlines==0.0.41"),
    ("outlines < 0.0.40", "outlines < 0.0.40"),
    ("outlines<0.0.43", "outlines<0.0.43"),
    ("sparsezoo", None),
    ("sparseml[torch]>=1.5; platform_system=='Linux'", None),
    ("SparseZoo==1.0", None),
    ("torch == 2.3.0", "torch == 2.3.0"),
    ("outlines-core==0.1", "outlines-core==0.1"),
    ("not a requirement ;;", "not a requirement ;;"),
])
def test_requirement_fixes(text, expected):
    assert fix_requirement(text, BOTH) == expected


def test_each_fix_is_switchable():
    assert fix_requirement("sparsezoo", {"pin_outlines"}) == "sparsezoo"
    assert fix_requirement("outlines", {"drop_sparse_deps"}) == "outlines"


@pytest.mark.parametrize("spec", ["", ">=0.0.1", "==0.0.50", "~=0.0.44", ">0.0.43,<0.1"])
def test_constrained_outlines_never_admits_0_0_43_or_later(spec):
    result = constrain_outlines(SpecifierSet(spec))
    assert not any(result.contains(v) for v in ("0.0.43", "0.0.46", "0.1.0", "1.0"))


def test_requirements_file_keeps_layout_comments_and_options():
    text = ("# deps\n-r requirements-common.txt\n--extra-index-url https://x\ntorch == 2.3.0  # torch\n"
            "sparsezoo\noutlines >= 0.0.43 # structured output\n\n  ray>=2.9\r\n")
    assert fix_requirements_text(text, BOTH) == (
        "# deps\n-r requirements-common.txt\n--extra-index-url https://x\ntorch == 2.3.0  # torch\n"
        "outlines<0.0.43 # structured output\n\n  ray>=2.9\r\n")


def test_pyproject_dependency_arrays_are_fixed_and_nothing_else():
    text = ('[project]\nname = "x"\ndependencies = [\n    "torch",\n    "sparseml>=1",  # why\n'
            '    "outlines==0.0.46",\n]\n\n[project.optional-dependencies]\nall = ["sparsezoo", "outlines"]\n'
            'none = ["sparsezoo"]\n\n[tool.other]\ndependencies = ["sparsezoo"]\n')
    assert fix_pyproject_text(text, BOTH) == (
        '[project]\nname = "x"\ndependencies = [\n    "torch",\n    "outlines<0.0.43",\n]\n\n'
        '[project.optional-dependencies]\nall = [ "outlines<0.0.43"]\nnone = []\n\n'
        '[tool.other]\ndependencies = ["sparsezoo"]\n')


@pytest.mark.parametrize("path, expected", [
    ("requirements.txt", True), ("requirements-cuda.txt", True), ("requirements/common.txt", True),
    ("python/requirements_test.txt", True), ("docs/requirements/x.txt", True), ("notes.txt", False),
    ("requirements.in", False),
])
def test_which_files_are_requirement_lists(path, expected):
    assert is_requirements_file(path) is expected


def test_apply_context_fixes_patches_files_and_records_every_change(tmp_path):
    (tmp_path / "requirements").mkdir()
    (tmp_path / "requirements-common.txt").write_text("sparsezoo\noutlines==0.0.46\ntorch\n")
    (tmp_path / "requirements" / "dev.txt").write_text("pytest\n")
    (tmp_path / "pyproject.toml").write_text('[project]\ndependencies = ["sparseml"]\n')
    patched, applied = apply_context_fixes(tmp_path, BOTH)
    assert (tmp_path / "requirements-common.txt").read_text() == "outlines<0.0.43\ntorch\n"
    assert patched == {"pyproject.toml": b"[project]\ndependencies = []\n",
                       "requirements-common.txt": b"outlines<0.0.43\ntorch\n"}
    assert [str(a) for a in applied] == [
        'drop_sparse_deps: pyproject.toml: dependencies = ["sparseml"] -> dependencies = []',
        "drop_sparse_deps: requirements-common.txt: sparsezoo -> (removed)",
        "pin_outlines: requirements-common.txt: outlines==0.0.46 -> outlines<0.0.43"]
    assert apply_context_fixes(tmp_path, set()) == ({}, [])
