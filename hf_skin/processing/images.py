"""Images from any source (a PIL image, a path, bytes, a `datasets` row), in any mode, decoded as RGB."""

from __future__ import annotations

import io
import os
import struct
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

PILImageResampling = Image.Resampling  # what transformers.image_utils.PILImageResampling is

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
