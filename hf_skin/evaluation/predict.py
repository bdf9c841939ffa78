"""A checkpoint's predictions on a HAM10000-format split, through the `SkinClassifier` that serves it: logits per
test-time-augmentation view, the probabilities that are scored, and the split's diagnoses as the model's label ids."""

from __future__ import annotations

import datasets
import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ..data import column_values
from ..metrics import softmax
from ..processing import load_image

# Test-time augmentation: the eight symmetries of the square. Dermoscopy has no "up", so each keeps the label.
TTA_VIEWS = {
    "identity": None,
    "hflip": Image.Transpose.FLIP_LEFT_RIGHT,
    "vflip": Image.Transpose.FLIP_TOP_BOTTOM,
    "rot90": Image.Transpose.ROTATE_90,
    "rot180": Image.Transpose.ROTATE_180,
    "rot270": Image.Transpose.ROTATE_270,
    "transpose": Image.Transpose.TRANSPOSE,
    "transverse": Image.Transpose.TRANSVERSE,
}


def tta_views(image: Image.Image, views: tuple[str, ...] | None = None) -> list[Image.Image]:
    """The image under each test-time-augmentation view (all of `TTA_VIEWS` by default, identity first)."""
    transposes = [TTA_VIEWS[name] for name in (views or TTA_VIEWS)]
    return [image if op is None else image.transpose(op) for op in transposes]


def metadata_words(batch: dict[str, list], fields: list[str], features: datasets.Features) -> dict[str, list]:
    """A batch's metadata as a person would type it (what `SkinProcessor` reads): `ClassLabel` ids -> names."""
    words = {}
    for name in fields:
        if name not in batch:
            raise ValueError(f"the model reads the metadata column {name!r}, which the dataset does not have")
        feature = features[name]
        if isinstance(feature, datasets.ClassLabel):
            words[name] = [None if v is None else feature.int2str(v) for v in batch[name]]
        else:
            words[name] = list(batch[name])
    return words


def predict_dataset(
    classifier, dataset: datasets.Dataset, batch_size: int = 64, tta: bool = False, desc: str | None = None
) -> np.ndarray:
    """`(views, N, num_labels)` logits of `classifier` (a `SkinClassifier`) for every row of `dataset`: one view, or
    the 8 of `TTA_VIEWS` with `tta`. `view_probabilities` turns them into the probabilities that are scored.

    Logits, not probabilities, so that a calibrated checkpoint's raw model can be scored beside it
    (`Calibration.undo`). Images are decoded at full size, as `SkinClassifier.predict` decodes a file, and
    multi-input models get each row's metadata.
    """
    fields = list(classifier.metadata_fields)
    data = dataset.select_columns(["image", *fields]).cast_column("image", datasets.Image(decode=False))
    out = []
    starts = range(0, len(data), batch_size)
    for start in tqdm(starts, desc=desc or "Predicting", unit="batch"):
        batch = data[start : start + batch_size]
        images = [load_image(value) for value in batch["image"]]
        metadata = metadata_words(batch, fields, dataset.features)
        views = zip(*(tta_views(image) for image in images)) if tta else [images]
        out.append(np.stack([np.asarray(classifier.predict_logits(list(view), **metadata)) for view in views]))
    return np.concatenate(out, axis=1).astype(np.float64)


def view_probabilities(logits: np.ndarray) -> np.ndarray:
    """`(views, N, K)` logits -> `(N, K)` probabilities, averaged over the views (TTA averages probabilities)."""
    return softmax(logits.reshape(-1, logits.shape[-1])).reshape(logits.shape).mean(axis=0)


def model_label_ids(dataset: datasets.Dataset, model_labels: list[str], model: str) -> np.ndarray:
    """The dataset's `dx` as the model's label ids (matched by name, whatever either's order)."""
    dx = dataset.features["dx"]
    names = dx.names if isinstance(dx, datasets.ClassLabel) else None
    values = column_values(dataset, "dx")
    values = [names[v] for v in values] if names else [str(v) for v in values]
    unknown = sorted(set(values) - set(model_labels))
    if unknown:
        raise ValueError(
            f"{model} predicts the labels {model_labels}, but the data has diagnoses {unknown} among them: evaluate "
            "a HAM10000 classifier, whose id2label names the diagnoses akiec, bcc, bkl, df, mel, nv, vasc"
        )
    index = {label: i for i, label in enumerate(model_labels)}
    return np.array([index[v] for v in values], dtype=np.int64)
