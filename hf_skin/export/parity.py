"""How an exported model's logits agree with another model's on the same inputs: the fp32 model's with PyTorch's,
the int8 model's with the fp32 model's."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..metrics import softmax


def run_onnx(path: Path, batches: list[dict[str, np.ndarray]]) -> np.ndarray:
    """An ONNX model's logits on input `batches` (onnxruntime, CPU), concatenated."""
    import onnxruntime

    session = onnxruntime.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return np.concatenate([session.run(["logits"], {n: b[n] for n in names})[0] for b in batches])


def _balanced_accuracy(labels: np.ndarray, predicted: np.ndarray) -> float:
    recalls = [np.mean(predicted[labels == k] == k) for k in np.unique(labels)]
    return float(np.mean(recalls))


def _probabilities(logits: np.ndarray) -> np.ndarray:
    """Softmax in float64 then float32, as `SkinClassifier.predict_proba` gives an export's probabilities."""
    return softmax(np.asarray(logits, dtype=np.float64)).astype(np.float32)


def compare_predictions(
    reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray | None = None
) -> dict[str, float]:
    """How `candidate` logits agree with `reference` logits (same rows): top-1 agreement, the largest probability
    difference, and (with true `labels`) both balanced accuracies."""
    p_ref, p_new = _probabilities(reference), _probabilities(candidate)
    out = {
        "n": int(len(reference)),
        "top1_agreement": float(np.mean(p_ref.argmax(1) == p_new.argmax(1))),
        "max_probability_difference": float(np.abs(p_ref - p_new).max()),
    }
    if labels is not None:
        out["balanced_accuracy_reference"] = _balanced_accuracy(labels, p_ref.argmax(1))
        out["balanced_accuracy"] = _balanced_accuracy(labels, p_new.argmax(1))
    return out
