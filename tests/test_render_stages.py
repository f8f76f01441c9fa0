"""The one stage model every Dockerfile rewrite walks: a stage built FROM another inherits its
working directory, variables, user and whether the project's source is there."""
from __future__ import annotations

from helpers.profiles import SGLANG
from helpers.render.caches import add_package_caches
from helpers.render.dockerfile import insert_in_final_stage, parse, stages

MULTI_STAGE = """\
FROM base AS build
ENV ROOTDIR=/opt
WORKDIR ${ROOTDIR}/work
COPY python python
USER app
RUN make
FROM build AS final
WORKDIR sub
RUN pip install -e python
CMD ["serve"]
"""


def states_at_runs(text: str) -> list[tuple[str | None, str | None, bool]]:
    return [(state.workdir, state.user, state.has_source) for inst, state in stages(parse(text), SGLANG)
            if inst.cmd == "RUN"]


def test_a_stage_built_from_another_inherits_its_state():
    assert states_at_runs(MULTI_STAGE) == [("/opt/work", "app", True), ("/opt/work/sub", "app", True)]


def test_a_stage_from_an_image_starts_afresh():
    text = MULTI_STAGE.replace("FROM build AS final", "FROM other AS final")
    assert states_at_runs(text)[1] == ("/sub", None, False)


def test_steps_added_to_the_final_stage_run_as_root_under_an_inherited_user():
    doc = parse(MULTI_STAGE)
    insert_in_final_stage(doc, "RUN echo proof > /opt/proof")
    assert 'USER root\nRUN echo proof > /opt/proof\nUSER app\nCMD ["serve"]' in doc.render()


def test_no_cache_mount_where_an_inherited_user_is_not_root():
    rendered, notes = add_package_caches(MULTI_STAGE)
    assert rendered == MULTI_STAGE and notes == []
    as_root = MULTI_STAGE.replace("FROM build AS final\n", "FROM build AS final\nUSER root\n")
    assert "RUN --mount=type=cache,target=/root/.cache/pip pip install -e python" in add_package_caches(as_root)[0]
