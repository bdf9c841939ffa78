"""Probabilities for the population a model serves, and the referral threshold that goes with them.

Training with `--balance oversample` or `class_weights` (power p) fits the model to a *sampling prior*
q_c ∝ n_c^(1-p) (n_c: the training split's class counts; p = 1 makes every class equally likely) instead of the data's
mix π_c = n_c / N. Its softmax then estimates p_q(y | x) ∝ p(x | y) q_y, and Bayes' rule gives the probability under
any other prior exactly: p_π(y | x) ∝ p_q(y | x) π_y / q_y, a shift of the logits by log(π / q). Networks are also
over-confident on images they have not seen; one temperature T, fitted on the validation split by minimum
negative log-likelihood, scales that back. Together, for logits z:

    z' = z / T + log(π / q)          (T = 1 without "temperature"; no shift without "prior")

π is the training split's class mix (HAM10000's: a dermatology clinic's referrals, two-thirds nevi) unless a
*deployment prior* is given: the class mix of the setting the model is used in, stated or measured on that setting's
own labelled images (`recalibrate`, behind `scripts/calibrate.py`).

Applying it: `fold` writes z' into the classifier head's weights (W' = W / T, b' = b / T + shift) and records the
calibration in `config.calibration`, so every runtime that reads the checkpoint — `SkinClassifier`, transformers'
`pipeline`, an exported ONNX model — gives calibrated probabilities with no code of its own; `unfold` (or
`Calibration.undo` on logits) gives the raw model back. `config.operating_point` holds the malignant-probability
threshold of the "see a dermatologist" advice, chosen on the same validation images for a target sensitivity.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

# No torch at import (hf_skin.metrics brings it through `evaluate`): an exported model's classifier reads its
# calibration without it.
from .data import DEFAULT_DATASET, SPLIT_DEFAULTS, SplitArguments
from .labels import DX_PLURAL, malignant_ids

logger = logging.getLogger(__name__)

CALIBRATION_METHODS = ("none", "prior", "temperature", "prior+temperature")
DEFAULT_CALIBRATION = "prior+temperature"
# Of malignant lesions, the share the referral advice must catch on validation: at most one in ten missed. A missed
# melanoma costs far more than a needless visit, so the threshold sits far below 50%.
DEFAULT_TARGET_SENSITIVITY = 0.9
# Temperatures searched (log-uniform bounds): far beyond what a trained network needs either way.
_TEMPERATURE_BOUNDS = (0.05, 20.0)
# The referral threshold sits this far (relative) below the malignant score it is chosen at (`choose_operating_point`).
THRESHOLD_MARGIN = 1e-5
# A class that the calibration images lack still gets a prior: counts + this (Jeffreys' pseudo-count).
PSEUDO_COUNT = 0.5
# HAM10000's diagnoses as a sentence counts them.


class CalibrationError(ValueError):
    """Calibration cannot be fitted or applied as asked (the message says why and what to do)."""


def sampling_prior(train_counts, balance: str = "none", balance_power: float = 1.0) -> np.ndarray:
    """The class prior the model was fitted to: the training mix, or q_c ∝ n_c^(1-p) under `--balance` with power p.

    Oversampling draws each image with probability ∝ n_c^-p (`hf_skin.training.BalancedSampler`), so class c with
    n_c · n_c^-p; a class-weighted loss weighs each image by the same n_c^-p, and its minimiser is the same reweighted
    posterior. Classes absent from training get 0.
    """
    counts = np.asarray(train_counts, dtype=np.float64)
    if balance not in ("none", "oversample", "class_weights"):
        raise CalibrationError(f"unknown balance mode {balance!r}: expected none, oversample or class_weights")
    mass = counts if balance == "none" else np.where(counts > 0, counts ** (1.0 - balance_power), 0.0)
    return mass / mass.sum()


def parse_prior(text: str, labels: list[str]) -> np.ndarray:
    """A deployment prior as a person writes it, `"nv=0.80,mel=0.05,bkl=0.08,..."` -> `(K,)` probabilities in label
    order. Every label must be given (0 is allowed); the values are shares or counts, normalised to sum to 1."""
    values: dict[str, float] = {}
    for part in filter(None, (piece.strip() for piece in text.split(","))):
        name, sep, number = part.partition("=")
        name = name.strip()
        try:
            value = float(number) if sep else math.nan
        except ValueError:
            value = math.nan
        if not sep or not math.isfinite(value) or value < 0:
            raise CalibrationError(f"prior entry {part!r} is not label=share with a share >= 0 (e.g. nv=0.8)")
        if name not in labels:
            raise CalibrationError(
                f"prior names {name!r}, which is not one of the model's labels ({', '.join(labels)})"
            )
        if name in values:
            raise CalibrationError(f"prior gives {name!r} twice")
        values[name] = value
    missing = [label for label in labels if label not in values]
    if missing:
        raise CalibrationError(
            f"the prior must give every class a share (0 is allowed): missing {', '.join(missing)}; e.g. "
            + ",".join(f"{label}=..." for label in labels)
        )
    prior = np.array([values[label] for label in labels], dtype=np.float64)
    if prior.sum() <= 0:
        raise CalibrationError("the prior's shares sum to 0: give each class its share of the population")
    return prior / prior.sum()


def class_mix(labels, num_labels: int, pseudo_count: float = 0.0) -> np.ndarray:
    """The share of each class among label ids `labels` (+ `pseudo_count` per class)."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_labels) + pseudo_count
    return counts / counts.sum()


def prior_shift(target_prior, sampling: np.ndarray) -> np.ndarray:
    """log(π / q): the logit shift from the sampling prior `sampling` to `target_prior`.

    A class that the model was never trained on (q = 0) or that the target rules out (π = 0) gets a large negative
    shift (-30: its probability becomes ~1e-13 of the others'), not -inf, so that the folded weights stay finite."""
    target = np.asarray(target_prior, dtype=np.float64)
    with np.errstate(divide="ignore"):
        shift = np.log(target) - np.log(sampling)
    shift = np.where((target > 0) & (sampling > 0), shift, -30.0)
    return shift - shift[np.isfinite(shift)].max()  # only differences matter; the largest shift is 0


def fit_temperature(logits, labels, shift=None) -> float:
    """The T > 0 minimising the mean NLL of softmax(logits / T + shift) on (`logits`, `labels`): convex in 1/T."""
    logits, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels, dtype=np.int64)
    shift = np.zeros(logits.shape[1]) if shift is None else np.asarray(shift, dtype=np.float64)
    rows = np.arange(len(labels))

    def nll(log_t: float) -> float:
        return float(-log_softmax(logits / math.exp(log_t) + shift, axis=1)[rows, labels].mean())

    low, high = (math.log(bound) for bound in _TEMPERATURE_BOUNDS)
    result = minimize_scalar(nll, bounds=(low, high), method="bounded", options={"xatol": 1e-6})
    temperature = math.exp(result.x)
    if not low + 1e-3 < result.x < high - 1e-3:
        logger.warning(
            "the fitted temperature %.3g is at the edge of the searched range %s", temperature, _TEMPERATURE_BOUNDS
        )
    return temperature


@dataclass
class Calibration:
    """z' = z / temperature + logit_bias, with what it was fitted to (stored as `config.calibration`).

    Attributes:
        method: one of `CALIBRATION_METHODS`.
        temperature: T (1 without "temperature").
        logit_bias: log(target_prior / sampling_prior), per class (0s without "prior").
        sampling_prior: the class mix training fitted the model to (`sampling_prior`).
        target_prior: the class mix the probabilities are calibrated for.
        target_prior_source: where `target_prior` comes from, in words (the training split's mix, a stated prior, ...).
        train_counts: images per class in the training split.
        balance, balance_power: the training's class balancing.
        fitted_on: what the temperature was fitted on (`dataset`, `split`, `n`).
        scores: NLL / Brier / ECE on the fitting images before and after.
    """

    method: str
    temperature: float
    logit_bias: list[float]
    sampling_prior: list[float] | None
    target_prior: list[float] | None
    target_prior_source: str
    train_counts: list[int] | None
    balance: str = "none"
    balance_power: float = 1.0
    fitted_on: dict = field(default_factory=dict)
    scores: dict = field(default_factory=dict)

    def apply(self, logits) -> np.ndarray:
        """Raw logits -> calibrated logits."""
        return np.asarray(logits, dtype=np.float64) / self.temperature + np.asarray(self.logit_bias)

    def undo(self, logits) -> np.ndarray:
        """Calibrated logits (what a folded checkpoint outputs) -> the raw model's logits."""
        return (np.asarray(logits, dtype=np.float64) - np.asarray(self.logit_bias)) * self.temperature

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_config(cls, config) -> Calibration | None:
        """The calibration recorded in a model config (or its dict), `None` when the checkpoint has none."""
        stored = config.get("calibration") if isinstance(config, dict) else getattr(config, "calibration", None)
        return cls(**stored) if stored else None

    def describe(self, labels: list[str]) -> str:
        """One plain sentence: what the probabilities are calibrated for, and what that means."""
        if self.method == "none":
            return "These probabilities are the model's raw outputs, not calibrated: they may be over- or under-sure."
        if self.method == "temperature":
            return (
                "These probabilities are calibrated by temperature on validation images, but keep the class mix the "
                "model was trained with; they are not adjusted to any population."
            )
        shares = dict(zip(labels, self.target_prior))
        named = ", ".join(
            f"{share:.0%} {DX_PLURAL.get(label, label)}"
            for label, share in sorted(shares.items(), key=lambda item: -item[1])[:3]
        )
        return (
            f"Probabilities are calibrated for {self.target_prior_source} ({named}): “30%” means that about 3 in 10 "
            "lesions that look like this one in that mix have the diagnosis; where a diagnosis is rarer than there "
            "(melanoma in general skin screening, for one) its true chance is lower."
        )


def fit_calibration(
    logits,
    labels,
    *,
    train_counts,
    method: str = DEFAULT_CALIBRATION,
    balance: str = "none",
    balance_power: float = 1.0,
    target_prior=None,
    target_prior_source: str = "the class mix of the training images",
    fitted_on: dict | None = None,
) -> Calibration:
    """Fits `method` on raw `logits` `(N, K)` and true `labels` `(N,)` (the validation split: never test).

    `target_prior` defaults to the training split's mix (`train_counts`); the temperature is fitted after the prior
    shift, the shift being known exactly rather than fitted.
    """
    from .metrics import softmax

    if method not in CALIBRATION_METHODS:
        raise CalibrationError(f"--calibration {method!r} is not one of {', '.join(CALIBRATION_METHODS)}")
    logits, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels, dtype=np.int64)
    num_labels = logits.shape[1]
    use_prior, use_temperature = method in ("prior", "prior+temperature"), "temperature" in method
    sampling = target = counts = None
    if train_counts is not None:
        counts = np.asarray(train_counts, dtype=np.int64)
        if len(counts) != num_labels or counts.sum() == 0:
            raise CalibrationError(f"train_counts must give {num_labels} class counts, not all 0: {counts.tolist()}")
        sampling = sampling_prior(counts, balance, balance_power)
        target = counts / counts.sum() if target_prior is None else np.asarray(target_prior, dtype=np.float64)
    elif use_prior:
        raise CalibrationError(f"--calibration {method} needs the training's class counts (train_counts)")
    bias = prior_shift(target, sampling) if use_prior else np.zeros(num_labels)
    if use_temperature and len(labels) == 0:
        raise CalibrationError("no images to fit the temperature on: the calibration split is empty")
    temperature = fit_temperature(logits, labels, bias) if use_temperature else 1.0
    calibration = Calibration(
        method=method,
        temperature=temperature,
        logit_bias=bias.tolist(),
        sampling_prior=None if sampling is None else sampling.tolist(),
        target_prior=None if target is None or not use_prior else target.tolist(),
        target_prior_source=target_prior_source if use_prior else "the training's sampling mix (no prior shift)",
        train_counts=None if counts is None else counts.tolist(),
        balance=balance,
        balance_power=balance_power,
        fitted_on=dict(fitted_on or {}, n=len(labels)),
    )
    if len(labels):
        calibration.scores = calibration_scores(labels, softmax(logits), softmax(calibration.apply(logits)))
    return calibration


def calibration_scores(labels, before, after) -> dict:
    """NLL, Brier score and ECE of probabilities `before` and `after` calibration (lower is better for all three)."""
    from .metrics import brier_score, expected_calibration_error, negative_log_likelihood

    return {
        f"{name}_{when}": float(score(labels, probs))
        for name, score in (
            ("nll", negative_log_likelihood),
            ("brier", brier_score),
            ("ece", expected_calibration_error),
        )
        for when, probs in (("before", before), ("after", after))
    }


# ---------------------------------------------------------------------------------------------------------------
# In the checkpoint: folded into the classifier head


def classifier_head(model):
    """The final `nn.Linear` (features -> logits) of every hf-skin family."""
    from torch import nn

    timm_model = getattr(model, "timm_model", None)
    head = timm_model.get_classifier() if timm_model is not None else getattr(model, "classifier", None)
    if isinstance(head, nn.Sequential):  # transformers' ResNet: Flatten, Linear
        head = head[-1]
    if not isinstance(head, nn.Linear) or head.bias is None or head.out_features != model.config.num_labels:
        raise CalibrationError(
            f"cannot calibrate a {type(model).__name__}: its classifier head is not one linear layer with a bias "
            f"giving the {model.config.num_labels} logits"
        )
    return head


def _set_head(model, temperature: float, bias, inverse: bool = False) -> None:
    import torch

    head = classifier_head(model)
    bias = torch.as_tensor(np.asarray(bias), dtype=torch.float64, device=head.weight.device)
    with torch.no_grad():
        weight, offset = head.weight.double(), head.bias.double()
        if inverse:
            weight, offset = weight * temperature, (offset - bias) * temperature
        else:
            weight, offset = weight / temperature, offset / temperature + bias
        head.weight.copy_(weight.to(head.weight.dtype))
        head.bias.copy_(offset.to(head.bias.dtype))


def unfold(model) -> None:
    """Gives `model` its raw head back (no-op without `config.calibration`) and drops the calibration and operating
    point from its config."""
    current = Calibration.from_config(model.config)
    if current is not None:
        _set_head(model, current.temperature, current.logit_bias, inverse=True)
    model.config.calibration = None
    model.config.operating_point = None


def fold(model, calibration: Calibration, operating_point: dict | None = None) -> None:
    """Makes `model` (with a raw head: see `unfold`) output calibrated logits and records both in its config."""
    if Calibration.from_config(model.config) is not None:
        raise CalibrationError("this model is calibrated already: unfold() it before folding a new calibration")
    _set_head(model, calibration.temperature, calibration.logit_bias)
    model.config.calibration = calibration.to_dict()
    model.config.operating_point = operating_point


def calibrate_model(
    model, logits, labels, *, target_sensitivity: float = DEFAULT_TARGET_SENSITIVITY, **fit_kwargs
) -> tuple[Calibration, dict | None]:
    """Fits a calibration on `model`'s raw validation `logits` and `labels` (`fit_kwargs`: `fit_calibration`'s),
    chooses the referral operating point on the calibrated probabilities, and folds both into `model` (replacing
    any calibration it had: `logits` must be the raw model's, `Calibration.undo` of a calibrated model's). Returns
    `(calibration, operating_point)`."""
    from .metrics import softmax

    calibration = fit_calibration(logits, labels, **fit_kwargs)
    fitted_on = fit_kwargs.get("fitted_on") or {}
    label_names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    operating_point = choose_operating_point(
        labels, softmax(calibration.apply(logits)), label_names, target_sensitivity, **fitted_on
    )
    unfold(model)
    fold(model, calibration, operating_point)
    scores = calibration.scores
    logger.info(
        "Calibration (%s) fitted on %d images: temperature %.3f; NLL %.4f -> %.4f, ECE %.4f -> %.4f%s",
        calibration.method,
        len(labels),
        calibration.temperature,
        scores.get("nll_before", math.nan),
        scores.get("nll_after", math.nan),
        scores.get("ece_before", math.nan),
        scores.get("ece_after", math.nan),
        f"; referral threshold {operating_point['threshold']:.4f} (sensitivity {operating_point['sensitivity']:.3f}, "
        f"specificity {operating_point['specificity']:.3f})"
        if operating_point
        else "",
    )
    return calibration, operating_point


# ---------------------------------------------------------------------------------------------------------------
# The operating point of the referral advice


def choose_operating_point(
    labels, probs, label_names: list[str], target_sensitivity: float = DEFAULT_TARGET_SENSITIVITY, **fitted_on
) -> dict | None:
    """The highest malignant-probability threshold at which at least `target_sensitivity` of the malignant images
    of (`labels`, calibrated `probs`) score at or above it: the fewest referrals that still catch that share.

    Returns `None` (and logs why) for a model without malignant classes or images without a malignant or a benign
    case. The dict holds `threshold`, `target_sensitivity`, the `sensitivity` and `specificity` it reaches on these
    images, `n_malignant`, `n_benign` and `fitted_on`.
    """
    if not 0 < target_sensitivity <= 1:
        raise CalibrationError(f"target sensitivity {target_sensitivity} is not in (0, 1]")
    malignant = malignant_ids(label_names)
    labels, probs = np.asarray(labels), np.asarray(probs, dtype=np.float64)
    is_malignant = np.isin(labels, malignant)
    if not malignant or is_malignant.all() or not is_malignant.any():
        logger.warning("no operating point: the calibration images need both malignant and benign lesions")
        return None
    score = probs[:, malignant].sum(axis=1)
    positives = np.sort(score[is_malignant])[::-1]
    # The k-th highest malignant score, k = ceil(target × n): a threshold there catches k of n.
    k = max(1, math.ceil(target_sensitivity * len(positives) - 1e-9))
    # A hair below that score: the same image must still count after float32 or ONNX rounding of its probabilities.
    threshold = float(positives[k - 1]) * (1 - THRESHOLD_MARGIN)
    referred = score >= threshold
    return {
        "threshold": threshold,
        "target_sensitivity": target_sensitivity,
        "sensitivity": float(referred[is_malignant].mean()),
        "specificity": float((~referred[~is_malignant]).mean()),
        "n_malignant": int(is_malignant.sum()),
        "n_benign": int((~is_malignant).sum()),
        "fitted_on": fitted_on,
    }


def operating_point_scores(labels, probs, label_names: list[str], threshold: float) -> dict:
    """Sensitivity and specificity of "refer when the malignant probability >= threshold" on (labels, probs)."""
    malignant = malignant_ids(label_names)
    labels, probs = np.asarray(labels), np.asarray(probs, dtype=np.float64)
    is_malignant = np.isin(labels, malignant)
    referred = probs[:, malignant].sum(axis=1) >= threshold
    return {
        "threshold": threshold,
        "sensitivity": float(referred[is_malignant].mean()) if is_malignant.any() else None,
        "specificity": float((~referred[~is_malignant]).mean()) if (~is_malignant).any() else None,
        "n_malignant": int(is_malignant.sum()),
        "n_benign": int((~is_malignant).sum()),
        "true_positives": int(referred[is_malignant].sum()),
        "true_negatives": int((~referred[~is_malignant]).sum()),
    }


# ---------------------------------------------------------------------------------------------------------------
# Recalibrating a trained checkpoint (scripts/calibrate.py)

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
        if self.calibration not in CALIBRATION_METHODS:
            raise ValueError(f"--calibration {self.calibration!r} is not one of {', '.join(CALIBRATION_METHODS)}")
        if not 0 < self.target_sensitivity <= 1:
            raise ValueError(f"--target_sensitivity {self.target_sensitivity} must be in (0, 1], e.g. 0.9")
        if self.target_prior != "training" and "prior" not in self.calibration:
            raise ValueError(
                f"--target_prior {self.target_prior!r} needs a prior shift: use --calibration prior+temperature or "
                f"prior (--calibration {self.calibration} would ignore it)"
            )


def _training_balance(classifier, folder, label_names: list[str]) -> tuple[list[int], str, float]:
    """The training's class counts and balancing of a checkpoint: from its calibration, else from its run folder
    (the arguments in `run_args.json`, the counts from its training split)."""
    from .evaluation import load_eval_split, model_label_ids

    stored = classifier.calibration
    if stored is not None:
        return stored.train_counts, stored.balance, stored.balance_power
    args = folder.args if folder is not None else None
    if not args or "dataset" not in args:
        raise CalibrationError(
            "this checkpoint records neither a calibration nor its training run (run_args.json), so the class mix "
            "it was trained on is unknown: use --calibration temperature, or calibrate the run folder itself"
        )
    split_args = SplitArguments(**{k: v for k, v in (folder.split_arguments() or {}).items() if k in SPLIT_DEFAULTS})
    split_args.fill()
    try:
        train = load_eval_split(args["dataset"], "train", **split_args.load_kwargs())
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
    import torch

    from .evaluation import check_no_training_lesions, load_eval_split, model_label_ids, predict_dataset, run_split
    from .inference import SkinClassifier
    from .runs import RunFolder

    output = Path(args.output_dir)
    if output.exists() and (not output.is_dir() or any(output.iterdir())):  # before the forward pass, not after
        raise CalibrationError(f"{output} exists and is not an empty folder: choose a new folder")
    split_args, folder = run_split(args.model, args.split, args)
    if args.dataset is None:
        args.dataset = ((folder.args if folder is not None else None) or {}).get("dataset") or DEFAULT_DATASET
    data = load_eval_split(args.dataset, args.split, **split_args.load_kwargs(), max_samples=args.max_samples)
    if folder is not None:
        check_no_training_lesions(data, folder, args.split, args.dataset)
    classifier = SkinClassifier.from_pretrained(args.model)
    classifier.model.to(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
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
