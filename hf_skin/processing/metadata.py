"""`SkinProcessor`: an image and its metadata, as a person types them, -> the multi-input model's inputs."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..labels import MAX_AGE, MIN_AGE, is_valid_age
from .images import load_image

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)


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
                logger.warning("age %r is outside %d-%d: treated as missing", value, MIN_AGE, MAX_AGE)
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
