import csv
import importlib.util
import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hf_skin.data import DX_LABELS, DX_NAMES, load_ham10000
from hf_skin.evaluation import (
    FIGURES,
    MIN_SUBGROUP_SIZE,
    TTA_VIEWS,
    age_band,
    evaluate_checkpoint,
    score,
    subgroup_table,
    tta_views,
    wilson_interval,
)
from hf_skin.inference import SkinClassifier
from hf_skin.metrics import BOOTSTRAP_METRICS, bootstrap_intervals, classification_metrics
from hf_skin.models import build_model
from hf_skin.processing import load_image, processor_for

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
# What the one scorer adds to `classification_metrics`, and what an evaluation adds to the scorer's metrics.
SCORE_KEYS = {"n", "calibration", "operating_point", "bootstrap", "subgroups"}
EVALUATION_KEYS = {
    "split",
    "split_arguments",
    "model",
    "dataset",
    "tta",
    "metadata_fields",
    "isic_files",
    "training_data",
    "evaluated_data",
}


def load_script(name: str):
    """scripts/<name>.py as a module, under another name: as `evaluate` it would shadow the library."""
    spec = importlib.util.spec_from_file_location(f"{name}_script", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _save_checkpoint(path: Path, family: str) -> Path:
    torch.manual_seed(0)
    model = build_model(family, hidden_sizes=[8, 16])
    model.save_pretrained(path)
    processor_for(model, train_ages=[35.0, 50.0, 65.0]).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def cnn_checkpoint(tmp_path_factory) -> Path:
    return _save_checkpoint(tmp_path_factory.mktemp("cnn"), "cnn")


@pytest.fixture(scope="module")
def multi_input_checkpoint(tmp_path_factory) -> Path:
    return _save_checkpoint(tmp_path_factory.mktemp("multi_input"), "multi-input")


def _hand_predictions(checkpoint: Path, split) -> tuple[np.ndarray, np.ndarray]:
    """One image at a time through the predict API, metadata as words: what a user of the checkpoint gets."""
    classifier = SkinClassifier.from_pretrained(checkpoint)
    features = split.features
    probs = []
    for row in split:
        metadata = {
            name: features[name].int2str(row[name]) if name != "age" else row[name]
            for name in classifier.metadata_fields
        }
        probs.append(classifier.predict_proba(load_image(row["image"]), **metadata)[0].numpy())
    return np.asarray(list(split["dx"])), np.asarray(probs)


@pytest.fixture(scope="module")
def timm_checkpoint(tmp_path_factory, tiny_timm_checkpoint) -> Path:
    """EfficientNet-Lite's family (TimmWrapper) in miniature, at a 4:3 input size."""
    path = tmp_path_factory.mktemp("timm")
    torch.manual_seed(0)
    model = build_model("efficientnet-lite0", model_name_or_path=str(tiny_timm_checkpoint))
    model.save_pretrained(path)
    processor_for(model, str(tiny_timm_checkpoint), image_size=(24, 32)).save_pretrained(path)
    return path


@pytest.mark.parametrize("family", ["cnn", "multi-input", "timm"])
def test_evaluate_script_writes_every_artefact_and_the_right_numbers(
    family, synthetic_dir, cnn_checkpoint, multi_input_checkpoint, timm_checkpoint, tmp_path, monkeypatch, capsys
):
    checkpoint = {"cnn": cnn_checkpoint, "multi-input": multi_input_checkpoint, "timm": timm_checkpoint}[family]
    out = tmp_path / "eval"
    argv = ["--model", str(checkpoint), "--dataset", str(synthetic_dir), "--output_dir", str(out)]
    monkeypatch.setattr(sys, "argv", ["evaluate.py", *argv, "--batch_size", "7"])  # batches that do not divide n
    returned = load_script("evaluate").main()
    assert str(out) in capsys.readouterr().out

    metrics = json.loads((out / "metrics.json").read_text())
    test = load_ham10000(synthetic_dir)["test"]
    assert metrics["n"] == len(test) and metrics["split"] == "test" and metrics["tta"] is False
    assert metrics["model"] == str(checkpoint) and metrics["dataset"] == str(synthetic_dir)
    assert metrics["accuracy"] == pytest.approx(returned["accuracy"])
    assert metrics["metadata_fields"] == (["age", "sex", "localization"] if family == "multi-input" else [])

    # The numbers are those of the predict API, image by image (batching and metadata handling change nothing).
    labels, probs = _hand_predictions(checkpoint, test)
    expected = classification_metrics(labels, probs)
    assert metrics["confusion_matrix"] == expected["confusion_matrix"]
    for key in ("accuracy", "balanced_accuracy", "f1_macro", "auc_macro", "ece", "mel_sensitivity_at_spec80"):
        assert metrics[key] == pytest.approx(expected[key], abs=1e-6), key
    assert metrics["per_class"]["mel"]["recall"] == pytest.approx(expected["per_class"]["mel"]["recall"])
    with (out / "predictions.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["image_id"] for r in rows] == list(test["image_id"])
    assert [r["lesion_id"] for r in rows] == list(test["lesion_id"])
    np.testing.assert_allclose([[float(r[f"p_{c}"]) for c in DX_LABELS] for r in rows], probs, atol=2e-6)

    # Lesion-level bootstrap intervals, reproducible from the predictions file with the same seed.
    bootstrap = metrics["bootstrap"]
    assert bootstrap["resampled"] == "lesion" and bootstrap["num_resamples"] == 1000 and bootstrap["seed"] == 0
    assert bootstrap["n_lesions"] == len(set(test["lesion_id"])) < bootstrap["n_images"] == len(test)
    saved = np.array([[float(r[f"p_{c}"]) for c in DX_LABELS] for r in rows])
    again = bootstrap_intervals(labels, saved, [r["lesion_id"] for r in rows], seed=0)
    assert set(bootstrap["intervals"]) == set(BOOTSTRAP_METRICS)
    for name, (low, high) in bootstrap["intervals"].items():
        assert (low, high) == pytest.approx(again["intervals"][name], abs=1e-9), name
        assert 0 <= low <= high <= 1

    for name in FIGURES.values():
        with Image.open(out / name) as png:
            assert png.format == "PNG" and png.width >= 600 and png.height >= 500, name
        assert (out / name).stat().st_size > 20_000, name  # a drawn figure, not an empty canvas
    report = (out / "report.md").read_text()
    for name in [*FIGURES.values(), "metrics.json"]:
        assert f"]({name})" in report, name  # linked or shown
    assert all(DX_NAMES[dx] in report for dx in DX_LABELS)
    # scored on synthetic lesions: the report says so instead of describing HAM10000 (which it does for real data)
    assert "These images are synthetic" in report and "do **not** transfer to smartphone" not in report
    from hf_skin.evaluation.report import _transfer_note

    assert "do **not** transfer to smartphone" in _transfer_note({"kind": "ham10000", "synthetic": False})
    low, high = bootstrap["intervals"]["balanced_accuracy"]
    assert f"| **balanced accuracy** | **{metrics['balanced_accuracy']:.3f}** | {low:.3f}–{high:.3f} |" in report
    assert f"percentile bootstrap over the split's {bootstrap['n_lesions']:,} lesions" in report
    for grouping in ("sex", "age band", "localization"):
        assert f"### By {grouping}" in report


def test_subgroup_counts_add_up(synthetic_dir, cnn_checkpoint, tmp_path):
    metrics = evaluate_checkpoint(cnn_checkpoint, synthetic_dir, "validation", output_dir=tmp_path)
    assert set(metrics["subgroups"]) == {"sex", "age band", "localization"}
    per_class = metrics["per_class"]
    for grouping, rows in metrics["subgroups"].items():
        assert sum(r["n"] for r in rows) == metrics["n"], grouping
        assert sum(r["n_mel"] for r in rows) == per_class["mel"]["support"], grouping
        assert sum(r["n_malignant"] for r in rows) == sum(per_class[dx]["support"] for dx in ("akiec", "bcc", "mel"))
        assert all(r["too_small"] == (r["n"] < MIN_SUBGROUP_SIZE) for r in rows)
        assert all(r["n"] > 0 for r in rows)  # groups absent from the split are left out
    # accuracy weighted by group size gives back the overall accuracy
    rows = metrics["subgroups"]["sex"]
    assert sum(r["accuracy"] * r["n"] for r in rows) / metrics["n"] == pytest.approx(metrics["accuracy"])


def test_subgroup_table_by_hand():
    mel, bcc, nv = (DX_LABELS.index(dx) for dx in ("mel", "bcc", "nv"))
    labels = np.array([mel, mel, bcc, nv, nv, mel])
    preds = np.array([mel, bcc, nv, nv, mel, nv])
    groups = ["a", "a", "a", "a", "b", "b"]
    a, b = subgroup_table(labels, preds, groups, ["a", "b"], DX_LABELS)
    assert a["n"] == 4 and a["accuracy"] == pytest.approx(2 / 4)
    assert a["balanced_accuracy"] == pytest.approx((1 / 2 + 0 + 1) / 3)  # mel, bcc, nv present
    assert a["n_mel"] == 2 and a["mel_recall"] == pytest.approx(1 / 2)
    # malignant recall: a melanoma called bcc is still flagged as malignant; the bcc called nv is missed
    assert a["n_malignant"] == 3 and a["malignant_recall"] == pytest.approx(2 / 3)
    assert b["mel_recall"] == 0.0 and b["too_small"]
    (c,) = subgroup_table(labels[3:5], preds[3:5], ["c", "c"], ["c"], DX_LABELS)
    assert c["mel_recall"] is None and c["malignant_recall"] is None  # no positives: undefined, not 0


@pytest.mark.parametrize(
    "age, band",
    [(0, "<30"), (29.9, "<30"), (30, "30–44"), (44.5, "30–44"), (45, "45–59"), (74, "60–74"), (75, "≥75")]
    + [(90, "≥75"), (None, "missing"), (float("nan"), "missing")],
)
def test_age_bands(age, band):
    assert age_band(age) == band


def test_tta_views_are_the_eight_symmetries():
    array = np.random.default_rng(0).integers(0, 255, (6, 9, 3), dtype=np.uint8)
    views = [np.asarray(view) for view in tta_views(Image.fromarray(array))]
    expected = [array, array[:, ::-1], array[::-1], np.rot90(array), np.rot90(array, 2), np.rot90(array, 3)]
    expected += [array.transpose(1, 0, 2), np.rot90(array, 2).transpose(1, 0, 2)]
    assert len(views) == len(TTA_VIEWS) == 8
    for name, view, want in zip(TTA_VIEWS, views, expected):
        np.testing.assert_array_equal(view, want, err_msg=name)


def test_tta_probabilities_are_the_mean_of_the_views(synthetic_dir, cnn_checkpoint, tmp_path):
    classifier = SkinClassifier.from_pretrained(cnn_checkpoint)
    image = load_image(next((synthetic_dir / "HAM10000_images_part_1").glob("*.jpg")))
    by_hand = [
        classifier.predict_proba(image if op is None else image.transpose(op))[0].numpy() for op in TTA_VIEWS.values()
    ]
    assert np.ptp(np.asarray(by_hand), axis=0).max() > 1e-4  # the views do differ: the mean is not trivially equal

    # The evaluation with --tta scores the mean of the views' probabilities
    metrics = evaluate_checkpoint(cnn_checkpoint, synthetic_dir, "test", tta=True, output_dir=tmp_path, max_samples=3)
    assert metrics["tta"] is True and metrics["n"] == 3
    test = load_ham10000(synthetic_dir)["test"]
    with (tmp_path / "predictions.csv").open() as f:
        rows = list(csv.DictReader(f))
    for row, record in zip(rows, test.select(range(3))):
        views = [classifier.predict_proba(view)[0].numpy() for view in tta_views(load_image(record["image"]))]
        np.testing.assert_allclose([float(row[f"p_{c}"]) for c in DX_LABELS], np.mean(views, axis=0), atol=2e-6)
    assert "test-time augmentation" in (tmp_path / "report.md").read_text()


def test_split_all_evaluates_every_row_of_an_unseen_folder(synthetic_dir, cnn_checkpoint, tmp_path):
    with (synthetic_dir / "HAM10000_metadata.csv").open() as f:
        image_ids = [row["image_id"] for row in csv.DictReader(f)]
    metrics = evaluate_checkpoint(cnn_checkpoint, synthetic_dir, "all", output_dir=tmp_path)
    assert metrics["n"] == len(image_ids) and metrics["split"] == "all"
    assert sum(v["support"] for v in metrics["per_class"].values()) == len(image_ids)
    with (tmp_path / "predictions.csv").open() as f:
        assert sorted(row["image_id"] for row in csv.DictReader(f)) == sorted(image_ids)


def test_default_output_dir_is_inside_the_checkpoint(synthetic_dir, cnn_checkpoint):
    from hf_skin.evaluation import EvaluationArguments

    args = EvaluationArguments(model=str(cnn_checkpoint), dataset=str(synthetic_dir), split="all", tta=True)
    assert Path(args.output_dir) == cnn_checkpoint / "evaluation" / f"{synthetic_dir.name}-all-tta"
    with pytest.raises(ValueError, match="--split 'dev' is not one of"):
        EvaluationArguments(model="m", split="dev")


def test_wrong_labels_are_named(synthetic_dir, tmp_path):
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    config = ViTConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8, image_size=16)
    config.id2label, config.label2id = {0: "cat", 1: "dog"}, {"cat": 0, "dog": 1}
    ViTForImageClassification(config).save_pretrained(tmp_path / "pets")
    ViTImageProcessor(size={"height": 16, "width": 16}).save_pretrained(tmp_path / "pets")
    with pytest.raises(ValueError, match=r"predicts the labels \['cat', 'dog'\].*HAM10000 classifier"):
        evaluate_checkpoint(tmp_path / "pets", synthetic_dir, output_dir=tmp_path / "out", max_samples=2)


def test_wilson_interval():
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)
    low, high = wilson_interval(5, 10)
    assert (low, high) == (pytest.approx(0.2366, abs=1e-4), pytest.approx(0.7634, abs=1e-4))
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


def test_bootstrap_can_be_switched_off(synthetic_dir, cnn_checkpoint, tmp_path):
    metrics = evaluate_checkpoint(cnn_checkpoint, synthetic_dir, "test", output_dir=tmp_path, bootstrap_resamples=0)
    assert metrics["bootstrap"] is None
    # The scorer's shape (a run's test_metrics.json has it too), and what was evaluated.
    expected = set(classification_metrics(np.array([0]), np.eye(7)[:1])) | SCORE_KEYS | EVALUATION_KEYS
    assert set(metrics) == expected
    report = (tmp_path / "report.md").read_text()
    assert "No intervals: evaluated with `--bootstrap_resamples 0`" in report
    assert f"| **balanced accuracy** | **{metrics['balanced_accuracy']:.3f}** | — |" in report


def test_the_one_scorer_gives_one_shape_whatever_it_is_asked():
    rng = np.random.default_rng(0)
    labels, probs = np.arange(40) % 7, rng.dirichlet(np.ones(7), 40)
    plain = score(labels, probs, DX_LABELS)
    assert set(plain) == set(classification_metrics(labels, probs)) | SCORE_KEYS
    assert plain["n"] == 40 and plain["subgroups"] == {}
    assert plain["calibration"] is None and plain["operating_point"] is None and plain["bootstrap"] is None
    assert plain["accuracy"] == classification_metrics(labels, probs)["accuracy"]
    with pytest.raises(ValueError, match="raw_probs"):
        score(labels, probs, DX_LABELS, calibration=object())

    point = {"threshold": 0.3, "target_sensitivity": 0.9, "sensitivity": 0.95, "specificity": 0.5}
    full = score(
        labels,
        probs,
        DX_LABELS,
        operating_point=point,
        lesion_ids=[f"HAM_{i // 2}" for i in range(40)],
        groupings={"sex": (["female"] * 15 + ["male"] * 25, ["female", "male"])},
        bootstrap_resamples=50,
    )
    assert set(full) == set(plain)
    assert full["operating_point"]["validation"] == {"sensitivity": 0.95, "specificity": 0.5}
    assert full["bootstrap"]["resampled"] == "lesion" and full["bootstrap"]["n_lesions"] == 20
    assert [row["n"] for row in full["subgroups"]["sex"]] == [15, 25]


def _run_folder(path: Path, checkpoint: Path, dataset) -> Path:
    """A checkpoint with the record of the run that made it: `run_args.json` names its data."""
    shutil.copytree(checkpoint, path)
    (path / "run_args.json").write_text(json.dumps({"model": "cnn", "dataset": str(dataset)}))
    return path


def test_a_run_is_evaluated_on_its_own_dataset_by_default(synthetic_dir, cnn_checkpoint, tmp_path):
    from hf_skin.data import DEFAULT_DATASET
    from hf_skin.evaluation import EvaluationArguments
    from hf_skin.evaluation.arguments import run_dataset

    run = _run_folder(tmp_path / "run", cnn_checkpoint, synthetic_dir)
    assert EvaluationArguments(model=str(run)).dataset == str(synthetic_dir)
    assert run_dataset(run) == str(synthetic_dir)  # `recalibrate`'s default too
    # a checkpoint without a run's record has no data of its own
    assert EvaluationArguments(model=str(cnn_checkpoint)).dataset == DEFAULT_DATASET


def test_a_runs_moved_dataset_is_named_with_the_flag_to_pass(cnn_checkpoint, tmp_path):
    from hf_skin.evaluation import EvaluationArguments
    from hf_skin.evaluation.arguments import run_dataset

    gone = tmp_path / "data-moved-away"
    run = _run_folder(tmp_path / "run", cnn_checkpoint, gone)
    for default in (lambda: EvaluationArguments(model=str(run)), lambda: run_dataset(run)):
        with pytest.raises(FileNotFoundError, match=f"trained on {gone} .*not there any more: pass --dataset"):
            default()
    # given --dataset, the recorded one is not needed
    assert EvaluationArguments(model=str(run), dataset=str(tmp_path)).dataset == str(tmp_path)
