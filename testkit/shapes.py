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
