"""Classification metrics for HAM10000 the way the ISIC challenge and clinicians read them, built on scikit-learn."""

from __future__ import annotations

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
from transformers import EvalPrediction

from .data import DX_LABELS


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, num_bins: int = 15) -> float:
    """Top-label ECE: |accuracy - confidence| averaged over equal-width confidence bins, weighted by bin size."""
    confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == labels
    bins = np.minimum((confidence * num_bins).astype(int), num_bins - 1)
    ece = 0.0
    for b in np.unique(bins):
        in_bin = bins == b
        ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)


def sensitivity_at_specificity(is_positive: np.ndarray, scores: np.ndarray, specificity: float) -> float:
    """Best sensitivity reachable with a threshold whose specificity is at least `specificity`."""
    if is_positive.all() or not is_positive.any():
        return float("nan")
    fpr, tpr, _ = roc_curve(is_positive, scores)
    return float(tpr[fpr <= 1 - specificity + 1e-12].max())


def classification_metrics(labels, probs, label_names: list[str] = DX_LABELS) -> dict:
    """Every metric hf-skin reports, from true label ids `(N,)` and class probabilities `(N, K)`.

    Returns a dict of floats plus `per_class` (precision, recall = sensitivity, specificity, f1, support, auc for
    each label) and `confusion_matrix` (rows true, columns predicted). Metrics undefined on the given data (AUC of
    a class absent from `labels`) are NaN rather than a made-up number.
    """
    labels, probs = np.asarray(labels), np.asarray(probs, dtype=np.float64)
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


def flatten_metrics(metrics: dict, per_class: tuple[str, ...] = ("precision", "recall", "f1")) -> dict[str, float]:
    """Scalars only (what the Trainer logs): per-class values become `recall_mel`, `precision_bcc`, ..."""
    flat = {key: value for key, value in metrics.items() if isinstance(value, (int, float))}
    for name, values in metrics.get("per_class", {}).items():
        for key in per_class:
            flat[f"{key}_{name}"] = values[key]
    return flat


def compute_metrics(eval_pred: EvalPrediction) -> dict[str, float]:
    """`Trainer(compute_metrics=...)`: logits and label ids -> the scalar metrics, with per-class recall."""
    logits = eval_pred.predictions[0] if isinstance(eval_pred.predictions, tuple) else eval_pred.predictions
    return flatten_metrics(classification_metrics(eval_pred.label_ids, softmax(logits)), per_class=("recall",))
