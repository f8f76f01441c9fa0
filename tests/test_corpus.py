"""Real code: released source of real projects from the package index (testkit/corpus.py), committed into
local repositories laid out like the projects' own, built and verified by the harness with real images.

Every genuine image passes (SGLang through the built-in profile, the others through a profile file as a
user would write it, src layouts included); the forgeries of tests/test_verify_images.py, applied to real
SGLang, fail; a Debian base's own copy of a package later on the path is noted, and the same module placed
earlier fails."""
from __future__ import annotations

import json

import pytest

from helpers.dataset import CommitSpec, DockerfileSource
from helpers.pipeline import BuiltImage
from testkit import corpus
from testkit.forgeries import NAMES, Target, build, extension_module, forgeries

pytestmark = pytest.mark.docker


def produce(harness, sha: str) -> BuiltImage:
    return harness.commit(CommitSpec(sha, ("commit",), DockerfileSource(), 1)).produce()


def verify(harness, image: BuiltImage):
    return harness.commit(CommitSpec(image.sha, ("commit",), DockerfileSource(), 1)).verify(image)


@pytest.mark.parametrize("project", corpus.CORPUS, ids=lambda p: p.name)
def test_every_genuine_image_of_a_real_project_passes(project, harness_runner, docker_client, base_image, tmp_path):
    base = corpus.base_image(docker_client, base_image, project.needs)
    repo = corpus.make_corpus_repo(tmp_path / project.name, project)
    harness_runner.write_dataset(*(json.dumps({"commit": sha}) for sha in repo.commits))
    extra = ["--no-push", "--no-smoke-checks", f"--base-image-map=corpus.local/*={base}"]
    if project is not corpus.SGLANG:
        profile = tmp_path / "profile.toml"
        profile.write_text(project.profile_toml())
        extra.append(f"--profile-file={profile}")
    run = harness_runner.run(repo.path, *extra)
    assert run.returncode == 0, run.output[-6000:]
    assert {sha: o.status for sha, o in run.outcomes.items()} == {sha: "success" for sha in repo.commits}
    for sha in repo.commits:
        checked = run.outcomes[sha].properties["check.verify_source_mismatch"]
        assert f"of {project.package_dir} identical to {sha[:12]}" in checked, checked
    for sha in repo.commits:
        docker_client.images.remove(f"{harness_runner.registry}/test/{harness_runner.image_name}:{sha}", force=True)


SGLANG_RELEASE = corpus.SGLANG.releases[-1]
REAL = Target("/workspace/sglang/python", "sglang", "lang/choices.py", "", "lang/ir.py", "http_request", "sglang.utils")


@pytest.fixture(scope="module")
def real_sglang(docker_client, base_image, tmp_path_factory):
    """A genuine image of real SGLang's last release in the corpus, built and verified by the harness."""
    root = tmp_path_factory.mktemp("real-sglang")
    project = corpus.Project(**{**corpus.SGLANG.__dict__, "releases": (SGLANG_RELEASE,)})
    base = corpus.base_image(docker_client, base_image, project.needs)
    repo = corpus.make_corpus_repo(root / "repo", project)
    harness = corpus.harness_for(corpus.SGLANG, root / "run", base, repo.path)
    image = produce(harness, repo.commits[0])
    checks = verify(harness, image)
    assert checks.passed, "\n".join(c.line() for c in checks)
    files = corpus.package_files(corpus.sdist("sglang", SGLANG_RELEASE), corpus.SGLANG)
    yield harness, image, files[REAL.small].decode()
    docker_client.images.remove(image.ref, force=True)


@pytest.mark.parametrize("name", NAMES)
def test_each_forgery_of_real_sglang_fails_with_its_category(name, real_sglang, docker_client, tmp_path):
    harness, genuine, small_text = real_sglang
    lines, files, expected = forgeries(Target(**{**REAL.__dict__, "small_text": small_text}))[name]
    if "forged.so" in files:
        files = {"forged.so": extension_module(tmp_path, REAL.small.rsplit("/", 1)[-1][:-3])}
    ref = build(docker_client, f"FROM {genuine.ref}\n{lines}", files, repository="corpus.local/forged")
    try:
        checks = verify(harness, BuiltImage(genuine.sha, ref))
        failed = checks.first_failure()
        assert failed is not None and failed.category == expected, "\n".join(c.line() for c in checks)
    finally:
        docker_client.images.remove(ref, force=True)


def test_a_later_copy_of_another_distribution_is_noted_and_the_same_module_earlier_fails(docker_client, base_image,
                                                                                        tmp_path):
    """zipp installed as a wheel on the Debian base, whose own python3-zipp (zipp.py 1.0.0) sits in
    /usr/lib/python3/dist-packages, after /usr/local/lib/python3.11/dist-packages on the path."""
    repo = corpus.make_corpus_repo(tmp_path / "zipp", corpus.ZIPP)
    harness = corpus.harness_for(corpus.ZIPP, tmp_path / "run", base_image, repo.path)
    image = produce(harness, repo.commits[0])
    try:
        checks = verify(harness, image)
        assert checks.passed, "\n".join(c.line() for c in checks)
        assert "noted: /usr/lib/python3/dist-packages/zipp.py (module of zipp-1.0.0) comes after the loaded copy" \
               in checks.source_tree.found
        earlier = build(docker_client, f"FROM {image.ref}\nRUN mkdir /opt/early && cp "
                        "/usr/lib/python3/dist-packages/zipp.py /opt/early/\nENV PYTHONPATH=/opt/early\n",
                        repository="corpus.local/forged")
        try:
            checks = verify(harness, BuiltImage(image.sha, earlier))
            assert checks.first_failure() is checks.source_tree, "\n".join(c.line() for c in checks)
            assert "/opt/early/zipp.py: a module file named like the package shadows it" in checks.source_tree.found
        finally:
            docker_client.images.remove(earlier, force=True)
    finally:
        docker_client.images.remove(image.ref, force=True)
