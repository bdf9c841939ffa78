"""Classification metrics for HAM10000 the way the ISIC challenge and clinicians read them, built on scikit-learn,
and the `evaluate` metric module that wraps them.

This file is self-contained on purpose: it imports numpy, scikit-learn, datasets and evaluate, never hf_skin.
`evaluate.load(path)` copies the file into its own module cache and imports it from there, and the same file can
be published unchanged as a Hub metric (a Space named `ham10000_metrics` holding it as `ham10000_metrics.py`).

    metric = evaluate.load(hf_skin.metrics.metric_path())     # offline: a local file, no Hub download
    metric.compute(predictions=probabilities_or_logits, references=label_ids)

`classification_metrics` is the one implementation: the module's `_compute`, the Trainer's `compute_metrics` and
`hf_skin.evaluation` all go through it.
"""

from __future__ import annotations

import os
import warnings

import datasets
import evaluate
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

# HAM10000's diagnoses in hf-skin's canonical label order (hf_skin.data.DX_LABELS; a test keeps the two equal).
# Repeated here rather than imported so that this file stays loadable on its own.
HAM10000_LABELS = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
ECE_BINS = 15

_DESCRIPTION = """\
Every metric a skin-lesion classifier on HAM10000 should be judged by, not accuracy alone (a model that always
answers 'nv', the benign nevus, scores 67% accuracy on HAM10000): accuracy; balanced accuracy (the mean per-class
recall, the ISIC 2018 challenge's ranking metric); macro and weighted F1; for each class precision, recall
(= sensitivity), specificity, F1, support and one-vs-rest ROC-AUC; macro ROC-AUC; melanoma sensitivity at 80% and 90%
specificity (the best threshold on the melanoma probability that keeps specificity at or above the level); the
top-label expected calibration error (15 equal-width confidence bins); the confusion matrix (rows true, columns
predicted). Metrics that the data leaves undefined (the AUC of a class absent from the references) are NaN.
Computed with scikit-learn.
"""

HAM10000_CITATION = """@article{tschandl2018ham10000,
  title   = {The {HAM10000} dataset, a large collection of multi-source dermatoscopic images
             of common pigmented skin lesions},
  author  = {Tschandl, Philipp and Rosendahl, Cliff and Kittler, Harald},
  journal = {Scientific Data},
  volume  = {5},
  pages   = {180161},
  year    = {2018},
  doi     = {10.1038/sdata.2018.161}
}"""

_CITATION = (
    """\
@article{codella2019isic2018,
  title   = {Skin Lesion Analysis Toward Melanoma Detection 2018: A Challenge Hosted by the International Skin
             Imaging Collaboration (ISIC)},
  author  = {Codella, Noel and Rotemberg, Veronica and Tschandl, Philipp and Celebi, M. Emre and Dusza, Stephen
             and Gutman, David and Helba, Brian and Kalloo, Aadi and Liopyris, Konstantinos and Marchetti, Michael
             and Kittler, Harald and Halpern, Allan},
  journal = {arXiv preprint arXiv:1902.03368},
  year    = {2019}
}
@inproceedings{brodersen2010balanced,
  title     = {The Balanced Accuracy and Its Posterior Distribution},
  author    = {Brodersen, Kay Henning and Ong, Cheng Soon and Stephan, Klaas Enno and Buhmann, Joachim M.},
  booktitle = {20th International Conference on Pattern Recognition (ICPR)},
  pages     = {3121--3124},
  year      = {2010}
}
"""
    + HAM10000_CITATION
)

_INPUTS_DESCRIPTION = """
Args:
    predictions (`list[list[float]]` of shape `(N, num_labels)`):
        Class probabilities, or logits: rows that are all non-negative and sum to 1 are read as probabilities,
        anything else goes through a softmax first.
    references (`list[int]` of shape `(N,)`):
        True label ids, in [0, num_labels).
    label_names (`list[str]`, *optional*, defaults to HAM10000's seven diagnoses in hf-skin's order):
        The class of each column; metrics about melanoma need a class named `mel`.

Returns:
    `dict`: `accuracy`, `balanced_accuracy`, `f1_macro`, `f1_weighted`, `auc_macro`, `ece`,
    `mel_sensitivity_at_spec80`, `mel_sensitivity_at_spec90` (floats), `per_class` (label -> precision, recall,
    specificity, f1, support, auc) and `confusion_matrix` (list of rows, true label by predicted label).

Examples:
    >>> import evaluate
    >>> from hf_skin.metrics import metric_path
    >>> metric = evaluate.load(metric_path())
    >>> results = metric.compute(predictions=[[0.1, 0.0, 0.0, 0.0, 0.8, 0.1, 0.0]], references=[4])
    >>> results["accuracy"], results["per_class"]["mel"]["recall"]
    (1.0, 1.0)
"""


def metric_path() -> str:
    """The path `evaluate.load` takes to load hf-skin's metric module, `evaluate.load(metric_path())` (offline)."""
    return os.path.abspath(__file__)


def softmax(logits: np.ndarray) -> np.ndarray:
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


def sensitivity_at_specificity(is_positive: np.ndarray, scores: np.ndarray, specificity: float) -> float:
    """Best sensitivity reachable with a threshold whose specificity is at least `specificity`."""
    if is_positive.all() or not is_positive.any():
        return float("nan")
    fpr, tpr, _ = roc_curve(is_positive, scores)
    return float(tpr[fpr <= 1 - specificity + 1e-12].max())


def classification_metrics(labels, probs, label_names: list[str] = HAM10000_LABELS) -> dict:
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


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _INPUTS_DESCRIPTION)
class Ham10000Metrics(evaluate.Metric):
    """HAM10000 skin-lesion classification metrics as an `evaluate` module (see `_DESCRIPTION`)."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_INPUTS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Sequence(datasets.Value("float32")), "references": datasets.Value("int64")}
            ),
            reference_urls=[
                "https://challenge2018.isic-archive.com/task3/",
                "https://doi.org/10.1038/sdata.2018.161",
                "https://scikit-learn.org/stable/modules/model_evaluation.html#balanced-accuracy-score",
            ],
        )

    def _compute(self, predictions, references, label_names: list[str] | None = None) -> dict:
        return classification_metrics(
            np.asarray(references), as_probabilities(predictions), list(label_names or HAM10000_LABELS)
        )


def compute_metrics(eval_pred) -> dict[str, float]:
    """`Trainer(compute_metrics=...)`: logits and label ids -> the scalar metrics, with per-class recall.

    Goes through the `evaluate` module (kept in memory: no prediction files in its cache), so training logs
    exactly what `evaluate.load(metric_path())` reports.
    """
    logits = eval_pred.predictions[0] if isinstance(eval_pred.predictions, tuple) else eval_pred.predictions
    metric = Ham10000Metrics(keep_in_memory=True)
    # Logits are softmax-ed here rather than left to `as_probabilities`, which cannot tell logits that happen to
    # look like probabilities from probabilities.
    results = metric.compute(predictions=softmax(np.asarray(logits, dtype=np.float64)), references=eval_pred.label_ids)
    return flatten_metrics(results, per_class=("recall",))
