"""Predicting with a trained checkpoint: image (+ metadata for multi-input models) -> class probabilities.

Two backends behind one API: a PyTorch checkpoint (transformers' `from_pretrained`), or a model exported by
`hf_skin.export` (an ONNX file and its spec, run by onnxruntime). The second needs neither torch nor transformers:
torch is imported only when a PyTorch checkpoint is loaded.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

import numpy as np

from .data.provenance import is_synthetic, training_data_sentence
from .labels import DX_NAMES, MALIGNANT_DX, display_name
from .metrics import softmax
from .processing import SkinProcessor, load_image, pixel_values_from_spec

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel

# Under this top-class probability a prediction is called uncertain. At 0.5 the most probable class stops being more
# likely than all the others together: for a calibrated model (the evaluation report measures it, ECE) predictions
# below it are wrong more often than right. With 7 classes a guess is at 0.14, so 0.5 still leaves room for an answer.
UNCERTAIN_BELOW = 0.5

# An exported model's folder (hf_skin.export writes it): the spec, beside the ONNX files it names.
EXPORT_SPEC = "hf_skin_export.json"


class OnnxImageProcessor:
    """An exported model's image preprocessing (its spec's `image`), torch-free: RGB images -> `pixel_values`
    as numpy, the same pixels as the image processor saved with the checkpoint (`hf_skin.processing.resize_array`)."""

    def __init__(self, spec: dict):
        self.spec = spec

    def __call__(self, images, return_tensors: str = "np", **kwargs) -> dict[str, np.ndarray]:
        images = images if isinstance(images, (list, tuple)) else [images]
        return {"pixel_values": pixel_values_from_spec(images, self.spec)}


class OnnxModel:
    """An exported model run by onnxruntime: `logits(inputs)` for the named numpy inputs of its spec. `config` holds
    what the PyTorch model's config would say about the outputs (`id2label`, `num_labels`, `model_type`,
    `calibration`, `operating_point`)."""

    def __init__(self, path: str | os.PathLike, spec: dict, session_options=None, providers=None):
        try:
            import onnxruntime
        except ImportError as err:
            raise ImportError(
                f"{Path(path).parent} is an exported (ONNX) model: serving it needs onnxruntime (pip install "
                "'hf-skin[onnx]', or pip install onnxruntime)"
            ) from err

        self.path, self.spec = Path(path), spec
        self.session = onnxruntime.InferenceSession(
            os.fspath(path), sess_options=session_options, providers=providers or ["CPUExecutionProvider"]
        )
        labels = spec["labels"]
        self.config = SimpleNamespace(
            id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)},
            num_labels=len(labels),
            model_type=spec["model_type"],
            calibration=spec.get("calibration"),
            operating_point=spec.get("operating_point"),
            training_data=spec.get("training_data"),
        )
        self.input_names = [i.name for i in self.session.get_inputs()]

    def logits(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        missing = [name for name in self.input_names if name not in inputs]
        if missing:
            raise ValueError(f"{self.path} needs the inputs {self.input_names}; {missing} were not given")
        return self.session.run(["logits"], {name: inputs[name] for name in self.input_names})[0]


def default_device() -> str:
    """Where a PyTorch checkpoint runs when no device is asked for: `"cuda"` when a GPU is available, else `"cpu"`."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class SkinClassifier:
    """The predict API of every hf-skin checkpoint; what `pipeline("image-classification")` is for image-only models,
    with metadata for multi-input models.

    ```python
    classifier = SkinClassifier.from_pretrained("runs/multi-input")
    classifier.predict("lesion.jpg", age="45", sex="female", localization="back")
    # [{"mel": 0.61, "nv": 0.22, ...}]   (one dict per image, sorted by probability)
    ```
    """

    def __init__(self, model: PreTrainedModel | OnnxModel, processor):
        self.model = model if isinstance(model, OnnxModel) else model.eval()
        self.processor = processor
        self.labels = [model.config.id2label[i] for i in range(model.config.num_labels)]

    @property
    def is_onnx(self) -> bool:
        """Whether an exported model (onnxruntime) serves the predictions: then there is no PyTorch model, no torch
        import, and no heatmap (`hf_skin.explain` needs the PyTorch model's gradients or attentions)."""
        return isinstance(self.model, OnnxModel)

    @property
    def metadata_fields(self) -> list[str]:
        """The metadata this model reads (empty for image-only models)."""
        return self.processor.metadata_fields if isinstance(self.processor, SkinProcessor) else []

    @property
    def calibration(self):
        """The checkpoint's `hf_skin.calibration.Calibration` (already applied by its head), `None` if it has none."""
        from .calibration import Calibration

        return Calibration.from_config(self.model.config)

    @property
    def training_data(self) -> dict | None:
        """What the model learned from (`config.training_data`, `hf_skin.data.describe_data`); `None` when its training
        did not record it. `hf_skin.data.training_data_sentence` says it in words."""
        return getattr(self.model.config, "training_data", None)

    @property
    def operating_point(self) -> dict | None:
        """The referral threshold on the malignant probability chosen on validation (`config.operating_point`)."""
        return getattr(self.model.config, "operating_point", None)

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, **kwargs) -> SkinClassifier:
        """From a checkpoint folder or a Hub repo id (`kwargs` go to `from_pretrained`, e.g. `revision`), or from a
        folder of `hf_skin.export` (its spec `hf_skin_export.json`; `precision="int8"` picks the quantised model,
        default `"fp32"`; torch is not imported)."""
        if (Path(name_or_path) / EXPORT_SPEC).is_file():
            return cls.from_export(name_or_path, **kwargs)
        from transformers import AutoImageProcessor, AutoModelForImageClassification
        from transformers.utils import IMAGE_PROCESSOR_NAME

        from . import models as _models  # noqa: F401  (registers hf-skin's model classes with the Auto classes)

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

    @classmethod
    def from_export(
        cls, path: str | os.PathLike, precision: str = "fp32", session_options=None, providers=None
    ) -> SkinClassifier:
        """From a folder written by `hf_skin.export.export_onnx`: its `precision` (`"fp32"` or `"int8"`) model on
        onnxruntime (`providers` default CPU), with the spec's preprocessing and metadata encoding."""
        spec_path = Path(path) / EXPORT_SPEC
        spec = json.loads(spec_path.read_text())
        files = spec.get("models", {})
        if precision not in files:
            raise ValueError(
                f"{path} holds no {precision} model (it has {', '.join(files) or 'none'}): export it with "
                f"{'--quantize int8' if precision == 'int8' else 'scripts/export_onnx.py'}, or pick one it has"
            )
        model = OnnxModel(Path(path) / files[precision]["file"], spec, session_options, providers)
        image_processor = OnnxImageProcessor(spec["image"])
        metadata = spec.get("metadata")
        if metadata:
            age = metadata.get("age") or {}
            processor = SkinProcessor(
                image_processor,
                metadata["fields"],
                metadata["vocabularies"],
                age_mean=age.get("mean", 50.0),
                age_std=age.get("std", 17.0),
            )
        else:
            processor = image_processor
        return cls(model, processor)

    @property
    def image_processor(self):
        """The image part of the processor (resizing, normalisation)."""
        return self.processor.image_processor if isinstance(self.processor, SkinProcessor) else self.processor

    def model_inputs(self, images, **metadata) -> dict[str, torch.Tensor] | dict[str, np.ndarray]:
        """The model's keyword inputs for one image or a list (paths, bytes or PIL images): tensors on the PyTorch
        model's device, or numpy arrays for an exported model."""
        images = [load_image(image) for image in (images if isinstance(images, (list, tuple)) else [images])]
        if self.is_onnx:
            if isinstance(self.processor, SkinProcessor):
                return {
                    **self.image_processor(images),
                    **self.processor.encode_metadata(len(images), return_tensors="np", **metadata),
                }
            return self.processor(images)
        if isinstance(self.processor, SkinProcessor):
            inputs = self.processor(images, **metadata)
        else:
            inputs = {"pixel_values": self.processor(images, return_tensors="pt")["pixel_values"]}
        device = next(self.model.parameters()).device
        return {k: v.to(device) for k, v in inputs.items()}

    def predict_logits(self, images, **metadata) -> torch.Tensor | np.ndarray:
        """(N, num_labels) float32 logits (on the CPU) for one image or a list: a `torch.Tensor` from a PyTorch
        model, a `numpy.ndarray` from an exported one (`is_onnx`)."""
        inputs = self.model_inputs(images, **metadata)
        if self.is_onnx:
            return self.model.logits(inputs).astype(np.float32)
        import torch

        with torch.inference_mode():
            return self.model(**inputs).logits.float().cpu()

    def predict_proba(self, images, **metadata) -> torch.Tensor | np.ndarray:
        """(N, num_labels) probabilities for one image or a list (paths, bytes or PIL images): the softmax of
        `predict_logits`, of the same type (`torch.Tensor`, or `numpy.ndarray` for an exported model)."""
        logits = self.predict_logits(images, **metadata)
        if self.is_onnx:  # in float64 then float32, as the PyTorch path's `float().softmax`
            return softmax(np.asarray(logits, dtype=np.float64)).astype(np.float32)
        return logits.softmax(dim=-1)

    def predict(self, images, **metadata) -> list[dict[str, float]]:
        """One `{label: probability}` dict per image, most probable first."""
        return self.ranked(self.predict_proba(images, **metadata))

    def ranked(self, probabilities) -> list[dict[str, float]]:
        """(N, num_labels) probabilities (tensor or array) -> one `{label: probability}` dict per row, most probable
        first."""
        return [dict(sorted(zip(self.labels, row.tolist()), key=lambda item: -item[1])) for row in probabilities]


def malignant_probability(probs: dict[str, float]) -> float:
    """The probability of a malignant class (`MALIGNANT_DX`: melanoma, basal cell carcinoma, actinic keratosis /
    intraepithelial carcinoma) in one `{label: probability}` dict of `SkinClassifier.predict`."""
    return sum(probs.get(dx, 0.0) for dx in MALIGNANT_DX)


def percent(probability: float) -> str:
    """A probability in whole percent as a person reads it, never "0%" or "100%": a model whose test accuracy is
    far from 1 cannot be that sure, and rounding should not say it is. Under 1% is "<1%", over 99% ">99%"."""
    if probability < 0.01:
        return "<1%"
    if probability > 0.99:
        return ">99%"
    return f"{probability:.0%}"


def summarize(
    probs: dict[str, float],
    uncertain_below: float = UNCERTAIN_BELOW,
    operating_point: dict | None = None,
    training_data: dict | None = None,
) -> str:
    """A plain summary (Markdown) of one `{label: probability}` dict: the most likely class, the probability of a
    malignant class, when the most likely class is under `uncertain_below` that the prediction is uncertain, and
    with an `operating_point` (`SkinClassifier.operating_point`) whether the malignant probability reaches its
    referral threshold, which was chosen on validation images for a target sensitivity. A model that learned from
    synthetic lesions (`training_data`, `SkinClassifier.training_data`) says first that it is a demo, and its
    threshold's images are named synthetic."""
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
        lines.append(referral_advice(score, operating_point, training_data))
    if is_synthetic(training_data):
        lines.insert(0, f"**{training_data_sentence(training_data)}**")
    return "\n\n".join(lines)


def referral_advice(malignant: float, operating_point: dict, training_data: dict | None = None) -> str:
    """The "see a dermatologist" sentence for a malignant probability, by the checkpoint's referral threshold."""
    threshold = operating_point["threshold"]
    images = "synthetic (not real) images" if is_synthetic(training_data) else "images"
    why = (
        f"The threshold, {threshold:.1%}, was chosen on validation {images} to flag at least "
        f"{operating_point['target_sensitivity']:.0%} of malignant lesions"
    )
    test = operating_point.get("test")
    if test and test.get("sensitivity") is not None and test.get("specificity") is not None:
        why += (
            f"; on test {images} it flagged {test['sensitivity']:.0%} of malignant lesions, and "
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
