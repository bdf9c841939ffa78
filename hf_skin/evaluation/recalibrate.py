"""Recalibrating a trained checkpoint on labelled images, without retraining (`scripts/calibrate.py`): a new
temperature, a prior shift to the class mix of the setting it serves, and the referral threshold, fitted on its own
validation split or on a clinic's images and folded into a copy of the checkpoint.

The probability maths is `hf_skin.calibration`'s; what lives here is the workflow around it, which predicts on a
split (guarded against the run's training lesions) as evaluation does.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..calibration import (
    CALIBRATION_METHODS,
    DEFAULT_CALIBRATION,
    DEFAULT_TARGET_SENSITIVITY,
    PSEUDO_COUNT,
    CalibrationError,
    calibrate_model,
    check_calibration_arguments,
    class_mix,
    parse_prior,
)
from ..data import DEFAULT_DATASET, SplitArguments
from ..runs import RunFolder
from .arguments import run_dataset
from .predict import model_label_ids, predict_dataset
from .split import check_no_training_lesions, load_eval_split, run_split

CALIBRATION_FILE = "calibration.json"


@dataclass(kw_only=True)
class RecalibrationArguments(SplitArguments):
    """Arguments of `scripts/calibrate.py` (and of `recalibrate`). The split's arguments default to the run's own
    when `model` is a run folder."""

    model: str = field(metadata={"help": "A checkpoint folder (e.g. runs/cnn) or a Hub model id."})
    output_dir: str = field(metadata={"help": "A new folder for the recalibrated checkpoint (the original is kept)."})
    dataset: str | None = field(
        default=None,
        metadata={
            "help": "The labelled images to calibrate on: HAM10000-format data (raw folder, ISIC 2018 layout, "
            "parquet/save_to_disk folder or Hub id), e.g. a clinic's own. Default: a run folder's own training data "
            f"(its validation split), else {DEFAULT_DATASET}."
        },
    )
    split: str = field(
        default="validation",
        metadata={
            "help": "validation (the run's own lesion-grouped split) or all (every row: a clinic's own set). Never "
            "test: the images that judge a model cannot also tune it.",
            "choices": ["validation", "all"],
        },
    )
    calibration: str = field(
        default=DEFAULT_CALIBRATION,
        metadata={"help": "What to fit.", "choices": list(CALIBRATION_METHODS)},
    )
    target_prior: str = field(
        default="training",
        metadata={
            "help": "The class mix to calibrate for: 'training' (the training images' mix), 'data' (the mix of the "
            "calibration images: a clinic's own), or the setting's mix stated per class, e.g. "
            "'nv=0.8,mel=0.03,bkl=0.1,bcc=0.03,akiec=0.02,df=0.01,vasc=0.01'."
        },
    )
    target_sensitivity: float = field(
        default=DEFAULT_TARGET_SENSITIVITY,
        metadata={"help": "Share of malignant calibration images the referral threshold must flag."},
    )
    batch_size: int = field(default=64, metadata={"help": "Images per forward pass."})
    max_samples: int | None = field(default=None, metadata={"help": "Use only the first N rows (debugging)."})
    device: str | None = field(default=None, metadata={"help": "cpu, cuda, ... (default: cuda when available)."})

    def __post_init__(self):
        if self.split not in ("validation", "all"):
            hint = " (the images that judge a model cannot also tune it)" if self.split == "test" else ""
            raise ValueError(f"--split {self.split!r}: calibrate on validation or all{hint}")
        check_calibration_arguments(self.calibration, self.target_sensitivity, self.target_prior)


def _training_balance(classifier, folder: RunFolder | None, label_names: list[str]) -> tuple[list[int], str, float]:
    """The training's class counts and balancing of a checkpoint: from its calibration, else from its run folder
    (the arguments in `run_args.json`, the counts from its training split)."""
    stored = classifier.calibration
    if stored is not None:
        return stored.train_counts, stored.balance, stored.balance_power
    args = folder.args if folder is not None else None
    if not args or "dataset" not in args:
        raise CalibrationError(
            "this checkpoint records neither a calibration nor its training run (run_args.json), so the class mix "
            "it was trained on is unknown: use --calibration temperature, or calibrate the run folder itself"
        )
    try:
        train = folder.splits()["train"]
    except (FileNotFoundError, ValueError) as err:
        raise CalibrationError(
            f"the run's training data {args['dataset']!r} (from run_args.json) is needed to count its classes and "
            f"could not be loaded ({err}); run where it is, or use --calibration temperature"
        ) from None
    lesions = folder.training_lesions()
    if lesions is not None:  # the lesions the run trained on (after any --max_train_samples)
        train = train.filter(lambda ids: [i in lesions for i in ids], input_columns="lesion_id", batched=True)
    labels = model_label_ids(train, label_names, folder.path.name)
    counts = np.bincount(labels, minlength=len(label_names)).tolist()
    return counts, args.get("balance", "none"), float(args.get("balance_power", 1.0))


def recalibrate(args: RecalibrationArguments) -> dict:
    """Fits a new calibration and referral threshold for a trained checkpoint on labelled images (its own
    validation split, or a clinic's images with `split="all"`), without retraining, and writes the recalibrated
    checkpoint to `args.output_dir` (with the run's record, so evaluation keeps its split) and `calibration.json`.

    Returns the `calibration.json` content: `calibration` and `operating_point` (as in the config), `model`,
    `dataset`, `split`, `n`.
    """
    from ..inference import SkinClassifier, default_device

    output = Path(args.output_dir)
    if output.exists() and (not output.is_dir() or any(output.iterdir())):  # before the forward pass, not after
        raise CalibrationError(f"{output} exists and is not an empty folder: choose a new folder")
    split_args, folder = run_split(args.model, args.split, args)
    if args.dataset is None:
        args.dataset = run_dataset(args.model) or DEFAULT_DATASET
    data = load_eval_split(args.dataset, args.split, **split_args.load_kwargs(), max_samples=args.max_samples)
    if folder is not None:
        check_no_training_lesions(data, folder, args.split, args.dataset)
    classifier = SkinClassifier.from_pretrained(args.model)
    classifier.model.to(args.device or default_device())
    label_names = classifier.labels
    labels = model_label_ids(data, label_names, args.model)
    stored = classifier.calibration
    train_counts, balance, power = (
        _training_balance(classifier, folder, label_names)
        if args.calibration in ("prior", "prior+temperature")
        else (stored.train_counts, stored.balance, stored.balance_power)
        if stored is not None
        else (None, "none", 1.0)
    )
    dataset_name = Path(os.fspath(args.dataset).rstrip("/")).name
    if args.target_prior == "training":
        target, source = None, "the class mix of the training images"
    elif args.target_prior == "data":
        target = class_mix(labels, len(label_names), PSEUDO_COUNT)
        source = f"the class mix of {dataset_name} ({args.split}, {len(labels):,} images)"
    else:
        target, source = parse_prior(args.target_prior, label_names), "the class mix stated for this setting"
    logits = predict_dataset(
        classifier, data, batch_size=args.batch_size, desc=f"Calibrating on {len(data):,} images"
    )[0]
    raw = classifier.calibration.undo(logits) if classifier.calibration is not None else logits
    calibration, operating_point = calibrate_model(
        classifier.model.cpu(),
        raw,
        labels,
        train_counts=train_counts,
        method=args.calibration,
        balance=balance,
        balance_power=power,
        target_prior=target,
        target_prior_source=source,
        target_sensitivity=args.target_sensitivity,
        fitted_on={"dataset": dataset_name, "split": args.split},
    )
    if Path(args.model).is_dir():
        RunFolder(args.model).copy_checkpoint(output)
    classifier.model.save_pretrained(output)
    if not Path(args.model).is_dir():  # a Hub checkpoint: its processor too (a folder's was copied as it is)
        classifier.processor.save_pretrained(output)
    record = {
        "model": os.fspath(args.model),
        "dataset": dataset_name,
        "split": args.split,
        "n": len(labels),
        "calibration": calibration.to_dict(),
        "operating_point": operating_point,
    }
    (output / CALIBRATION_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return record
