"""Predicting with a trained checkpoint: image (+ metadata for multi-input models) -> class probabilities."""

from __future__ import annotations

import os

import torch
from transformers import AutoImageProcessor, AutoModelForImageClassification, PreTrainedModel

from . import models as _models  # noqa: F401  (registers hf-skin's model classes with the Auto classes)
from .processing import SkinProcessor, load_image


class SkinClassifier:
    """The predict API of every hf-skin checkpoint; what `pipeline("image-classification")` is for image-only models,
    with metadata for multi-input models.

    ```python
    classifier = SkinClassifier.from_pretrained("runs/multi-input")
    classifier.predict("lesion.jpg", age="45", sex="female", localization="back")
    # [{"mel": 0.61, "nv": 0.22, ...}]   (one dict per image, sorted by probability)
    ```
    """

    def __init__(self, model: PreTrainedModel, processor):
        self.model = model.eval()
        self.processor = processor
        self.labels = [model.config.id2label[i] for i in range(model.config.num_labels)]

    @property
    def metadata_fields(self) -> list[str]:
        """The metadata this model reads (empty for image-only models)."""
        return self.processor.metadata_fields if isinstance(self.processor, SkinProcessor) else []

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, **kwargs) -> SkinClassifier:
        """From a checkpoint folder or a Hub repo id (`kwargs` go to `from_pretrained`, e.g. `revision`)."""
        model = AutoModelForImageClassification.from_pretrained(name_or_path, **kwargs)
        if model.config.model_type == "hf_skin_multi_input":
            processor = SkinProcessor.from_pretrained(name_or_path, **kwargs)
        else:
            processor = AutoImageProcessor.from_pretrained(name_or_path, **kwargs)
        return cls(model, processor)

    @torch.inference_mode()
    def predict_proba(self, images, **metadata) -> torch.Tensor:
        """(N, num_labels) probabilities for one image or a list (paths, bytes or PIL images)."""
        images = [load_image(image) for image in (images if isinstance(images, (list, tuple)) else [images])]
        if isinstance(self.processor, SkinProcessor):
            inputs = self.processor(images, **metadata)
        else:
            inputs = {"pixel_values": self.processor(images, return_tensors="pt")["pixel_values"]}
        device = next(self.model.parameters()).device
        logits = self.model(**{k: v.to(device) for k, v in inputs.items()}).logits
        return logits.float().softmax(dim=-1).cpu()

    def predict(self, images, **metadata) -> list[dict[str, float]]:
        """One `{label: probability}` dict per image, most probable first."""
        return [
            dict(sorted(zip(self.labels, row.tolist()), key=lambda item: -item[1]))
            for row in self.predict_proba(images, **metadata)
        ]
