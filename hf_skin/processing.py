"""Raw inputs -> model inputs: images (any source, any mode) and the image processor saved with every checkpoint."""

from __future__ import annotations

import io
import json
import logging
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .labels import is_valid_age

if TYPE_CHECKING:
    import torch
    from transformers import ViTImageProcessor

# torch and transformers are imported where they are used: serving an exported model (hf_skin.inference over
# onnxruntime) reads images and metadata through this module without importing either.
PILImageResampling = Image.Resampling  # what transformers.image_utils.PILImageResampling is

logger = logging.getLogger(__name__)

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

    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    return ViTImageProcessor(
        size={"height": height, "width": width}, image_mean=image_mean, image_std=image_std, resample=resample
    )


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


def _timm_image_processor(config, image_size: tuple[int, int] | None) -> ViTImageProcessor:
    """A timm checkpoint's normalisation and interpolation (its `pretrained_cfg`) at `image_size` (default its own
    input size), resizing the whole image: a centre crop would cut lesion borders. The size is also written back into
    `pretrained_cfg`, so timm's own tools see the size the model was trained at."""
    cfg = dict(config.pretrained_cfg or {})
    height, width = image_size or tuple(cfg.get("input_size", (3, 224, 224))[1:])
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

    from .pretrained import resolve_checkpoint

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
        image_processor = build_image_processor(image_size or getattr(image_config, "image_size", 224))
    if config.model_type == "hf_skin_multi_input":
        return SkinProcessor.for_model(model, image_processor, train_ages)
    return image_processor


# What PIL raises on damaged or hostile files besides OSError (UnidentifiedImageError, "image file is truncated"):
# plugins signal a malformed structure with SyntaxError, and struct/index/value errors escape from some of them.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, KeyError, ZeroDivisionError)


def load_image(value: Any, target_size: int | None = None) -> Image.Image:
    """Opens an image given as a PIL image, a path, raw bytes or a `datasets` `{"bytes", "path"}` dict, as RGB.

    With `target_size`, JPEGs are decoded at a reduced scale (libjpeg's DCT scaling, never below `target_size`),
    which makes small-input models several times faster to feed. EXIF orientation is applied, 16-bit grey is scaled
    to 8 bits and transparency is shown over white. Images over PIL's decompression-bomb limit
    (`PIL.Image.MAX_IMAGE_PIXELS`) raise `PIL.Image.DecompressionBombError`; anything else that cannot be decoded
    (null, empty, truncated, corrupt, not an image) raises `ValueError` naming it.
    """
    if isinstance(value, Image.Image):
        image, name = value, "the given PIL image"
    else:
        if isinstance(value, dict):
            value = value.get("bytes") or value.get("path")
        if value is None or (isinstance(value, (bytes, bytearray, str)) and not value):
            raise ValueError(
                f"no image (null or empty): got {value!r}, e.g. a dataset row whose image has neither bytes nor a "
                "path. Replace or remove this image."
            )
        source = io.BytesIO(value) if isinstance(value, (bytes, bytearray)) else value
        name = "image bytes" if isinstance(value, (bytes, bytearray)) else os.fspath(value)
    try:
        if not isinstance(value, Image.Image):
            image = Image.open(source)
            if target_size is not None and image.format == "JPEG":
                image.draft("RGB", (target_size, target_size))
        image.load()
        return _to_rgb(ImageOps.exif_transpose(image))  # EXIF and chunk data are read (and can fail) here too
    except _DECODE_ERRORS as err:
        # UnidentifiedImageError's own message names only the BytesIO object
        detail = "not an image format PIL knows" if isinstance(err, UnidentifiedImageError) else err
        raise ValueError(
            f"cannot decode {name}: {type(err).__name__}: {detail}. Replace or remove this image."
        ) from err


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        # 16-bit grey (medical and scientific exports): PIL's convert("RGB") clips it to 255, a white image.
        image = Image.fromarray((np.asarray(image, dtype=np.float64) / 257).clip(0, 255).astype(np.uint8))
    elif image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        # Transparent pixels keep arbitrary (often black) colour values: show them as a white background instead.
        image = Image.alpha_composite(Image.new("RGBA", image.size, "white"), image.convert("RGBA"))
    return image if image.mode == "RGB" else image.convert("RGB")


def input_size(processor) -> int | None:
    """The longer side of what the model sees, from an image processor (timm's too) or a `SkinProcessor`."""
    image_processor = getattr(processor, "image_processor", processor)
    data_config = getattr(image_processor, "data_config", None)  # TimmWrapperImageProcessor has no .size
    if data_config is not None:
        return max(data_config["input_size"][1:])
    size = image_processor.size
    return max(size.get("height", 0), size.get("width", 0), size.get("shortest_edge", 0)) or None


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
    Evaluation uses the processor alone, exactly as serving does; training applies `augment` to each decoded image.
    """
    skin = processor if isinstance(processor, SkinProcessor) else None
    image_processor = skin.image_processor if skin else processor
    import torch

    target = input_size(processor)
    category_names = category_names or {}

    def transform(batch: dict[str, list]) -> dict[str, torch.Tensor]:
        images = [load_image(value, target_size=target) for value in batch[image_column]]
        if augment is not None:
            images = [augment(image) for image in images]
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


class SkinProcessor:
    """Image + metadata -> inputs of the multi-input model; saved with the checkpoint, used for training and serving.

    Metadata is given the way a person types it: `age="45"`, `sex="Female"`, `localization="lower extremity"`.
    Anything missing, unparseable or outside the vocabulary becomes *missing* (age) or `unknown` (categories), with a
    warning for values that were given but not understood — never an error and never a silently wrong category.
    Ages are normalised with the training split's mean and standard deviation, stored here.

    Saved as the image processor's `preprocessor_config.json` plus `metadata_processor.json`.
    """

    config_name = "metadata_processor.json"
    _SYNONYMS = {"sex": {"m": "male", "man": "male", "f": "female", "woman": "female"}}

    def __init__(
        self,
        image_processor,
        metadata_fields: list[str],
        vocabularies: dict[str, list[str]],
        age_mean: float = 50.0,
        age_std: float = 17.0,
    ):
        self.image_processor = image_processor
        self.metadata_fields = list(metadata_fields)
        self.vocabularies = {field: list(values) for field, values in vocabularies.items()}
        self.age_mean, self.age_std = float(age_mean), float(age_std)
        # Category -> index, written the way parse_category normalises what a person types: "follow_up" and
        # "lower extremity" as "follow up" and "lower extremity". Built once: parse_category runs per row.
        self._index = {
            field: {self._normalize(value): i for i, value in enumerate(values)}
            for field, values in self.vocabularies.items()
        }

    @staticmethod
    def _normalize(value) -> str:
        return "" if value is None else str(value).strip().lower().replace("_", " ")

    @classmethod
    def for_model(cls, model, image_processor, train_ages=None) -> SkinProcessor:
        """The processor of a multi-input model, its age statistics from the training split's known ages."""
        ages = np.asarray([a for a in (train_ages or []) if a is not None and np.isfinite(a)], dtype=np.float64)
        stats = {"age_mean": ages.mean(), "age_std": max(ages.std(), 1.0)} if len(ages) else {}
        return cls(image_processor, model.config.metadata_fields, model.config.vocabularies, **stats)

    def parse_age(self, value) -> float | None:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        try:
            age = float(str(value).strip().removesuffix("years").strip()) if isinstance(value, str) else float(value)
        except ValueError:
            logger.warning("age %r is not a number: treated as missing", value)
            return None
        if not is_valid_age(age):
            if np.isfinite(age):
                logger.warning("age %r is outside 0-120: treated as missing", value)
            return None
        return age

    def parse_category(self, field: str, value) -> int:
        text = self._normalize(value)
        text = self._SYNONYMS.get(field, {}).get(text, text)
        index = self._index[field]
        if text in index:
            return index[text]
        if text:
            vocabulary = self.vocabularies[field]
            logger.warning("%s %r is not one of %s: treated as unknown", field, value, ", ".join(vocabulary))
        return index["unknown"]

    def encode_metadata(self, batch_size: int, return_tensors: str = "pt", **metadata) -> dict[str, torch.Tensor]:
        """Lists (or single values, for one image) of raw metadata -> the model's metadata tensors (`return_tensors`
        `"pt"`) or numpy arrays (`"np"`, what an exported model reads: float32 ages, int64 categories)."""
        columns = {}
        for field in self.metadata_fields:
            values = metadata.get(field)
            if values is None or isinstance(values, (str, int, float)):
                values = [values] * batch_size
            if len(values) != batch_size:
                raise ValueError(f"{field} has {len(values)} values for {batch_size} images")
            if field == "age":
                ages = [self.parse_age(v) for v in values]
                columns["age"] = np.array([0.0 if a is None else (a - self.age_mean) / self.age_std for a in ages])
                columns["age_missing"] = np.array([float(a is None) for a in ages])
            else:
                columns[field] = np.array([self.parse_category(field, v) for v in values], dtype=np.int64)
        if return_tensors == "np":
            return {k: v.astype(np.float32) if v.dtype == np.float64 else v for k, v in columns.items()}
        import torch

        # float64 -> torch's default float32, as torch.tensor(list of floats) made them
        return {
            k: torch.tensor(v.tolist()) if v.dtype == np.float64 else torch.from_numpy(v) for k, v in columns.items()
        }

    def __call__(self, images, return_tensors: str = "pt", **metadata) -> dict[str, torch.Tensor]:
        images = images if isinstance(images, (list, tuple)) else [images]
        pixel_values = self.image_processor([load_image(image) for image in images], return_tensors=return_tensors)[
            "pixel_values"
        ]
        return {"pixel_values": pixel_values, **self.encode_metadata(len(images), return_tensors, **metadata)}

    def to_dict(self) -> dict:
        return {
            "processor_class": type(self).__name__,
            "metadata_fields": self.metadata_fields,
            "vocabularies": self.vocabularies,
            "age_mean": self.age_mean,
            "age_std": self.age_std,
        }

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs) -> None:
        self.image_processor.save_pretrained(save_directory)
        (Path(save_directory) / self.config_name).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, **hub_kwargs) -> SkinProcessor:
        """From a saved checkpoint folder or a Hub repo id."""
        from huggingface_hub import hf_hub_download
        from transformers import AutoImageProcessor

        local = Path(name_or_path) / cls.config_name
        path = local if local.is_file() else hf_hub_download(str(name_or_path), cls.config_name, **hub_kwargs)
        values = json.loads(Path(path).read_text())
        values.pop("processor_class", None)
        image_processor = AutoImageProcessor.from_pretrained(
            name_or_path, image_processor_filename="preprocessor_config.json", **hub_kwargs
        )
        return cls(image_processor, **values)


# ----------------------------------------------------------------------------------------------------------------
# The image processors' resize without torch: what an exported model's runtime (hf_skin.inference over onnxruntime,
# the on-device page's JavaScript) does to reproduce the pixel values that the model was trained and evaluated on.

# PIL's (and torchvision's antialiased) filters: the support in input pixels at scale 1, and the kernel.
_FILTERS = {
    "bilinear": (1.0, lambda x: np.clip(1.0 - np.abs(x), 0.0, None)),
    "bicubic": (2.0, lambda x: _bicubic(np.abs(x))),
}


def _bicubic(x: np.ndarray, a: float = -0.5) -> np.ndarray:
    # PIL's bicubic (a = -0.5; torch's non-antialiased bicubic uses -0.75)
    return np.where(
        x < 1.0,
        ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0,
        np.where(x < 2.0, (((x - 5.0) * x + 8.0) * x - 4.0) * a, 0.0),
    )


def resample_weights(in_size: int, out_size: int, resample: str) -> np.ndarray:
    """`(out_size, in_size)` weights of a separable resize along one axis, PIL's `ImagingResample` rule: output pixel
    `i` is centred at `(i + 0.5) * scale` input pixels and, when shrinking, the filter's support grows by `scale` (so
    every input pixel counts: antialiasing); each row sums to 1."""
    if resample == "nearest":
        weights = np.zeros((out_size, in_size))
        weights[
            np.arange(out_size),
            np.minimum(((np.arange(out_size) + 0.5) * in_size / out_size).astype(int), in_size - 1),
        ] = 1
        return weights
    support, kernel = _FILTERS[resample]
    scale = in_size / out_size
    filter_scale = max(scale, 1.0)
    support *= filter_scale
    weights = np.zeros((out_size, in_size))
    for i in range(out_size):
        center = (i + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), in_size)
        taps = kernel((np.arange(lo, hi) - center + 0.5) * (1.0 / filter_scale))
        total = 0.0
        for tap in taps.tolist():  # summed in order, as torch does (numpy's sum is pairwise)
            total += tap
        weights[i, lo:hi] = taps / total
    return weights


def _fixed_point(weights: np.ndarray) -> tuple[np.ndarray, int]:
    """Float resize weights -> int16-range integers and their precision (bits, at most 22), as torch's uint8
    antialiased kernel makes them: the most bits that keep the largest weight under 2**15, rounded half away from 0."""
    precision = 0
    while precision < 22 and int(0.5 + weights.max() * (1 << (precision + 1))) < (1 << 15):
        precision += 1
    scaled = weights * (1 << precision)
    return np.where(scaled < 0, np.trunc(scaled - 0.5), np.trunc(scaled + 0.5)).astype(np.int64), precision


def _resample_axis(pixels: np.ndarray, weights: np.ndarray, axis: int) -> np.ndarray:
    ints, precision = _fixed_point(weights)
    out = np.tensordot(pixels.astype(np.int64), ints, axes=([axis], [1]))  # the new axis comes last
    out = np.moveaxis(out, -1, axis)
    return np.clip((out + (1 << (precision - 1))) >> precision, 0, 255).astype(np.uint8)


def resize_array(pixels: np.ndarray, height: int, width: int, resample: str) -> np.ndarray:
    """An `(H, W, 3)` uint8 image resized to `(height, width)` the way the image processors hf-skin saves do it:
    transformers 5 resizes with torchvision, whose uint8 antialiased kernel on x86 (AVX2) and ARM CPUs is PIL's
    `ImagingResample` (the `resample_weights` rule; a horizontal pass, rounding to 8 bits, then a vertical pass) with
    int16 fixed-point weights. The same integer arithmetic here gives torchvision's pixels exactly, without torch;
    PIL's own `Image.resize` (22-bit weights) differs by a level on about 1% of the pixels."""
    if pixels.shape[1] != width:
        pixels = _resample_axis(pixels, resample_weights(pixels.shape[1], width, resample), 1)
    if pixels.shape[0] != height:
        pixels = _resample_axis(pixels, resample_weights(pixels.shape[0], height, resample), 0)
    return pixels


def pixel_grid(spec: dict) -> tuple[float, int] | None:
    """Where 8-bit pixels land after the rescale and normalisation of `image_spec` `spec` (its `rescale_factor`,
    `image_mean` and `image_std`): `(step, zero)` when pixel value p becomes exactly `(p - zero) * step` in every
    channel (one std for all three, and one mean that is a whole pixel value). int8 quantisation of the input with
    that scale and zero point then represents every pixel exactly. None otherwise: ImageNet's per-channel statistics,
    or a mean of 0.5, which puts every pixel half-way between two steps of any integer zero point (127.5)."""
    rescale = spec["rescale_factor"]
    steps = [rescale / std for std in spec["image_std"]]
    zeros = [mean / rescale for mean in spec["image_mean"]]
    zero = round(zeros[0])
    if max(steps) - min(steps) > 1e-7 * max(steps) or any(abs(z - zero) > 1e-4 for z in zeros) or not 0 <= zero <= 255:
        return None
    return steps[0], zero


def align_mean_to_pixels(image_processor, config=None) -> list[float] | None:
    """Rounds `image_processor`'s normalisation mean to a whole 8-bit pixel value, in place, where that gives its
    normalised pixels a `pixel_grid` they lack (a mean of 0.5, timm's EfficientNet-Lite's and Google's ViT's, becomes
    128/255): the normalised image moves by half a pixel level at most. A timm model's `config` (or a multi-input
    model's, through its `backbone_config`) gets the same mean in its `pretrained_cfg`, which timm's tools and
    fine-tuning read. Returns the new mean, or None when nothing changed."""
    settings = normalisation(image_processor.to_dict())
    if pixel_grid(settings) is not None:  # on a grid already (no normalisation included)
        return None
    rescale = settings["rescale_factor"]
    mean = [round(m / rescale) * rescale for m in settings["image_mean"]]
    if pixel_grid({**settings, "image_mean": mean}) is None:
        return None
    image_processor.image_mean = mean
    image_config = getattr(config, "backbone_config", config)
    if getattr(image_config, "model_type", None) == "timm_wrapper":
        image_config.pretrained_cfg = {**(image_config.pretrained_cfg or {}), "mean": mean}
    return mean


def normalisation(settings: dict) -> dict:
    """`image_spec`'s `rescale_factor`, `image_mean` and `image_std` (identity where a step is skipped) from an image
    processor's settings: its `to_dict()` or its saved `preprocessor_config.json`."""
    rescale = float(settings.get("rescale_factor", 1 / 255)) if settings.get("do_rescale", True) else 1.0
    if not settings.get("do_normalize", True):
        return {"rescale_factor": rescale, "image_mean": [0.0, 0.0, 0.0], "image_std": [1.0, 1.0, 1.0]}
    mean = [float(v) for v in settings["image_mean"]]
    std = [float(v) for v in settings["image_std"]]
    return {"rescale_factor": rescale, "image_mean": mean, "image_std": std}


def image_spec(image_processor) -> dict:
    """What a runtime needs to turn an RGB image into the model's `pixel_values`, read from a saved image processor:
    `resize` (`{"height", "width"}`, or `{"shortest_edge", "crop_pct"}` for ConvNeXt's resize-then-centre-crop),
    `resample`, `rescale_factor` and `image_mean`/`image_std` (channel order RGB, layout NCHW, float32)."""
    names = {int(PILImageResampling.NEAREST): "nearest", int(PILImageResampling.BILINEAR): "bilinear"}
    names[int(PILImageResampling.BICUBIC)] = "bicubic"
    resample = getattr(image_processor, "resample", None)
    resample = int(resample) if resample is not None else None
    if resample not in names:
        raise ValueError(
            f"{type(image_processor).__name__} resamples with {resample!r}; an exported model's runtimes implement "
            f"{', '.join(names.values())} only: save the checkpoint with one of those"
        )
    size = dict(image_processor.size or {})
    if getattr(image_processor, "do_center_crop", False) and "crop_pct" not in image_processor.to_dict():
        raise ValueError(f"{type(image_processor).__name__} crops the image: not supported by the exported runtimes")
    if size.get("height") and size.get("width"):
        resize = {"height": int(size["height"]), "width": int(size["width"])}
    elif size.get("shortest_edge") and hasattr(image_processor, "crop_pct"):
        resize = {"shortest_edge": int(size["shortest_edge"]), "crop_pct": float(image_processor.crop_pct)}
    else:
        raise ValueError(
            f"{type(image_processor).__name__} with size {size} is not supported by the exported runtimes"
        )
    if not getattr(image_processor, "do_resize", True):
        raise ValueError("the image processor does not resize: an exported model needs a fixed input size")
    return {
        "resize": resize,
        "resample": names[resample],
        **normalisation(image_processor.to_dict()),
        "input_size": list(spec_input_size(resize)),
        "channel_order": "RGB",
        "layout": "NCHW",
    }


def spec_input_size(resize: dict) -> tuple[int, int]:
    """`(height, width)` of the model's input for an `image_spec` `resize`."""
    if "height" in resize:
        return resize["height"], resize["width"]
    return resize["shortest_edge"], resize["shortest_edge"]


def pixel_values_from_spec(images: list[Image.Image], spec: dict) -> np.ndarray:
    """RGB images -> `(N, 3, H, W)` float32 `pixel_values` as `spec` (an `image_spec`) says, without torch."""
    resize, resample = spec["resize"], spec["resample"]
    mean = np.asarray(spec["image_mean"], dtype=np.float32)
    std = np.asarray(spec["image_std"], dtype=np.float32)
    out = []
    for image in images:
        pixels = np.asarray(image.convert("RGB"))
        if "height" in resize:
            pixels = resize_array(pixels, resize["height"], resize["width"], resample)
        else:
            edge = resize["shortest_edge"]
            if edge < 384:  # ConvNeXt's rule: the shortest edge to edge / crop_pct, then a centre crop
                height, width = pixels.shape[:2]
                target = int(edge / resize["crop_pct"])
                short, long = sorted((height, width))
                new_short, new_long = target, int(target * long / short)
                new_h, new_w = (new_short, new_long) if height <= width else (new_long, new_short)
                pixels = resize_array(pixels, new_h, new_w, resample)
                top, left = int((new_h - edge) / 2.0), int((new_w - edge) / 2.0)
                pixels = pixels[top : top + edge, left : left + edge]
            else:
                pixels = resize_array(pixels, edge, edge, resample)
        # the processors' fused rescale + normalise: (x - mean / scale) / (std / scale), in float32
        scale = np.float32(spec["rescale_factor"])
        values = (pixels.astype(np.float32) - mean / scale) / (std / scale)
        out.append(values.transpose(2, 0, 1))
    return np.stack(out).astype(np.float32)
