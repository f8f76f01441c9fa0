"""Publish: image references, credentials, push with retries, and the registry's HTTP API.

Credentials come from DOCKERHUB_USERNAME/DOCKERHUB_TOKEN or Docker's own credential store;
they travel only in request headers (the engine's X-Registry-Auth, HTTP auth), never in argv,
logs or reports.
"""
from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import docker
import docker.auth
import requests

from helpers.errors import ConfigError, HarnessError, InfraError, PushFailed

MANIFEST_TYPES = ", ".join([
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
])
# The engine reports a failed push as text; it is read by its parts, never by a word anywhere in it
# (a digest may hold "502"): the HTTP status, the registry's error code, the network failure.
HTTP_STATUS = re.compile(r"(?:^|HTTP status: )(\d{3})(?= |$)")
REGISTRY_CODE = re.compile(r"^([a-z][a-z ]*[a-z]): ")     # distribution's error codes, spelt as the engine does
TRANSIENT_CODES = {"toomanyrequests", "too many requests", "unavailable"}
NETWORK_FAILURE = re.compile(r"(connection (refused|reset by peer)|i/o timeout|TLS handshake timeout|broken pipe|"
                             r"request canceled|no such host|(unexpected )?EOF)$")


DOCKER_HUB = ("docker.io", "index.docker.io", "registry-1.docker.io")


@dataclass(frozen=True)
class ImageName:
    """`<registry>/<namespace>/<name>`; the tag is the commit's full SHA."""

    registry: str
    namespace: str
    name: str

    @property
    def repository(self) -> str:
        """The repository path as the registry API names it."""
        path = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"library/{path}" if self.is_docker_hub and "/" not in path else path

    @property
    def is_docker_hub(self) -> bool:
        return self.registry in DOCKER_HUB

    @property
    def full_name(self) -> str:
        """`registry/namespace/name`: what the status lists belong to."""
        return "/".join(part for part in (self.registry, self.namespace, self.name) if part)

    def ref(self, sha: str) -> str:
        prefix = f"{self.registry}/{self.namespace}" if self.namespace else self.registry
        return f"{prefix}/{self.name}:{sha}"



@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)

    def auth_config(self) -> dict[str, str]:
        return {"username": self.username, "password": self.password}


def resolve_credentials(registry: str, environ: dict[str, str] | None = None) -> Credentials | None:
    """For Docker Hub, DOCKERHUB_USERNAME + DOCKERHUB_TOKEN first; for every registry, Docker's own
    credential store (`docker login`, ~/.docker/config.json, credential helpers) as the Docker SDK
    resolves it. Docker Hub's token never goes to another registry."""
    env = os.environ if environ is None else environ
    if registry in DOCKER_HUB and env.get("DOCKERHUB_TOKEN"):
        if not env.get("DOCKERHUB_USERNAME"):
            raise ConfigError("DOCKERHUB_TOKEN is set but DOCKERHUB_USERNAME is not")
        return Credentials(env["DOCKERHUB_USERNAME"], env["DOCKERHUB_TOKEN"])
    key = "https://index.docker.io/v1/" if registry in DOCKER_HUB else registry
    try:
        found = docker.auth.load_config().resolve_authconfig(key)
    except Exception:                      # a broken credential helper must not stop a run
        found = None
    found = {k.lower(): v for k, v in (found or {}).items()}     # config files and helpers differ in case
    if found.get("username") and found.get("password"):
        return Credentials(found["username"], found["password"])
    return None


def is_transient(message: str) -> bool:
    """A push error worth another attempt: HTTP 429 or 5xx (the message's status line), the registry's
    rate-limit code, or a failed connection; every other error is permanent."""
    text = message.strip()
    found = HTTP_STATUS.search(text)
    if found:
        status = int(found.group(1))
        return status == 429 or status >= 500
    code = REGISTRY_CODE.match(text)
    if code and code.group(1) in TRANSIENT_CODES:
        return True
    return bool(NETWORK_FAILURE.search(text))


@dataclass(frozen=True)
class Pushed:
    digest: str
    attempts: int


def push(client: docker.DockerClient, ref: str, credentials: Credentials | None, retries: int = 3,
         backoff: float = 2.0, sleep: Callable[[float], None] = time.sleep) -> Pushed:
    """Push through the engine; retry the registry's transient errors with exponential backoff.

    An engine that does not answer is not the registry's fault: that is an InfraError at once."""
    repository, tag = ref.rsplit(":", 1)
    auth = credentials.auth_config() if credentials else None
    error = ""
    for attempt in range(retries + 1):
        try:
            digest, error = _push_once(client, repository, tag, auth)
        except requests.ConnectionError as e:
            raise InfraError(f"the Docker engine stopped answering while pushing {ref}: {e}") from e
        except (requests.RequestException, docker.errors.DockerException) as e:
            digest, error = None, str(e)
        if digest:
            return Pushed(digest, attempt + 1)
        if attempt == retries or not is_transient(error):
            break
        sleep(backoff * 2 ** attempt)
    raise PushFailed(f"push of {ref} failed after {attempt + 1} attempt(s): {error}")


def push_cache_tags(client: docker.DockerClient, ref: str, tags: list[str], credentials: Credentials | None,
                    retries: int = 3, backoff: float = 2.0) -> list[str]:
    """The pushed image under more tags of its repository (the layers are there already: a manifest each),
    each local tag removed again; the tags that failed, with why (a failure costs only their reuse)."""
    repository = ref.rsplit(":", 1)[0]
    failed = []
    for tag in tags:
        try:
            client.api.tag(ref, repository, tag)
            push(client, f"{repository}:{tag}", credentials, retries, backoff)
        except (HarnessError, docker.errors.DockerException, requests.RequestException) as e:
            failed.append(f"{tag}: {str(e)[:200]}")
        finally:
            try:
                client.api.remove_image(f"{repository}:{tag}", noprune=True)
            except (docker.errors.DockerException, requests.RequestException):
                pass
    return failed


def _push_once(client: docker.DockerClient, repository: str, tag: str,
               auth: dict | None) -> tuple[str | None, str]:
    digest = None
    for chunk in client.api.push(repository, tag=tag, stream=True, decode=True, auth_config=auth):
        if "error" in chunk:
            return None, str(chunk.get("error"))
        aux = chunk.get("aux") or {}
        digest = aux.get("Digest") or digest
    return digest, "" if digest else "the engine reported no digest for the push"


class RegistryAPI:
    """Minimal Distribution API client: token/basic auth challenges, manifests, paginated tags."""

    def __init__(self, registry: str, credentials: Credentials | None, timeout: float = 30,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep):
        host = "registry-1.docker.io" if registry in DOCKER_HUB else registry
        loopback = re.match(r"^(localhost|127\.\d+\.\d+\.\d+|\[::1\])(:\d+)?$", host)
        self.base = f"{'http' if loopback else 'https'}://{host}"
        self.credentials = credentials
        self.timeout = timeout
        self.session = requests.Session()
        self.clock, self.sleep = clock, sleep
        self._tokens: dict[str, tuple[str, float]] = {}       # scope -> (token, when it expires)
        self._basic = False                                    # the registry asked for basic auth

    def _fresh_token(self, scope: str) -> str | None:
        token, expires = self._tokens.get(scope, ("", 0.0))
        return token if token and self.clock() < expires else None

    def _fetch_token(self, challenge: dict[str, str], scope: str) -> str:
        """A bearer token from the challenge's realm, kept until shortly before `expires_in` runs out
        (60 s when the server does not say, as the token specification has it)."""
        auth = (self.credentials.username, self.credentials.password) if self.credentials else None
        query = {"service": challenge.get("service", ""), "scope": scope}
        answer = self.session.get(challenge["realm"], params=query, auth=auth, timeout=self.timeout)
        if answer.status_code in (401, 403):
            raise InfraError(f"the token server of {self.base} refused the credentials ({answer.status_code})")
        answer.raise_for_status()
        body = answer.json()
        token = body.get("token") or body.get("access_token", "")
        lifetime = float(body.get("expires_in") or 60)
        self._tokens[scope] = (token, self.clock() + max(lifetime * 0.9, lifetime - 10))
        return token

    def _answer_challenge(self, header: str, scope: str) -> dict[str, str]:
        """Headers for the retry of a request the registry answered 401, from its challenge."""
        scheme, _, params = header.partition(" ")
        if scheme.lower() == "basic":
            if not self.credentials:
                raise InfraError(f"{self.base} wants a login and no credentials were found")
            self._basic = True
            return {}
        fields = dict(re.findall(r'(\w+)="([^"]*)"', params))
        scope = fields.get("scope", scope)
        return {"Authorization": f"Bearer {self._fetch_token(fields, scope)}"}

    def request(self, method: str, path_or_url: str, repository: str, headers: dict[str, str],
                attempts: int = 3) -> requests.Response:
        """One API call; dropped connections and 5xx answers are tried again, twice, with backoff."""
        url = path_or_url if path_or_url.startswith("http") else self.base + path_or_url
        for attempt in range(attempts):
            try:
                answer = self._authorised(method, url, repository, headers)
                if answer.status_code < 500 or attempt == attempts - 1:
                    return answer
            except requests.RequestException as e:
                if attempt == attempts - 1:
                    raise InfraError(f"registry {self.base} cannot be reached: {type(e).__name__}: {e}") from e
            self.sleep(0.5 * 2 ** attempt)
        raise AssertionError("unreachable")

    def _authorised(self, method: str, url: str, repository: str, headers: dict[str, str]) -> requests.Response:
        """The call with the credentials it needs: a cached token while it lives; on a 401, the
        challenge answered once (a token that expired early is fetched anew) and the call repeated."""
        scope = f"repository:{repository}:pull"
        basic = (self.credentials.username, self.credentials.password) if self.credentials and self._basic else None
        token = self._fresh_token(scope)
        sent = {**headers, "Authorization": f"Bearer {token}"} if token else headers
        answer = self.session.request(method, url, headers=sent, auth=basic, timeout=self.timeout)
        if answer.status_code != 401 or "WWW-Authenticate" not in answer.headers:
            return answer
        self._tokens.pop(scope, None)
        extra = self._answer_challenge(answer.headers["WWW-Authenticate"], scope)
        basic = (self.credentials.username, self.credentials.password) if self.credentials and not extra else None
        return self.session.request(method, url, headers={**headers, **extra}, auth=basic, timeout=self.timeout)

    def manifest_digest(self, repository: str, tag: str) -> str | None:
        """The digest the registry serves for a tag, None when the tag does not exist."""
        answer = self.request("HEAD", f"/v2/{repository}/manifests/{tag}", repository, {"Accept": MANIFEST_TYPES})
        if answer.status_code == 404:
            return None
        if answer.status_code != 200:
            raise InfraError(f"registry {self.base} answered {answer.status_code} for {repository}:{tag}")
        return answer.headers.get("Docker-Content-Digest")

    def tags(self, repository: str, page_size: int = 1000) -> Iterator[str]:
        """Every tag of a repository, following `Link` headers; errors are raised, never 'no tags'."""
        url: str | None = f"/v2/{repository}/tags/list?n={page_size}"
        while url:
            answer = self.request("GET", url, repository, {})
            if answer.status_code == 404:
                return
            if answer.status_code != 200:
                raise InfraError(f"registry {self.base} answered {answer.status_code} listing {repository}")
            yield from answer.json().get("tags") or []
            url = answer.links.get("next", {}).get("url")
            if url and not url.startswith("http"):
                url = self.base + url if url.startswith("/") else f"{self.base}/{url}"


LOCAL_REGISTRY_IMAGE = "registry:2"


def ensure_local_registry(client: docker.DockerClient, port: int, timeout: float = 60,
                          sleep: Callable[[float], None] = time.sleep) -> str:
    """The harness's own registry on this machine (`registry:2`, its data in a named volume), started
    when it is not running and left running afterwards, so other machines can pull from it."""
    name = f"commit-image-harness-registry-{port}"
    try:
        container = client.containers.get(name)
        if container.status != "running":
            container.start()
    except docker.errors.NotFound:
        try:
            client.containers.run(LOCAL_REGISTRY_IMAGE, name=name, detach=True, restart_policy={"Name": "always"},
                                  ports={"5000/tcp": port}, volumes={name: {"bind": "/var/lib/registry", "mode": "rw"}})
        except docker.errors.DockerException as e:
            raise InfraError(f"could not start the local registry on port {port}: {e}") from e
    deadline = time.monotonic() + timeout
    while True:
        try:
            if requests.get(f"http://localhost:{port}/v2/", timeout=5).status_code in (200, 401):
                return name
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            raise InfraError(f"the local registry {name} did not answer on port {port} within {timeout:.0f}s")
        sleep(0.2)


def confirm_pushed(api: RegistryAPI, image: ImageName, sha: str, pushed_digest: str) -> None:
    """The registry must serve the pushed digest under the commit's tag."""
    served = api.manifest_digest(image.repository, sha)
    if served != pushed_digest:
        raise PushFailed(f"registry serves {served or 'no manifest'} for tag {sha}, the push reported "
                         f"{pushed_digest}")
