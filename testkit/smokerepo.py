"""A miniature SGLang with a server and a compiled kernel package: one commit per way an image breaks
that the old tool only found on a GPU machine.

The layout follows the real project's: `python/sglang/launch_server.py` starts an HTTP server
(`/health`, `/generate`) through `sglang.srt.entrypoints.http_server`, whose scheduler imports the
kernel package `sgl_kernel` (from `sgl-kernel/python/`), a real CPython extension compiled here
with gcc. The Dockerfile copies it into site-packages after the editable install, as a kernel
wheel would land there.
"""
from __future__ import annotations

import io
import subprocess
import sysconfig
import tempfile
import uuid
import zipfile
from pathlib import Path

from testkit.minirepo import PYPROJECT, MiniRepo, git

DOCKERFILE = """\
FROM nvcr.io/nvidia/tritonserver:24.04-py3-min
ARG BUILD_TYPE=all
WORKDIR /sgl-workspace
RUN python3 -m pip --version \\
    && git clone --depth=1 https://github.com/sgl-project/sglang.git \\
    && cd sglang \\
    && python3 -m pip install --no-deps --no-build-isolation --break-system-packages -e "python[${BUILD_TYPE}]" \\
    && cp -r sgl-kernel/python/sgl_kernel /usr/local/lib/python3.11/dist-packages/
"""

LAUNCH_SERVER = '''\
"""Mini launch_server: parses the real one's arguments, loads the "model", serves /health and /generate."""
import argparse
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from sglang.srt.entrypoints.http_server import GENERATE_STATUS, HEALTH_STATUS, load_model


class Handler(BaseHTTPRequestHandler):
    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.answer(HEALTH_STATUS if self.path == "/health" else 404, {})

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        request = json.loads(self.rfile.read(length) or b"{}")
        self.answer(GENERATE_STATUS, {"text": " Paris", "prompt": request.get("text")} if GENERATE_STATUS == 200
                    else {"error": "CUDA error: an illegal memory access was encountered"})


def main():
    parser = argparse.ArgumentParser(prog="sglang.launch_server")
    parser.add_argument("--model-path", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=30000)
    args = parser.parse_args()
    load_model(args.model_path)
    print("server listening on", args.host, args.port, flush=True)
    ThreadingHTTPServer((args.host, args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
'''

HTTP_SERVER = '''\
from sglang.srt.managers.scheduler import Scheduler

HEALTH_STATUS = {health}
GENERATE_STATUS = {generate}


def load_model(path):
{load}
'''
LOADS = "    return Scheduler()\n"
LOAD_FAILS = "    raise RuntimeError('CUDA out of memory. Tried to allocate 20.00 GiB while loading ' + path)\n"

KERNEL = """\
#include <Python.h>
{declaration}
static struct PyModuleDef module = {{PyModuleDef_HEAD_INIT, "common_ops"}};
void fused_add_rmsnorm(void) {{ {call} }}
PyMODINIT_FUNC PyInit_common_ops(void) {{ return PyModule_Create(&module); }}
"""
# A symbol of another PyTorch build's libc10, as a kernel package built against it asks for it.
TORCH_SYMBOL = "_ZN3c106detail23torchInternalAssertFailEPKcS2_jS2_"


def compile_kernel(missing_symbol: str | None = None) -> bytes:
    """The kernel package's extension module, compiled with the host's gcc and Python headers; with
    `missing_symbol`, one of its functions calls a symbol nothing in the image defines."""
    declaration = f"extern void {missing_symbol}(void);" if missing_symbol else ""
    call = f"{missing_symbol}();" if missing_symbol else ""
    return compile_c(KERNEL.format(declaration=declaration, call=call))


def compile_c(text: str) -> bytes:
    """A C source compiled into an extension module with the host's gcc and Python headers."""
    with tempfile.TemporaryDirectory() as tmp:
        source, target = Path(tmp) / "common_ops.c", Path(tmp) / "common_ops.so"
        source.write_text(text)
        subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-I", sysconfig.get_paths()["include"], str(source),
                        "-o", str(target)], check=True, capture_output=True)
        return target.read_bytes()


def genuine_files() -> dict[str, str | bytes]:
    return {
        "README.md": f"mini sglang with a server {uuid.uuid4().hex}\n",
        "python/pyproject.toml": PYPROJECT,
        "python/sglang/__init__.py": "from sglang.version import __version__\n",
        "python/sglang/version.py": '__version__ = "0.0.1"\n',
        "python/sglang/launch_server.py": LAUNCH_SERVER,
        "python/sglang/srt/__init__.py": "",
        "python/sglang/srt/server_args.py": "DEFAULT_PORT = 30000\n",
        "python/sglang/srt/entrypoints/__init__.py": "",
        "python/sglang/srt/entrypoints/http_server.py": HTTP_SERVER.format(health=200, generate=200, load=LOADS),
        "python/sglang/srt/managers/__init__.py": "",
        "python/sglang/srt/managers/scheduler.py": "import sgl_kernel.common_ops\n\n\nclass Scheduler:\n"
                                                   "    BATCH = 8\n",
        "sgl-kernel/python/sgl_kernel/__init__.py": "from sgl_kernel import common_ops\n",
        "sgl-kernel/python/sgl_kernel/common_ops.so": compile_kernel(),
        "docker/Dockerfile": DOCKERFILE,
    }


def breakages() -> dict[str, dict[str, str | bytes]]:
    """name -> (files changed from the genuine commit); the name is the category the image must get."""
    return {
        "abi_mismatch": {"sgl-kernel/python/sgl_kernel/common_ops.so": compile_kernel(TORCH_SYMBOL)},
        "verify_smoke": {"python/sglang/srt/entrypoints/http_server.py":
                         "from sglang.srt.managers.io_struct import GenerateReqInput\n"
                         + HTTP_SERVER.format(health=200, generate=200, load=LOADS)},
        "server_failed_to_start": {"python/sglang/srt/entrypoints/http_server.py":
                                   HTTP_SERVER.format(health=200, generate=200, load=LOAD_FAILS)},
        "server_timeout": {"python/sglang/srt/entrypoints/http_server.py":
                           HTTP_SERVER.format(health=503, generate=200, load=LOADS)},
        "server_request_failed": {"python/sglang/srt/entrypoints/http_server.py":
                                  HTTP_SERVER.format(health=200, generate=500, load=LOADS)},
    }


def make_smoke_repo(path: Path) -> tuple[MiniRepo, dict[str, str]]:
    """The genuine commit, then one commit per breakage (each from the genuine files); the SHA of each
    by the category its image must get ("success" for the genuine one)."""
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    repo = MiniRepo(path)
    genuine = genuine_files()
    shas = {"success": repo.commit("genuine server", genuine)}
    for category, changed in breakages().items():
        shas[category] = repo.commit(f"breaks: {category}", {**genuine, **changed})
    return repo, shas


KERNEL_DOCKERFILE = """\
FROM kernels.local/base
WORKDIR /sgl-workspace
RUN python3 -m pip install --no-index --find-links /opt/wheels --break-system-packages sgl-kernel
RUN git clone --depth=1 https://github.com/sgl-project/sglang.git \\
    && cd sglang \\
    && python3 -m pip install --no-deps --no-build-isolation --break-system-packages -e "python"
"""
KERNEL_PYPROJECT = """\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "sgl-kernel"
version = "0.0.1"
"""
KERNEL_SETUP = """\
from setuptools import Extension, setup

setup(packages=["sgl_kernel"], package_dir={"": "python"},
      ext_modules=[Extension("sgl_kernel.common_ops", ["csrc/common_ops.c"])])
"""


def kernel_source(variant: int) -> str:
    """The kernel's C source; each variant compiles to a different extension."""
    return KERNEL.format(declaration=f'const char sgl_kernel_variant[] = "kernel-variant-{variant}";', call="")


def kernel_files() -> dict[str, str | bytes]:
    """A mini SGLang whose kernel package lives in `sgl-kernel/` (a C extension built by setuptools), while
    its Dockerfile installs the kernel from a prebuilt wheel, as the real ones install it from an index."""
    return {
        "README.md": f"mini sglang with kernels {uuid.uuid4().hex}\n",
        "python/pyproject.toml": PYPROJECT,
        "python/sglang/__init__.py": "from sglang.version import __version__\n",
        "python/sglang/version.py": '__version__ = "0.0.1"\n',
        "python/sglang/srt/__init__.py": "",
        "python/sglang/srt/scheduler.py": "BATCH = 8\n",
        "sgl-kernel/pyproject.toml": KERNEL_PYPROJECT,
        "sgl-kernel/setup.py": KERNEL_SETUP,
        "sgl-kernel/csrc/common_ops.c": kernel_source(1),
        "sgl-kernel/python/sgl_kernel/__init__.py": "",
        "test/test_batch.py": "def test_batch():\n    assert True\n",
        "docs/index.md": "# mini sglang\n",
        "docker/Dockerfile": KERNEL_DOCKERFILE,
    }


def kernel_wheel() -> bytes:
    """The prebuilt kernel wheel the Dockerfile installs (the first variant's extension, compiled here)."""
    extension = compile_c(kernel_source(1))
    info = "sgl_kernel-0.0.1.dist-info/"
    files = {"sgl_kernel/__init__.py": b"", "sgl_kernel/common_ops.so": extension,
             info + "METADATA": b"Metadata-Version: 2.1\nName: sgl-kernel\nVersion: 0.0.1\n",
             info + "WHEEL": b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: false\nTag: py3-none-any\n"}
    record = "".join(f"{name},,\n" for name in [*files, info + "RECORD"])
    raw = io.BytesIO()
    with zipfile.ZipFile(raw, "w") as wheel:
        for name, data in {**files, info + "RECORD": record.encode()}.items():
            wheel.writestr(name, data)
    return raw.getvalue()


def make_kernel_repo(path: Path) -> tuple[MiniRepo, dict[str, str]]:
    """The first commit, then one commit per kind of change, each on the one before: the SHA of each."""
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    repo = MiniRepo(path)
    shas = {"first": repo.commit("kernels from a wheel", kernel_files())}
    shas["kernel"] = repo.commit("faster kernel", {"sgl-kernel/csrc/common_ops.c": kernel_source(2)})
    shas["tests and docs"] = repo.commit("tests and docs", {"test/test_batch.py": "def test_batch():\n    pass\n",
                                                            "docs/index.md": "# mini sglang, documented\n"})
    shas["package"] = repo.commit("bigger batches", {"python/sglang/srt/scheduler.py": "BATCH = 16\n"})
    return repo, shas
