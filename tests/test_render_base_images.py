"""The FROM map: glob patterns rewrite base images, stage references stay."""
import pytest

from helpers.errors import ConfigError
from helpers.render import map_base_images, parse_mapping

MAP = parse_mapping(["nvcr.io/*=local/base:1", "nvidia/cuda:12.4*=local/cuda:12.4", "vllm/vllm-openai=local/vllm"])


@pytest.mark.parametrize("text, expected", [
    ("FROM nvcr.io/nvidia/tritonserver:24.04-py3-min\n", "FROM local/base:1\n"),
    ("FROM --platform=linux/amd64 nvcr.io/x:1 AS build\n", "FROM --platform=linux/amd64 local/base:1 AS build\n"),
    # matched after global ARG defaults are applied, rewritten as a literal
    ("ARG CUDA_VERSION=12.4.1\nFROM nvidia/cuda:${CUDA_VERSION}-devel-ubuntu22.04\n",
     "ARG CUDA_VERSION=12.4.1\nFROM local/cuda:12.4\n"),
    ("FROM vllm/vllm-openai\n", "FROM local/vllm\n"),
    ("FROM ubuntu:22.04\n", "FROM ubuntu:22.04\n"),
    # a later FROM of an earlier stage's name is not an image
    ("FROM nvcr.io/a AS nvcr.io/b\nFROM nvcr.io/b\n", "FROM local/base:1 AS nvcr.io/b\nFROM nvcr.io/b\n"),
])
def test_from_images_are_mapped(text, expected):
    assert map_base_images(text, MAP) == expected


def test_first_matching_pattern_wins_and_empty_map_changes_nothing():
    assert map_base_images("FROM a/b\n", parse_mapping(["a/*=one", "*=two"])) == "FROM one\n"
    assert map_base_images("FROM  a/b\n", ()) == "FROM  a/b\n"


@pytest.mark.parametrize("item", ["noequals", "=image", "pattern=", " = "])
def test_malformed_mapping_is_a_config_error(item):
    with pytest.raises(ConfigError, match="PATTERN=IMAGE"):
        parse_mapping([item])
