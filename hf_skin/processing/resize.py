"""The image processors' resize without torch: what an exported model's runtime (hf_skin.inference over onnxruntime,
the on-device page's JavaScript) does to reproduce the pixel values that the model was trained and evaluated on."""

from __future__ import annotations

import numpy as np

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
