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
    def predict_logits(self, images, **metadata) -> torch.Tensor:
        """(N, num_labels) logits, calibrated when the checkpoint is (`calibration`), for one image or a list."""
        return self.model(**self.model_inputs(images, **metadata)).logits.float().cpu()

    def predict_proba(self, images, **metadata) -> torch.Tensor:
        """(N, num_labels) probabilities for one image or a list (paths, bytes or PIL images)."""
        return self.predict_logits(images, **metadata).softmax(dim=-1)

    @property
    def calibration(self):
        """The checkpoint's `hf_skin.calibration.Calibration` (already applied by its head), `None` if it has none."""
        from .calibration import Calibration

        return Calibration.from_config(self.model.config)

    @property
    def operating_point(self) -> dict | None:
        """The referral threshold on the malignant probability chosen on validation (`config.operating_point`)."""
        return getattr(self.model.config, "operating_point", None)

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


def percent(probability: float) -> str:
    """A probability in whole percent as a person reads it, never "0%" or "100%": a model whose test accuracy is
    far from 1 cannot be that sure, and rounding should not say it is. Under 0.5% is "<1%", from 99.5% ">99%"."""
    if probability < 0.005:
        return "<1%"
    if probability >= 0.995:
        return ">99%"
    return f"{probability:.0%}"


def summarize(
    probs: dict[str, float], uncertain_below: float = UNCERTAIN_BELOW, operating_point: dict | None = None
) -> str:
    """A plain summary (Markdown) of one `{label: probability}` dict: the most likely class, the probability of a
    malignant class, when the most likely class is under `uncertain_below` that the prediction is uncertain, and
    with an `operating_point` (`SkinClassifier.operating_point`) whether the malignant probability reaches its
    referral threshold, which was chosen on validation images for a target sensitivity."""
    top = max(probs, key=probs.get)
    malignant = ", ".join(DX_NAMES[dx][0].lower() + DX_NAMES[dx][1:] for dx in MALIGNANT_DX)
    score = malignant_probability(probs)
    lines = [
        f"**Most likely: {display_name(top)}, {percent(probs[top])}.**",
        f"Probability of a malignant class ({malignant}): **{percent(score)}**.",
    ]
    if probs[top] < uncertain_below:
        lines.insert(
            0,
            f"**Uncertain — this needs a dermatologist's eyes.** No class reaches {uncertain_below:.0%}: the model's "
            "best guess is less likely than all the others together.",
        )
    if operating_point:
        lines.append(referral_advice(score, operating_point))
    return "\n\n".join(lines)


def referral_advice(malignant: float, operating_point: dict) -> str:
    """The "see a dermatologist" sentence for a malignant probability, by the checkpoint's referral threshold."""
    threshold = operating_point["threshold"]
    why = (
        f"The threshold, {threshold:.1%}, was chosen on validation images to flag at least "
        f"{operating_point['target_sensitivity']:.0%} of malignant lesions"
    )
    test = operating_point.get("test")
    if test and test.get("sensitivity") is not None and test.get("specificity") is not None:
        why += (
            f"; on test images it flagged {test['sensitivity']:.0%} of malignant lesions, and "
            f"{1 - test['specificity']:.0%} of benign ones too"
        )
    if malignant >= threshold:
        return (
            "**See a dermatologist:** the probability of a malignant class is at or above this model's referral "
            f"threshold. {why}."
        )
    return (
        f"Below this model's referral threshold for a malignant class. {why}. A spot that changes, bleeds or itches "
        "needs a doctor whatever this says."
    )
