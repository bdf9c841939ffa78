import numpy as np
import pytest

from hf_skin.labels import DX_LABELS
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


def test_metric_module_is_self_contained():
    """evaluate copies the file into its module cache: only library imports (hf_skin by its absolute name, an
    installed package), nothing relative that evaluate would have to copy along."""
    import ast

    from evaluate.loading import get_imports

    from hf_skin.metric_module import metric_path

    assert {kind for kind, *_ in get_imports(metric_path())} == {"library"}
    tree = ast.parse(open(metric_path()).read())
    modules = {
        alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    }
    modules |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert modules <= {"__future__", "os", "numpy", "datasets", "evaluate", "hf_skin"}, modules


@pytest.fixture
def offline_metric(tmp_path, monkeypatch):
    """`evaluate.load` of hf-skin's metric module, its module cache in tmp_path."""
    import evaluate

    from hf_skin.metric_module import metric_path

    monkeypatch.setattr(evaluate.config, "HF_MODULES_CACHE", tmp_path / "modules")
    return evaluate.load(metric_path(), cache_dir=str(tmp_path / "metrics"), keep_in_memory=True)


def test_evaluate_load_works_offline_and_equals_classification_metrics(offline_metric, tmp_path):
    from hf_skin.metric_module import Ham10000Metrics

    assert offline_metric.name == "ham10000_metrics"
    assert "balanced accuracy" in offline_metric.description and "ISIC" in offline_metric.citation
    assert type(offline_metric).__module__.startswith("evaluate_modules")  # the cached copy, not hf_skin.metrics
    assert type(offline_metric) is not Ham10000Metrics
    assert (tmp_path / "modules").is_dir()

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 7, 60)
    labels[:7] = np.arange(7)  # every class present
    # float32 probabilities: what the module's Sequence(float32) feature stores, so the results must be identical
    probs = rng.dirichlet(np.ones(7), size=60).astype(np.float32)
    probs[labels == 4, 4] += 1.0
    probs /= probs.sum(axis=1, keepdims=True)
    result = offline_metric.compute(predictions=probs, references=labels)
    expected = classification_metrics(labels, probs.astype(np.float32))
    np.testing.assert_equal(result, expected)
    assert result["per_class"]["mel"]["recall"] > 0.5

    # logits are softmax-ed: the same metrics as their probabilities
    logits = np.log(probs.astype(np.float64)) + 3.0
    from_logits = offline_metric.compute(predictions=logits, references=labels)
    assert from_logits["confusion_matrix"] == expected["confusion_matrix"]
    assert from_logits["auc_macro"] == pytest.approx(expected["auc_macro"], abs=1e-6)
    assert from_logits["ece"] == pytest.approx(expected["ece"], abs=1e-5)

    # add_batch + compute, the streaming use of an evaluate metric
    for start in range(0, 60, 25):
        offline_metric.add_batch(predictions=probs[start : start + 25], references=labels[start : start + 25])
    np.testing.assert_equal(offline_metric.compute(), expected)


def test_metric_module_label_names_and_errors(offline_metric):
    probs = np.array([[0.7, 0.3], [0.2, 0.8], [0.6, 0.4]], dtype=np.float32)
    result = offline_metric.compute(predictions=probs, references=[0, 1, 1], label_names=["benign", "malignant"])
    assert set(result["per_class"]) == {"benign", "malignant"} and "mel_sensitivity_at_spec90" not in result
    assert result["accuracy"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match=r"label ids must be in \[0, 7\)"):
        classification_metrics(np.array([0, 7]), one_hot_probs(np.array([0, 1])))
    with pytest.raises(ValueError, match=r"shape \(N, 7\)"):
        classification_metrics(np.array([0, 1]), probs[:2])


def test_compute_metrics_goes_through_the_module():
    from transformers import EvalPrediction

    from hf_skin.metrics import flatten_metrics, softmax

    rng = np.random.default_rng(1)
    labels = rng.integers(0, 7, 40)
    logits = rng.normal(size=(40, 7)).astype(np.float32)
    out = compute_metrics(EvalPrediction(predictions=(logits, None), label_ids=labels))
    expected = flatten_metrics(classification_metrics(labels, softmax(logits.astype(np.float64))), ("recall",))
    assert out.keys() == expected.keys()
    for key, value in expected.items():
        assert out[key] == pytest.approx(value, abs=1e-6, nan_ok=True), key
    assert {f"recall_{c}" for c in ("akiec", "mel", "nv")} <= out.keys()


# ---------------------------------------------------------------------------------------------------------------
# Bootstrap intervals


def lesion_data(rng, num_lesions: int, images_per_lesion, accuracy: float):
    """Labels, one-hot-ish probabilities and lesion ids where each lesion's images share a diagnosis and a call:
    right for a share `accuracy` of the lesions, else a random other class."""
    sizes = np.full(num_lesions, images_per_lesion) if np.isscalar(images_per_lesion) else images_per_lesion
    lesion_labels = rng.integers(0, 7, num_lesions)
    lesion_labels[:7] = np.arange(7)  # every class present
    wrong = (lesion_labels + rng.integers(1, 7, num_lesions)) % 7
    lesion_preds = np.where(rng.random(num_lesions) < accuracy, lesion_labels, wrong)
    lesions = np.repeat([f"HAM_{i:07d}" for i in range(num_lesions)], sizes)
    labels, preds = np.repeat(lesion_labels, sizes), np.repeat(lesion_preds, sizes)
    return labels, one_hot_probs(preds, confidence=0.7), lesions


def test_bootstrap_of_a_perfect_classifier_is_one_one():
    from hf_skin.metrics import BOOTSTRAP_METRICS, bootstrap_intervals

    labels, probs, lesions = lesion_data(np.random.default_rng(0), 200, 2, accuracy=1.0)
    result = bootstrap_intervals(labels, probs, lesions, num_resamples=200)
    assert set(result["intervals"]) == set(BOOTSTRAP_METRICS)
    for name, interval in result["intervals"].items():
        assert interval == (1.0, 1.0), name
        assert result["estimates"][name] == 1.0
    assert result["resampled"] == "lesion" and result["n_groups"] == 200 and result["num_resamples"] == 200


def test_bootstrap_of_a_coin_flip_contains_chance_and_is_not_vacuous():
    """Random probabilities: the intervals hold the expected values (1/7 for the accuracies, 0.5 for the AUC, 0.2 for
    the sensitivity at 80% specificity) and are narrow enough that holding them means something."""
    from hf_skin.metrics import bootstrap_intervals

    rng = np.random.default_rng(1)
    labels = rng.integers(0, 7, 3000)
    probs = rng.dirichlet(np.ones(7), size=3000)
    lesions = np.arange(3000) // 2
    result = bootstrap_intervals(labels, probs, lesions, seed=3)
    expected = {"accuracy": 1 / 7, "balanced_accuracy": 1 / 7, "auc_macro": 0.5}
    expected["mel_sensitivity_at_spec80"] = 0.2
    for name, value in expected.items():
        low, high = result["intervals"][name]
        assert low < value < high, (name, low, high)
        assert high - low < 0.12, (name, low, high)


def test_lesion_resampling_is_wider_than_image_resampling_when_a_lesions_images_agree():
    """Five identical images per lesion carry the evidence of one: resampling images pretends there are five times
    as many independent cases, an interval about sqrt(5) = 2.2 times too narrow."""
    from hf_skin.metrics import bootstrap_intervals

    labels, probs, lesions = lesion_data(np.random.default_rng(2), 100, 5, accuracy=0.7)
    by_lesion = bootstrap_intervals(labels, probs, lesions)
    by_image = bootstrap_intervals(labels, probs)
    assert by_image["resampled"] == "image" and by_image["n_groups"] == 500 and by_lesion["n_groups"] == 100
    for name in ("accuracy", "balanced_accuracy", "auc_macro"):
        lesion_width = np.diff(by_lesion["intervals"][name])[0]
        image_width = np.diff(by_image["intervals"][name])[0]
        assert lesion_width > 1.7 * image_width, (name, lesion_width, image_width)
        assert by_lesion["estimates"][name] == pytest.approx(by_image["estimates"][name])


def test_bootstrap_is_reproducible_with_its_seed():
    from hf_skin.metrics import bootstrap_intervals

    labels, probs, lesions = lesion_data(np.random.default_rng(3), 150, np.arange(150) % 3 + 1, accuracy=0.6)
    first = bootstrap_intervals(labels, probs, lesions, seed=7)
    assert bootstrap_intervals(labels, probs, list(lesions), seed=7) == first
    other = bootstrap_intervals(labels, probs, lesions, seed=8)
    assert other["intervals"] != first["intervals"] and other["estimates"] == first["estimates"]
    assert first["seed"] == 7 and first["confidence"] == 0.95


def test_vectorised_bootstrap_scores_a_resample_as_classification_metrics_does():
    """Integer weights per image are the resample: the vectorised scores equal classification_metrics on the
    resampled rows, ties in the probabilities included."""
    from hf_skin.metrics import BOOTSTRAP_METRICS, _weighted_metrics, bootstrap_intervals

    rng = np.random.default_rng(4)
    labels = rng.integers(0, 7, 400)
    labels[:7] = np.arange(7)
    probs = rng.dirichlet(np.ones(7), size=400)
    probs[labels == 4, 4] += 0.3
    probs = np.round(probs / probs.sum(axis=1, keepdims=True), 1)  # many ties
    lesions = np.arange(400) // 3
    for _ in range(20):
        drawn = rng.integers(0, lesions.max() + 1, lesions.max() + 1)
        rows = np.concatenate([np.flatnonzero(lesions == lesion) for lesion in drawn])
        weights = np.bincount(rows, minlength=400)[None].astype(float)
        got = _weighted_metrics(labels, probs, weights, DX_LABELS, BOOTSTRAP_METRICS)
        want = classification_metrics(labels[rows], probs[rows])
        for name in BOOTSTRAP_METRICS:
            assert got[name][0] == pytest.approx(want[name], abs=1e-12), name
    estimates = bootstrap_intervals(labels, probs, lesions, num_resamples=10)["estimates"]
    full = classification_metrics(labels, probs)
    assert estimates == pytest.approx({name: full[name] for name in BOOTSTRAP_METRICS}, abs=1e-12)


def test_paired_bootstrap_of_the_difference():
    from hf_skin.metrics import bootstrap_intervals

    rng = np.random.default_rng(5)
    labels, good, lesions = lesion_data(rng, 300, 2, accuracy=0.9)
    _, bad, _ = lesion_data(np.random.default_rng(5), 300, 2, accuracy=0.5)  # same labels and lesions
    paired = bootstrap_intervals(labels, good, lesions, baseline_probs=bad)
    low, high = paired["intervals"]["balanced_accuracy"]
    expected = (
        classification_metrics(labels, good)["balanced_accuracy"]
        - classification_metrics(labels, bad)["balanced_accuracy"]
    )
    assert paired["estimates"]["balanced_accuracy"] == pytest.approx(expected)
    assert 0.2 < low < expected < high
    same = bootstrap_intervals(labels, good, lesions, baseline_probs=good.copy())
    assert all(interval == (0.0, 0.0) for interval in same["intervals"].values())


def test_bootstrap_undefined_resamples_and_errors():
    from hf_skin.metrics import bootstrap_intervals

    labels = np.array([4, 5, 5, 5, 5, 5])  # a single melanoma: some resamples draw none
    probs = one_hot_probs(labels)
    result = bootstrap_intervals(labels, probs, num_resamples=300)
    assert 0 < result["undefined"]["mel_sensitivity_at_spec90"] < 300 and result["undefined"]["accuracy"] == 0
    assert result["intervals"]["mel_sensitivity_at_spec90"] == (1.0, 1.0)  # from the resamples that define it
    no_mel = bootstrap_intervals(np.array([0, 1]), one_hot_probs(np.array([0, 1])), num_resamples=5)
    assert no_mel["intervals"]["mel_sensitivity_at_spec90"] is None
    with pytest.raises(ValueError, match="no bootstrap for \\['f1_macro'\\]"):
        bootstrap_intervals(labels, probs, metrics=("f1_macro",))
    with pytest.raises(ValueError, match="groups has 2 entries for 6 labels"):
        bootstrap_intervals(labels, probs, ["a", "b"])
    with pytest.raises(ValueError, match="baseline_probs must score the same rows"):
        bootstrap_intervals(labels, probs, baseline_probs=probs[:3])


def test_metric_path_is_still_where_the_readme_said():
    from hf_skin.metric_module import metric_path as module_path
    from hf_skin.metrics import metric_path

    assert metric_path() == module_path()
