"""Raw inputs -> model inputs: images (any source, any mode), the image processor saved with every checkpoint, the
metadata a person types, the one image-size resolver, and what an exported model's runtime needs to do the same.

- `images`: `load_image`, any source and mode -> RGB
- `sizes`: `parse_image_size` (the `--image_size` flag) and `resolve_input_size`, the `(height, width)` a processor or
  model takes
- `processors`: `processor_for`, `build_image_processor`, `make_batch_transform`
- `metadata`: `SkinProcessor`, image + metadata -> the multi-input model's inputs
- `spec`: `image_spec` and `pixel_values_from_spec` (an exported model's preprocessing, numpy only), the pixel grid
  of the normalisation
- `resize`: the processors' resize in numpy, pixel for pixel
"""

from .images import load_image
from .metadata import SkinProcessor
from .processors import IMAGENET_MEAN, IMAGENET_STD, build_image_processor, make_batch_transform, processor_for
from .resize import resample_weights, resize_array
from .sizes import input_size, parse_image_size, resolve_input_size
from .spec import align_mean_to_pixels, image_spec, normalisation, pixel_grid, pixel_values_from_spec

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SkinProcessor",
    "align_mean_to_pixels",
    "build_image_processor",
    "image_spec",
    "input_size",
    "load_image",
    "make_batch_transform",
    "normalisation",
    "parse_image_size",
    "pixel_grid",
    "pixel_values_from_spec",
    "processor_for",
    "resample_weights",
    "resize_array",
    "resolve_input_size",
]
