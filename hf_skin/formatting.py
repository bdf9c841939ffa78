"""How hf-skin writes numbers and metrics for people: one missing marker, one number format, one name per metric,
and markdown tables. Reports, cards and comparisons all go through these."""

from __future__ import annotations

import math
from typing import Any

MISSING = "—"  # a number the data leaves undefined (NaN) or that was not measured (None)

# What each metric is called where a person reads it (reports, cards, comparison tables).
METRIC_NAMES = {
    "accuracy": "accuracy",
    "balanced_accuracy": "balanced accuracy",
    "f1_macro": "macro F1",
    "f1_weighted": "weighted F1",
    "auc_macro": "macro ROC-AUC",
    "mel_sensitivity_at_spec90": "melanoma sensitivity at 90% specificity",
    "mel_sensitivity_at_spec80": "melanoma sensitivity at 80% specificity",
    "ece": "expected calibration error",
    "nll": "negative log-likelihood",
    "brier": "Brier score",
}

# The headline metrics, in the order cards, reports and comparisons show them (all but ECE: higher is better).
HEADLINE_METRICS = (
    "accuracy",
    "balanced_accuracy",
    "f1_macro",
    "f1_weighted",
    "auc_macro",
    "mel_sensitivity_at_spec90",
    "mel_sensitivity_at_spec80",
    "ece",
)


def metric_name(key: str, capitalize: bool = False) -> str:
    """The display name of a metric key (`balanced_accuracy` -> "balanced accuracy"); unknown keys with spaces."""
    name = METRIC_NAMES.get(key, key.replace("_", " "))
    return name[0].upper() + name[1:] if capitalize else name


def number(value: Any, digits: int = 3) -> str:
    """`0.812` for a float (`digits` decimals), `MISSING` for None or NaN, anything else as `str` gives it."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(header: list[str], rows: list[list], align: str | None = None) -> str:
    """A markdown table; `align` is one letter a column, `l` or `r` (default: the first left, the rest right)."""
    align = align or "l" + "r" * (len(header) - 1)
    rule = ["---:" if a == "r" else "---" for a in align]
    lines = [header, rule, *rows]
    return "\n".join("| " + " | ".join(map(str, line)) + " |" for line in lines)
