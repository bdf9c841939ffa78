"""The ISIC 2018 Task 3 files of scripts/evaluate.py, scored by the challenge's own scorer (PyPI
`isic-challenge-scoring`): hf-skin's numbers must be the scorer's.

Two definitions differ and the tests keep them apart. The scorer's per-class sensitivity and specificity call an
image positive for a class when that class's probability is above 0.5; hf-skin's per-class recall and specificity
are those of the argmax call. The two are the same decision when every image's top probability is above 0.5, and only
then are they compared. The scorer also counts a tie for the top probability as wrong (hf-skin takes the first), so
the probabilities here have no ties.
"""

import csv

import numpy as np
import pandas as pd
import pytest

import hf_skin.evaluation as evaluation
from hf_skin.data import DX_LABELS
from hf_skin.evaluation import ISIC_FILES, evaluate_checkpoint
from hf_skin.models import build_model
from hf_skin.processing import processor_for

isic = pytest.importorskip(
    "isic_challenge_scoring",
    reason="the ISIC challenge scorer is not installed: pip install isic-challenge-scoring (or the dev extra)",
)

ISIC_HEADER = ["image", "MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]


@pytest.fixture(autouse=True)
def pandas_3_applymap(monkeypatch):
    """isic-challenge-scoring 5.6 calls DataFrame.applymap, which pandas 3 removed in favour of DataFrame.map."""
    if not hasattr(pd.DataFrame, "applymap"):
        monkeypatch.setattr(pd.DataFrame, "applymap", pd.DataFrame.map, raising=False)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    import torch

    path = tmp_path_factory.mktemp("cnn")
    torch.manual_seed(0)
    model = build_model("cnn", hidden_sizes=[8, 16])
    model.save_pretrained(path)
    processor_for(model).save_pretrained(path)
    return path


def score(output_dir):
    from isic_challenge_scoring.classification import ClassificationMetric, ClassificationScore

    return ClassificationScore.from_file(
        output_dir / ISIC_FILES["ground_truth"],
        output_dir / ISIC_FILES["predictions"],
        ClassificationMetric.BALANCED_ACCURACY,
    )


def assert_threshold_free_metrics_agree(metrics, result):
    assert result.overall == pytest.approx(metrics["balanced_accuracy"], abs=1e-6)
    assert result.aggregate["balanced_accuracy"] == pytest.approx(metrics["balanced_accuracy"], abs=1e-6)
    for column in ISIC_HEADER[1:]:
        ours = metrics["per_class"][column.lower()]
        assert result.per_category.loc[column, "auc"] == pytest.approx(ours["auc"], abs=1e-6), column
    assert result.macro_average["auc"] == pytest.approx(metrics["auc_macro"], abs=1e-6)


def confident_predictions(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """Probabilities whose top class (right for about 70% of the images, else a random other class) holds 0.5 to 0.95
    of the mass, the rest spread at random: the argmax call and the scorer's 0.5 threshold are one decision."""
    rng = np.random.default_rng(seed)
    calls = np.where(rng.random(len(labels)) < 0.7, labels, (labels + rng.integers(1, 7, len(labels))) % 7)
    top = rng.uniform(0.51, 0.95, len(labels))
    rest = rng.dirichlet(np.ones(6), len(labels)) * (1 - top)[:, None]
    probs = np.empty((len(labels), 7))
    for i, (call, row) in enumerate(zip(calls, rest)):
        probs[i] = np.insert(row, call, top[i])
    return probs.astype(np.float32).astype(np.float64)  # what a model's float32 softmax gives


def test_isic_scorer_agrees_with_hf_skin_on_every_metric(synthetic_dir, checkpoint, tmp_path, monkeypatch):
    """evaluate_checkpoint on a classifier whose every top probability is above 0.5 (its predictions patched in;
    the files, the metrics and the report are written by the real code): balanced accuracy, per-class
    sensitivity, specificity and AUC, and macro AUC, are the scorer's to 1e-6."""

    def predict(classifier, data, **kwargs):
        dx = data.features["dx"]
        labels = np.array([classifier.labels.index(dx.int2str(v)) for v in data["dx"]])
        return np.log(confident_predictions(labels))[None]  # (views, N, K) logits whose softmax is these probabilities

    monkeypatch.setattr("hf_skin.evaluation.checkpoint.predict_dataset", predict)  # where evaluate_checkpoint calls it
    metrics = evaluate_checkpoint(checkpoint, synthetic_dir, "all", output_dir=tmp_path)
    assert metrics["isic_files"] is True
    assert all(metrics["per_class"][dx]["support"] > 0 for dx in DX_LABELS)  # every class: every AUC defined
    assert 0.5 < metrics["balanced_accuracy"] < 0.9  # neither chance nor perfect: a comparison that could fail

    with (tmp_path / ISIC_FILES["predictions"]).open() as f:
        rows = list(csv.reader(f))
    assert rows[0] == ISIC_HEADER
    probs = np.array([[float(v) for v in row[1:]] for row in rows[1:]])
    assert (probs.max(axis=1) > 0.5).all() and ((probs >= 0) & (probs <= 1)).all()
    assert all(np.sum(row == row.max()) == 1 for row in probs)  # no tie for the top
    with (tmp_path / ISIC_FILES["ground_truth"]).open() as f:
        truth = list(csv.reader(f))
    assert truth[0] == ISIC_HEADER and [row[0] for row in truth] == [row[0] for row in rows]
    assert all(sorted(row[1:]) == ["0.0"] * 6 + ["1.0"] for row in truth[1:])
    with (tmp_path / "predictions.csv").open() as f:
        ours = list(csv.DictReader(f))
    assert [row["image_id"] for row in ours] == [row[0] for row in rows[1:]]
    assert all(
        truth_row[1 + ISIC_HEADER[1:].index(row["true"].upper())] == "1.0" for row, truth_row in zip(ours, truth[1:])
    )

    result = score(tmp_path)
    assert_threshold_free_metrics_agree(metrics, result)
    for column in ISIC_HEADER[1:]:
        ours = metrics["per_class"][column.lower()]
        scorer = result.per_category.loc[column]
        assert scorer["sensitivity"] == pytest.approx(ours["recall"], abs=1e-6), column
        assert scorer["specificity"] == pytest.approx(ours["specificity"], abs=1e-6), column
    assert "isic_predictions.csv](isic_predictions.csv)" in (tmp_path / "report.md").read_text()


def test_isic_scorer_agrees_on_a_real_checkpoints_output(synthetic_dir, checkpoint, tmp_path):
    """A real (random, tiny) CNN through the whole path: its probabilities are near uniform, every top one under 0.5,
    so the scorer's thresholded sensitivities are another metric; balanced accuracy and AUC must still agree."""
    metrics = evaluate_checkpoint(checkpoint, synthetic_dir, "all", output_dir=tmp_path)
    result = score(tmp_path)
    assert_threshold_free_metrics_agree(metrics, result)
    assert len(set(result.per_category["auc"].round(6))) == 7  # seven different AUCs, none of them trivial


def test_no_isic_files_for_a_model_of_other_labels(tmp_path):
    assert not evaluation.write_isic_2018(tmp_path, ["a", "b"], [0, 1], np.eye(2), ["benign", "malignant"])
    assert not evaluation.write_isic_2018(tmp_path, ["a", "a"], [0, 1], np.eye(7)[:2], DX_LABELS)  # duplicate id
    assert not list(tmp_path.iterdir())
