"""The image processor saved with every checkpoint (`processor_for`, `build_image_processor`) and the `Dataset`
transform that applies it to batches of rows (`make_batch_transform`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from PIL import Image

from .images import PILImageResampling, load_image
from .metadata import SkinProcessor
from .sizes import input_size, resolve_input_size

if TYPE_CHECKING:
    import torch
    from transformers import ViTImageProcessor

# torch and transformers are imported where they are used: serving an exported model (hf_skin.inference over
# onnxruntime) reads images and metadata through this package without importing either.

# ImageNet statistics: the pretrained backbones expect them, and a CNN trained from scratch does not care which.
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def build_image_processor(
    image_size: int | tuple[int, int],
    image_mean: list[float] = IMAGENET_MEAN,
    image_std: list[float] = IMAGENET_STD,
    resample: int = PILImageResampling.BILINEAR,
) -> ViTImageProcessor:
    """A plain resize-rescale-normalise processor to `image_size` (a side, or `(height, width)`): the whole image,
    nothing cropped. Saved as `preprocessor_config.json`, it loads with `AutoImageProcessor` where hf_skin is not."""
    from transformers import ViTImageProcessor

    height, width = resolve_input_size(image_size)
    return ViTImageProcessor(
        size={"height": height, "width": width}, image_mean=image_mean, image_std=image_std, resample=resample
    )


def _timm_image_processor(config, image_size: tuple[int, int] | None) -> ViTImageProcessor:
    """A timm checkpoint's normalisation and interpolation (its `pretrained_cfg`) at `image_size` (default its own
    input size), resizing the whole image: a centre crop would cut lesion borders. The size is also written back into
    `pretrained_cfg`, so timm's own tools see the size the model was trained at."""
    cfg = dict(config.pretrained_cfg or {})
    height, width = image_size or resolve_input_size(config) or (224, 224)
    resample = _RESAMPLING.get(cfg.get("interpolation", "bicubic"), PILImageResampling.BICUBIC)
    # "squash": timm's own eval transform (what AutoImageProcessor builds from config.json) then resizes the same way
    config.pretrained_cfg = {
        **cfg,
        "input_size": [3, height, width],
        "crop_pct": 1.0,
        "crop_mode": "squash",
        "pool_size": None,
    }
    return build_image_processor(
        (height, width), list(cfg.get("mean", IMAGENET_MEAN)), list(cfg.get("std", IMAGENET_STD)), resample
    )


_RESAMPLING = {
    "bicubic": PILImageResampling.BICUBIC,
    "bilinear": PILImageResampling.BILINEAR,
    "nearest": PILImageResampling.NEAREST,
}


def processor_for(model, pretrained: str | None = None, train_ages=None, image_size: tuple[int, int] | None = None):
    """The processor saved with `model`: a timm checkpoint's normalisation at `image_size`, the pretrained
    checkpoint's own image processor, or a plain one at the CNN's input size; wrapped in a `SkinProcessor` with the
    training split's age statistics for multi-input models.

    `image_size` (`(height, width)`) is for convolutional pretrained backbones, which take any size: e.g. HAM10000's
    4:3 images whole rather than a square crop of them."""
    from transformers import AutoImageProcessor

    from ..pretrained import resolve_checkpoint

    config = model.config
    image_config = getattr(config, "backbone_config", config)
    if image_size is not None and image_config.model_type == "hf_skin_cnn":
        raise ValueError("hf-skin's CNN sets its input size in its config: --config_overrides '{\"image_size\": 64}'")
    if image_size is not None and image_config.model_type == "vit":
        raise ValueError("--image_size is for convolutional backbones: ViT's size is fixed by its position embeddings")
    if image_config.model_type == "timm_wrapper":
        image_processor = _timm_image_processor(image_config, image_size)
    elif pretrained is not None:
        image_processor = AutoImageProcessor.from_pretrained(resolve_checkpoint(pretrained))
        if image_size is not None:
            image_processor = build_image_processor(
                image_size, image_processor.image_mean, image_processor.image_std, image_processor.resample
            )
    else:
        # A backbone config that names no input size (ResNet) gets the ImageNet size its design assumes.
        image_processor = build_image_processor(image_size or resolve_input_size(image_config) or 224)
    if config.model_type == "hf_skin_multi_input":
        return SkinProcessor.for_model(model, image_processor, train_ages)
    return image_processor


def make_batch_transform(
    processor,
    augment: Callable[[Image.Image], Image.Image] | None = None,
    category_names: dict[str, list[str]] | None = None,
    image_column: str = "image",
    label_column: str = "dx",
) -> Callable[[dict[str, list]], dict[str, torch.Tensor]]:
    """A `Dataset.with_transform` function: a batch of rows -> model inputs (and `labels` when present).

    `processor` is an image processor (image-only models) or a `SkinProcessor` (multi-input models, which also read
    the metadata columns; `category_names` turns their `ClassLabel` ids back into the words the processor reads).
    Evaluation (no `augment`) decodes each image whole and uses the processor alone, exactly as serving does (one
    pixel path: a run's stored metrics and calibration are those of what serving sees); training decodes JPEGs at
    reduced size (never below the model's input) and applies `augment` to each image.
    """
    skin = processor if isinstance(processor, SkinProcessor) else None
    image_processor = skin.image_processor if skin else processor
    import torch

    target = input_size(processor)
    category_names = category_names or {}

    def transform(batch: dict[str, list]) -> dict[str, torch.Tensor]:
        if augment is None:
            images = [load_image(value) for value in batch[image_column]]
        else:
            images = [augment(load_image(value, target_size=target)) for value in batch[image_column]]
        out = {"pixel_values": image_processor(images, return_tensors="pt")["pixel_values"]}
        if skin is not None:
            metadata = {
                field: [
                    category_names[field][v] if field in category_names and v is not None else v for v in batch[field]
                ]
                for field in skin.metadata_fields
            }
            out.update(skin.encode_metadata(len(images), **metadata))
        if label_column in batch:
            out["labels"] = torch.as_tensor(batch[label_column], dtype=torch.long)
        return out

    return transform
