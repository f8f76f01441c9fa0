"""Publishing: references, credentials, push retries, and the registry API against a real registry."""
import base64
import io
import json
import tarfile
import uuid

import pytest

from helpers.errors import ConfigError, InfraError, PushFailed
from helpers.publish.registry import (
    Credentials,
    ImageName,
    Pushed,
    RegistryAPI,
    confirm_pushed,
    is_transient,
    push,
    resolve_credentials,
)


@pytest.mark.parametrize("image, sha, ref, repository", [
    (ImageName("docker.io", "alice", "nvidia-sglang-docker"), "a" * 40,
     f"docker.io/alice/nvidia-sglang-docker:{'a' * 40}", "alice/nvidia-sglang-docker"),
    (ImageName("docker.io", "", "img"), "b", "docker.io/img:b", "library/img"),
    (ImageName("localhost:5000", "test", "img"), "c", "localhost:5000/test/img:c", "test/img"),
    (ImageName("ghcr.io", "org/team", "img"), "d", "ghcr.io/org/team/img:d", "org/team/img"),
])
def test_image_references(image, sha, ref, repository):
    assert image.ref(sha) == ref
    assert image.repository == repository


def test_credentials_from_the_environment_win_and_never_show_in_repr():
    creds = resolve_credentials("docker.io", {"DOCKERHUB_USERNAME": "alice", "DOCKERHUB_TOKEN": "s3cr3t-token"})
    assert creds == Credentials("alice", "s3cr3t-token")
    assert "s3cr3t" not in repr(creds)
    with pytest.raises(ConfigError, match="DOCKERHUB_USERNAME is not"):
        resolve_credentials("docker.io", {"DOCKERHUB_TOKEN": "x"})


def test_credentials_from_docker_config(tmp_path, monkeypatch):
    auth = base64.b64encode(b"bob:from-config").decode()
    (tmp_path / "config.json").write_text(json.dumps({"auths": {"registry.example.com": {"auth": auth}}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    assert resolve_credentials("registry.example.com", {}) == Credentials("bob", "from-config")
    assert resolve_credentials("other.example.com", {}) is None


@pytest.mark.parametrize("message, transient", [
    ("received unexpected HTTP status: 503 Service Unavailable", True),
    ("Get https://r/v2/: net/http: TLS handshake timeout", True),
    ("read tcp 1.2.3.4: connection reset by peer", True),
    ("unexpected EOF", True),
    ("toomanyrequests: too many requests", True),
    ("denied: requested access to the resource is denied", False),
    ("unauthorized: authentication required", False),
    ("name unknown: repository name not known to registry", False),
    ("blob unknown: blob unknown to registry: sha256:5020a9f3e5c429b1", False),      # digits inside a digest
    ("manifest blob unknown: blob unknown to registry", False),
    ("name invalid: invalid repository name", False),
    ("received unexpected HTTP status: 500 Internal Server Error", True),
    ("received unexpected HTTP status: 404 Not Found", False),
    ("Put https://r/v2/x/blobs/uploads/: dial tcp 127.0.0.1:9: connect: connection refused", True),
    ("503 Service Unavailable", True),
    ("Head https://r/v2/x/manifests/t: received unexpected HTTP status: 502 Bad Gateway", True),
])
def test_transient_errors_are_told_apart(message, transient):
    assert is_transient(message) is transient


class ScriptedEngine:
    """Pure unit of the retry loop: the engine's push stream answers from a script."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.api = self

    def push(self, repository, tag, stream, decode, auth_config):
        return iter(self.answers.pop(0))


def test_push_retries_transient_errors_with_backoff_then_succeeds():
    engine = ScriptedEngine([{"error": "503 Service Unavailable"}], [{"error": "connection reset by peer"}],
                            [{"status": "pushed"}, {"aux": {"Digest": "sha256:abc"}}])
    waits = []
    assert push(engine, "r/x:t", None, retries=3, backoff=1, sleep=waits.append) == Pushed("sha256:abc", 3)
    assert waits == [1, 2]


def test_push_gives_up_at_once_on_a_permanent_error_and_after_retries_on_transient_ones():
    with pytest.raises(PushFailed, match="after 1 attempt.*denied"):
        push(ScriptedEngine([{"error": "denied: no"}]), "r/x:t", None, sleep=lambda s: None)
    with pytest.raises(PushFailed, match="after 3 attempt.*503"):
        push(ScriptedEngine(*[[{"error": "503"}]] * 3), "r/x:t", None, retries=2, sleep=lambda s: None)


def tiny_image(client, ref: str) -> None:
    """A one-file image made without any base image."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        content = uuid.uuid4().hex.encode()
        info = tarfile.TarInfo("hello.txt")
        info.size = len(content)
        tar.addfile(info, io.BytesIO(content))
    repository, tag = ref.rsplit(":", 1)
    client.api.import_image_from_data(data.getvalue(), repository=repository, tag=tag)


@pytest.mark.docker
def test_push_and_confirm_against_a_real_registry(docker_client, registry):
    image = ImageName(registry, "test", f"tiny-{uuid.uuid4().hex[:8]}")
    ref = image.ref("a" * 40)
    tiny_image(docker_client, ref)
    try:
        digest = push(docker_client, ref, None).digest
        api = RegistryAPI(registry, None)
        assert api.manifest_digest(image.repository, "a" * 40) == digest
        confirm_pushed(api, image, "a" * 40, digest)
        with pytest.raises(PushFailed, match="registry serves"):
            confirm_pushed(api, image, "a" * 40, "sha256:" + "0" * 64)
        assert api.manifest_digest(image.repository, "b" * 40) is None
    finally:
        docker_client.images.remove(ref, force=True)


@pytest.mark.docker
def test_tag_listing_follows_pagination(docker_client, registry):
    image = ImageName(registry, "test", f"paged-{uuid.uuid4().hex[:8]}")
    tags = [f"{i:040x}" for i in range(5)]
    for tag in tags:
        tiny_image(docker_client, image.ref(tag))
        push(docker_client, image.ref(tag), None)
        docker_client.images.remove(image.ref(tag), force=True)
    assert sorted(RegistryAPI(registry, None).tags(image.repository, page_size=2)) == tags
    assert list(RegistryAPI(registry, None).tags("test/never-pushed")) == []


def test_unreachable_registry_is_an_error_that_says_so():
    api = RegistryAPI("127.0.0.1:9", None, timeout=2)
    with pytest.raises(InfraError, match="cannot be reached"):
        api.manifest_digest("test/x", "t")
    with pytest.raises(InfraError, match="cannot be reached"):
        list(api.tags("test/x"))


@pytest.mark.docker
def test_basic_auth_registry_push_and_listing_with_credentials_only(docker_client, auth_registry):
    from tests.conftest import REGISTRY_TOKEN, REGISTRY_USER
    creds = Credentials(REGISTRY_USER, REGISTRY_TOKEN)
    image = ImageName(auth_registry, "test", f"private-{uuid.uuid4().hex[:8]}")
    ref = image.ref("c" * 40)
    tiny_image(docker_client, ref)
    try:
        with pytest.raises(PushFailed):
            push(docker_client, ref, None, retries=0)
        digest = push(docker_client, ref, creds).digest
        assert list(RegistryAPI(auth_registry, creds).tags(image.repository)) == ["c" * 40]
        assert RegistryAPI(auth_registry, creds).manifest_digest(image.repository, "c" * 40) == digest
        with pytest.raises(InfraError, match="wants a login"):
            list(RegistryAPI(auth_registry, None).tags(image.repository))
        with pytest.raises(InfraError, match="answered 401"):
            list(RegistryAPI(auth_registry, Credentials(REGISTRY_USER, "wrong")).tags(image.repository))
    finally:
        docker_client.images.remove(ref, force=True)


class TokenRegistry:
    """A stand-in for Docker Hub's two hosts on loopback: the registry answers 401 with a Bearer
    challenge; the token service hands out a token (to anyone for pull, like a public repository)."""

    def __init__(self, pages: int = 2):
        import http.server
        import threading
        outer = self
        self.token_requests: list[tuple[str, str | None]] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                if self.path.startswith("/token"):
                    outer.token_requests.append((self.path, self.headers.get("Authorization")))
                    return self.reply(200, json.dumps({"token": "tok-123"}).encode())
                if self.headers.get("Authorization") != "Bearer tok-123":
                    realm = f"http://{self.headers['Host']}/token"
                    return self.reply(401, b"{}", {"WWW-Authenticate": f'Bearer realm="{realm}",service='
                                                  f'"registry.test",scope="repository:user/img:pull"'})
                page = 2 if "last=" in self.path else 1
                tags = [f"{page}{n:039x}" for n in range(3)]
                links = {"Link": '</v2/user/img/tags/list?n=3&last=x>; rel="next"'} if page < pages else {}
                return self.reply(200, json.dumps({"name": "user/img", "tags": tags}).encode(), links)

            def reply(self, status, body, headers=None):
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_bearer_token_flow_anonymous_and_with_credentials_across_pages():
    hub = TokenRegistry()
    try:
        tags = list(RegistryAPI(hub.address, None).tags("user/img", page_size=3))
        assert len(tags) == 6 and tags[0].startswith("1") and tags[-1].startswith("2")
        path, auth = hub.token_requests[0]
        assert "scope=repository%3Auser%2Fimg%3Apull" in path and "service=registry.test" in path and auth is None
        assert len(hub.token_requests) == 1                      # the token is reused for the next page
        list(RegistryAPI(hub.address, Credentials("alice", "s3cret")).tags("user/img"))
        assert hub.token_requests[-1][1] == "Basic " + base64.b64encode(b"alice:s3cret").decode()
    finally:
        hub.server.shutdown()
