"""The files an evaluation writes beside its report: `predictions.csv` (one row per image), the ISIC 2018 Task 3
CSVs the challenge's scorer reads, and JSON that every reader accepts."""

from __future__ import annotations

import csv
import logging
import math
import os
from pathlib import Path

import numpy as np

from ..data import ISIC_DX_COLUMNS

logger = logging.getLogger(__name__)

ISIC_FILES = {"predictions": "isic_predictions.csv", "ground_truth": "isic_ground_truth.csv"}


def _float_text(value: float) -> str:
    """Enough digits to give back a float32 probability exactly, and always a float to a CSV reader ('1.0', not '1':
    the ISIC scorer refuses a column it reads as integers)."""
    text = f"{value:.9g}"
    return text if any(c in text for c in ".en") else f"{text}.0"


def write_predictions(path: Path, image_ids, lesion_ids, labels, probs, label_names) -> None:
    """`predictions.csv`: image id (the row number without one), lesion id (when known), true and predicted label,
    and every class probability as `p_<label>` (what `compare_runs` pairs runs by)."""
    lesions = ["lesion_id"] if lesion_ids is not None else []
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image_id", *lesions, "true", "predicted", *[f"p_{name}" for name in label_names]])
        for i, (label, row) in enumerate(zip(labels, probs)):
            ids = [image_ids[i] if image_ids is not None else i, *([lesion_ids[i]] if lesion_ids is not None else [])]
            writer.writerow([*ids, label_names[label], label_names[row.argmax()], *map(_float_text, row)])


def write_isic_2018(
    output_dir: str | os.PathLike, image_ids: list[str] | None, labels, probs, label_names: list[str]
) -> bool:
    """The predictions and the ground truth in ISIC 2018 Task 3's format (`ISIC_FILES` in `output_dir`).

    Both files have the header `image,MEL,NV,BCC,AKIEC,BKL,DF,VASC` and one row per image: the class probabilities
    (floats in [0, 1]) and the one-hot diagnosis (`1.0`/`0.0`). The challenge's own scorer (PyPI
    `isic-challenge-scoring`) reads them, `ClassificationScore.from_file(truth, predictions, metric)` (version 5.6
    calls `DataFrame.applymap`: under pandas 3, set `pd.DataFrame.applymap = pd.DataFrame.map` first). Its balanced
    accuracy and AUCs are hf-skin's (tests/test_isic.py); its per-class sensitivity and specificity threshold each
    class's probability at 0.5 where hf-skin's take the top class. Written only for a model of exactly HAM10000's
    seven diagnoses and data with unique image ids; returns whether the files were written.
    """
    if sorted(label_names) != sorted(ISIC_DX_COLUMNS.values()):
        logger.info("No ISIC 2018 files: the model's labels %s are not HAM10000's seven diagnoses", label_names)
        return False
    if image_ids is None or len(set(image_ids)) != len(image_ids):
        logger.info("No ISIC 2018 files: the data has no image_id column, or an image id appears twice")
        return False
    columns = [label_names.index(dx) for dx in ISIC_DX_COLUMNS.values()]
    # float32 softmax can land a hair outside [0, 1]; the scorer refuses any such value.
    scores = np.clip(np.asarray(probs, dtype=np.float64)[:, columns], 0.0, 1.0)
    truth = np.asarray(labels)[:, None] == np.asarray(columns)[None, :]
    output_dir = Path(output_dir)
    for name, table in (("predictions", scores), ("ground_truth", truth)):
        with (output_dir / ISIC_FILES[name]).open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["image", *ISIC_DX_COLUMNS])
            for image_id, row in zip(image_ids, table):
                writer.writerow([image_id, *(_float_text(float(v)) for v in row)])
    return True


def json_safe(value):
    """NaN -> null: `json.dumps` would write `NaN`, which is not JSON and which many readers reject."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
