"""Real code: released source of real projects from the package index (testkit/corpus.py), committed into
local repositories laid out like the projects' own, built and verified by the harness with real images.

Every genuine image passes (SGLang through the built-in profile, the others through a profile file as a
user would write it, src layouts included); the forgeries of tests/test_verify_images.py, applied to real
SGLang, fail; a Debian base's own copy of a package later on the path is noted, and the same module placed
earlier fails."""
from __future__ import annotations

import dataclasses
import json

import pytest

from helpers.pipeline import BuiltImage
from helpers.source.dataset import CommitSpec, DockerfileSource
from testkit import corpus, extproject
from testkit.forgeries import NAMES, SITE, Target, build, extension_module, forgeries

pytestmark = pytest.mark.docker


def produce(harness, sha: str) -> BuiltImage:
    return harness.commit(CommitSpec(sha, ("commit",), DockerfileSource(), 1)).produce()


def verify(harness, image: BuiltImage):
    return harness.commit(CommitSpec(image.sha, ("commit",), DockerfileSource(), 1)).verify(image)


def verify_forged(harness, client, genuine: BuiltImage, lines: str, files: dict | None = None):
    """The genuine image with `lines` built on top, verified as the genuine commit's image; then removed."""
    ref = build(client, f"FROM {genuine.ref}\n{lines}\n", files or {}, repository="corpus.local/forged")
    try:
        return verify(harness, dataclasses.replace(genuine, ref=ref, local=False))
    finally:
        client.images.remove(ref, force=True)


@pytest.mark.parametrize("project", corpus.CORPUS, ids=lambda p: p.name)
def test_every_genuine_image_of_a_real_project_passes(project, harness_runner, docker_client, base_image, tmp_path):
    base = corpus.base_image(docker_client, base_image, project.needs)
    repo = corpus.make_corpus_repo(tmp_path / project.name, project)
    harness_runner.write_dataset(*(json.dumps({"commit": sha}) for sha in repo.commits))
    extra = ["--no-push", "--no-smoke-checks", f"--base-image-map=corpus.local/*={base}"]
    if not project.builtin:
        profile = tmp_path / "profile.toml"
        profile.write_text(project.profile_toml())
        extra.append(f"--profile-file={profile}")
    run = harness_runner.run(repo.path, *extra)
    assert run.returncode == 0, run.output[-6000:]
    assert {sha: o.status for sha, o in run.outcomes.items()} == {sha: "success" for sha in repo.commits}
    for sha in repo.commits:
        checked = run.outcomes[sha].properties["check.verify_source_mismatch"]
        assert f"of {project.package_dir} identical to {sha[:12]}" in checked, checked
    if project.left_out:            # versioned from git: each image holds the version git gives its commit
        versions = [run.outcomes[sha].properties.get("scm_version") for sha in repo.commits]
        assert versions == list(project.releases)
        for sha, version in zip(repo.commits, versions, strict=True):
            checked = run.outcomes[sha].properties["check.verify_version"]
            assert f"sglang {version}, the commit's is {version}" in checked, checked
            statement = json.loads((harness_runner.workdir / "reports" / "attestations" / f"{sha}.intoto.json")
                                   .read_text())
            assert statement["predicate"]["build"] == {
                "versioning": "setuptools-scm", "saidBy": "python/pyproject.toml [tool.setuptools_scm]",
                "version": version, "versionFiles": ["python/sglang/_version.py"], "compiled": [], "notRead": []}
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


TODAY = "/workspace/sglang/python/sglang"


@pytest.fixture(scope="module")
def today_sglang(docker_client, base_image, tmp_path_factory):
    """Genuine images of SGLang 0.5.7 and 0.5.10.post1 (versioned by setuptools-scm, `_version.py` written by the
    build), built and verified by the harness through the built-in profile: both pass, each with its version."""
    root = tmp_path_factory.mktemp("today-sglang")
    base = corpus.base_image(docker_client, base_image, corpus.SGLANG_SCM.needs)
    repo = corpus.make_corpus_repo(root / "repo", corpus.SGLANG_SCM)
    harness = corpus.harness_for(corpus.SGLANG_SCM, root / "run", base, repo.path)
    images = [produce(harness, sha) for sha in repo.commits]
    try:
        for image, release in zip(images, corpus.SGLANG_SCM.releases, strict=True):
            assert image.scm_version == release
            checks = verify(harness, image)
            assert checks.passed, "\n".join(c.line() for c in checks)
            assert f"written by the build with version {release}: _version.py" in checks.source_tree.found
        parent = corpus.package_files(corpus.sdist("sglang", "0.5.7"), corpus.SGLANG_SCM)
        yield harness, images[-1], parent["srt/managers/scheduler.py"]
    finally:
        for image in images:
            docker_client.images.remove(image.ref, force=True)


@pytest.mark.parametrize("lines, named", [
    (f"RUN sed -i 's/0.5.10.post1/0.5.11/g' {TODAY}/_version.py", "_version.py: says version '0.5.11'"),
    (f"RUN echo 'import os' >> {TODAY}/_version.py", "is code no version template writes: 'import os'"),
    (f"RUN rm {TODAY}/_version.py", "_version.py: missing (the build writes it: setuptools-scm (python/pyproject.toml"),
    (f"COPY planted.so {TODAY}/srt/_planted.cpython-311-x86_64-linux-gnu.so",
     "srt/_planted.cpython-311-x86_64-linux-gnu.so"),
    (f"COPY scheduler.py {TODAY}/srt/managers/scheduler.py", "differ (1): srt/managers/scheduler.py"),
], ids=["another-version", "code-in-version-file", "no-version-file", "undeclared-extension", "parents-scheduler"])
def test_a_forgery_of_todays_sglang_fails_naming_the_file(lines, named, today_sglang, docker_client, tmp_path):
    harness, genuine, parent_scheduler = today_sglang
    files = {"planted.so": extension_module(tmp_path, "_planted"), "scheduler.py": parent_scheduler}
    checks = verify_forged(harness, docker_client, genuine, lines, files)
    assert checks.first_failure() is checks.source_tree, "\n".join(c.line() for c in checks)
    assert named in checks.source_tree.found


def planted_extension_fails(harness, client, genuine: BuiltImage, checks, tmp_path) -> None:
    """A compiled module the configuration does not declare, planted in the loaded copy, fails naming it."""
    copy = checks.imported.found.rsplit("-> ", 1)[1]
    forged = verify_forged(harness, client, genuine, f"COPY planted.so {copy}/_fast.cpython-311-x86_64-linux-gnu.so",
                           {"planted.so": extension_module(tmp_path, "_fast")})
    assert forged.first_failure() is forged.source_tree, "\n".join(c.line() for c in forged)
    assert "_fast.cpython-311-x86_64-linux-gnu.so" in forged.source_tree.found


@pytest.mark.parametrize("editable", [True, False], ids=["editable", "wheel"])
def test_a_compiled_module_the_configuration_declares_passes_and_no_other(editable, docker_client, dev_image, tmp_path):
    """fastsum's setup.py declares `fastsum._speedups`: built in the image, editable (compiled into the source
    tree) and as a wheel, every commit passes with the module accepted; an undeclared one planted fails."""
    repo = extproject.make_repo(tmp_path / "repo", editable)
    project = corpus.Project(**{**extproject.PROJECT.__dict__, "editable": editable})
    harness = corpus.harness_for(project, tmp_path / "run", dev_image, repo.path)
    images = [produce(harness, sha) for sha in repo.commits]
    try:
        for image in images:
            checks = verify(harness, image)
            assert checks.passed, "\n".join(c.line() for c in checks)
            assert "compiled modules its configuration declares: _speedups.cpython-311-" in checks.source_tree.found
        planted_extension_fails(harness, docker_client, images[-1], checks, tmp_path)
    finally:
        for image in images:
            docker_client.images.remove(image.ref, force=True)


@pytest.mark.parametrize("planted, files", [
    ("RUN echo \"import sys, charset_normalizer; sys.modules['requests.packages.chardet'] = charset_normalizer\" "
     f"> {SITE}/alias.pth", {}),
    (f"COPY evil_alias.py {SITE}/evil_alias.py\nRUN echo 'import evil_alias' > {SITE}/evil.pth",
     {"evil_alias.py": "import sys, json\nsys.modules['requests.certs'] = json\n"}),
], ids=["pth-names-requests", "pth-module-plants-alias"])
def test_an_alias_planted_by_start_up_code_fails_where_the_packages_own_passes(planted, files, docker_client,
                                                                            base_image, tmp_path):
    """requests' own packages.py places urllib3, idna and charset_normalizer under requests.packages: noted,
    passes; the same kind of alias placed by a .pth (directly, or by a module it imports) fails."""
    base = corpus.base_image(docker_client, base_image, corpus.REQUESTS.needs)
    repo = corpus.make_corpus_repo(tmp_path / "repo", corpus.REQUESTS)
    harness = corpus.harness_for(corpus.REQUESTS, tmp_path / "run", base, repo.path)
    image = produce(harness, repo.commits[0])
    try:
        checks = verify(harness, image)
        assert checks.passed, "\n".join(c.line() for c in checks)
        assert "requests.packages.chardet is charset_normalizer" in checks.source_tree.found
        checks = verify_forged(harness, docker_client, image, planted, files)
        assert not checks.passed and not checks.source_tree.passed, "\n".join(c.line() for c in checks)
    finally:
        docker_client.images.remove(image.ref, force=True)


@pytest.mark.parametrize("editable", [True, False], ids=["editable", "wheel"])
def test_a_real_c_extension_passes_where_declared_and_a_planted_one_fails(editable, docker_client, dev_image,
                                                                        tmp_path):
    """MarkupSafe 3.0.2 from the package index: its setup.py's `markupsafe._speedups`, compiled in the image, is
    accepted; an undeclared compiled module beside it fails."""
    project = dataclasses.replace(corpus.MARKUPSAFE, editable=editable)
    base = corpus.base_image(docker_client, dev_image, project.needs)
    repo = corpus.make_corpus_repo(tmp_path / "repo", project)
    harness = corpus.harness_for(project, tmp_path / "run", base, repo.path)
    image = produce(harness, repo.commits[0])
    try:
        checks = verify(harness, image)
        assert checks.passed, "\n".join(c.line() for c in checks)
        assert "compiled modules its configuration declares: _speedups.cpython-311-" in checks.source_tree.found
        planted_extension_fails(harness, docker_client, image, checks, tmp_path)
    finally:
        docker_client.images.remove(image.ref, force=True)
