import numpy as np
import pytest

from hf_skin.metrics import (
    classification_metrics,
    compute_metrics,
    expected_calibration_error,
    sensitivity_at_specificity,
)


def one_hot_probs(preds, num_labels=7, confidence=0.9):
    probs = np.full((len(preds), num_labels), (1 - confidence) / (num_labels - 1))
    probs[np.arange(len(preds)), preds] = confidence
    return probs


def test_metrics_match_a_hand_computed_confusion():
    labels = np.array([0, 0, 1, 1, 1, 4, 4, 4, 4, 5])
    preds = np.array([0, 1, 1, 1, 4, 4, 4, 5, 0, 5])
    m = classification_metrics(labels, one_hot_probs(preds))
    assert m["accuracy"] == pytest.approx(6 / 10)
    # recalls: akiec 1/2, bcc 2/3, mel 2/4, nv 1/1 -> mean over the 4 classes present
    assert m["balanced_accuracy"] == pytest.approx((1 / 2 + 2 / 3 + 2 / 4 + 1) / 4)
    mel = m["per_class"]["mel"]
    assert mel["recall"] == pytest.approx(2 / 4) and mel["precision"] == pytest.approx(2 / 3)
    # mel: FP = 1 (a bcc called mel), TN = 10 - 4 positives - 1 FP = 5
    assert mel["specificity"] == pytest.approx(5 / 6)
    assert mel["support"] == 4 and m["per_class"]["vasc"]["support"] == 0
    assert np.isnan(m["per_class"]["vasc"]["auc"])  # undefined, not invented
    assert m["confusion_matrix"][4] == [1, 0, 0, 0, 2, 1, 0]
    f1s = [m["per_class"][c]["f1"] for c in ("akiec", "bcc", "mel", "nv")]
    assert m["f1_macro"] == pytest.approx(np.mean(f1s))


def test_expected_calibration_error():
    # All at confidence 0.9, 60% correct -> ECE 0.3; perfectly calibrated bins -> 0.
    labels = np.array([0] * 6 + [1] * 4)
    probs = np.tile([0.9, 0.1], (10, 1))
    assert expected_calibration_error(labels, probs) == pytest.approx(0.3)
    assert expected_calibration_error(np.array([0, 1]), np.array([[1.0, 0.0], [0.0, 1.0]])) == pytest.approx(0)


def test_sensitivity_at_specificity():
    positive = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], dtype=bool)
    scores = np.array([0.9, 0.8, 0.3, 0.1, 0.95, 0.7, 0.6, 0.5, 0.4, 0.35, 0.2, 0.15, 0.05, 0.01])
    # 10 negatives: spec >= 0.9 allows 1 false positive (0.95) -> threshold 0.8 catches 2 of 4
    assert sensitivity_at_specificity(positive, scores, 0.9) == pytest.approx(0.5)
    # spec >= 0.8 allows 2 FPs -> still 2 of 4 (the next positive, 0.3, is below 5 negatives)
    assert sensitivity_at_specificity(positive, scores, 0.8) == pytest.approx(0.5)
    assert np.isnan(sensitivity_at_specificity(np.zeros(3, bool), scores[:3], 0.9))


def test_compute_metrics_for_the_trainer_returns_scalars():
    from transformers import EvalPrediction

    labels = np.array([0, 1, 2, 3, 4, 5, 6, 5])
    logits = np.log(one_hot_probs(labels))
    out = compute_metrics(EvalPrediction(predictions=logits, label_ids=labels))
    assert out["accuracy"] == 1.0 and out["balanced_accuracy"] == 1.0 and out["recall_mel"] == 1.0
    assert all(isinstance(v, float) for v in out.values())
