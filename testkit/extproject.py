"""A small real project with a C extension module inside its package, declared by its own `setup.py`
(setuptools `Extension`), as a git repository with history: built by the image's compiler (harness-dev),
installed editable (the module compiled into the source tree) or as a wheel."""
from __future__ import annotations

from pathlib import Path

from testkit.corpus import PIP, Project
from testkit.minirepo import MiniRepo, git

NAME = "fastsum"
SPEEDUPS = """\
#include <Python.h>
static PyObject *total(PyObject *self, PyObject *args) {
    long a, b;
    if (!PyArg_ParseTuple(args, "ll", &a, &b)) return NULL;
    return PyLong_FromLong(a + b);
}
static PyMethodDef methods[] = {{"total", total, METH_VARARGS, "a + b"}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_speedups", NULL, -1, methods};
PyMODINIT_FUNC PyInit__speedups(void) { return PyModule_Create(&module); }
"""
SETUP = """\
from setuptools import Extension, setup

setup(ext_modules=[Extension("fastsum._speedups", ["fastsum/_speedups.c"])])
"""
PYPROJECT = """\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "fastsum"
version = "1.0.0"

[tool.setuptools]
packages = ["fastsum"]
"""
INIT = 'from fastsum._speedups import total\n\n__all__ = ["total"]\n'
PROJECT = Project(NAME, NAME, ("1.0.0",), NAME)


def dockerfile(editable: bool) -> str:
    target = f"/workspace/{NAME}"
    return (f"FROM corpus.local/{NAME}:base\nWORKDIR /workspace\n"
            f"RUN git clone {PROJECT.url} {target} && {PIP} {'-e ' if editable else ''}{target}\n")


def make_repo(path: Path, editable: bool) -> MiniRepo:
    """Two commits: the extension, then a change to its Python code (a parent and its child)."""
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    repo = MiniRepo(path)
    files = {"setup.py": SETUP, "pyproject.toml": PYPROJECT, f"{NAME}/__init__.py": INIT,
             f"{NAME}/_speedups.c": SPEEDUPS, "Dockerfile": dockerfile(editable)}
    repo.commit("fastsum with a C extension", files)
    repo.commit("fastsum: a helper", {**files, f"{NAME}/helpers.py": "def twice(a):\n    return total(a, a)\n",
                                       f"{NAME}/__init__.py": INIT + "from fastsum.helpers import twice  # noqa\n"})
    return repo
