"""Evaluating a checkpoint on HAM10000-format data (metrics, subgroups, figures, a report) and comparing training runs.

`evaluate_checkpoint` runs any hf-skin checkpoint, or any HAM10000 image classifier on the Hub, through the same
`SkinClassifier` that serves it, so the numbers are those a user of the model gets, each headline number with a
lesion-level bootstrap interval, and writes the predictions in the ISIC 2018 challenge's format beside its own.
`compare_runs` puts the test metrics and training curves of several runs side by side and, for runs scored on the same
images, gives a paired bootstrap interval of each difference.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
from PIL import Image
from sklearn.metrics import balanced_accuracy_score
from tqdm.auto import tqdm

from .data import DEFAULT_DATASET, ISIC_DX_COLUMNS, SplitArguments, column_values, load_ham10000
from .labels import DX_NAMES, MALIGNANT_DX, malignant_ids, melanoma_id
from .metrics import BOOTSTRAP_METRICS, BOOTSTRAP_RESAMPLES, bootstrap_intervals, classification_metrics, softmax
from .formatting import markdown_table
from .processing import load_image
from .runs import RunFolder, RunFolderError

logger = logging.getLogger(__name__)

SPLIT_CHOICES = ("train", "validation", "test", "all")
# Test-time augmentation: the eight symmetries of the square. Dermoscopy has no "up", so each keeps the label.
TTA_VIEWS = {
    "identity": None,
    "hflip": Image.Transpose.FLIP_LEFT_RIGHT,
    "vflip": Image.Transpose.FLIP_TOP_BOTTOM,
    "rot90": Image.Transpose.ROTATE_90,
    "rot180": Image.Transpose.ROTATE_180,
    "rot270": Image.Transpose.ROTATE_270,
    "transpose": Image.Transpose.TRANSPOSE,
    "transverse": Image.Transpose.TRANSVERSE,
}
# Age bands of the subgroup table: [low, high) in years.
AGE_BANDS = (("<30", 0, 30), ("30–44", 30, 45), ("45–59", 45, 60), ("60–74", 60, 75), ("≥75", 75, math.inf))
AGE_MISSING = "missing"
# Below this many images a subgroup's numbers are noise: shown, but marked as too small to judge.
MIN_SUBGROUP_SIZE = 30
FIGURES = {
    "confusion_matrix": "confusion_matrix.png",
    "confusion_matrix_normalized": "confusion_matrix_normalized.png",
    "roc_curves": "roc_curves.png",
    "reliability_diagram": "reliability_diagram.png",
    "subgroups": "subgroups.png",
}
ISIC_FILES = {"predictions": "isic_predictions.csv", "ground_truth": "isic_ground_truth.csv"}
# How the report names the metrics that get a bootstrap interval.
BOOTSTRAP_NAMES = {
    "balanced_accuracy": "balanced accuracy",
    "accuracy": "accuracy",
    "auc_macro": "macro ROC-AUC",
    "mel_sensitivity_at_spec90": "melanoma sensitivity at 90% specificity",
    "mel_sensitivity_at_spec80": "melanoma sensitivity at 80% specificity",
}
# Metrics of the comparison table (all but ECE: higher is better).
COMPARE_METRICS = (
    "accuracy",
    "balanced_accuracy",
    "f1_macro",
    "f1_weighted",
    "auc_macro",
    "mel_sensitivity_at_spec90",
    "mel_sensitivity_at_spec80",
    "ece",
)
TRANSFER_NOTE = (
    "HAM10000 consists of dermatoscopic images (taken through a dermatoscope, with magnification and polarised "
    "light) of pigmented lesions from two clinics, in Vienna and Queensland, of mostly fair-skinned patients; the "
    "class mix of its test split is not the mix a clinic or a screening programme sees. These numbers say how the "
    "model does on more of the same. They do **not** transfer to smartphone or other clinical (non-dermatoscopic) "
    "photos, to other cameras and dermatoscopes, to darker skin types, or to lesions HAM10000 does not cover. A model "
    "that should be used elsewhere has to be tested there. Research software: not a medical device, not a diagnosis."
)


@dataclass(kw_only=True)
class EvaluationArguments(SplitArguments):
    """Arguments of `scripts/evaluate.py` (and of `run_evaluation`). The split's arguments default to the run's own
    when `model` is a run folder (see `run_split`)."""

    model: str = field(metadata={"help": "A checkpoint folder (e.g. runs/cnn) or a Hub model id."})
    dataset: str = field(
        default=DEFAULT_DATASET,
        metadata={"help": "A HAM10000 raw download folder, a parquet/save_to_disk folder, or a Hub dataset id."},
    )
    split: str = field(
        default="test",
        metadata={
            "help": "Split to evaluate: of a run folder, the run's own lesion-grouped split (checked to hold none of "
            "its training lesions); 'all' evaluates every row, for data the model has never seen.",
            "choices": list(SPLIT_CHOICES),
        },
    )
    tta: bool = field(
        default=False, metadata={"help": "Test-time augmentation: average over the 8 flips/rotations of each image."}
    )
    output_dir: str | None = field(
        default=None,
        metadata={"help": "Where to write the report (default <model>/evaluation/<dataset>-<split>[-tta])."},
    )
    batch_size: int = field(default=64, metadata={"help": "Images per forward pass."})
    max_samples: int | None = field(default=None, metadata={"help": "Evaluate only the first N rows (debugging)."})
    device: str | None = field(default=None, metadata={"help": "cpu, cuda, ... (default: cuda when available)."})
    bootstrap_resamples: int = field(
        default=BOOTSTRAP_RESAMPLES,
        metadata={
            # No percent sign: argparse %-formats help strings.
            "help": "Bootstrap resamples of the split's lesions behind the 95-percent intervals of the headline "
            "metrics (0: no intervals)."
        },
    )
    bootstrap_seed: int = field(
        default=0, metadata={"help": "Seed of the bootstrap: the same seed, the same intervals."}
    )

    def __post_init__(self):
        if self.split not in SPLIT_CHOICES:
            raise ValueError(f"--split {self.split!r} is not one of {', '.join(SPLIT_CHOICES)}")
        if self.batch_size < 1:
            raise ValueError(f"--batch_size must be at least 1, not {self.batch_size}")
        if self.bootstrap_resamples < 0:
            raise ValueError(f"--bootstrap_resamples must be 0 (no intervals) or more, not {self.bootstrap_resamples}")
        if self.output_dir is None:
            self.output_dir = os.fspath(default_output_dir(self.model, self.dataset, self.split, self.tta))


def default_output_dir(model: str, dataset: str, split: str, tta: bool = False) -> Path:
    """`<model>/evaluation/<dataset name>-<split>[-tta]` for a local checkpoint, `runs/evaluation/...` for a Hub id."""
    name = f"{Path(os.fspath(dataset).rstrip('/')).name or 'dataset'}-{split}{'-tta' if tta else ''}"
    root = Path(model) / "evaluation" if Path(model).is_dir() else Path("runs/evaluation") / model.replace("/", "--")
    return root / name


# ---------------------------------------------------------------------------------------------------------------
# Data and predictions


def run_split(model: str | os.PathLike, split: str, given: SplitArguments) -> tuple[SplitArguments, RunFolder | None]:
    """The split arguments to evaluate `model` with: a run folder's own, unless `split` is `all`.

    Given arguments that contradict the run's recorded split are refused: that "test" split would hold the run's
    training lesions. Returns the filled arguments and the run folder (`None` for a Hub id or a bare checkpoint).
    """
    folder = RunFolder(model)
    folder = folder if folder.path.is_dir() and folder.is_run() else None
    recorded = folder.split_arguments() if folder is not None else None
    if recorded is not None and split != "all":
        conflicts = {
            name: value for name, value in given.given().items() if name != "on_missing" and value != recorded[name]
        }
        if conflicts:
            asked = ", ".join(f"--{name} {value}" for name, value in conflicts.items())
            made = ", ".join(f"--{name} {recorded[name]}" for name in conflicts)
            raise RunFolderError(
                f"{model} was trained with {made}; its {split} split under {asked} would hold lesions it trained on. "
                "Leave the split arguments out (the run's own split is used), or score data the model never saw "
                "with --split all"
            )
    filled = SplitArguments(**given.split_arguments())
    filled.fill(recorded if split != "all" else None)
    if folder is None:
        logger.info(
            "%s is not a run folder: cannot check that the %s split excludes its training lesions", model, split
        )
    return filled, folder


def check_no_training_lesions(data: datasets.Dataset, folder: RunFolder, split: str, dataset) -> None:
    """Refuses to score a run on lesions it trained on (recorded in its `split.json`), except as `train`."""
    trained = folder.training_lesions()
    if split == "train" or trained is None:
        return
    lesions = set(column_values(data, "lesion_id"))
    seen = sorted(lesions & trained)
    if seen:
        hint = (
            "this is the data it trained on: evaluate its test (or validation) split instead"
            if split == "all"
            else "the dataset is not the one it was split from, or the split changed"
        )
        raise RunFolderError(
            f"{len(seen)} of the {len(lesions)} lesions of the {split} split of {dataset} are lesions {folder.path} "
            f"trained on (e.g. {', '.join(seen[:3])}): scores on them would be inflated. {hint[0].upper()}{hint[1:]}"
        )


def load_eval_split(
    dataset: str | os.PathLike,
    split: str = "test",
    *,
    test_size: float = 0.15,
    validation_size: float = 0.15,
    seed: int = 42,
    on_missing: str = "error",
    max_samples: int | None = None,
) -> datasets.Dataset:
    """One split of HAM10000-format data, a lesion-grouped split as training made it, or every row (`"all"`)."""
    if split not in SPLIT_CHOICES:
        raise ValueError(f"split {split!r} is not one of {', '.join(SPLIT_CHOICES)}")
    splits = load_ham10000(
        dataset, test_size=test_size, validation_size=validation_size, seed=seed, on_missing=on_missing
    )
    data = datasets.concatenate_datasets(list(splits.values())) if split == "all" else splits[split]
    if max_samples is not None:
        data = data.select(range(min(max_samples, len(data))))
    if len(data) == 0:
        raise ValueError(f"the {split} split of {dataset} is empty: nothing to evaluate")
    return data


def tta_views(image: Image.Image, views: tuple[str, ...] | None = None) -> list[Image.Image]:
    """The image under each test-time-augmentation view (all of `TTA_VIEWS` by default, identity first)."""
    transposes = [TTA_VIEWS[name] for name in (views or TTA_VIEWS)]
    return [image if op is None else image.transpose(op) for op in transposes]


def metadata_words(batch: dict[str, list], fields: list[str], features: datasets.Features) -> dict[str, list]:
    """A batch's metadata as a person would type it (what `SkinProcessor` reads): `ClassLabel` ids -> names."""
    words = {}
    for name in fields:
        if name not in batch:
            raise ValueError(f"the model reads the metadata column {name!r}, which the dataset does not have")
        feature = features[name]
        if isinstance(feature, datasets.ClassLabel):
            words[name] = [None if v is None else feature.int2str(v) for v in batch[name]]
        else:
            words[name] = list(batch[name])
    return words


def predict_dataset(
    classifier, dataset: datasets.Dataset, batch_size: int = 64, tta: bool = False, desc: str | None = None
) -> np.ndarray:
    """`(views, N, num_labels)` logits of `classifier` (a `SkinClassifier`) for every row of `dataset`: one view, or
    the 8 of `TTA_VIEWS` with `tta`. `view_probabilities` turns them into the probabilities that are scored.

    Logits, not probabilities, so that a calibrated checkpoint's raw model can be scored beside it
    (`Calibration.undo`). Images are decoded at full size, as `SkinClassifier.predict` decodes a file, and
    multi-input models get each row's metadata.
    """
    fields = list(classifier.metadata_fields)
    data = dataset.select_columns(["image", *fields]).cast_column("image", datasets.Image(decode=False))
    out = []
    starts = range(0, len(data), batch_size)
    for start in tqdm(starts, desc=desc or "Predicting", unit="batch"):
        batch = data[start : start + batch_size]
        images = [load_image(value) for value in batch["image"]]
        metadata = metadata_words(batch, fields, dataset.features)
        views = zip(*(tta_views(image) for image in images)) if tta else [images]
        out.append(np.stack([np.asarray(classifier.predict_logits(list(view), **metadata)) for view in views]))
    return np.concatenate(out, axis=1).astype(np.float64)


def view_probabilities(logits: np.ndarray) -> np.ndarray:
    """`(views, N, K)` logits -> `(N, K)` probabilities, averaged over the views (TTA averages probabilities)."""
    return softmax(logits.reshape(-1, logits.shape[-1])).reshape(logits.shape).mean(axis=0)


def model_label_ids(dataset: datasets.Dataset, model_labels: list[str], model: str) -> np.ndarray:
    """The dataset's `dx` as the model's label ids (matched by name, whatever either's order)."""
    dx = dataset.features["dx"]
    names = dx.names if isinstance(dx, datasets.ClassLabel) else None
    values = column_values(dataset, "dx")
    values = [names[v] for v in values] if names else [str(v) for v in values]
    unknown = sorted(set(values) - set(model_labels))
    if unknown:
        raise ValueError(
            f"{model} predicts the labels {model_labels}, but the data has diagnoses {unknown} among them: evaluate "
            "a HAM10000 classifier, whose id2label names the diagnoses akiec, bcc, bkl, df, mel, nv, vasc"
        )
    index = {label: i for i, label in enumerate(model_labels)}
    return np.array([index[v] for v in values], dtype=np.int64)


# ---------------------------------------------------------------------------------------------------------------
# Subgroups


def age_band(age: float | None) -> str:
    """The `AGE_BANDS` name of an age in years, `"missing"` for none."""
    if age is None or (isinstance(age, float) and math.isnan(age)):
        return AGE_MISSING
    return next((name for name, low, high in AGE_BANDS if low <= age < high), AGE_BANDS[0][0])


def subgroup_groups(dataset: datasets.Dataset) -> dict[str, tuple[list[str], list[str]]]:
    """Grouping name -> (each row's group, the groups in display order) for sex, age band and localization."""
    groupings = {}
    for column, name in (("sex", "sex"), ("age", "age band"), ("localization", "localization")):
        if column not in dataset.column_names:
            continue
        values = column_values(dataset, column)
        feature = dataset.features[column]
        if column == "age":
            groups, order = [age_band(v) for v in values], [b for b, *_ in AGE_BANDS] + [AGE_MISSING]
        elif isinstance(feature, datasets.ClassLabel):
            groups, order = [feature.int2str(v) for v in values], list(feature.names)
        else:
            groups = ["unknown" if v is None else str(v) for v in values]
            order = sorted(set(groups))
        groupings[name] = (groups, [g for g in order if g in set(groups)])
    return groupings


def subgroup_table(
    labels: np.ndarray, preds: np.ndarray, groups: list[str], order: list[str], label_names: list[str]
) -> list[dict]:
    """One row per group: `n`, accuracy, balanced accuracy, melanoma recall and malignant recall, with their counts.

    Malignant recall is the share of akiec/bcc/mel images predicted as any of akiec/bcc/mel: the images the model
    would flag for a dermatologist. Recalls without a positive image in the group are `None`. `too_small` marks
    groups under `MIN_SUBGROUP_SIZE` images.
    """
    labels, preds, groups = np.asarray(labels), np.asarray(preds), np.asarray(groups, dtype=object)
    malignant = malignant_ids(label_names)
    mel = melanoma_id(label_names)
    rows = []
    for group in order:
        mask = groups == group
        y, p = labels[mask], preds[mask]
        rows.append({"group": group, **_group_scores(y, p, mel, malignant)})
    return rows


def _group_scores(y: np.ndarray, p: np.ndarray, mel: int | None, malignant: list[int]) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # classes absent from a small group
        balanced = float(balanced_accuracy_score(y, p)) if len(y) else None
    is_mel = y == mel if mel is not None else np.zeros(len(y), bool)
    is_malignant, called_malignant = np.isin(y, malignant), np.isin(p, malignant)
    return {
        "n": int(len(y)),
        "accuracy": float(np.mean(y == p)) if len(y) else None,
        "balanced_accuracy": balanced,
        "n_mel": int(is_mel.sum()),
        "mel_recall": float(np.mean(p[is_mel] == mel)) if is_mel.any() else None,
        "n_malignant": int(is_malignant.sum()),
        "malignant_recall": float(np.mean(called_malignant[is_malignant])) if is_malignant.any() else None,
        "too_small": bool(len(y) < MIN_SUBGROUP_SIZE),
    }


# ---------------------------------------------------------------------------------------------------------------
# Evaluation


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
        `dict`: `classification_metrics` output (`per_class`, `confusion_matrix`, ...) plus `n`, `split`, `model`,
        `dataset`, `tta`, `subgroups` (grouping -> `subgroup_table` rows) and `bootstrap` (`resampled`, `n_lesions`,
        `num_resamples`, `seed`, `confidence`, `intervals`: metric -> `[low, high]`, `undefined`: metric -> resamples
        that left it undefined; `None` with no resamples) and `isic_files` (whether the ISIC files were written).
    """
    import torch

    from . import plots
    from .inference import SkinClassifier

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
    classifier.model.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    label_names = classifier.labels
    labels = model_label_ids(data, label_names, os.fspath(model))
    desc = f"Evaluating on {split} ({len(data):,} images{', 8-view TTA' if tta else ''})"
    logits = predict_dataset(classifier, data, batch_size=batch_size, tta=tta, desc=desc)
    probs = view_probabilities(logits)
    calibration = classifier.calibration
    raw_probs = view_probabilities(calibration.undo(logits)) if calibration is not None else None

    metrics = classification_metrics(labels, probs, label_names)
    metrics["calibration"] = calibration_summary(calibration, labels, raw_probs, probs, label_names)
    metrics["operating_point"] = operating_point_summary(classifier.operating_point, labels, probs, label_names)
    lesion_ids = _column(data, "lesion_id")
    bootstrap = None
    if bootstrap_resamples:
        started = time.perf_counter()
        bootstrap = bootstrap_summary(
            labels, probs, lesion_ids, label_names, num_resamples=bootstrap_resamples, seed=bootstrap_seed
        )
        logger.info(
            "Bootstrap intervals: %d resamples of %d %ss in %.2f s",
            bootstrap_resamples,
            bootstrap["n_lesions" if lesion_ids is not None else "n_images"],
            bootstrap["resampled"],
            time.perf_counter() - started,
        )
    preds = probs.argmax(axis=1)
    subgroups = {
        grouping: subgroup_table(labels, preds, groups, order, label_names)
        for grouping, (groups, order) in subgroup_groups(data).items()
    }
    metrics.update(
        n=len(data),
        split=split,
        split_arguments=split_args.split_arguments(),
        model=os.fspath(model),
        dataset=os.fspath(dataset),
        tta=tta,
        metadata_fields=list(classifier.metadata_fields),
        subgroups=subgroups,
        bootstrap=bootstrap,
    )

    output_dir.mkdir(parents=True, exist_ok=True)
    image_ids = _column(data, "image_id")
    _write_predictions(output_dir / "predictions.csv", image_ids, lesion_ids, labels, probs, label_names)
    metrics["isic_files"] = write_isic_2018(output_dir, image_ids, labels, probs, label_names)
    (output_dir / "metrics.json").write_text(json.dumps(_json_safe(metrics), indent=2) + "\n")
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
    overall = _group_scores(labels, preds, melanoma_id(label_names), malignant_ids(label_names))
    plots.plot_subgroups(subgroups, overall, output_dir / FIGURES["subgroups"], min_n=MIN_SUBGROUP_SIZE)
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


def bootstrap_summary(
    labels: np.ndarray,
    probs: np.ndarray,
    lesion_ids: list[str] | None,
    label_names: list[str],
    *,
    num_resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> dict:
    """The `bootstrap` entry of `metrics.json`: 95% intervals of `BOOTSTRAP_METRICS`, resampling lesions when their
    ids are known (else images), as JSON-ready lists."""
    result = bootstrap_intervals(
        labels, probs, lesion_ids, label_names=label_names, num_resamples=num_resamples, seed=seed
    )
    return {
        "method": "percentile bootstrap",
        "resampled": result["resampled"],
        "n_images": int(len(labels)),
        "n_lesions": result["n_groups"] if lesion_ids is not None else None,
        "num_resamples": result["num_resamples"],
        "seed": result["seed"],
        "confidence": result["confidence"],
        "intervals": {name: None if v is None else list(v) for name, v in result["intervals"].items()},
        "undefined": result["undefined"],
    }


def calibration_summary(calibration, labels, raw_probs, probs, label_names: list[str]) -> dict | None:
    """What the report says of a calibrated checkpoint: the calibration and NLL / Brier / ECE before and after it
    on the evaluated images (`None` for a checkpoint without one)."""
    from .calibration import calibration_scores

    if calibration is None:
        return None
    return {
        "method": calibration.method,
        "temperature": calibration.temperature,
        "target_prior": None if calibration.target_prior is None else dict(zip(label_names, calibration.target_prior)),
        "balance": calibration.balance,
        "target_prior_source": calibration.target_prior_source,
        "fitted_on": calibration.fitted_on,
        "description": calibration.describe(label_names),
        "scores": calibration_scores(labels, raw_probs, probs),
        "before": classification_metrics(labels, raw_probs, label_names),
    }


def operating_point_summary(operating_point: dict | None, labels, probs, label_names: list[str]) -> dict | None:
    """The checkpoint's referral threshold (`config.operating_point`) scored on the evaluated images: sensitivity
    and specificity with 95% Wilson intervals, beside what it reached on validation."""
    from .calibration import operating_point_scores

    if not operating_point:
        return None
    scores = operating_point_scores(labels, probs, label_names, operating_point["threshold"])
    scores["sensitivity_interval"] = wilson_interval(scores["true_positives"], scores["n_malignant"])
    scores["specificity_interval"] = wilson_interval(scores["true_negatives"], scores["n_benign"])
    scores["validation"] = {key: operating_point.get(key) for key in ("sensitivity", "specificity")}
    scores["target_sensitivity"] = operating_point.get("target_sensitivity")
    return scores


def _column(data: datasets.Dataset, name: str) -> list | None:
    """A column as a plain list, `None` when the dataset has no such column."""
    return column_values(data, name) if name in data.column_names else None


def _float_text(value: float) -> str:
    """Enough digits to give back a float32 probability exactly, and always a float to a CSV reader ('1.0', not '1':
    the ISIC scorer refuses a column it reads as integers)."""
    text = f"{value:.9g}"
    return text if any(c in text for c in ".en") else f"{text}.0"


def _write_predictions(path: Path, image_ids, lesion_ids, labels, probs, label_names) -> None:
    lesions = ["lesion_id"] if lesion_ids is not None else []
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image_id", *lesions, "true", "predicted", *[f"p_{name}" for name in label_names]])
        for i, (label, row) in enumerate(zip(labels, probs)):
            ids = [image_ids[i] if image_ids is not None else i, *([lesion_ids[i]] if lesion_ids is not None else [])]
            writer.writerow([*ids, label_names[label], label_names[row.argmax()], *map(_float_text, row)])


def write_isic_2018(
    output_dir: str | os.PathLike, image_ids: list[str] | None, labels, probs, label_names: list[str]
) -> bool:
    """The predictions and the ground truth in ISIC 2018 Task 3's format (`ISIC_FILES` in `output_dir`).

    Both files have the header `image,MEL,NV,BCC,AKIEC,BKL,DF,VASC` and one row per image: the class probabilities
    (floats in [0, 1]) and the one-hot diagnosis (`1.0`/`0.0`). The challenge's own scorer (PyPI
    `isic-challenge-scoring`) reads them, `ClassificationScore.from_file(truth, predictions, metric)` (version 5.6
    calls `DataFrame.applymap`: under pandas 3, set `pd.DataFrame.applymap = pd.DataFrame.map` first). Its balanced
    accuracy and AUCs are hf-skin's (tests/test_isic.py); its per-class sensitivity and specificity threshold each
    class's probability at 0.5 where hf-skin's take the top class. Written only for a model of exactly HAM10000's
    seven diagnoses and data with unique image ids; returns whether the files were written.
    """
    if sorted(label_names) != sorted(ISIC_DX_COLUMNS.values()):
        logger.info("No ISIC 2018 files: the model's labels %s are not HAM10000's seven diagnoses", label_names)
        return False
    if image_ids is None or len(set(image_ids)) != len(image_ids):
        logger.info("No ISIC 2018 files: the data has no image_id column, or an image id appears twice")
        return False
    columns = [label_names.index(dx) for dx in ISIC_DX_COLUMNS.values()]
    # float32 softmax can land a hair outside [0, 1]; the scorer refuses any such value.
    scores = np.clip(np.asarray(probs, dtype=np.float64)[:, columns], 0.0, 1.0)
    truth = np.asarray(labels)[:, None] == np.asarray(columns)[None, :]
    output_dir = Path(output_dir)
    for name, table in (("predictions", scores), ("ground_truth", truth)):
        with (output_dir / ISIC_FILES[name]).open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["image", *ISIC_DX_COLUMNS])
            for image_id, row in zip(image_ids, table):
                writer.writerow([image_id, *(_float_text(float(v)) for v in row)])
    return True


def _json_safe(value):
    """NaN -> null: `json.dumps` would write `NaN`, which is not JSON and which many readers reject."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------------------------------
# Report


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (sound at small n and at 0 or n successes); NaNs for n = 0."""
    if n == 0:
        return float("nan"), float("nan")
    p = successes / n
    center = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
    return max(0.0, center - half), min(1.0, center + half)


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.{digits}f}"


def _interval_text(metrics: dict, key: str) -> str:
    interval = ((metrics.get("bootstrap") or {}).get("intervals") or {}).get(key)
    return "—" if interval is None else f"{_fmt(interval[0])}–{_fmt(interval[1])}"


def bootstrap_note(bootstrap: dict | None) -> str:
    """The paragraph under the headline table that says what its intervals are (and are not)."""
    if bootstrap is None:
        return "No intervals: evaluated with `--bootstrap_resamples 0`.\n"
    settings = (
        f"{bootstrap['num_resamples']:,} resamples, seed {bootstrap['seed']} (the same seed gives the same intervals)"
    )
    if bootstrap["resampled"] == "lesion":
        note = (
            f"95% intervals: percentile bootstrap over the split's {bootstrap['n_lesions']:,} lesions "
            f"({bootstrap['n_images']:,} images), {settings}. Each resample draws {bootstrap['n_lesions']:,} lesions "
            "with replacement and keeps all the images of each: the images of one lesion are not independent evidence."
        )
    else:
        note = (
            f"95% intervals: percentile bootstrap over the {bootstrap['n_images']:,} images one by one, {settings}. "
            "The data has no `lesion_id`, so the images of one lesion count as independent: the intervals are too "
            "narrow wherever a lesion has several images."
        )
    note += (
        " The intervals say how much a number would move with another draw of lesions like these; they say nothing "
        "about other clinics, cameras or training runs."
    )
    undefined = [
        f"{BOOTSTRAP_NAMES.get(name, name)} in {count:,}" for name, count in bootstrap["undefined"].items() if count
    ]
    if undefined:
        note += (
            f" Resamples that left a metric undefined (no image of a class drawn), left out: {', '.join(undefined)}."
        )
    return note + "\n"


def _fitted_on(fitted_on: dict | None) -> str:
    fitted_on = fitted_on or {}
    where = " ".join(f"`{fitted_on[key]}`" for key in ("dataset",) if fitted_on.get(key))
    split = fitted_on.get("split")
    n = f", {fitted_on['n']:,} images" if fitted_on.get("n") else ""
    return f"the {split} split of {where}{n}" if split and where else f"validation images{n}"


def calibration_section(metrics: dict) -> str:
    """The report's calibration section: the checkpoint's calibration and its scores before and after."""
    calibration = metrics.get("calibration")
    if calibration is None:
        return (
            "\n## Calibration\n\nThis checkpoint is not calibrated: its probabilities are the raw model's (its ECE "
            "is above, its reliability diagram below). `scripts/calibrate.py` fits a calibration on validation "
            "images without retraining.\n"
        )
    scores, before = calibration["scores"], calibration["before"]
    method = calibration["method"]
    fitted_on = calibration.get("fitted_on") or {}
    dataset_name = Path(os.fspath(metrics.get("dataset", "")).rstrip("/")).name
    in_sample = fitted_on.get("split") == metrics.get("split") and fitted_on.get("dataset") == dataset_name
    how = {
        "prior": "the prior shift that undoes training's class rebalancing",
        "temperature": f"a temperature of {calibration['temperature']:.3f}",
        "prior+temperature": f"the prior shift that undoes training's class rebalancing and a temperature of "
        f"{calibration['temperature']:.3f}",
        "none": "nothing (method none)",
    }[method]
    rows = [
        ["negative log-likelihood", _fmt(scores["nll_before"], 4), _fmt(scores["nll_after"], 4), "lower is better"],
        ["Brier score", _fmt(scores["brier_before"], 4), _fmt(scores["brier_after"], 4), "lower is better"],
        ["expected calibration error", _fmt(scores["ece_before"]), _fmt(scores["ece_after"]), "lower is better"],
        ["accuracy", _fmt(before["accuracy"]), _fmt(metrics["accuracy"]), "top-class decisions change too"],
        ["balanced accuracy", _fmt(before["balanced_accuracy"]), _fmt(metrics["balanced_accuracy"]), ""],
    ]
    return (
        "\n## Calibration\n\n"
        f"Every probability in this report is the calibrated checkpoint's: {how} (`{method}`), fitted on "
        f"{_fitted_on(calibration['fitted_on'])}, never on test. {calibration['description']} The raw model "
        "(calibration undone) on the same images:\n\n"
        + markdown_table(["on these images", "raw model", "calibrated", ""], rows, align="lrrl")
        + "\n\n"
        + (
            "Undoing the rebalancing's shift moves probability back to the common classes: accuracy usually rises "
            "and balanced accuracy, which weighs the rare classes as much as nevi, can fall. "
            if "prior" in method and calibration.get("balance", "none") != "none"
            else ""
        )
        + (
            "The temperature and the threshold were fitted on single images; here they apply to probabilities "
            "averaged over the 8 TTA views, which are less sure, so the calibration holds less exactly. "
            if metrics.get("tta")
            else ""
        )
        + (
            "**These are the images the calibration was fitted on**: the calibrated scores are in-sample and "
            "flatter than they would be on new images. "
            if in_sample
            else ""
        )
        + "The reliability diagram shows both models.\n"
    )


def referral_section(metrics: dict) -> str:
    """The report's section on the checkpoint's referral threshold, scored on the evaluated images."""
    point = metrics.get("operating_point")
    if point is None:
        return ""
    validation = point["validation"]
    sens_lo, sens_hi = point["sensitivity_interval"]
    spec_lo, spec_hi = point["specificity_interval"]
    rows = [
        [
            "these images",
            f"{_fmt(point['sensitivity'])} ({_fmt(sens_lo)}–{_fmt(sens_hi)})",
            f"{_fmt(point['specificity'])} ({_fmt(spec_lo)}–{_fmt(spec_hi)})",
            f"{point['n_malignant']:,} / {point['n_benign']:,}",
        ],
        ["validation (where it was chosen)", _fmt(validation["sensitivity"]), _fmt(validation["specificity"]), ""],
    ]
    return (
        '\n## Referral threshold: "see a dermatologist"\n\n'
        f"The checkpoint advises a dermatologist when its probability of a malignant class (akiec, bcc, mel) is at "
        f"least **{point['threshold']:.2%}**, the threshold chosen on validation images to flag at least "
        f"{point['target_sensitivity']:.0%} of malignant lesions. Sensitivity: the share of malignant images it "
        "flags; specificity: the share of benign ones it does not (95% Wilson intervals).\n\n"
        + markdown_table(["", "sensitivity", "specificity", "malignant / benign images"], rows, align="lrrr")
        + "\n"
    )


def render_report(metrics: dict, overall: dict | None = None) -> str:
    """`report.md` from the metrics `evaluate_checkpoint` returns."""
    per_class = metrics["per_class"]
    label_names = list(per_class)
    cm = np.asarray(metrics["confusion_matrix"])
    n = int(cm.sum())
    commonest = label_names[int(cm.sum(axis=1).argmax())]
    majority = cm.sum(axis=1).max() / max(n, 1)
    tta = ", test-time augmentation (8 flips/rotations averaged)" if metrics.get("tta") else ""
    headline = [
        (
            "accuracy",
            [
                "accuracy",
                _fmt(metrics["accuracy"]),
                f"share of images classified correctly; always answering '{commonest}' would score "
                f"{majority:.3f} here",
            ],
        ),
        (
            "balanced_accuracy",
            [
                "**balanced accuracy**",
                f"**{_fmt(metrics['balanced_accuracy'])}**",
                f"mean recall over the classes (ISIC 2018's ranking metric); chance is "
                f"{1 / max(1, int((cm.sum(axis=1) > 0).sum())):.3f}",
            ],
        ),
        ("f1_macro", ["macro F1", _fmt(metrics["f1_macro"]), "F1 averaged over classes, each counting the same"]),
        ("f1_weighted", ["weighted F1", _fmt(metrics["f1_weighted"]), "F1 averaged over images (dominated by nv)"]),
        ("auc_macro", ["macro ROC-AUC", _fmt(metrics["auc_macro"]), "one-vs-rest ranking quality, 0.5 = chance"]),
        *[
            (
                f"mel_sensitivity_at_spec{spec}",
                [
                    f"melanoma sensitivity at {spec}% specificity",
                    _fmt(metrics.get(f"mel_sensitivity_at_spec{spec}")),
                    f"share of melanomas caught with a threshold on the melanoma probability that clears {spec}% of "
                    "non-melanomas",
                ],
            )
            for spec in (90, 80)
        ],
        (
            "ece",
            [
                "expected calibration error",
                _fmt(metrics["ece"]),
                "gap between confidence and accuracy (0 = the probabilities can be taken at face value)",
            ],
        ),
    ]
    out = [
        f"# Evaluation of `{metrics['model']}`\n\n",
        f"On `{metrics['dataset']}`, **{metrics['split']}** split: {n:,} images{tta}. "
        f"Model inputs: image{''.join(', ' + f for f in metrics.get('metadata_fields', []))}.\n\n",
        "> **What this does not tell you.** " + TRANSFER_NOTE + "\n\n",
        "## Headline\n\n",
        markdown_table(
            ["metric", "value", "95% interval", "how to read it"],
            [[*row[:2], _interval_text(metrics, key), row[2]] for key, row in headline],
            align="lrrl",
        )
        + "\n\n",
        bootstrap_note(metrics.get("bootstrap")),
        calibration_section(metrics),
        referral_section(metrics),
        "\n## Per class\n\n",
        "Sensitivity is the recall: the share of the class's images found. Intervals are 95% Wilson intervals; "
        "wide ones mean too few images to be sure.\n\n",
    ]
    rows = []
    for i, name in enumerate(label_names):
        m = per_class[name]
        support, found = int(m["support"]), int(cm[i, i])
        negatives = n - support
        true_neg = round(m["specificity"] * negatives)
        sens_lo, sens_hi = wilson_interval(found, support)
        spec_lo, spec_hi = wilson_interval(true_neg, negatives)
        rows.append(
            [
                f"{name}{' ⚠' if name in MALIGNANT_DX else ''}",
                DX_NAMES.get(name, name),
                f"{support:,}",
                f"{_fmt(m['recall'] if support else None)} ({_fmt(sens_lo)}–{_fmt(sens_hi)})",
                f"{_fmt(m['specificity'])} ({_fmt(spec_lo)}–{_fmt(spec_hi)})",
                _fmt(m["precision"]),
                _fmt(m["f1"]),
                _fmt(m["auc"]),
            ]
        )
    out.append(
        markdown_table(
            ["class", "diagnosis", "images", "sensitivity (95% CI)", "specificity (95% CI)", "precision", "F1", "AUC"],
            rows,
            align="llrrrrrr",
        )
        + "\n"
    )
    out.append("\n⚠ malignant (akiec is an in-situ carcinoma or its precursor).\n")
    out += [
        "\n## Figures\n\n",
        "| confusion matrix | row-normalised (diagonal = sensitivity) |\n| --- | --- |\n",
        f"| ![confusion matrix]({FIGURES['confusion_matrix']}) "
        f"| ![row-normalised confusion matrix]({FIGURES['confusion_matrix_normalized']}) |\n\n",
        "| ROC curves, one class against the rest | reliability of the predicted probability |\n| --- | --- |\n",
        f"| ![ROC curves]({FIGURES['roc_curves']}) | ![reliability diagram]({FIGURES['reliability_diagram']}) |\n\n",
        "Files: " + ", ".join(f"[{f}]({f})" for f in FIGURES.values()) + ", [metrics.json](metrics.json), "
        "[predictions.csv](predictions.csv)"
        + (
            f"; in the ISIC 2018 Task 3 format, for the challenge's scorer: "
            f"[{ISIC_FILES['predictions']}]({ISIC_FILES['predictions']}) and "
            f"[{ISIC_FILES['ground_truth']}]({ISIC_FILES['ground_truth']}) (the scorer gives the balanced accuracy "
            "and AUCs above; its per-class sensitivity and specificity call a class when its probability is above "
            "0.5, not when it is the top class as in the table above, and so differ from them)"
            if metrics.get("isic_files")
            else ""
        )
        + ".\n",
        "\n## Subgroups: does the model fail a group?\n\n",
        f"Malignant recall: the share of akiec/bcc/mel images predicted as any of the three (flagged for a doctor). "
        f"Groups with fewer than {MIN_SUBGROUP_SIZE} images are marked *too few*: their numbers swing with a "
        "single image and should not be read as a difference; read each recall with its count of images beside it. "
        "Balanced accuracy is over the classes present in the group. A dash: no image of that kind in the group.\n\n",
        f"![subgroups]({FIGURES['subgroups']})\n",
    ]
    header = ["group", "images", "accuracy", "balanced accuracy", "melanoma recall (n)", "malignant recall (n)"]

    def row(name, s):
        flag = " *too few*" if s["n"] < MIN_SUBGROUP_SIZE else ""
        return [
            f"{name}{flag}",
            f"{s['n']:,}",
            _fmt(s["accuracy"]),
            _fmt(s["balanced_accuracy"]),
            f"{_fmt(s['mel_recall'])} ({s['n_mel']})",
            f"{_fmt(s['malignant_recall'])} ({s['n_malignant']})",
        ]

    for grouping, groups in metrics.get("subgroups", {}).items():
        rows = [row(g["group"], g) for g in groups]
        if overall is not None:
            rows.append(row("**all**", overall))
        out += [f"\n### By {grouping}\n\n", markdown_table(header, rows) + "\n"]
    return "".join(out)


# ---------------------------------------------------------------------------------------------------------------
# Comparing runs


def load_run(run_dir: str | os.PathLike) -> dict:
    """A training run (`scripts/finetune.py` output) or an evaluation folder (`scripts/evaluate.py` output).

    Returns:
        `dict`: `metrics` (test metrics without the `test_` prefix, per-class values as `recall_mel`, ...),
        `per_class` (label -> values, when saved), `log_history`, `epochs` and `best_epoch` (training runs),
        `model_type`, `reference_accuracy` (validation accuracy of always answering the commonest class, when known).
    """
    run_dir = Path(run_dir)
    folder = RunFolder(run_dir)
    all_results, test_metrics, evaluation = folder.all_results, folder.test_metrics, folder.read_json("metrics.json")
    if all_results is None and test_metrics is None and evaluation is None:
        raise FileNotFoundError(
            f"{run_dir} has no all_results.json / test_metrics.json (a scripts/finetune.py run) nor metrics.json "
            "(a scripts/evaluate.py output): pass the output_dir of a finished run"
        )
    nested = test_metrics or evaluation or {}
    metrics = {k: v for k, v in nested.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    for name, values in (nested.get("per_class") or {}).items():
        metrics.update({f"{key}_{name}": value for key, value in values.items() if key != "support"})
    metrics.update(
        {k.removeprefix("test_"): v for k, v in (all_results or {}).items() if k.startswith("test_") and v is not None}
    )
    run = {"name": run_dir.name, "path": run_dir, "metrics": metrics, "per_class": nested.get("per_class")}
    config = folder.config or {}
    run["model_type"] = config.get("model_type")
    state = folder.trainer_state
    run["log_history"] = state.get("log_history") if state else None
    run["epochs"] = state.get("epoch") if state else None
    run["best_epoch"] = None
    if state and state.get("best_global_step") is not None:
        # The evaluation at the kept checkpoint's step (load_best_model_at_end reloads it for the test metrics).
        evals = [e for e in state["log_history"] if e.get("step") == state["best_global_step"] and "eval_loss" in e]
        run["best_epoch"] = evals[0]["epoch"] if evals else None
    validation = folder.validation_metrics
    if validation:
        support = [v["support"] for v in validation["per_class"].values()]
        run["reference_accuracy"] = max(support) / max(sum(support), 1)
    else:
        run["reference_accuracy"] = None
    return run


def compare_runs(
    run_dirs: list[str | os.PathLike],
    output_dir: str | os.PathLike = "runs/compare",
    *,
    bootstrap_resamples: int = BOOTSTRAP_RESAMPLES,
    bootstrap_seed: int = 0,
    return_pairs: bool = False,
) -> list[dict] | tuple[list[dict], list[dict]]:
    """One table of the runs' test metrics and per-class recalls, their training curves on one figure, and for each
    pair of runs scored on the same images a paired bootstrap interval of each headline metric's difference.

    Writes `comparison.csv`, `comparison.md` (best value per metric in bold; then, for each pair in the order given,
    "first − second" with its interval and a sentence saying whether it excludes 0), `paired_differences.csv` (one
    row per pair and metric) and `training_curves.png` (validation accuracy and balanced accuracy per epoch for each
    run, training loss beside it) into `output_dir`.

    The paired intervals come from each run's `predictions.csv` (written by `scripts/evaluate.py`), found by this rule
    (`find_predictions`): the folder's own `predictions.csv` (an evaluation folder); else, in a training run, its
    one `evaluation/<name>/predictions.csv`, or when there are several the one `evaluation/*-test/` (the test split
    without test-time augmentation); else none, and the run is left out of the pairs (the report says why: pass the
    evaluation folder itself to pick another). Two runs are paired when their files hold the same image ids with the
    same diagnoses; the lesions are then resampled with replacement (`hf_skin.metrics.bootstrap_intervals` with
    `baseline_probs`: both runs scored on every resample), or the images one by one when the files have no
    `lesion_id` column (older files; the report says so). Runs on different images get "not comparable", no interval.

    Args:
        run_dirs (`list`): `scripts/finetune.py` output folders and/or `scripts/evaluate.py` output folders.
        output_dir (`str` or `os.PathLike`, *optional*, defaults to `"runs/compare"`): where the files go.
        bootstrap_resamples (`int`, *optional*, defaults to 1000): resamples of each paired interval; 0 for none.
        bootstrap_seed (`int`, *optional*, defaults to 0): the same seed gives the same intervals.
        return_pairs (`bool`, *optional*, defaults to `False`): also return the pairs.

    Returns:
        `list[dict]`: one row per run (`run`, `model_type`, `epochs`, then the metrics), the rows of `comparison.csv`;
        with `return_pairs`, `(rows, pairs)`, one pair per two runs with predictions (`a`, `b` and the
        `paired_comparison` result).
    """
    from . import plots

    if not run_dirs:
        raise ValueError("no runs to compare: pass one or more run folders")
    runs = [load_run(d) for d in run_dirs]
    names = [run["name"] for run in runs]
    if len(set(names)) < len(names):  # same folder name in different places: tell them apart by path
        names = [os.fspath(run["path"]) for run in runs]
    labels = []
    for run in runs:
        for name in run["per_class"] or {}:
            if name not in labels:
                labels.append(name)
    columns = [*COMPARE_METRICS, *[f"recall_{name}" for name in labels]]
    rows = []
    for name, run in zip(names, runs):
        row = {"run": name, "model_type": run["model_type"] or "", "epochs": run["epochs"]}
        row.update({column: run["metrics"].get(column) for column in columns})
        rows.append(row)

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    with (output_dir / "comparison.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["run", "model_type", "epochs", *columns])
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)

    best = {}
    for column in columns:
        values = [row[column] for row in rows if row[column] is not None and math.isfinite(row[column])]
        if len(set(values)) > 1:  # a tie across every run marks nothing
            best[column] = min(values) if column == "ece" else max(values)
    md_rows = []
    for row in rows:
        cells = [f"`{row['run']}`", row["model_type"], _fmt(row["epochs"], 1)]
        for column in columns:
            text = _fmt(row[column])
            cells.append(f"**{text}**" if column in best and row[column] == best[column] else text)
        md_rows.append(cells)
    headers = ["run", "model", "epochs", *[c.replace("_", " ") for c in columns]]
    histories = {name: run["log_history"] for name, run in zip(names, runs) if run["log_history"]}
    references = {run["reference_accuracy"] for run in runs if run["reference_accuracy"] is not None}
    text = [
        "# Runs compared\n\n",
        "Test-split metrics; per-class columns are recalls (sensitivity). Best value per column in bold "
        "(lowest for ECE). `mel sensitivity at spec90`: melanoma sensitivity at 90% specificity.\n\n",
        markdown_table(headers, md_rows, align="llr" + "r" * len(columns)) + "\n",
    ]
    if histories:
        plots.plot_training_curves(
            histories,
            output_dir / "training_curves.png",
            best_epochs={name: run["best_epoch"] for name, run in zip(names, runs) if run["best_epoch"] is not None},
            reference_accuracy=references.pop() if len(references) == 1 else None,
        )
        text.append("\n![validation accuracy and balanced accuracy per epoch](training_curves.png)\n")
    predictions = [find_predictions(run["path"]) for run in runs]
    pairs = []
    if bootstrap_resamples and len(runs) > 1:
        loaded = [read_predictions(path) if path is not None else None for path, _ in predictions]
        for i in range(len(runs)):
            for j in range(i + 1, len(runs)):
                if loaded[i] is None or loaded[j] is None:
                    continue
                pair = paired_comparison(loaded[i], loaded[j], num_resamples=bootstrap_resamples, seed=bootstrap_seed)
                pairs.append({"a": names[i], "b": names[j], **pair})
        text.append(render_paired_differences(names, predictions, pairs, bootstrap_resamples, bootstrap_seed))
        _write_paired_csv(output_dir / "paired_differences.csv", pairs)
    (output_dir / "comparison.md").write_text("".join(text))
    logger.info("Comparison of %d runs written to %s", len(runs), output_dir)
    return (rows, pairs) if return_pairs else rows


def find_predictions(run_dir: str | os.PathLike) -> tuple[Path | None, str]:
    """The `predictions.csv` a run is compared by (see `compare_runs` for the rule), and a sentence on where it came
    from or why there is none."""
    run_dir = Path(run_dir)
    if (run_dir / "predictions.csv").is_file():
        return run_dir / "predictions.csv", "its own predictions.csv"
    candidates = sorted((run_dir / "evaluation").glob("*/predictions.csv"))
    if len(candidates) > 1:
        tests = [path for path in candidates if path.parent.name.endswith("-test")]
        if len(tests) == 1:
            return tests[0], "its test-split evaluation without TTA"
        listed = ", ".join(f"`{path.parent}`" for path in candidates)
        return None, f"several evaluations ({listed}): pass the one to compare in place of the run folder"
    if candidates:
        return candidates[0], "its one evaluation"
    return None, f"no predictions.csv: evaluate it first (`python scripts/evaluate.py --model {run_dir}`)"


def read_predictions(path: str | os.PathLike) -> dict:
    """A `predictions.csv` of `evaluate_checkpoint`: `path`, `image_ids`, `lesion_ids` (`None` in files written
    before they were recorded), `labels` (diagnosis names), `label_names` and `probs` `(N, K)`."""
    path = Path(path)
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        label_names = [c.removeprefix("p_") for c in reader.fieldnames or [] if c.startswith("p_")]
        rows = list(reader)
    if not rows or not label_names or "image_id" not in rows[0] or "true" not in rows[0]:
        raise ValueError(f"{path} is not a predictions.csv of scripts/evaluate.py (image_id, true, p_<label> columns)")
    return {
        "path": path,
        "image_ids": [row["image_id"] for row in rows],
        "lesion_ids": [row["lesion_id"] for row in rows] if "lesion_id" in rows[0] else None,
        "labels": [row["true"] for row in rows],
        "label_names": label_names,
        "probs": np.array([[float(row[f"p_{name}"]) for name in label_names] for row in rows], dtype=np.float64),
    }


def paired_comparison(
    a: dict, b: dict, *, num_resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0, confidence: float = 0.95
) -> dict:
    """Paired bootstrap intervals of `metric(a) - metric(b)` for two `read_predictions` results on the same images.

    Returns:
        `dict`: `comparable` and, when not, `reason`; when comparable `n_images`, `n_lesions` (`None` without lesion
        ids), `resampled` (`"lesion"` or `"image"`), `num_resamples`, `seed` and `metrics`: metric -> `a`, `b`,
        `difference`, `low`, `high`, `excludes_zero` (`None` where no resample defines the metric).
    """
    ids_a, ids_b = a["image_ids"], b["image_ids"]
    for side in (a, b):
        if len(set(side["image_ids"])) != len(side["image_ids"]):
            return {"comparable": False, "reason": f"{side['path']} lists an image twice"}
    only_a, only_b = set(ids_a) - set(ids_b), set(ids_b) - set(ids_a)
    if only_a or only_b:
        example = sorted(only_a or only_b)[0]
        return {
            "comparable": False,
            "reason": f"not scored on the same images ({len(ids_a):,} and {len(ids_b):,} images; {len(only_a):,} only "
            f"in the first, {len(only_b):,} only in the second, e.g. {example})",
        }
    if set(a["label_names"]) != set(b["label_names"]):
        return {
            "comparable": False,
            "reason": f"the runs predict different labels ({', '.join(a['label_names'])} and "
            f"{', '.join(b['label_names'])})",
        }
    row_b = {image_id: i for i, image_id in enumerate(ids_b)}
    order = np.array([row_b[image_id] for image_id in ids_a])  # b's rows in a's order
    if [b["labels"][i] for i in order] != a["labels"]:
        differ = sum(b["labels"][i] != label for i, label in zip(order, a["labels"]))
        return {"comparable": False, "reason": f"the same images with different diagnoses ({differ:,} of them)"}
    lesions_b = [b["lesion_ids"][i] for i in order] if b["lesion_ids"] is not None else None
    if a["lesion_ids"] is not None and lesions_b is not None and a["lesion_ids"] != lesions_b:
        return {"comparable": False, "reason": "the same images grouped into different lesions"}
    lesions = a["lesion_ids"] if a["lesion_ids"] is not None else lesions_b
    label_names = a["label_names"]
    columns = [b["label_names"].index(name) for name in label_names]
    labels = np.array([label_names.index(label) for label in a["labels"]])
    probs_b = b["probs"][order][:, columns]
    kwargs = {"label_names": label_names, "num_resamples": num_resamples, "seed": seed, "confidence": confidence}
    result = bootstrap_intervals(labels, a["probs"], lesions, baseline_probs=probs_b, **kwargs)
    scores_a = classification_metrics(labels, a["probs"], label_names)
    scores_b = classification_metrics(labels, probs_b, label_names)
    metrics = {}
    for name in BOOTSTRAP_METRICS:
        if name not in scores_a:  # melanoma metrics of a model without a `mel` class
            continue
        interval = result["intervals"][name]
        low, high = interval if interval is not None else (None, None)
        metrics[name] = {
            "a": scores_a[name],
            "b": scores_b[name],
            "difference": result["estimates"][name],
            "low": low,
            "high": high,
            "excludes_zero": None if interval is None else bool(low > 0 or high < 0),
        }
    return {
        "comparable": True,
        "n_images": len(labels),
        "n_lesions": result["n_groups"] if lesions is not None else None,
        "resampled": result["resampled"],
        "num_resamples": result["num_resamples"],
        "seed": result["seed"],
        "metrics": metrics,
    }


def _signed(value: float | None) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:+.3f}"


def difference_sentence(a: str, b: str, metric: str, entry: dict) -> str:
    """ "`a` − `b` balanced accuracy: +0.045 [+0.012, +0.079]: the interval excludes 0, `a` is better on these
    images." (or that it includes 0, or that no resample defines the metric)."""
    name = BOOTSTRAP_NAMES.get(metric, metric.replace("_", " "))
    head = f"`{a}` − `{b}` {name}: {_signed(entry['difference'])}"
    if entry["excludes_zero"] is None:
        return f"{head}, no interval: no resample defines it."
    head += f" [{_signed(entry['low'])}, {_signed(entry['high'])}]"
    if entry["excludes_zero"]:
        better = a if entry["low"] > 0 else b
        return f"{head}: the interval excludes 0, `{better}` is better on these images."
    return f"{head}: the interval includes 0, these images do not show either run to be better."


def render_paired_differences(
    names: list[str], predictions: list[tuple[Path | None, str]], pairs: list[dict], num_resamples: int, seed: int
) -> str:
    """The "Paired differences" section of `comparison.md`."""
    out = [
        "\n## Paired differences, with 95% bootstrap intervals\n\n",
        "Each pair of runs scored on the same images (matched by image id in their `predictions.csv`), first minus "
        f"second: the test images' lesions are resampled with replacement {num_resamples:,} times (seed {seed}), all "
        "the images of a drawn lesion together (the images one by one where the files have no lesion ids, as said "
        "below), both runs are scored on every resample, and the 2.5th and 97.5th "
        "percentiles of the difference are the interval. An interval that excludes 0 says the difference is not the "
        "luck of which lesions ended up in this test split; it says nothing about other data, nor about training "
        "the same recipe again with another seed. With several pairs and metrics, expect about one interval in "
        "twenty to exclude 0 by chance alone where there is no difference. Values are computed from the predictions "
        "files, and can differ in the last digit from the table above where that comes from a training run's own "
        "test evaluation.\n\n",
        "Predictions compared:\n\n",
        *[
            f"- `{name}`: "
            + (f"`{path}` ({why})" if path is not None else f"none, {why}; left out of the pairs")
            + "\n"
            for name, (path, why) in zip(names, predictions)
        ],
    ]
    if not pairs:
        out.append("\nNo pair of runs with predictions to compare.\n")
    for pair in pairs:
        a, b = pair["a"], pair["b"]
        out.append(f"\n### `{a}` − `{b}`\n\n")
        if not pair["comparable"]:
            out.append(f"Not comparable: {pair['reason']}. No interval.\n")
            continue
        metrics = pair["metrics"]
        if pair["resampled"] == "lesion":
            unit = f"{pair['n_images']:,} images of {pair['n_lesions']:,} lesions"
        else:
            unit = (
                f"{pair['n_images']:,} images, resampled one by one: the predictions files have no `lesion_id` "
                "(written by an older scripts/evaluate.py), so the interval is too narrow where a lesion has several "
                "images; evaluate the runs again for lesion-level intervals"
            )
        out.append(f"{difference_sentence(a, b, 'balanced_accuracy', metrics['balanced_accuracy'])} ({unit}.)\n\n")
        rows = [
            [
                BOOTSTRAP_NAMES.get(name, name),
                _fmt(m["a"]),
                _fmt(m["b"]),
                _signed(m["difference"]),
                "—" if m["excludes_zero"] is None else f"[{_signed(m['low'])}, {_signed(m['high'])}]",
                {None: "—", True: "**yes**", False: "no"}[m["excludes_zero"]],
            ]
            for name, m in metrics.items()
        ]
        headers = ["metric", f"`{a}`", f"`{b}`", "difference", "95% interval", "excludes 0"]
        out.append(markdown_table(headers, rows, align="lrrrrl") + "\n")
    return "".join(out)


def _write_paired_csv(path: Path, pairs: list[dict]) -> None:
    fields = ["run_a", "run_b", "comparable", "reason", "metric", "a", "b", "difference", "low", "high"]
    fields += ["excludes_zero", "n_images", "n_lesions", "resampled"]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for pair in pairs:
            base = {"run_a": pair["a"], "run_b": pair["b"], "comparable": pair["comparable"]}
            if not pair["comparable"]:
                writer.writerow({**base, "reason": pair["reason"]})
                continue
            base.update({key: pair[key] for key in ("n_images", "n_lesions", "resampled")})
            for name, m in pair["metrics"].items():
                writer.writerow({**base, "metric": name, **{k: "" if v is None else v for k, v in m.items()}})
