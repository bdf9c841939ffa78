"""`evaluate_checkpoint`: a checkpoint on HAM10000-format data, through the `SkinClassifier` that serves it, scored
by the one scorer and written out as metrics, predictions, figures and a report."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import datasets
import numpy as np

from ..data import DEFAULT_DATASET, SplitArguments, column_values, describe_data
from ..metrics import BOOTSTRAP_RESAMPLES
from .arguments import EvaluationArguments, default_output_dir
from .predict import model_label_ids, predict_dataset, view_probabilities
from .report import FIGURES, render_report
from .scoring import MIN_SUBGROUP_SIZE, group_scores, score, subgroup_groups
from .split import check_no_training_lesions, load_eval_split, run_split
from .writers import json_safe, write_isic_2018, write_predictions

logger = logging.getLogger(__name__)


def evaluate_checkpoint(
    model: str | os.PathLike,
    dataset: str | os.PathLike = DEFAULT_DATASET,
    split: str = "test",
    *,
    tta: bool = False,
    output_dir: str | os.PathLike | None = None,
    batch_size: int = 64,
    test_size: float | None = None,
    validation_size: float | None = None,
    seed: int | None = None,
    on_missing: str | None = None,
    max_samples: int | None = None,
    device: str | None = None,
    bootstrap_resamples: int = BOOTSTRAP_RESAMPLES,
    bootstrap_seed: int = 0,
) -> dict:
    """Evaluates a checkpoint on HAM10000-format data and writes what a reader needs to judge it.

    Writes into `output_dir`: `metrics.json` (this function's return value), `predictions.csv` (one row per image:
    image and lesion id, true and predicted label, every class probability), `report.md` (headline metrics with
    their bootstrap intervals, per-class table with 95% intervals, subgroup tables, figures, and what the numbers do
    not say), the PNGs of `FIGURES` (confusion matrix, counts and row-normalised; one-vs-rest ROC curves;
    reliability diagram; subgroup bars) and, for a model of HAM10000's seven diagnoses, the predictions and the
    ground truth in the ISIC 2018 Task 3 format (`ISIC_FILES`), which the challenge's scorer
    (`isic-challenge-scoring`) reads.

    Args:
        model (`str` or `os.PathLike`):
            A checkpoint folder of any hf-skin family (multi-input included) or a Hub model id.
        dataset (`str` or `os.PathLike`, *optional*, defaults to `DEFAULT_DATASET`):
            Anything `hf_skin.data.load_ham10000` loads: a raw download folder, a saved/parquet folder, a Hub id.
        split (`str`, *optional*, defaults to `"test"`):
            `train`, `validation`, `test` (the lesion-grouped split of training, given the same sizes and seed) or
            `all` (every row: for data the model has never seen).
        tta (`bool`, *optional*, defaults to `False`):
            Average the probabilities over the 8 flips and rotations of each image (`TTA_VIEWS`).
        output_dir (`str` or `os.PathLike`, *optional*): defaults to `default_output_dir(model, dataset, split, tta)`.
        batch_size (`int`, *optional*, defaults to 64): images per forward pass.
        test_size, validation_size, seed, on_missing: as in `load_ham10000`; by default a run folder's own (from
            its `split.json` / `run_args.json`), else 0.15, 0.15, 42, "error". Values that contradict a run's own
            split are refused, and so is any split other than `train` holding a lesion the run trained on.
        max_samples (`int`, *optional*): evaluate only the first rows of the split (debugging).
        device (`str`, *optional*): where the model runs; cuda when available, else cpu.
        bootstrap_resamples (`int`, *optional*, defaults to 1000):
            Resamples of the split's lesions (`hf_skin.metrics.bootstrap_intervals`: all images of a drawn lesion
            together) behind the 95% intervals of `BOOTSTRAP_METRICS`; 0 for none. Without a `lesion_id` column the
            images are resampled one by one, and the report says so.
        bootstrap_seed (`int`, *optional*, defaults to 0): the same seed gives the same intervals.

    Returns:
        `dict`: `score`'s metrics (`classification_metrics` output with `per_class`, `confusion_matrix`, ...; `n`,
        `calibration`, `operating_point`, `subgroups`: grouping -> `subgroup_table` rows, and `bootstrap`:
        `resampled`, `n_lesions`, `num_resamples`, `seed`, `confidence`, `intervals`: metric -> `[low, high]`,
        `undefined`: metric -> resamples that left it undefined; `None` with no resamples) plus what was evaluated:
        `split`, `split_arguments`, `model`, `dataset`, `tta`, `metadata_fields`, `training_data` and
        `evaluated_data` (`hf_skin.data.describe_data`), and `isic_files` (whether the
        ISIC files were written).
    """
    from .. import plots
    from ..inference import SkinClassifier, default_device

    output_dir = Path(output_dir) if output_dir is not None else default_output_dir(model, dataset, split, tta)
    given = SplitArguments(
        validation_size=validation_size, test_size=test_size, split_seed=seed, on_missing=on_missing
    )
    split_args, folder = run_split(model, split, given)
    kwargs = split_args.load_kwargs()
    data = load_eval_split(dataset, split, **kwargs, max_samples=max_samples)
    if folder is not None:
        check_no_training_lesions(data, folder, split, dataset)
    classifier = SkinClassifier.from_pretrained(model)
    classifier.model.to(device or default_device())
    label_names = classifier.labels
    labels = model_label_ids(data, label_names, os.fspath(model))
    desc = f"Evaluating on {split} ({len(data):,} images{', 8-view TTA' if tta else ''})"
    logits = predict_dataset(classifier, data, batch_size=batch_size, tta=tta, desc=desc)
    probs = view_probabilities(logits)
    calibration = classifier.calibration
    raw_probs = view_probabilities(calibration.undo(logits)) if calibration is not None else None

    lesion_ids = _column(data, "lesion_id")
    metrics = score(
        labels,
        probs,
        label_names,
        raw_probs=raw_probs,
        calibration=calibration,
        operating_point=classifier.operating_point,
        lesion_ids=lesion_ids,
        groupings=subgroup_groups(data),
        bootstrap_resamples=bootstrap_resamples,
        bootstrap_seed=bootstrap_seed,
    )
    metrics.update(
        split=split,
        split_arguments=split_args.split_arguments(),
        model=os.fspath(model),
        dataset=os.fspath(dataset),
        tta=tta,
        metadata_fields=list(classifier.metadata_fields),
        training_data=classifier.training_data,  # what the model learned from
        evaluated_data=describe_data(dataset),  # and what it is scored on
    )

    output_dir.mkdir(parents=True, exist_ok=True)
    image_ids = _column(data, "image_id")
    write_predictions(output_dir / "predictions.csv", image_ids, lesion_ids, labels, probs, label_names)
    metrics["isic_files"] = write_isic_2018(output_dir, image_ids, labels, probs, label_names)
    (output_dir / "metrics.json").write_text(json.dumps(json_safe(metrics), indent=2) + "\n")
    where = f"{split} split, {len(data):,} images{', TTA' if tta else ''}"
    cm = np.asarray(metrics["confusion_matrix"])
    plots.plot_confusion_matrix(
        cm, label_names, output_dir / FIGURES["confusion_matrix"], title=f"Confusion matrix ({where})"
    )
    plots.plot_confusion_matrix(
        cm,
        label_names,
        output_dir / FIGURES["confusion_matrix_normalized"],
        normalize=True,
        title=f"Confusion matrix, row-normalised: the diagonal is each class's recall\n({where})",
    )
    plots.plot_roc_curves(labels, probs, label_names, output_dir / FIGURES["roc_curves"])
    plots.plot_reliability_diagram(labels, probs, output_dir / FIGURES["reliability_diagram"], before=raw_probs)
    overall = group_scores(labels, probs.argmax(axis=1), label_names)
    plots.plot_subgroups(metrics["subgroups"], overall, output_dir / FIGURES["subgroups"], min_n=MIN_SUBGROUP_SIZE)
    (output_dir / "report.md").write_text(render_report(metrics, overall))
    logger.info("Evaluation of %s on %s (%s) written to %s", model, dataset, where, output_dir)
    return metrics


def run_evaluation(args: EvaluationArguments) -> dict:
    """`evaluate_checkpoint` from parsed `EvaluationArguments` (what `scripts/evaluate.py` calls)."""
    return evaluate_checkpoint(
        args.model,
        args.dataset,
        args.split,
        tta=args.tta,
        output_dir=args.output_dir,
        batch_size=args.batch_size,
        test_size=args.test_size,
        validation_size=args.validation_size,
        seed=args.split_seed,
        on_missing=args.on_missing,
        max_samples=args.max_samples,
        device=args.device,
        bootstrap_resamples=args.bootstrap_resamples,
        bootstrap_seed=args.bootstrap_seed,
    )


def _column(data: datasets.Dataset, name: str) -> list | None:
    """A column as a plain list, `None` when the dataset has no such column."""
    return column_values(data, name) if name in data.column_names else None
