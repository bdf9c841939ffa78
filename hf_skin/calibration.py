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
own labelled images (`hf_skin.evaluation.recalibrate`, behind `scripts/calibrate.py`).

Applying it: `fold` writes z' into the classifier head's weights (W' = W / T, b' = b / T + shift) and records the
calibration in `config.calibration`, so every runtime that reads the checkpoint — `SkinClassifier`, transformers'
`pipeline`, an exported ONNX model — gives calibrated probabilities with no code of its own; `unfold` (or
`Calibration.undo` on logits) gives the raw model back. `config.operating_point` holds the malignant-probability
threshold of the "see a dermatologist" advice, chosen on the same validation images for a target sensitivity.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

# No torch at import: an exported model's classifier reads its calibration without it.
from .labels import DX_PLURAL, malignant_ids
from .metrics import brier_score, expected_calibration_error, negative_log_likelihood, softmax

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


class CalibrationError(ValueError):
    """Calibration cannot be fitted or applied as asked (the message says why and what to do)."""


def check_calibration_arguments(
    method: str = DEFAULT_CALIBRATION,
    target_sensitivity: float = DEFAULT_TARGET_SENSITIVITY,
    target_prior: str = "training",
) -> None:
    """The one check of the calibration arguments, in the command line's words (training's and recalibration's
    arguments, `fit_calibration` and `choose_operating_point` all call it).

    Args:
        method (`str`, *optional*, defaults to `DEFAULT_CALIBRATION`): one of `CALIBRATION_METHODS`.
        target_sensitivity (`float`, *optional*, defaults to `DEFAULT_TARGET_SENSITIVITY`): in (0, 1].
        target_prior (`str`, *optional*, defaults to `"training"`): any other prior needs a method with a prior
            shift, which would otherwise ignore it.

    Raises:
        `CalibrationError` (a `ValueError`) naming the argument and what to give instead.
    """
    if method not in CALIBRATION_METHODS:
        raise CalibrationError(f"--calibration {method!r} is not one of {', '.join(CALIBRATION_METHODS)}")
    if not 0 < target_sensitivity <= 1:
        raise CalibrationError(f"--target_sensitivity {target_sensitivity} must be in (0, 1], e.g. 0.9")
    if target_prior != "training" and "prior" not in method:
        raise CalibrationError(
            f"--target_prior {target_prior!r} needs a prior shift: use --calibration prior+temperature or "
            f"prior (--calibration {method} would ignore it)"
        )


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
    check_calibration_arguments(method)
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
    check_calibration_arguments(target_sensitivity=target_sensitivity)
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
