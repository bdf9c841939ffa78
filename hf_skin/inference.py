"""Predicting with a trained checkpoint: image (+ metadata for multi-input models) -> class probabilities."""

from __future__ import annotations

import os

import torch
from transformers import AutoImageProcessor, AutoModelForImageClassification, PreTrainedModel
from transformers.utils import IMAGE_PROCESSOR_NAME

from . import models as _models  # noqa: F401  (registers hf-skin's model classes with the Auto classes)
from .data import DX_NAMES, MALIGNANT_DX
from .processing import SkinProcessor, load_image

# Under this top-class probability a prediction is called uncertain. At 0.5 the most probable class stops being more
# likely than all the others together: for a calibrated model (the evaluation report measures it, ECE) predictions
# below it are wrong more often than right. With 7 classes a guess is at 0.14, so 0.5 still leaves room for an answer.
UNCERTAIN_BELOW = 0.5


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
            # preprocessor_config.json, the processor hf-skin trained with: for a local timm folder AutoImageProcessor
            # would otherwise rebuild timm's own from config.json (the same resize, to float rounding)
            processor = AutoImageProcessor.from_pretrained(
                name_or_path, image_processor_filename=IMAGE_PROCESSOR_NAME, **kwargs
            )
        return cls(model, processor)

    @property
    def image_processor(self):
        """The image part of the processor (resizing, normalisation)."""
        return self.processor.image_processor if isinstance(self.processor, SkinProcessor) else self.processor

    def model_inputs(self, images, **metadata) -> dict[str, torch.Tensor]:
        """The model's keyword inputs (on its device) for one image or a list (paths, bytes or PIL images)."""
        images = [load_image(image) for image in (images if isinstance(images, (list, tuple)) else [images])]
        if isinstance(self.processor, SkinProcessor):
            inputs = self.processor(images, **metadata)
        else:
            inputs = {"pixel_values": self.processor(images, return_tensors="pt")["pixel_values"]}
        device = next(self.model.parameters()).device
        return {k: v.to(device) for k, v in inputs.items()}

    @torch.inference_mode()
    def predict_proba(self, images, **metadata) -> torch.Tensor:
        """(N, num_labels) probabilities for one image or a list (paths, bytes or PIL images)."""
        logits = self.model(**self.model_inputs(images, **metadata)).logits
        return logits.float().softmax(dim=-1).cpu()

    def predict(self, images, **metadata) -> list[dict[str, float]]:
        """One `{label: probability}` dict per image, most probable first."""
        return self.ranked(self.predict_proba(images, **metadata))

    def ranked(self, probabilities: torch.Tensor) -> list[dict[str, float]]:
        """(N, num_labels) probabilities -> one `{label: probability}` dict per row, most probable first."""
        return [dict(sorted(zip(self.labels, row.tolist()), key=lambda item: -item[1])) for row in probabilities]


def display_name(label: str) -> str:
    """`"Melanoma (mel)"`: a HAM10000 diagnosis code with its full name in front (other labels as they are)."""
    return f"{DX_NAMES[label]} ({label})" if label in DX_NAMES else label


def malignant_probability(probs: dict[str, float]) -> float:
    """The probability of a malignant class (`MALIGNANT_DX`: melanoma, basal cell carcinoma, actinic keratosis /
    intraepithelial carcinoma) in one `{label: probability}` dict of `SkinClassifier.predict`."""
    return sum(probs.get(dx, 0.0) for dx in MALIGNANT_DX)


def summarize(probs: dict[str, float], uncertain_below: float = UNCERTAIN_BELOW) -> str:
    """A plain summary (Markdown) of one `{label: probability}` dict: the most likely class, the probability of a
    malignant class, and, when the most likely class is under `uncertain_below`, that the prediction is uncertain."""
    top = max(probs, key=probs.get)
    malignant = ", ".join(DX_NAMES[dx][0].lower() + DX_NAMES[dx][1:] for dx in MALIGNANT_DX)
    lines = [
        f"**Most likely: {display_name(top)}, {probs[top]:.0%}.**",
        f"Probability of a malignant class ({malignant}): **{malignant_probability(probs):.0%}**.",
    ]
    if probs[top] < uncertain_below:
        lines.insert(
            0,
            f"**Uncertain — this needs a dermatologist's eyes.** No class reaches {uncertain_below:.0%}: the model's "
            "best guess is less likely than all the others together.",
        )
    return "\n\n".join(lines)
