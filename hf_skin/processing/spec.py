"""What an exported model's runtime needs to turn an RGB image into `pixel_values` (`image_spec`), read from the
image processor saved with a checkpoint, and that runtime's preprocessing itself (`pixel_values_from_spec`, numpy
only); with the normalisation's pixel grid, which decides whether int8 holds every input pixel exactly."""

from __future__ import annotations

import numpy as np
from PIL import Image

from .images import PILImageResampling
from .resize import resize_array
from .sizes import resolve_input_size


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
        "input_size": list(resolve_input_size(resize)),
        "channel_order": "RGB",
        "layout": "NCHW",
    }


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
