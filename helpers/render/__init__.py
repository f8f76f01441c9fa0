"""Render: the Dockerfile rewrites, each a pure `str -> str` function, applied in order.

    pin_source -> declare_identity -> map_base_images
"""
from __future__ import annotations

from dataclasses import dataclass

from helpers.profiles import Profile
from helpers.render.base_images import BaseImageMap, map_base_images, parse_mapping
from helpers.render.identity import declare_identity
from helpers.render.pin import pin_source_report

__all__ = ["Rendered", "render", "pin_source", "declare_identity", "map_base_images", "parse_mapping"]


@dataclass(frozen=True)
class Rendered:
    text: str
    notes: tuple[str, ...]


def pin_source(text: str, profile: Profile, repo_ids: tuple[str, ...] = ()) -> str:
    return pin_source_report(text, profile, repo_ids)[0]


def render(text: str, profile: Profile, base_images: BaseImageMap = (), repo_ids: tuple[str, ...] = ()) -> Rendered:
    """The Dockerfile as it is built: source pinned, identity declared late, base images mapped."""
    pinned, notes = pin_source_report(text, profile, repo_ids)
    text = declare_identity(pinned, profile)
    text = map_base_images(text, base_images)
    return Rendered(text, tuple(notes))
