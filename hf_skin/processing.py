"""Raw inputs -> model inputs: images (any source, any mode) and the image processor saved with every checkpoint."""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from typing import Any

import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from transformers import ViTImageProcessor

# ImageNet statistics: the pretrained backbones expect them, and a CNN trained from scratch does not care which.
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def build_image_processor(image_size: int) -> ViTImageProcessor:
    """A plain resize-rescale-normalise processor to `image_size`², loaded by `AutoImageProcessor` sans hf_skin."""
    return ViTImageProcessor(
        size={"height": image_size, "width": image_size}, image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD
    )


def load_image(value: Any, target_size: int | None = None) -> Image.Image:
    """Opens an image given as a PIL image, a path, raw bytes or a `datasets` `{"bytes", "path"}` dict, as RGB.

    With `target_size`, JPEGs are decoded at a reduced scale (libjpeg's DCT scaling, never below `target_size`),
    which makes small-input models several times faster to feed. EXIF orientation is applied.
    """
    if isinstance(value, Image.Image):
        image = value
    else:
        if isinstance(value, dict):
            value = value.get("bytes") or value.get("path")
        source = io.BytesIO(value) if isinstance(value, (bytes, bytearray)) else value
        name = "image bytes" if isinstance(value, (bytes, bytearray)) else os.fspath(value)
        try:
            image = Image.open(source)
            if target_size is not None and image.format == "JPEG":
                image.draft("RGB", (target_size, target_size))
            image.load()
        except (UnidentifiedImageError, OSError) as err:
            raise ValueError(f"cannot decode {name}: {err}. Replace or remove this image.") from err
    image = ImageOps.exif_transpose(image)
    return image if image.mode == "RGB" else image.convert("RGB")


def make_batch_transform(
    image_processor: ViTImageProcessor,
    augment: Callable[[Image.Image], Image.Image] | None = None,
    image_column: str = "image",
    label_column: str = "dx",
) -> Callable[[dict[str, list]], dict[str, torch.Tensor]]:
    """A `Dataset.with_transform` function: a batch of rows -> `pixel_values` (and `labels` when present).

    Evaluation uses the image processor alone, exactly as `pipeline()` will; training applies `augment` to each
    decoded image first.
    """
    size = image_processor.size
    target = max(size.get("height", 0), size.get("width", 0), size.get("shortest_edge", 0)) or None

    def transform(batch: dict[str, list]) -> dict[str, torch.Tensor]:
        images = [load_image(value, target_size=target) for value in batch[image_column]]
        if augment is not None:
            images = [augment(image) for image in images]
        out = {"pixel_values": image_processor(images, return_tensors="pt")["pixel_values"]}
        if label_column in batch:
            out["labels"] = torch.as_tensor(batch[label_column], dtype=torch.long)
        return out

    return transform
