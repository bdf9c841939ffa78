"""What a runtime needs besides the ONNX file (`hf_skin_export.json`): the preprocessing, the inputs, the labels,
the metadata encoding, the calibration and the operating point, and the names of the files beside it."""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path
from typing import Any

import PIL.Image

from ..inference import EXPORT_SPEC, UNCERTAIN_BELOW, SkinClassifier
from ..labels import DX_NAMES, MALIGNANT_DX, MAX_AGE, MIN_AGE
from ..processing import SkinProcessor, image_spec

SPEC_FORMAT = "hf-skin-onnx"
SPEC_VERSION = 1
FP32_FILE = "model.onnx"
INT8_FILE = "model_int8.onnx"
# The metadata inputs of the multi-input model (SkinProcessor.encode_metadata's names)
METADATA_INPUTS = ("age", "age_missing", "sex", "localization", "dx_type")


class ExportError(ValueError):
    """A checkpoint or output folder that cannot be exported as asked; the message says what to do."""


def is_export(path: str | os.PathLike) -> bool:
    """Whether `path` is a folder written by `export_onnx` (it holds `hf_skin_export.json`)."""
    return (Path(path) / EXPORT_SPEC).is_file()


def input_names(classifier: SkinClassifier) -> list[str]:
    """The exported model's inputs, in order: `pixel_values`, then the metadata tensors `SkinProcessor` makes."""
    if isinstance(classifier.processor, SkinProcessor):
        return ["pixel_values", *classifier.processor.encode_metadata(1, return_tensors="np")]
    return ["pixel_values"]


def export_spec(classifier: SkinClassifier) -> dict[str, Any]:
    """Everything a runtime needs besides the ONNX file: the preprocessing, the inputs, the labels, the metadata
    encoding, and the calibration and operating point the model config carries (calibration is already folded into
    the exported logits: a runtime only takes their softmax)."""
    from .. import __version__

    config = classifier.model.config
    image = image_spec(classifier.image_processor)
    height, width = image["input_size"]
    inputs = [{"name": "pixel_values", "dtype": "float32", "shape": ["batch", 3, height, width]}]
    metadata = None
    if isinstance(classifier.processor, SkinProcessor):
        processor = classifier.processor
        encoded = processor.encode_metadata(1, return_tensors="np")
        inputs += [{"name": name, "dtype": str(value.dtype), "shape": ["batch"]} for name, value in encoded.items()]
        metadata = {
            "fields": processor.metadata_fields,
            "vocabularies": {
                field: processor.vocabularies[field] for field in processor.metadata_fields if field != "age"
            },
            "unknown": "unknown",
            "synonyms": SkinProcessor._SYNONYMS,
        }
        if "age" in processor.metadata_fields:
            metadata["age"] = {
                "mean": processor.age_mean,
                "std": processor.age_std,
                "range": [MIN_AGE, MAX_AGE],
                "encoding": "age = (years - mean) / std and age_missing = 0; unknown: age = 0, age_missing = 1",
            }
    labels = list(classifier.labels)
    return {
        "format": SPEC_FORMAT,
        "format_version": SPEC_VERSION,
        "hf_skin_version": __version__,
        "exported": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model_type": config.model_type,
        "architecture": getattr(config, "architecture", None) or (config.architectures or [None])[0],
        "labels": labels,
        "label_names": {label: DX_NAMES.get(label, label) for label in labels},
        "malignant": [dx for dx in MALIGNANT_DX if dx in labels],
        "uncertain_below": UNCERTAIN_BELOW,
        "image": {
            **image,
            "exif_transpose": True,
            # hf_skin.processing.load_image refuses larger images (PIL's decompression-bomb error)
            "max_pixels": 2 * PIL.Image.MAX_IMAGE_PIXELS,
            "transparency": "composited over white",
            "convert": "RGB (16-bit grey scaled to 8 bits)",
        },
        "inputs": inputs,
        "outputs": [{"name": "logits", "dtype": "float32", "shape": ["batch", len(labels)]}],
        "metadata": metadata,
        "calibration": _plain(getattr(config, "calibration", None)),
        # what the Space says about the probabilities (Calibration.describe), None for a raw model
        "calibration_note": classifier.calibration.describe(labels) if classifier.calibration else None,
        "operating_point": _plain(getattr(config, "operating_point", None)),
        "training_data": _plain(getattr(config, "training_data", None)),
        # training's --int8_ready: the weights are int8 numbers already (hf_skin.quantization), None otherwise
        "int8_ready": _plain(getattr(config, "int8_ready", None)),
        "models": {},
    }


def _plain(value):
    return json.loads(json.dumps(value)) if value is not None else None
