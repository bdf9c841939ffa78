"""hf-skin's metrics as an `evaluate` module: `evaluate.load(metric_path())` works offline.

`evaluate.load(path)` copies this file into its own module cache and imports it from there, so it imports hf_skin by
its absolute name (an installed hf-skin) and holds nothing but the wrapper: the maths is `hf_skin.metrics`. Published
as a Hub metric (a Space holding this file as `ham10000_metrics.py`), it needs `hf-skin` in that Space's requirements.

    metric = evaluate.load(hf_skin.metric_module.metric_path())     # offline: a local file, no Hub download
    metric.compute(predictions=probabilities_or_logits, references=label_ids)
"""

from __future__ import annotations

import os

import datasets
import evaluate
import numpy as np

from hf_skin.labels import DX_LABELS, HAM10000_CITATION
from hf_skin.metrics import as_probabilities, classification_metrics

_DESCRIPTION = """\
Every metric a skin-lesion classifier on HAM10000 should be judged by, not accuracy alone (a model that always
answers 'nv', the benign nevus, scores 67% accuracy on HAM10000): accuracy; balanced accuracy (the mean per-class
recall, the ISIC 2018 challenge's ranking metric); macro and weighted F1; for each class precision, recall
(= sensitivity), specificity, F1, support and one-vs-rest ROC-AUC; macro ROC-AUC; melanoma sensitivity at 80% and 90%
specificity (the best threshold on the melanoma probability that keeps specificity at or above the level); the
top-label expected calibration error (15 equal-width confidence bins), the negative log-likelihood (log loss, nats)
and the multi-class Brier score; the confusion matrix (rows true, columns
predicted). Metrics that the data leaves undefined (the AUC of a class absent from the references) are NaN.
Computed with scikit-learn.
"""

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
    `dict`: `accuracy`, `balanced_accuracy`, `f1_macro`, `f1_weighted`, `auc_macro`, `ece`, `nll`, `brier`,
    `mel_sensitivity_at_spec80`, `mel_sensitivity_at_spec90` (floats), `per_class` (label -> precision, recall,
    specificity, f1, support, auc) and `confusion_matrix` (list of rows, true label by predicted label).

Examples:
    >>> import evaluate
    >>> from hf_skin.metric_module import metric_path
    >>> metric = evaluate.load(metric_path())
    >>> results = metric.compute(predictions=[[0.1, 0.0, 0.0, 0.0, 0.8, 0.1, 0.0]], references=[4])
    >>> results["accuracy"], results["per_class"]["mel"]["recall"]
    (1.0, 1.0)
"""


def metric_path() -> str:
    """The path `evaluate.load` takes to load hf-skin's metric module, `evaluate.load(metric_path())` (offline)."""
    return os.path.abspath(__file__)


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
            np.asarray(references), as_probabilities(predictions), list(label_names or DX_LABELS)
        )
