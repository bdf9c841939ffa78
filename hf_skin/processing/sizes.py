"""The image size: the `--image_size` flag parsed, and the one answer to "what `(height, width)` does this processor or
model take", which every other place asks rather than reading `size`, `input_size` or `image_size` itself."""

from __future__ import annotations

from collections.abc import Mapping
from numbers import Integral
from typing import Any


def parse_image_size(value: str | int | None) -> tuple[int, int] | None:
    """`"224"` or `"150x200"` (height × width) -> `(height, width)`."""
    if value is None or value == "":
        return None
    parts = str(value).lower().replace("×", "x").split("x")
    try:
        sizes = [int(part) for part in parts]
    except ValueError:
        sizes = []
    if len(sizes) not in (1, 2) or min(sizes) < 8:
        raise ValueError(f"image size {value!r} is not a side or HEIGHTxWIDTH of at least 8 px, e.g. 224 or 150x200")
    return (sizes[0], sizes[-1])


def resolve_input_size(source: Any) -> tuple[int, int] | None:
    """`(height, width)` of the images a model takes, from whatever describes them; None where `source` names no size.

    Args:
        source: any of
            - a side (`int`) or `(height, width)`;
            - a `size` dict of an image processor (or of its `preprocessor_config.json`), or an `image_spec`'s
              `resize`: `{"height", "width"}`, or `{"shortest_edge"}` (resized to that square, or resized and
              centre-cropped to it: a square either way);
            - a timm `pretrained_cfg` or `data_config` (`{"input_size": (3, height, width)}`);
            - an image processor: transformers', `TimmWrapperImageProcessor` (its `data_config`), or a `SkinProcessor`
              (its image processor);
            - a model or its config: a timm checkpoint's `pretrained_cfg`, else the config's `image_size` (hf-skin's
              CNN, ViT); a multi-input model's through its `backbone_config`. ResNet's config names none.
    """
    if source is None:
        return None
    if isinstance(source, Integral):
        return int(source), int(source)
    if isinstance(source, (tuple, list)):
        height, width = source
        return int(height), int(width)
    if isinstance(source, Mapping):
        if source.get("input_size"):
            height, width = source["input_size"][-2:]  # timm's (channels, height, width)
            return int(height), int(width)
        if source.get("height") and source.get("width"):
            return int(source["height"]), int(source["width"])
        if source.get("shortest_edge"):
            return int(source["shortest_edge"]), int(source["shortest_edge"])
        return None
    if hasattr(source, "image_processor"):  # a SkinProcessor
        return resolve_input_size(source.image_processor)
    if getattr(source, "data_config", None) is not None:  # TimmWrapperImageProcessor has no `size`
        return resolve_input_size(source.data_config)
    if hasattr(source, "size"):  # an image processor: its SizeDict holds only the keys it sets
        return resolve_input_size(dict(source.size or {}))
    config = getattr(source, "config", source)  # a model, or its config
    config = getattr(config, "backbone_config", None) or config
    if getattr(config, "model_type", None) == "timm_wrapper":
        return resolve_input_size(dict(config.pretrained_cfg or {}))
    return resolve_input_size(getattr(config, "image_size", None))


def input_size(processor) -> int | None:
    """The longer side of what the model sees, from an image processor (timm's too) or a `SkinProcessor`."""
    size = resolve_input_size(processor)
    return max(size) if size else None
