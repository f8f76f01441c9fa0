"""The shapes of the real SGLang and vLLM Dockerfiles, as miniatures that build offline: the project's
install inside `if`/`case` chains, a wheel installed after it, the 2025 layout (the install in the middle,
a clone and a build of another project and tool installs after it), and a multi-stage build.

Every dependency comes from a local index made inside the image (sdists of tiny packages, one per
extra, and a wheel), so pip really resolves and installs them; the source's specification asks for them
through PEP 621 dependencies, extras and self-references, as SGLang's does.
"""
from __future__ import annotations

import uuid
from pathlib import Path

from testkit.minirepo import MiniRepo, git

PYPROJECT = """\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "sglang"
version = "0.0.1"
dependencies = ["basedep==1.0"]

[project.optional-dependencies]
srt = ["srtdep==1.0", "sglang[openai]"]
openai = ["openaidep==1.0"]
all = ["sglang[srt]", "alldep>=1.0"]

[tool.setuptools.packages.find]
include = ["sglang*"]
"""

# Sdists of the dependencies and a prebuilt wheel, made in the image; a local project to clone and build.
INDEX_STEP = r"""RUN for name in basedep srtdep openaidep alldep tooldep kernel; do \
      mkdir -p /tmp/sd/$name-1.0 && cd /tmp/sd/$name-1.0 \
      && printf 'from setuptools import setup\nsetup(name="%s", version="1.0", py_modules=["%s"])\n' $name $name \
         > setup.py && printf 'NAME = "%s"\n' $name > $name.py \
      && mkdir -p /opt/index && tar -C /tmp/sd -czf /opt/index/$name-1.0.tar.gz $name-1.0 || exit 1; \
    done \
 && pip wheel --no-deps --no-build-isolation --no-index -w /opt/wheels /tmp/sd/kernel-1.0 \
 && mkdir -p /opt/deepep && cd /opt/deepep && git init -q \
 && printf 'from setuptools import setup\nsetup(name="deepep", version="1.0", py_modules=["deep_ep"])\n' > setup.py \
 && printf 'LIMIT = %s\n' "$(python3 -c 'print(sum(i * i for i in range(200000)))')" > deep_ep.py \
 && git add -A && git -c user.name=t -c user.email=t@t commit -qm deepep && rm -rf /tmp/sd
"""
PIP = "pip install --no-build-isolation --break-system-packages --no-index --find-links /opt/index"
HEAD = "FROM nvcr.io/nvidia/tritonserver:24.04-py3-min\nRUN echo {salt} > /opt/image-salt\n"

SHAPES = {
    # an if/else on the build type, each branch installing other extras
    "conditional extras": HEAD + "ARG BUILD_TYPE=srt\n" + INDEX_STEP + f"""WORKDIR /sgl-workspace
RUN git clone --depth=1 https://github.com/sgl-project/sglang.git \\
 && cd sglang \\
 && if [ "$BUILD_TYPE" = "srt" ]; then \\
      {PIP} -e "python[srt]"; \\
    else \\
      {PIP} -e "python[all]"; \\
    fi
ENV DEBIAN_FRONTEND=interactive
""",
    # a case on the CUDA version before the install, a wheel forced in after it
    "case chain with a wheel after": "ARG CUDA_VERSION=12.4.1\n" + HEAD + "ARG CUDA_VERSION\n" + INDEX_STEP + f"""\
WORKDIR /sgl-workspace
RUN pip --version \\
 && git clone --depth=1 https://github.com/sgl-project/sglang.git \\
 && cd sglang \\
 && case "$CUDA_VERSION" in \\
      12.4.1) CUINDEX=124 ;; \\
      *) echo "Unsupported CUDA version: $CUDA_VERSION" && exit 1 ;; \\
    esac \\
 && {PIP} -e "python[all]" \\
 && if [ "$CUDA_VERSION" = "12.4.1" ]; then \\
      pip install --break-system-packages --no-index /opt/wheels/kernel-1.0-py3-none-any.whl --force-reinstall \\
        --no-deps; \\
    fi
""",
    # the 2025 layout: the install in the middle, a clone and build of another project, tools after it
    "2025 layout": HEAD + "ARG BUILD_TYPE=all\nENV TOOLS=/opt/tools\n" + INDEX_STEP + f"""WORKDIR /sgl-workspace
RUN git clone --depth=1 https://github.com/sgl-project/sglang.git \\
 && cd sglang \\
 && {PIP} -e "python[${{BUILD_TYPE}}]"
RUN git clone /opt/deepep /sgl-workspace/DeepEP \\
 && cd /sgl-workspace/DeepEP \\
 && {PIP} .
RUN {PIP} tooldep && printf 'tools = %s\\n' "$TOOLS" > /etc/tools.conf
RUN mkdir -p $TOOLS && python3 -c "open('$TOOLS/table.txt', 'w').write(str(sum(range(10 ** 6))))"
ENV DEBIAN_FRONTEND=interactive
WORKDIR /sgl-workspace/sglang
""",
    # a builder stage for a tool, the project in the final stage, the tool copied in after it
    "multi-stage": HEAD + "RUN mkdir -p /opt/tool && python3 -c \"open('/opt/tool/tool.txt', 'w').write('x' * 99)\"\n"
    "FROM nvcr.io/nvidia/tritonserver:24.04-py3-min AS tools-final-base\n" + HEAD.split("\n", 1)[1]
    + INDEX_STEP + f"""WORKDIR /sgl-workspace
RUN git clone --depth=1 https://github.com/sgl-project/sglang.git && cd sglang && {PIP} -e "python[openai]"
COPY --from=0 /opt/tool /opt/tool
RUN {PIP} tooldep
CMD ["python3", "-c", "import sglang"]
""",
}


def make_shape_repo(path: Path, shape: str) -> MiniRepo:
    """One commit of a mini SGLang whose docker/Dockerfile has the shape; a salt makes its layers new."""
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    repo = MiniRepo(path)
    repo.commit(shape, {"python/pyproject.toml": PYPROJECT, "python/sglang/__init__.py": "VERSION = '0.0.1'\n",
                        "python/sglang/srt/__init__.py": "", "python/sglang/srt/scheduler.py": "BATCH = 8\n",
                        "docker/Dockerfile": SHAPES[shape].replace("{salt}", uuid.uuid4().hex)})
    return repo


# The benchmark's job: the 2025 layout with real work around the install. `work` is how many million
# squares each heavy step sums in Python (about a second per 10 on this kind of machine).
JOB_DOCKERFILE = """\
FROM nvcr.io/nvidia/tritonserver:24.04-py3-min
RUN echo {salt} > /opt/image-salt
ARG BUILD_TYPE=all
ENV HEAVY={work}
# the system packages and tools (apt in the real files)
RUN printf 'import os\\nn = int(os.environ["HEAVY"]) * int(os.environ.get("TIMES", "1"))\\n' > /opt/work.py \\
 && printf 'print(sum(i * i for i in range(n * 10 ** 6)))\\n' >> /opt/work.py \\
 && python3 /opt/work.py > /opt/system.txt
RUN for v in 1.0 2.0 3.0; do \\
      mkdir -p /tmp/sd/basedep-$v && cd /tmp/sd/basedep-$v \\
      && printf 'from setuptools import setup\\nexec(open("/opt/work.py").read())\\n' > setup.py \\
      && printf 'setup(name="basedep", version="%s", py_modules=["basedep"])\\n' $v >> setup.py \\
      && printf 'VERSION = "%s"\\n' $v > basedep.py \\
      && mkdir -p /opt/index && tar -C /tmp/sd -czf /opt/index/basedep-$v.tar.gz basedep-$v || exit 1; \\
    done \\
 && mkdir -p /opt/deepep && cd /opt/deepep && git init -q \\
 && printf 'from setuptools import setup\\nexec(open("/opt/work.py").read())\\n' > setup.py \\
 && printf 'setup(name="deepep", version="1.0", py_modules=["deep_ep"])\\n' >> setup.py \\
 && echo 'READY = True' > deep_ep.py && git add -A && git -c user.name=t -c user.email=t@t commit -qm deepep
WORKDIR /sgl-workspace
RUN git clone --depth=1 https://github.com/sgl-project/sglang.git \\
 && cd sglang \\
 && case "$BUILD_TYPE" in all) EXTRAS=all ;; *) exit 1 ;; esac \\
 && pip install --no-build-isolation --break-system-packages --no-index --find-links /opt/index \\
      -e "python[${{BUILD_TYPE}}]"
# NVSHMEM and DeepEP compiled from source, a tool downloaded, Python tools: all after the install
RUN git clone /opt/deepep /sgl-workspace/DeepEP && cd /sgl-workspace/DeepEP \\
 && pip install --no-build-isolation --break-system-packages --no-index .
RUN TIMES=2 python3 /opt/work.py > /opt/nvshmem.txt
RUN head -c 20000000 /dev/urandom > /opt/tool.bin
ENV DEBIAN_FRONTEND=interactive
"""


JOB_PYPROJECT = PYPROJECT[:PYPROJECT.index("[project.optional-dependencies]")].replace(
    'dependencies = ["basedep==1.0"]', 'dependencies = ["basedep==VERSION"]') + \
    '[project.optional-dependencies]\nall = []\n\n[tool.setuptools.packages.find]\ninclude = ["sglang*"]\n'


def make_job_repo(path: Path, commits: int = 12, sets: int = 3, work: int = 30) -> MiniRepo:
    """`commits` commits whose dependencies move to a new set every commits/sets commits (basedep 1.0, 2.0,
    3.0), the 2025-shaped Dockerfile with `work` units of real work per heavy step; a fresh salt: cold."""
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    repo = MiniRepo(path)
    dockerfile = JOB_DOCKERFILE.format(salt=uuid.uuid4().hex, work=work)
    for i in range(commits):
        version = f"{1 + i * sets // commits}.0"
        repo.commit(f"commit {i}", {
            "python/pyproject.toml": JOB_PYPROJECT.replace("VERSION", version),
            "python/sglang/__init__.py": f"VERSION = '0.0.{i}'\n", "python/sglang/srt/__init__.py": "",
            "docker/Dockerfile": dockerfile})
    return repo
