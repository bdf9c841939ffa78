"""Classification metrics for HAM10000 the way the ISIC challenge and clinicians read them, built on scikit-learn.

`classification_metrics` is the one implementation: the `evaluate` module (`hf_skin.metric_module`), the Trainer's
`compute_metrics` and the scorer (`hf_skin.evaluation`) all go through it. Torch-free.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)

from .labels import DX_LABELS

ECE_BINS = 15


def metric_path() -> str:
    """The file `evaluate.load` takes for hf-skin's metric module (`hf_skin.metric_module`, which holds the wrapper):
    `evaluate.load(hf_skin.metrics.metric_path())` works offline, as before the wrapper had a file of its own."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "metric_module.py")


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of `(N, K)` logits, in their own dtype (hf-skin's one softmax)."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def as_probabilities(scores) -> np.ndarray:
    """`(N, K)` probabilities from probabilities or logits: kept when every row is non-negative and sums to 1
    (within 1e-3), otherwise softmax-ed."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2:
        raise ValueError(f"predictions must have shape (N, num_labels), got an array of shape {scores.shape}")
    if (scores >= 0).all() and np.allclose(scores.sum(axis=1), 1.0, atol=1e-3):
        return scores
    return softmax(scores)


def reliability_bins(labels, probs, num_bins: int = ECE_BINS) -> dict[str, np.ndarray]:
    """Top-label reliability over `num_bins` equal-width confidence bins on [0, 1].

    Returns:
        `dict` of `(num_bins,)` arrays: `edges` (`num_bins + 1` values), `count`, `confidence` (mean top
        probability) and `accuracy` (share of correct top labels); NaN in empty bins.
    """
    labels, probs = np.asarray(labels), np.asarray(probs, dtype=np.float64)
    confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == labels
    bins = np.minimum((confidence * num_bins).astype(int), num_bins - 1)
    count = np.bincount(bins, minlength=num_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(bins, weights=confidence, minlength=num_bins) / count
        accuracy = np.bincount(bins, weights=correct, minlength=num_bins) / count
    return {
        "edges": np.linspace(0, 1, num_bins + 1),
        "count": count,
        "confidence": mean_confidence,
        "accuracy": accuracy,
    }


def expected_calibration_error(labels, probs, num_bins: int = ECE_BINS) -> float:
    """Top-label ECE: |accuracy - confidence| averaged over equal-width confidence bins, weighted by bin size."""
    bins = reliability_bins(labels, probs, num_bins)
    filled = bins["count"] > 0
    weights = bins["count"][filled] / bins["count"].sum()
    return float(np.sum(weights * np.abs(bins["accuracy"][filled] - bins["confidence"][filled])))


def negative_log_likelihood(labels, probs) -> float:
    """Mean -log p(true class) in nats (log loss): what temperature scaling minimises. A probability of 0 for the
    true class counts as 1e-15 (the score stays finite)."""
    labels, probs = np.asarray(labels), np.asarray(probs, dtype=np.float64)
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-15, None))))


def brier_score(labels, probs) -> float:
    """Multi-class Brier score: the mean over images of sum_k (p_k - [y = k])^2, from 0 (certain and right) to 2."""
    labels, probs = np.asarray(labels), np.asarray(probs, dtype=np.float64)
    onehot = np.eye(probs.shape[1])[labels]
    return float(np.mean(np.sum((probs - onehot) ** 2, axis=1)))


def sensitivity_at_specificity(is_positive: np.ndarray, scores: np.ndarray, specificity: float) -> float:
    """Best sensitivity reachable with a threshold whose specificity is at least `specificity`."""
    if is_positive.all() or not is_positive.any():
        return float("nan")
    # Every threshold, not only the ROC curve's corners: the bootstrap below computes the same maximum over all.
    fpr, tpr, _ = roc_curve(is_positive, scores, drop_intermediate=False)
    return float(tpr[fpr <= 1 - specificity + 1e-12].max())


def classification_metrics(labels, probs, label_names: list[str] = DX_LABELS) -> dict:
    """Every metric hf-skin reports, from true label ids `(N,)` and class probabilities `(N, K)`.

    Returns a dict of floats plus `per_class` (precision, recall = sensitivity, specificity, f1, support, auc for
    each label) and `confusion_matrix` (rows true, columns predicted). Metrics undefined on the given data (AUC of
    a class absent from `labels`) are NaN rather than a made-up number.
    """
    labels, probs = np.asarray(labels), np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] != len(label_names) or len(labels) != len(probs):
        raise ValueError(
            f"expected probabilities of shape (N, {len(label_names)}) for {len(label_names)} labels and N = "
            f"{len(labels)} label ids; got probabilities of shape {probs.shape}"
        )
    if len(labels) == 0:
        raise ValueError("no predictions to score: labels and probabilities are empty")
    if labels.min() < 0 or labels.max() >= len(label_names):
        raise ValueError(
            f"label ids must be in [0, {len(label_names)}) for labels {label_names}; got ids from {labels.min()} to "
            f"{labels.max()}"
        )
    ids = list(range(len(label_names)))
    preds = probs.argmax(axis=1)
    cm = confusion_matrix(labels, preds, labels=ids)
    precision, recall, f1, support = precision_recall_fscore_support(labels, preds, labels=ids, zero_division=0)
    false_pos, true_neg = cm.sum(axis=0) - cm.diagonal(), cm.sum() - cm.sum(axis=0) - cm.sum(axis=1) + cm.diagonal()
    specificity = true_neg / np.maximum(true_neg + false_pos, 1)
    present = support > 0
    auc = np.full(len(ids), np.nan)
    for i in ids:
        if 0 < support[i] < len(labels):
            auc[i] = roc_auc_score(labels == i, probs[:, i])
    with warnings.catch_warnings():
        # Balanced accuracy is the mean recall over the classes present in `labels`; sklearn warns about the rest.
        warnings.simplefilter("ignore", UserWarning)
        balanced = balanced_accuracy_score(labels, preds)
    mel = label_names.index("mel") if "mel" in label_names else None
    out = {
        "accuracy": float(accuracy_score(labels, preds)),
        "balanced_accuracy": float(balanced),
        # Macro F1 over the classes present, so a class missing from a small split is not counted as a zero.
        "f1_macro": float(f1[present].mean()) if present.any() else float("nan"),
        "f1_weighted": float(f1_score(labels, preds, labels=ids, average="weighted", zero_division=0)),
        "auc_macro": float(np.nanmean(auc)) if np.isfinite(auc).any() else float("nan"),
        "ece": expected_calibration_error(labels, probs),
        "nll": negative_log_likelihood(labels, probs),
        "brier": brier_score(labels, probs),
    }
    if mel is not None:
        out["mel_sensitivity_at_spec80"] = sensitivity_at_specificity(labels == mel, probs[:, mel], 0.80)
        out["mel_sensitivity_at_spec90"] = sensitivity_at_specificity(labels == mel, probs[:, mel], 0.90)
    out["per_class"] = {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "specificity": float(specificity[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
            "auc": float(auc[i]),
        }
        for i, name in enumerate(label_names)
    }
    out["confusion_matrix"] = cm.tolist()
    return out


# ---------------------------------------------------------------------------------------------------------------
# Bootstrap intervals

# The headline metrics that get a bootstrap interval (`bootstrap_intervals`).
BOOTSTRAP_METRICS = (
    "balanced_accuracy",
    "accuracy",
    "auc_macro",
    "mel_sensitivity_at_spec90",
    "mel_sensitivity_at_spec80",
)
BOOTSTRAP_RESAMPLES = 1000
# Cells of the (resamples x images) weight matrix held at once: bounds memory at ~16 MB a matrix, whatever N.
_BOOTSTRAP_CHUNK_CELLS = 2_000_000


def bootstrap_intervals(
    labels,
    probs,
    groups=None,
    *,
    baseline_probs=None,
    label_names: list[str] = DX_LABELS,
    metrics: tuple[str, ...] = BOOTSTRAP_METRICS,
    num_resamples: int = BOOTSTRAP_RESAMPLES,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict:
    """Percentile bootstrap intervals of headline metrics, resampling whole groups (lesions) with replacement.

    Each resample draws as many groups as there are, with replacement, and keeps every image of each drawn group
    (a group drawn twice counts twice): the images of one lesion are near-copies of each other, and resampling them
    one by one would pretend there is more independent evidence than there is, giving too narrow an interval.
    A resample is an integer weight per image, so all resamples are scored at once on `(resamples, N)` weight
    matrices (the same numbers `classification_metrics` gives on the resampled rows). The same `seed` gives the same
    resamples and intervals.

    With `baseline_probs`, the statistic is the paired difference `metric(probs) - metric(baseline_probs)`, both
    scored on the same resamples of the same images: the interval of "model A minus model B" on this data.

    Args:
        labels (`np.ndarray` of shape `(N,)`): true label ids.
        probs (`np.ndarray` of shape `(N, K)`): class probabilities.
        groups (`array-like` of shape `(N,)`, *optional*):
            The unit that is resampled, e.g. each image's `lesion_id`; by default every image is its own group.
        baseline_probs (`np.ndarray` of shape `(N, K)`, *optional*): a second model's probabilities on the same rows.
        label_names (`list[str]`, *optional*, defaults to HAM10000's seven): melanoma metrics need a class `mel`.
        metrics (`tuple[str]`, *optional*, defaults to `BOOTSTRAP_METRICS`): keys of `classification_metrics`
            among `accuracy`, `balanced_accuracy`, `auc_macro`, `mel_sensitivity_at_spec<NN>`.
        num_resamples (`int`, *optional*, defaults to 1000): bootstrap resamples.
        confidence (`float`, *optional*, defaults to 0.95): the interval's coverage (percentiles 2.5 and 97.5).
        seed (`int`, *optional*, defaults to 0): seed of the resampling.

    Returns:
        `dict`: `estimates` (metric -> value on all the data: the difference with `baseline_probs`), `intervals`
        (metric -> `(low, high)`, `None` when no resample defines the metric), `undefined` (metric -> number of
        resamples where it is undefined, e.g. no melanoma drawn; they are left out of the percentiles),
        `num_resamples`, `confidence`, `seed`, `resampled` (`"lesion"` with groups, else `"image"`), `n_groups`.
    """
    labels, probs = np.asarray(labels), np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or len(probs) != len(labels) or probs.shape[1] != len(label_names):
        raise ValueError(
            f"expected probabilities of shape (N, {len(label_names)}) for N = {len(labels)} labels, got {probs.shape}"
        )
    if baseline_probs is not None:
        baseline_probs = np.asarray(baseline_probs, dtype=np.float64)
        if baseline_probs.shape != probs.shape:
            raise ValueError(
                f"baseline_probs must score the same rows as probs: shape {baseline_probs.shape} != {probs.shape}"
            )
    if num_resamples < 1:
        raise ValueError(f"num_resamples must be at least 1, not {num_resamples}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), not {confidence}")
    unknown = [m for m in metrics if m not in ("accuracy", "balanced_accuracy", "auc_macro") and not _spec_level(m)]
    if unknown:
        raise ValueError(
            f"no bootstrap for {unknown}: choose among accuracy, balanced_accuracy, auc_macro and "
            "mel_sensitivity_at_spec<NN>"
        )
    if groups is None:
        codes = np.arange(len(labels))
    else:
        if len(groups) != len(labels):
            raise ValueError(f"groups has {len(groups)} entries for {len(labels)} labels: give one group per row")
        codes = np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True)[1].ravel()
    n_groups = int(codes.max()) + 1 if len(codes) else 0
    rng = np.random.default_rng(seed)
    # counts[b, g]: how many times resample b drew group g. One offset bincount does all resamples at once.
    draws = rng.integers(0, n_groups, size=(num_resamples, n_groups))
    offsets = (draws + n_groups * np.arange(num_resamples)[:, None]).ravel()
    counts = np.bincount(offsets, minlength=num_resamples * n_groups).reshape(num_resamples, n_groups)

    def score(weights: np.ndarray) -> dict[str, np.ndarray]:
        values = _weighted_metrics(labels, probs, weights, label_names, metrics)
        if baseline_probs is not None:
            base = _weighted_metrics(labels, baseline_probs, weights, label_names, metrics)
            values = {name: values[name] - base[name] for name in metrics}
        return values

    estimates = {name: float(v[0]) for name, v in score(np.ones((1, len(labels)))).items()}
    chunk = max(1, _BOOTSTRAP_CHUNK_CELLS // max(1, len(labels)))
    parts = [
        score(counts[start : start + chunk][:, codes].astype(np.float64)) for start in range(0, num_resamples, chunk)
    ]
    samples = {name: np.concatenate([part[name] for part in parts]) for name in metrics}
    tail = 100 * (1 - confidence) / 2
    intervals, undefined = {}, {}
    for name, values in samples.items():
        defined = values[np.isfinite(values)]
        undefined[name] = int(len(values) - len(defined))
        intervals[name] = tuple(float(v) for v in np.percentile(defined, [tail, 100 - tail])) if len(defined) else None
    return {
        "estimates": estimates,
        "intervals": intervals,
        "undefined": undefined,
        "num_resamples": int(num_resamples),
        "confidence": float(confidence),
        "seed": int(seed),
        "resampled": "image" if groups is None else "lesion",
        "n_groups": n_groups,
    }


def _spec_level(metric: str) -> float | None:
    """0.9 for `mel_sensitivity_at_spec90`; None for any other name."""
    prefix = "mel_sensitivity_at_spec"
    if metric.startswith(prefix) and metric[len(prefix) :].isdigit():
        return int(metric[len(prefix) :]) / 100
    return None


def _weighted_metrics(labels, probs, weights: np.ndarray, label_names: list[str], metrics) -> dict[str, np.ndarray]:
    """`classification_metrics`' values on each row of integer image weights `(B, N)`: `(B,)` arrays, NaN where a
    resample leaves the metric undefined (as `classification_metrics` would on those rows)."""
    num_labels = len(label_names)
    onehot = labels[:, None] == np.arange(num_labels)  # (N, K)
    correct = probs.argmax(axis=1) == labels
    class_weight = weights @ onehot  # (B, K): images of each class in each resample
    total = weights.sum(axis=1)
    out = {}
    if "accuracy" in metrics:
        out["accuracy"] = weights @ correct / total
    if "balanced_accuracy" in metrics:
        hits = weights @ (onehot & correct[:, None])
        with np.errstate(invalid="ignore", divide="ignore"):
            recall = np.where(class_weight > 0, hits / class_weight, np.nan)
        out["balanced_accuracy"] = _nanmean(recall)
    if "auc_macro" in metrics:
        auc = np.stack([_weighted_auc(onehot[:, k], probs[:, k], weights) for k in range(num_labels)], axis=1)
        out["auc_macro"] = _nanmean(auc)
    levels = {name: _spec_level(name) for name in metrics if _spec_level(name)}
    if levels:
        if "mel" not in label_names:
            out.update({name: np.full(len(weights), np.nan) for name in levels})
        else:
            mel = label_names.index("mel")
            sensitivity = _weighted_sensitivity_at_specificity(onehot[:, mel], probs[:, mel], weights, levels.values())
            out.update(zip(levels, sensitivity))
    return out


def _nanmean(values: np.ndarray) -> np.ndarray:
    """Row means over the finite entries, NaN for a row without any (no warning)."""
    finite = np.isfinite(values)
    count = finite.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, np.where(finite, values, 0).sum(axis=1) / count, np.nan)


def _tie_blocks(scores: np.ndarray, descending: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The order that sorts `scores` and where each run of equal scores starts in it (ties move together)."""
    order = np.argsort(-scores if descending else scores, kind="stable")
    sorted_scores = scores[order]
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    return order, starts


def _weighted_auc(is_positive: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC-AUC of each weight row (Mann-Whitney: the share of positive-negative pairs ranked right, ties half)."""
    order, starts = _tie_blocks(scores)
    w = weights[:, order]
    positive = is_positive[order]
    pos = np.add.reduceat(w * positive, starts, axis=1)  # (B, tie blocks)
    neg = np.add.reduceat(w * ~positive, starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg  # negatives scored strictly lower than the block
    num_pos, num_neg = pos.sum(axis=1), neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (pos * (below + 0.5 * neg)).sum(axis=1) / (num_pos * num_neg)
    return np.where((num_pos > 0) & (num_neg > 0), auc, np.nan)


def _weighted_sensitivity_at_specificity(
    is_positive: np.ndarray, scores: np.ndarray, weights: np.ndarray, levels
) -> list[np.ndarray]:
    """`sensitivity_at_specificity` of each weight row, for each specificity level."""
    order, starts = _tie_blocks(scores, descending=True)
    w = weights[:, order]
    positive = is_positive[order]
    # Calling everything at or above a block's score positive: true and false positives so far.
    tp = np.cumsum(np.add.reduceat(w * positive, starts, axis=1), axis=1)
    fp = np.cumsum(np.add.reduceat(w * ~positive, starts, axis=1), axis=1)
    num_pos, num_neg = tp[:, -1], fp[:, -1]
    defined = (num_pos > 0) & (num_neg > 0)
    out = []
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr, fpr = tp / num_pos[:, None], fp / num_neg[:, None]
        for level in levels:
            # The threshold above every score (0, 0) is always allowed, hence the floor at 0.
            best = np.where(fpr <= 1 - level + 1e-12, tpr, 0.0).max(axis=1)
            out.append(np.where(defined, best, np.nan))
    return out


def flatten_metrics(metrics: dict, per_class: tuple[str, ...] = ("precision", "recall", "f1")) -> dict[str, float]:
    """Scalars only (what the Trainer logs): per-class values become `recall_mel`, `precision_bcc`, ..."""
    flat = {key: value for key, value in metrics.items() if isinstance(value, (int, float))}
    for name, values in metrics.get("per_class", {}).items():
        for key in per_class:
            flat[f"{key}_{name}"] = values[key]
    return flat


def compute_metrics(eval_pred) -> dict[str, float]:
    """`Trainer(compute_metrics=...)`: logits and label ids -> the scalar metrics, with per-class recall.

    The same `classification_metrics` as `evaluate.load(metric_path())` (`hf_skin.metric_module`), called directly,
    on the same float32 probabilities that module's features store: training logs exactly what that module reports.
    """
    logits = eval_pred.predictions[0] if isinstance(eval_pred.predictions, tuple) else eval_pred.predictions
    # Logits are softmax-ed here rather than left to `as_probabilities`, which cannot tell logits that happen to
    # look like probabilities from probabilities.
    probs = softmax(np.asarray(logits, dtype=np.float64)).astype(np.float32)
    results = classification_metrics(np.asarray(eval_pred.label_ids), probs)
    return flatten_metrics(results, per_class=("recall",))
