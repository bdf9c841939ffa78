"""The one scorer: every number hf-skin reports of a model on one split, from true labels and probabilities.

`score` is what a training run's `{split}_metrics.json` and an evaluation's `metrics.json` hold: the metrics of
`hf_skin.metrics.classification_metrics`, the calibration before and after, the referral threshold on these images,
lesion-level bootstrap intervals and the subgroup tables (the last two when asked for). Torch-free.
"""

from __future__ import annotations

import logging
import math
import time
import warnings

import datasets
import numpy as np
from sklearn.metrics import balanced_accuracy_score

from ..calibration import Calibration, calibration_scores, operating_point_scores
from ..data import column_values
from ..labels import malignant_ids, melanoma_id
from ..metrics import BOOTSTRAP_RESAMPLES, bootstrap_intervals, classification_metrics

logger = logging.getLogger(__name__)

# Age bands of the subgroup table: [low, high) in years.
AGE_BANDS = (("<30", 0, 30), ("30–44", 30, 45), ("45–59", 45, 60), ("60–74", 60, 75), ("≥75", 75, math.inf))
AGE_MISSING = "missing"
# Below this many images a subgroup's numbers are noise: shown, but marked as too small to judge.
MIN_SUBGROUP_SIZE = 30


def score(
    labels,
    probs,
    label_names: list[str],
    *,
    raw_probs=None,
    calibration: Calibration | None = None,
    operating_point: dict | None = None,
    lesion_ids: list[str] | None = None,
    groupings: dict[str, tuple[list[str], list[str]]] | None = None,
    bootstrap_resamples: int = 0,
    bootstrap_seed: int = 0,
) -> dict:
    """Scores probabilities `probs` `(N, K)` against label ids `labels` `(N,)`: the metrics a run's
    `test_metrics.json` and an evaluation's `metrics.json` both hold, in one shape.

    Args:
        labels (`np.ndarray`): true label ids, indices into `label_names`.
        probs (`np.ndarray`): the probabilities that are scored (a calibrated checkpoint's calibrated ones).
        label_names (`list[str]`): the model's labels, in the order of `probs`' columns.
        raw_probs (`np.ndarray`, *optional*): the raw model's probabilities (`Calibration.undo` of the logits);
            needed with `calibration`.
        calibration (`Calibration`, *optional*): the checkpoint's calibration, scored before and after.
        operating_point (`dict`, *optional*): the checkpoint's referral threshold (`config.operating_point`).
        lesion_ids (`list[str]`, *optional*): each image's lesion, resampled together by the bootstrap (without
            them the images are resampled one by one).
        groupings (`dict`, *optional*): grouping name -> (each image's group, the groups in display order), as
            `subgroup_groups` gives them.
        bootstrap_resamples (`int`, *optional*, defaults to 0): resamples behind the 95% intervals of
            `BOOTSTRAP_METRICS`; 0 for none.
        bootstrap_seed (`int`, *optional*, defaults to 0): the same seed gives the same intervals.

    Returns:
        `dict`: `classification_metrics` output (headline metrics, `per_class`, `confusion_matrix`) plus `n`,
        `calibration` (`calibration_summary`), `operating_point` (`operating_point_summary`), `bootstrap`
        (`bootstrap_summary`) and `subgroups` (grouping -> `subgroup_table` rows); each `None` (`{}` for
        `subgroups`) when not asked for.
    """
    labels, probs = np.asarray(labels), np.asarray(probs, dtype=np.float64)
    if calibration is not None and raw_probs is None:
        raise ValueError("a calibrated model is scored before and after its calibration: pass raw_probs too")
    metrics = classification_metrics(labels, probs, label_names)
    metrics["n"] = int(len(labels))
    metrics["calibration"] = calibration_summary(calibration, labels, raw_probs, probs, label_names)
    metrics["operating_point"] = operating_point_summary(operating_point, labels, probs, label_names)
    bootstrap = None
    if bootstrap_resamples:
        started = time.perf_counter()
        bootstrap = bootstrap_summary(
            labels, probs, lesion_ids, label_names, num_resamples=bootstrap_resamples, seed=bootstrap_seed
        )
        logger.info(
            "Bootstrap intervals: %d resamples of %d %ss in %.2f s",
            bootstrap_resamples,
            bootstrap["n_lesions" if lesion_ids is not None else "n_images"],
            bootstrap["resampled"],
            time.perf_counter() - started,
        )
    metrics["bootstrap"] = bootstrap
    preds = probs.argmax(axis=1)
    metrics["subgroups"] = {
        grouping: subgroup_table(labels, preds, groups, order, label_names)
        for grouping, (groups, order) in (groupings or {}).items()
    }
    return metrics


# ---------------------------------------------------------------------------------------------------------------
# Intervals, calibration and the referral threshold


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (sound at small n and at 0 or n successes); NaNs for n = 0."""
    if n == 0:
        return float("nan"), float("nan")
    p = successes / n
    center = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
    return max(0.0, center - half), min(1.0, center + half)


def bootstrap_summary(
    labels: np.ndarray,
    probs: np.ndarray,
    lesion_ids: list[str] | None,
    label_names: list[str],
    *,
    num_resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> dict:
    """The `bootstrap` entry of `metrics.json`: 95% intervals of `BOOTSTRAP_METRICS`, resampling lesions when their
    ids are known (else images), as JSON-ready lists."""
    result = bootstrap_intervals(
        labels, probs, lesion_ids, label_names=label_names, num_resamples=num_resamples, seed=seed
    )
    return {
        "method": "percentile bootstrap",
        "resampled": result["resampled"],
        "n_images": int(len(labels)),
        "n_lesions": result["n_groups"] if lesion_ids is not None else None,
        "num_resamples": result["num_resamples"],
        "seed": result["seed"],
        "confidence": result["confidence"],
        "intervals": {name: None if v is None else list(v) for name, v in result["intervals"].items()},
        "undefined": result["undefined"],
    }


def calibration_summary(calibration, labels, raw_probs, probs, label_names: list[str]) -> dict | None:
    """What the report says of a calibrated checkpoint: the calibration and NLL / Brier / ECE before and after it
    on the evaluated images (`None` for a checkpoint without one)."""
    if calibration is None:
        return None
    return {
        "method": calibration.method,
        "temperature": calibration.temperature,
        "target_prior": None if calibration.target_prior is None else dict(zip(label_names, calibration.target_prior)),
        "balance": calibration.balance,
        "target_prior_source": calibration.target_prior_source,
        "fitted_on": calibration.fitted_on,
        "description": calibration.describe(label_names),
        "scores": calibration_scores(labels, raw_probs, probs),
        "before": classification_metrics(labels, raw_probs, label_names),
    }


def operating_point_summary(operating_point: dict | None, labels, probs, label_names: list[str]) -> dict | None:
    """The checkpoint's referral threshold (`config.operating_point`) scored on the evaluated images: sensitivity
    and specificity with 95% Wilson intervals, beside what it reached on validation."""
    if not operating_point:
        return None
    scores = operating_point_scores(labels, probs, label_names, operating_point["threshold"])
    scores["sensitivity_interval"] = wilson_interval(scores["true_positives"], scores["n_malignant"])
    scores["specificity_interval"] = wilson_interval(scores["true_negatives"], scores["n_benign"])
    scores["validation"] = {key: operating_point.get(key) for key in ("sensitivity", "specificity")}
    scores["target_sensitivity"] = operating_point.get("target_sensitivity")
    return scores


# ---------------------------------------------------------------------------------------------------------------
# Subgroups


def age_band(age: float | None) -> str:
    """The `AGE_BANDS` name of an age in years, `"missing"` for none."""
    if age is None or (isinstance(age, float) and math.isnan(age)):
        return AGE_MISSING
    return next((name for name, low, high in AGE_BANDS if low <= age < high), AGE_BANDS[0][0])


def subgroup_groups(dataset: datasets.Dataset) -> dict[str, tuple[list[str], list[str]]]:
    """Grouping name -> (each row's group, the groups in display order) for sex, age band and localization."""
    groupings = {}
    for column, name in (("sex", "sex"), ("age", "age band"), ("localization", "localization")):
        if column not in dataset.column_names:
            continue
        values = column_values(dataset, column)
        feature = dataset.features[column]
        if column == "age":
            groups, order = [age_band(v) for v in values], [b for b, *_ in AGE_BANDS] + [AGE_MISSING]
        elif isinstance(feature, datasets.ClassLabel):
            groups, order = [feature.int2str(v) for v in values], list(feature.names)
        else:
            groups = ["unknown" if v is None else str(v) for v in values]
            order = sorted(set(groups))
        groupings[name] = (groups, [g for g in order if g in set(groups)])
    return groupings


def subgroup_table(
    labels: np.ndarray, preds: np.ndarray, groups: list[str], order: list[str], label_names: list[str]
) -> list[dict]:
    """One row per group: `n`, accuracy, balanced accuracy, melanoma recall and malignant recall, with their counts.

    Malignant recall is the share of akiec/bcc/mel images predicted as any of akiec/bcc/mel: the images the model
    would flag for a dermatologist. Recalls without a positive image in the group are `None`. `too_small` marks
    groups under `MIN_SUBGROUP_SIZE` images.
    """
    labels, preds, groups = np.asarray(labels), np.asarray(preds), np.asarray(groups, dtype=object)
    malignant = malignant_ids(label_names)
    mel = melanoma_id(label_names)
    rows = []
    for group in order:
        mask = groups == group
        y, p = labels[mask], preds[mask]
        rows.append({"group": group, **_group_scores(y, p, mel, malignant)})
    return rows


def group_scores(labels: np.ndarray, preds: np.ndarray, label_names: list[str]) -> dict:
    """A `subgroup_table` row's numbers for one set of images (all of them: the tables' last row)."""
    return _group_scores(np.asarray(labels), np.asarray(preds), melanoma_id(label_names), malignant_ids(label_names))


def _group_scores(y: np.ndarray, p: np.ndarray, mel: int | None, malignant: list[int]) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # classes absent from a small group
        balanced = float(balanced_accuracy_score(y, p)) if len(y) else None
    is_mel = y == mel if mel is not None else np.zeros(len(y), bool)
    is_malignant, called_malignant = np.isin(y, malignant), np.isin(p, malignant)
    return {
        "n": int(len(y)),
        "accuracy": float(np.mean(y == p)) if len(y) else None,
        "balanced_accuracy": balanced,
        "n_mel": int(is_mel.sum()),
        "mel_recall": float(np.mean(p[is_mel] == mel)) if is_mel.any() else None,
        "n_malignant": int(is_malignant.sum()),
        "malignant_recall": float(np.mean(called_malignant[is_malignant])) if is_malignant.any() else None,
        "too_small": bool(len(y) < MIN_SUBGROUP_SIZE),
    }
