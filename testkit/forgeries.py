"""Forged images: every way we know of making an image whose labels, proof file and files look like the
commit's while the code Python runs is not, as Dockerfile lines to build FROM a genuine image.

A `Target` says where the genuine image keeps the package, so the same forgeries apply to the tests'
miniature and to real released code (tests/test_verify_images.py, tests/test_corpus.py)."""
from __future__ import annotations

import io
import subprocess
import sysconfig
import tarfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import docker

SITE = "/usr/local/lib/python3.11/dist-packages"
SITECUSTOMIZE = "/usr/lib/python3.11/sitecustomize.py"      # Debian's own, replaced by the forgeries


@dataclass(frozen=True)
class Target:
    """Where a genuine image holds its package, and two of the package's modules the forgeries use."""

    source: str         # the folder holding the package folder (an editable install's source)
    package: str        # the import name
    small: str          # a small module the import loads ("version.py"), forged by bytecode and an extension
    small_text: str     # its genuine text (a timestamp .pyc must claim its size)
    loaded: str         # a module the import loads, rewritten by the content forgeries ("srt/scheduler.py")
    function: str       # a function `import <package>` leaves in a loaded module, patched after load
    function_module: str    # that module's dotted name

    @property
    def pkg(self) -> str:
        return f"{self.source}/{self.package}"

    @property
    def small_pyc(self) -> str:
        folder, _, name = self.small.rpartition("/")
        return f"{self.pkg}/{folder + '/' if folder else ''}__pycache__/{name[:-3]}.cpython-311.pyc"

    @property
    def small_extension(self) -> str:
        return f"{self.pkg}/{self.small[:-3]}.cpython-311-x86_64-linux-gnu.so"


def forged_text(target: Target) -> str:
    """A forged version of the small module with exactly its genuine size (a timestamp .pyc records it)."""
    text = '__version__ = "6.6.6"\n'
    pad = len(target.small_text.encode()) - len(text.encode()) - 2
    if pad < 0:
        raise ValueError(f"{target.small} is too small to forge at its own size")
    return text + "#" + "x" * pad + "\n"


def escape(text: str) -> str:
    return text.encode("unicode_escape").decode().replace("'", "\\047")


def patch_hook(target: Target) -> str:
    """A .pth-started import hook that patches a function of a module after it loads."""
    return f"""\
def install():
    import sys, importlib.machinery as machinery
    class Patcher:
        def find_spec(self, name, path=None, target=None):
            if name != {target.function_module!r}:
                return None
            spec = machinery.PathFinder.find_spec(name, path)
            run = spec.loader.exec_module
            def exec_module(module):
                run(module)
                setattr(module, {target.function!r}, lambda *a, **k: "patched")
            spec.loader.exec_module = exec_module
            return spec
    sys.meta_path.insert(0, Patcher())
install()
"""


@dataclass(frozen=True)
class Steps:
    """The shell steps the forgeries are made of, for one target."""

    evil_copy: str          # a copy with a rewritten module whose __init__ claims the genuine path
    unchecked: str          # an unchecked-hash .pyc of forged code beside the untouched small module
    timestamp: str          # a timestamp .pyc of forged code with the small module's mtime and size
    sourceless: str         # a sourceless copy, first on the path through a .pth line
    rewrite: str            # the genuine copy's loaded module rewritten
    rewriter: str           # sitecustomize code that rewrites it at every start, never naming the package


def steps(target: Target) -> Steps:
    pkg = target.pkg
    rewrite = f"echo 'BATCH = 999' > {{pkg}}/{target.loaded}"
    compile_to = ("python3 -c \"import py_compile; py_compile.compile('/tmp/forged.py', cfile='{cfile}', "
                  "dfile='{dfile}'{mode})\"")
    forged = escape(forged_text(target))
    return Steps(
        evil_copy=(f"mkdir -p /opt/evil && cp -a {pkg} /opt/evil/ && "
                   + rewrite.format(pkg=f"/opt/evil/{target.package}")
                   + f" && printf '__file__ = \"{pkg}/__init__.py\"\\n' >> /opt/evil/{target.package}/__init__.py"),
        unchecked=(f"printf '{forged}' > /tmp/forged.py && " + compile_to.format(
            cfile=target.small_pyc, dfile=f"{pkg}/{target.small}",
            mode=", invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH")),
        timestamp=(f"printf '{forged}' > /tmp/forged.py && touch -r {pkg}/{target.small} /tmp/forged.py && "
                   + compile_to.format(cfile=target.small_pyc, dfile=f"{pkg}/{target.small}", mode="")),
        sourceless=(f"mkdir -p /opt/sl && cp -a {pkg} /opt/sl/ && " + rewrite.format(pkg=f"/opt/sl/{target.package}")
                    + f" && python3 -m compileall -q -b /opt/sl/{target.package} && find /opt/sl -name '*.py' -delete"
                    + f" && echo /opt/sl > {SITE}/00-sl.pth"),
        rewrite=rewrite.format(pkg=pkg),
        rewriter=(f"open('{target.source}/' + '{target.package[:2]}' + '{target.package[2:]}/{target.loaded}', 'w')"
                  ".write('BATCH = 999\\n')\n"))


def forgeries(target: Target) -> dict[str, tuple[str, dict[str, bytes | str], str]]:
    """name -> (Dockerfile lines after FROM <genuine>, extra context files, the category it must fail with)."""
    s, mismatch = steps(target), "verify_source_mismatch"
    with_sitecustomize = f"RUN {s.rewrite} && rm {SITECUSTOMIZE}\nCOPY sitecustomize.py {SITECUSTOMIZE}\n"
    return {
        "__file__ set to the genuine path, code from PYTHONPATH": (
            f"RUN {s.evil_copy}\nENV PYTHONPATH=/opt/evil\n", {}, mismatch),
        "__file__ set to the genuine path, code from a .pth entry": (
            f"RUN {s.evil_copy} && echo /opt/evil > {SITE}/00-evil.pth\n", {}, mismatch),
        "sitecustomize prints a fake facts line at exit": (with_sitecustomize, {
            "sitecustomize.py": "import atexit\natexit.register(lambda: print('HARNESS-FACTS:{}'))\n"}, mismatch),
        "sitecustomize prints a fake facts line at start": (
            with_sitecustomize, {"sitecustomize.py": "print('HARNESS-FACTS:{}', flush=True)\n"}, mismatch),
        "sitecustomize rewrites the package's files at every start": (
            f"RUN rm {SITECUSTOMIZE}\nCOPY sitecustomize.py {SITECUSTOMIZE}\n", {"sitecustomize.py": s.rewriter},
            mismatch),
        "a .pth import hook patches a function after it loads": (
            "COPY patch.py /opt/patch.py\n"
            f"RUN echo \"import sys; exec(open('/opt/patch.py').read())\" > {SITE}/00-patch.pth\n",
            {"patch.py": patch_hook(target)}, mismatch),
        "an unchecked-hash .pyc beside an untouched .py": (f"RUN {s.unchecked}\n", {}, mismatch),
        "a timestamp .pyc with the source's mtime and size": (f"RUN {s.timestamp}\n", {}, mismatch),
        "a sourceless .pyc package first on the path": (f"RUN {s.sourceless}\n", {}, mismatch),
        # the copy is genuine but for its bytecode, and only a start-up hook's sys.path edit leads to it
        "a .pth line puts a copy with forged bytecode first on the path": (
            f"RUN mkdir -p /opt/cp && cp -a {target.pkg} /opt/cp/ && "
            + s.unchecked.replace(f"{target.pkg}/", f"/opt/cp/{target.package}/")
            + f" && echo \"import sys; sys.path.insert(0, '/opt/cp')\" > {SITE}/00-cp.pth\n", {}, mismatch),
        "an extension module shadows the source module": (
            f"COPY forged.so {target.small_extension}\n", {"forged.so": b""}, mismatch),
    }


# The forgeries by name, for parametrising tests before a target's texts are known.
NAMES = tuple(forgeries(Target("/src", "pkg", "small.py", "#" * 64, "loaded.py", "function", "pkg.module")))


def extension_module(tmp: Path, name: str) -> bytes:
    """A real CPython extension module `name` (defines __version__ = "6.6.6"), compiled here."""
    source = tmp / f"{name}.c"
    source.write_text(f'#include <Python.h>\nstatic struct PyModuleDef m = {{PyModuleDef_HEAD_INIT, "{name}"}};\n'
                      f'PyMODINIT_FUNC PyInit_{name}(void) {{ PyObject *mod = PyModule_Create(&m);\n'
                      '  PyModule_AddStringConstant(mod, "__version__", "6.6.6"); return mod; }\n')
    target = tmp / f"{name}.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-I", sysconfig.get_paths()["include"], str(source), "-o", str(target)],
                   check=True, capture_output=True)
    return target.read_bytes()


def build(client: docker.DockerClient, dockerfile: str, files: dict[str, bytes | str] | None = None,
          repository: str = "verify-images") -> str:
    """An image built by the engine from a Dockerfile and files held in memory; its new tag."""
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        for name, content in {"Dockerfile": dockerfile, **(files or {})}.items():
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    context.seek(0)
    ref = f"{repository}:{uuid.uuid4().hex[:10]}"
    client.images.build(fileobj=context, custom_context=True, tag=ref, rm=True, forcerm=True)
    return ref
