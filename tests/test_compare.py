"""Comparing runs (hf_skin.evaluation.compare, scripts/compare.py): the table of test metrics and training curves,
and paired, lesion-level bootstrap intervals of the differences between runs scored on the same images."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import load_script
from PIL import Image

from hf_skin.data import DX_LABELS
from hf_skin.evaluation import compare_runs, find_predictions, json_safe, load_run, score, write_predictions
from hf_skin.metrics import BOOTSTRAP_METRICS, classification_metrics

# ---------------------------------------------------------------------------------------------------------------
# compare.py


@pytest.fixture(scope="module")
def two_runs(synthetic_dir, tmp_path_factory) -> list[Path]:
    from hf_skin.training import parse_args, run

    root = tmp_path_factory.mktemp("runs")
    runs = []
    for name, balance in (("oversampled", "oversample"), ("plain", "none")):
        argv = ["--model", "cnn", "--dataset", str(synthetic_dir), "--output_dir", str(root / name)]
        argv += ["--config_overrides", '{"hidden_sizes": [8, 16]}', "--balance", balance, "--augment", "none"]
        argv += ["--max_train_samples", "16", "--max_eval_samples", "8", "--per_device_train_batch_size", "8"]
        argv += ["--num_train_epochs", "2", "--save_total_limit", "1", "--report_to", "none"]
        run(*parse_args(argv))
        runs.append(root / name)
    return runs


def test_compare_script_writes_table_and_curves(two_runs, tmp_path, capsys):
    out = tmp_path / "compare"
    rows = load_script("compare").main([*map(str, two_runs), "--output_dir", str(out)])
    assert "2 runs compared" in capsys.readouterr().out

    with (out / "comparison.csv").open() as f:
        table = list(csv.DictReader(f))
    assert [r["run"] for r in table] == ["oversampled", "plain"] == [r["run"] for r in rows]
    for run_dir, row in zip(two_runs, table):
        results = json.loads((run_dir / "all_results.json").read_text())
        assert float(row["balanced_accuracy"]) == pytest.approx(results["test_balanced_accuracy"])
        assert float(row["recall_mel"]) == pytest.approx(results["test_recall_mel"])
        assert row["model_type"] == "hf_skin_cnn" and float(row["epochs"]) == 2.0
    markdown = (out / "comparison.md").read_text()
    assert "`oversampled`" in markdown and "`plain`" in markdown and "](training_curves.png)" in markdown
    assert markdown.count("\n| `") == 2
    with Image.open(out / "training_curves.png") as png:
        assert png.format == "PNG" and png.width >= 1200
    assert (out / "training_curves.png").stat().st_size > 30_000


def test_compare_names_a_folder_that_is_not_a_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="has no all_results.json"):
        compare_runs([tmp_path], tmp_path / "out")


# ---------------------------------------------------------------------------------------------------------------
# Paired differences (compare.py on evaluation folders)


def _evaluation_folder(path: Path, image_ids, lesion_ids, labels, probs) -> Path:
    """What scripts/evaluate.py leaves behind, as far as compare.py reads it: metrics.json and predictions.csv."""
    path.mkdir(parents=True)
    (path / "metrics.json").write_text(json.dumps(json_safe(classification_metrics(labels, probs))))
    write_predictions(path / "predictions.csv", list(image_ids), lesion_ids, labels, probs, DX_LABELS)
    return path


def _synthetic_predictions(seed: int, num_lesions: int = 300, accuracy: float = 0.8):
    """Image ids, lesion ids (1-3 images each), labels and probabilities of a classifier that is right on a share
    `accuracy` of the lesions (all images of a lesion get the same call, as they nearly do in life)."""
    rng = np.random.default_rng(0)  # the same images and labels whatever the classifier
    sizes = rng.integers(1, 4, num_lesions)
    lesion_labels = rng.choice(7, num_lesions, p=[0.05, 0.1, 0.15, 0.05, 0.15, 0.45, 0.05])
    lesion_labels[:7] = np.arange(7)
    calls = np.random.default_rng(seed)
    wrong = (lesion_labels + calls.integers(1, 7, num_lesions)) % 7
    lesion_preds = np.where(calls.random(num_lesions) < accuracy, lesion_labels, wrong)
    labels, preds = np.repeat(lesion_labels, sizes), np.repeat(lesion_preds, sizes)
    probs = np.full((len(labels), 7), 0.05)
    probs[np.arange(len(labels)), preds] = 0.7
    probs += calls.uniform(0, 0.01, probs.shape)  # no ties
    probs /= probs.sum(axis=1, keepdims=True)
    image_ids = [f"ISIC_{i:07d}" for i in range(len(labels))]
    lesion_ids = list(np.repeat([f"HAM_{i:07d}" for i in range(num_lesions)], sizes))
    return image_ids, lesion_ids, labels, probs


def test_a_runs_test_metrics_and_an_evaluations_metrics_are_read_by_one_rule(tmp_path):
    """Both are the one scorer's output: scalars as they are, per-class values as `recall_mel`, ..."""
    _, _, labels, probs = _synthetic_predictions(seed=1)
    scored = json_safe(score(labels, probs, DX_LABELS))
    run = tmp_path / "run"
    run.mkdir()
    (run / "test_metrics.json").write_text(json.dumps(scored))
    (run / "all_results.json").write_text(json.dumps({"test_accuracy": 0.0}))  # the metrics come from the scorer's
    evaluation = tmp_path / "evaluation"
    evaluation.mkdir()
    (evaluation / "metrics.json").write_text(json.dumps({**scored, "split": "test", "tta": False, "isic_files": True}))
    from_run, from_evaluation = load_run(run)["metrics"], load_run(evaluation)["metrics"]
    assert from_run == from_evaluation
    assert from_run["accuracy"] == scored["accuracy"]
    assert from_run["recall_mel"] == scored["per_class"]["mel"]["recall"]
    assert "support_mel" not in from_run and "tta" not in from_evaluation and "isic_files" not in from_evaluation


def test_compare_gives_a_paired_interval_above_zero_for_a_clearly_better_run(tmp_path, capsys):
    ids, lesions, labels, good = _synthetic_predictions(seed=1, accuracy=0.9)
    *_, bad = _synthetic_predictions(seed=2, accuracy=0.5)
    better = _evaluation_folder(tmp_path / "better", ids, lesions, labels, good)
    # the same images in another order: matched by image id, not by row
    order = np.random.default_rng(3).permutation(len(ids))
    worse = _evaluation_folder(
        tmp_path / "worse", [ids[i] for i in order], [lesions[i] for i in order], labels[order], bad[order]
    )
    rows, pairs = compare_runs([better, worse], tmp_path / "compare", return_pairs=True)
    assert [row["run"] for row in rows] == ["better", "worse"]
    (pair,) = pairs
    assert pair["comparable"] and pair["resampled"] == "lesion" and pair["n_lesions"] == 300
    ba = pair["metrics"]["balanced_accuracy"]
    expected = (
        classification_metrics(labels, good)["balanced_accuracy"]
        - classification_metrics(labels, bad)["balanced_accuracy"]
    )
    assert ba["difference"] == pytest.approx(expected, abs=1e-6) and ba["difference"] > 0.25
    assert 0 < ba["low"] < ba["difference"] < ba["high"] and ba["excludes_zero"]
    assert pair["metrics"]["accuracy"]["low"] > 0 and pair["metrics"]["auc_macro"]["low"] > 0

    markdown = (tmp_path / "compare" / "comparison.md").read_text()
    sentence = (
        f"`better` − `worse` balanced accuracy: {ba['difference']:+.3f} [{ba['low']:+.3f}, {ba['high']:+.3f}]: the "
        "interval excludes 0, `better` is better on these images."
    )
    assert sentence in markdown
    assert f"({len(ids):,} images of 300 lesions.)" in markdown
    with (tmp_path / "compare" / "paired_differences.csv").open() as f:
        table = {row["metric"]: row for row in csv.DictReader(f)}
    assert set(table) == set(BOOTSTRAP_METRICS)
    assert float(table["balanced_accuracy"]["low"]) == pytest.approx(ba["low"])

    # The command line says it in the same words, and the same seed gives the same interval.
    load_script("compare").main([str(better), str(worse), "--output_dir", str(tmp_path / "again")])
    assert sentence in capsys.readouterr().out


def test_compare_of_two_identical_runs_gives_zero_zero(tmp_path):
    ids, lesions, labels, probs = _synthetic_predictions(seed=1)
    a = _evaluation_folder(tmp_path / "a", ids, lesions, labels, probs)
    b = _evaluation_folder(tmp_path / "b", ids, lesions, labels, probs)
    _, (pair,) = compare_runs([a, b], tmp_path / "compare", return_pairs=True)
    for name, m in pair["metrics"].items():
        assert (m["difference"], m["low"], m["high"]) == (0.0, 0.0, 0.0), name
        assert m["excludes_zero"] is False
    markdown = (tmp_path / "compare" / "comparison.md").read_text()
    assert (
        "`a` − `b` balanced accuracy: +0.000 [+0.000, +0.000]: the interval includes 0, these images do not show "
        "either run to be better." in markdown
    )


def test_compare_refuses_runs_on_different_images(tmp_path):
    ids, lesions, labels, probs = _synthetic_predictions(seed=1)
    a = _evaluation_folder(tmp_path / "a", ids, lesions, labels, probs)
    b = _evaluation_folder(tmp_path / "b", ids[:-5], lesions[:-5], labels[:-5], probs[:-5])
    relabelled = labels.copy()
    relabelled[0] = (relabelled[0] + 1) % 7
    c = _evaluation_folder(tmp_path / "c", ids, lesions, relabelled, probs)
    _, pairs = compare_runs([a, b, c], tmp_path / "compare", return_pairs=True)
    assert [(p["a"], p["b"], p["comparable"]) for p in pairs] == [
        ("a", "b", False),
        ("a", "c", False),
        ("b", "c", False),
    ]
    markdown = (tmp_path / "compare" / "comparison.md").read_text()
    assert (
        f"Not comparable: not scored on the same images ({len(ids):,} and {len(ids) - 5:,} images; 5 only in the "
        f"first, 0 only in the second, e.g. {ids[-5]}). No interval." in markdown
    )
    assert "Not comparable: the same images with different diagnoses (1 of them). No interval." in markdown
    assert "excludes 0" not in markdown.split("## Paired differences")[1].split("Predictions compared")[1]
    with (tmp_path / "compare" / "paired_differences.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and all(row["comparable"] == "False" and not row["low"] for row in rows)


def test_compare_without_lesion_ids_resamples_images_and_says_so(tmp_path):
    ids, _, labels, good = _synthetic_predictions(seed=1, accuracy=0.9)
    *_, bad = _synthetic_predictions(seed=2, accuracy=0.5)
    a = _evaluation_folder(tmp_path / "a", ids, None, labels, good)  # a predictions.csv of an older evaluate.py
    b = _evaluation_folder(tmp_path / "b", ids, None, labels, bad)
    _, (pair,) = compare_runs([a, b], tmp_path / "compare", return_pairs=True)
    assert pair["resampled"] == "image" and pair["n_lesions"] is None
    assert (
        "resampled one by one: the predictions files have no `lesion_id`"
        in (tmp_path / "compare" / "comparison.md").read_text()
    )


def test_which_predictions_a_run_folder_is_compared_by(tmp_path):
    ids, lesions, labels, probs = _synthetic_predictions(seed=1)
    evaluation = _evaluation_folder(tmp_path / "eval", ids, lesions, labels, probs)
    assert find_predictions(evaluation) == (evaluation / "predictions.csv", "its own predictions.csv")
    # A training run: its one evaluation; of several, the test split without TTA; else none, and why.
    run = tmp_path / "run"
    (run / "evaluation").mkdir(parents=True)
    (run / "test_metrics.json").write_text(json.dumps(classification_metrics(labels, probs)))
    assert find_predictions(run)[0] is None and "scripts/evaluate.py --model" in find_predictions(run)[1]
    _evaluation_folder(run / "evaluation" / "ham10000-test-tta", ids, lesions, labels, probs)
    assert find_predictions(run)[0] == run / "evaluation" / "ham10000-test-tta" / "predictions.csv"
    _evaluation_folder(run / "evaluation" / "ham10000-test", ids, lesions, labels, probs)
    assert find_predictions(run) == (
        run / "evaluation" / "ham10000-test" / "predictions.csv",
        "its test-split evaluation without TTA",
    )
    _evaluation_folder(run / "evaluation" / "isic2019-test", ids, lesions, labels, probs)
    path, why = find_predictions(run)
    assert path is None and why.startswith("several evaluations (") and "pass the one to compare" in why

    _, pairs = compare_runs([evaluation, run], tmp_path / "compare", return_pairs=True)
    assert pairs == []  # the run has no predictions to pair
    markdown = (tmp_path / "compare" / "comparison.md").read_text()
    assert f"- `run`: none, several evaluations (`{run / 'evaluation' / 'ham10000-test'}`" in markdown
    assert "No pair of runs with predictions to compare." in markdown
