"""What a commit's build configuration says, read statically: versioning from git (or why not), the files the
build writes, the compiled modules it declares; real released configurations (SGLang of 2025 and of today,
attrs with hatch-vcs, requests) and a table of every form the reader knows."""
from __future__ import annotations

import pytest

from helpers.source.build_config import read_build_config

SCM = '[build-system]\nrequires = ["setuptools", "setuptools-scm"]\n[project]\nname = "p"\ndynamic = ["version"]\n'


def config(files: dict[str, str], project_dir: str = "", tree: tuple[str, ...] = ()):
    return read_build_config(files.get, project_dir, lambda: tree)


@pytest.mark.parametrize("files, tool, written, why", [
    ({"pyproject.toml": SCM + '[tool.setuptools_scm]\nversion_file = "p/_version.py"\n'},
     "setuptools-scm", ("p/_version.py",), ""),
    ({"pyproject.toml": SCM + '[tool.setuptools_scm]\nwrite_to = "src/p/_v.py"\n'},
     "setuptools-scm", ("src/p/_v.py",), ""),
    ({"pyproject.toml": SCM}, "setuptools-scm", (), ""),
    ({"pyproject.toml": '[project]\nname = "p"\ndynamic = ["version"]\n[tool.hatch.version]\nsource = "vcs"\n'
                        '[tool.hatch.build.hooks.vcs]\nversion-file = "src/p/_version.py"\n'},
     "hatch-vcs", ("src/p/_version.py",), ""),
    ({"setup.py": 'from setuptools import setup\nsetup(name="p", use_scm_version={"write_to": "p/version.txt"})\n'},
     "setuptools-scm", ("p/version.txt",), ""),
    ({"setup.py": 'from setuptools import setup\nsetup(name="p", use_scm_version=True)\n'}, "setuptools-scm", (), ""),
    ({"pyproject.toml": '[project]\nname = "p"\nversion = "1.2.3"\n'}, "", (), "[project] version = '1.2.3'"),
    ({"pyproject.toml": '[project]\nname = "p"\ndynamic = ["version"]\n[tool.setuptools.dynamic]\n'
                        'version = {attr = "p.__version__"}\n'}, "", (), "[tool.setuptools.dynamic] version"),
    ({"pyproject.toml": '[project]\nname = "p"\ndynamic = ["version"]\n[tool.pdm.version]\nsource = "scm"\n'},
     "", (), "the harness does not compute"),
    ({"setup.cfg": "[metadata]\nname = p\nversion = attr: p.VERSION\n"}, "", (), "setup.cfg [metadata] version"),
    ({"setup.py": 'setup(name="p", version="0.1")\n'}, "", (), "setup(version='0.1')"),
    ({}, "", (), "no pyproject.toml, setup.py or setup.cfg"),
], ids=["version_file", "write_to", "requires-dynamic", "hatch-vcs", "setup.py-dict", "setup.py-true", "static",
        "attr", "pdm-scm", "setup.cfg", "setup.py-version", "nothing"])
def test_versioning_is_read_from_the_configuration(files, tool, written, why):
    versioning = config(files).versioning
    assert versioning.tool == tool
    assert versioning.version_files == written
    assert why in versioning.why


def test_a_project_folder_and_its_root_place_the_files_in_the_tree():
    pyproject = SCM + '[tool.setuptools_scm]\nroot = ".."\nversion_file = "p/_version.py"\nwrite_to = "python/p/w.py"\n'
    versioning = config({"python/pyproject.toml": pyproject}, "python").versioning
    assert versioning.version_files == ("python/p/_version.py", "python/p/w.py")
    assert versioning.options["root"] == ".."


@pytest.mark.parametrize("files, products, unread", [
    ({"setup.py": 'from setuptools import Extension, setup\nsetup(ext_modules=[Extension("p._speed", ["p/_speed.c"]), '
                  'Extension(name="p.sub._x", sources=[])])\n'},
     {"p._speed", "p.sub._x"}, ""),
    ({"setup.py": 'from setuptools_rust import RustExtension\nsetup(rust_extensions=[RustExtension("p._rs", '
                  'path="Cargo.toml")])\n'}, {"p._rs"}, ""),
    ({"setup.py": 'from torch.utils.cpp_extension import CUDAExtension\nsetup(ext_modules=[CUDAExtension('
                  'name=f"p.{NAME}", sources=[])])\n'}, set(), "names its module with an expression"),
    ({"setup.py": 'setup(ext_modules=make_modules())\n'}, set(), "names no module"),
    ({"setup.py": 'from Cython.Build import cythonize\nsetup(ext_modules=cythonize(["p/*.pyx"]))\n'},
     {"p.fast", "p.faster"}, ""),
    ({"pyproject.toml": '[tool.setuptools]\next-modules = [{name = "p._c", sources = ["p/_c.c"]}]\n'}, {"p._c"}, ""),
    ({"pyproject.toml": '[[tool.setuptools-rust.ext-modules]]\ntarget = "p.srt._server"\npath = "Cargo.toml"\n'},
     {"p.srt._server"}, ""),
    ({"pyproject.toml": '[build-system]\nbuild-backend = "maturin"\n[tool.maturin]\nmodule-name = "p._core"\n'},
     {"p._core"}, ""),
    ({"pyproject.toml": '[build-system]\nbuild-backend = "maturin"\n', "Cargo.toml": '[lib]\nname = "fast-p"\n'},
     {"fast_p.fast_p", "fast_p"}, ""),
    ({"pyproject.toml": '[build-system]\nbuild-backend = "scikit_build_core.build"\n'}, set(), "not read statically"),
], ids=["setuptools", "RustExtension", "expression", "opaque", "cython", "pyproject-ext-modules", "setuptools-rust",
        "maturin", "maturin-crate", "scikit-build-core"])
def test_compiled_products_are_exactly_those_declared(files, products, unread):
    read = config(files, tree=("p/fast.pyx", "p/faster.pyx", "p/slow.py", "q/other.pyx"))
    assert {p.module for p in read.products} == products
    assert unread in " ".join(read.unread)
    if not unread:
        assert not read.unread


def test_products_inside_the_package_are_module_paths():
    read = config({"pyproject.toml": '[[tool.setuptools-rust.ext-modules]]\ntarget = "sglang.srt.rust._server"\n'
                                     '[[tool.setuptools-rust.ext-modules]]\ntarget = "other._x"\n'})
    assert read.product_paths("sglang") == {"srt/rust/_server"}
    assert "compiled: sglang.srt.rust._server ([tool.setuptools-rust] ext-modules" in "\n".join(read.lines()).replace(
        "pyproject.toml ", "")


def test_a_broken_configuration_is_said_not_guessed():
    read = config({"pyproject.toml": "[project\n", "setup.py": "setup(\n"})
    assert not read.versioning.from_git
    assert any("not valid TOML" in u for u in read.unread) and any("does not parse" in u for u in read.unread)


COMPILED = {"markupsafe": ["markupsafe._speedups"], "msgpack": ["msgpack._cmsgpack"]}   # as their setup.py says


@pytest.mark.e2e
@pytest.mark.parametrize("name, release, tool, files", [
    ("sglang", "0.4.3", "", ()),
    ("sglang", "0.5.2", "", ()),
    ("sglang", "0.5.7", "setuptools-scm", ("python/sglang/_version.py",)),
    ("sglang", "0.5.10.post1", "setuptools-scm", ("python/sglang/_version.py",)),
    ("attrs", "24.3.0", "hatch-vcs", ()),
    ("requests", "2.32.3", "", ()),
    ("markupsafe", "3.0.2", "", ()),
    ("msgpack", "1.1.0", "", ()),
])
def test_real_released_configurations(tmp_path, name, release, tool, files):
    """Released source from the package index, laid out as the project's repository lays it out."""
    from testkit import corpus
    corpus.unpack_sdist(corpus.sdist(name, release), tmp_path)
    subdir = "python" if name == "sglang" else ""

    def read(path: str) -> str | None:
        local = tmp_path / path[len(subdir):].lstrip("/")
        return local.read_text() if local.is_file() else None
    found = read_build_config(read, subdir)
    assert found.versioning.tool == tool, found.lines()
    assert found.versioning.version_files == files
    assert [p.module for p in found.products] == COMPILED.get(name, []) and not found.unread
    if not tool:
        assert found.versioning.why
