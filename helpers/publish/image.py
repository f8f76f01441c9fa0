"""Image: a verified image published under the commit's tag, or the published image fetched to verify again.

Takes the local image, the registry's API and the run's credentials; hands on the digest the registry serves
under the tag (after the push, confirmed; with --verify-only, as the registry serves it, pulled when the
engine holds another image under that name).
"""
from __future__ import annotations

from collections.abc import Callable

import docker

from helpers.errors import ImageNotFound
from helpers.publish.registry import Credentials, ImageName, RegistryAPI, confirm_pushed, push, push_cache_tags
from helpers.verify.image_facts import find_image

Record = Callable[[str, object], None]


def publish_image(client: docker.DockerClient, api: RegistryAPI, image: ImageName, sha: str,
                  credentials: Credentials | None, retries: int, backoff: float, cache_tags: tuple[str, ...],
                  record: Record) -> str:
    """Push, then the registry must serve the pushed digest under the tag; then the cache tags, for other
    machines' builds (one that fails is recorded, not fatal). The digest."""
    ref = image.ref(sha)
    pushed = push(client, ref, credentials, retries, backoff)
    record("push_attempts", pushed.attempts)
    confirm_pushed(api, image, sha, pushed.digest)
    record("digest", pushed.digest)
    if cache_tags:
        failed = push_cache_tags(client, ref, list(cache_tags), credentials, retries, backoff)
        record("cache_tags", ", ".join(cache_tags))
        if failed:
            record("cache_tags_failed", "; ".join(failed))
    return pushed.digest


def fetch_published(client: docker.DockerClient, api: RegistryAPI, image: ImageName, sha: str,
                    credentials: Credentials | None, record: Record) -> tuple[str, str, bool]:
    """--verify-only: (digest, `<repository>@<digest>`, whether it was pulled) of the image users pull."""
    ref = image.ref(sha)
    repository = ref.rsplit(":", 1)[0]
    digest = api.manifest_digest(image.repository, sha)
    if digest is None:
        raise ImageNotFound(f"the registry serves no image under {ref}")
    verified = f"{repository}@{digest}"
    record("digest", digest)
    record("verified", verified)
    pulled = []

    def pull() -> None:
        auth = credentials.auth_config() if credentials else None
        client.images.pull(repository, tag=digest, auth_config=auth)
        pulled.append(True)
    find_image(client, verified, pull)
    return digest, verified, bool(pulled)
