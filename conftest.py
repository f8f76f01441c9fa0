"""Pytest wiring of the harness: the plugin (options and hooks, build_suite/plugin.py) and the fixtures.

The work itself lives in helpers/ (Harness runs one commit through every stage)."""
from __future__ import annotations

import pytest

pytest.register_assert_rewrite("build_suite.plugin")
pytest_plugins = ("build_suite.plugin",)

from build_suite.plugin import CONFIG, PUSHED  # noqa: E402
from helpers.pipeline import Harness, Produced  # noqa: E402


@pytest.fixture(scope="session")
def harness(pytestconfig: pytest.Config) -> Harness:
    return Harness(pytestconfig.stash[CONFIG])


@pytest.fixture
def commit_image(commit, harness: Harness, request: pytest.FixtureRequest) -> Produced:
    """The image of one commit: built, verified, and tagged and pushed only when every check passed
    (or, with --verify-only, the image the registry serves, verified).

    A failure is kept, not raised here, so that the test reports it as the commit's failure
    (pytest's "failed") rather than as a broken fixture ("error")."""
    def record(name: str, value: object) -> None:
        request.node.user_properties.append((name, str(value)))

    harness.announce(commit, record)
    skip_reason = harness.skip_reason(commit.sha, request.config.stash.get(PUSHED, None))
    if skip_reason:
        pytest.skip(skip_reason)
    return harness.run_entry(commit, record)
