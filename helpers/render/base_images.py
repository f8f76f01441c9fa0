"""Base-image map: rewrite `FROM` images by glob pattern (registry mirrors, offline test machines)."""
from __future__ import annotations

import fnmatch

from helpers.errors import ConfigError
from helpers.render.dockerfile import declared_values, expand, keyword_end, parse, stage_names

BaseImageMap = tuple[tuple[str, str], ...]


def parse_mapping(items: list[str]) -> BaseImageMap:
    """`PATTERN=IMAGE` strings -> pairs, in order; the first matching pattern wins."""
    pairs = []
    for item in items:
        pattern, sep, image = item.partition("=")
        if not sep or not pattern.strip() or not image.strip():
            raise ConfigError(f"--base-image-map {item!r}: expected PATTERN=IMAGE")
        pairs.append((pattern.strip(), image.strip()))
    return tuple(pairs)


def map_base_images(text: str, mapping: BaseImageMap) -> str:
    """Replace each FROM image matching a pattern (as written or with global ARG defaults applied)."""
    if not mapping:
        return text
    doc = parse(text)
    stages = stage_names(doc)
    global_args: dict[str, str] = {}
    for inst in doc.instructions:
        if inst.stage < 0:
            global_args.update(declared_values(inst))
        if inst.cmd != "FROM" or not inst.value:
            continue
        image = inst.value[0]
        earlier = stages.get(image.lower())
        if earlier is not None and earlier < inst.stage:
            continue                                  # FROM an earlier stage, not an image
        resolved = expand(image, global_args)
        new = next((to for pattern, to in mapping
                    if fnmatch.fnmatchcase(image, pattern) or fnmatch.fnmatchcase(resolved, pattern)), None)
        if new is not None:
            start = inst.text.index(image, keyword_end(inst.text))
            doc.replace(inst, inst.text[:start] + new + inst.text[start + len(image):])
    return doc.render()
