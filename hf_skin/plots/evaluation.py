"""The evaluation figures of a checkpoint on a split: confusion matrix, ROC curves, reliability diagram, subgroups."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ..formatting import MISSING, number
from .style import DPI, _class_colors, _dx_name, _save


def confusion_matrix_figure(
    cm: np.ndarray, labels: list[str], normalize: bool = False, title: str | None = None
) -> Figure:
    """A confusion matrix as a figure: true label on y, predicted label on x, every cell annotated.

    Args:
        cm (`np.ndarray` of shape `(num_labels, num_labels)`): counts, `cm[i, j]` = true `i` predicted as `j`.
        labels (`list[str]`): class names in the order of `cm`'s rows.
        normalize (`bool`, *optional*, defaults to `False`):
            divide each row by its total, so the diagonal reads as per-class recall (a row with no samples stays 0).
        title (`str`, *optional*): defaults to a title that says what the cells hold.
    """
    cm = np.asarray(cm)
    n = len(labels)
    if cm.shape != (n, n):
        raise ValueError(f"confusion matrix has shape {cm.shape} but {n} labels were given: expected ({n}, {n})")
    support = cm.sum(axis=1)
    values = cm / np.maximum(support, 1)[:, None] if normalize else cm
    if title is None:
        title = "Confusion matrix (row-normalised: recall on the diagonal)" if normalize else "Confusion matrix"

    side = 2.0 + 0.7 * n
    figure = Figure(figsize=(side + 1.2, side), dpi=DPI, layout="constrained")
    ax = figure.subplots()
    image = ax.imshow(values, cmap="Blues", vmin=0, vmax=1 if normalize else max(values.max(), 1))
    figure.colorbar(image, ax=ax, shrink=0.8, label="share of the true class" if normalize else "images")
    threshold = image.norm.vmax / 2
    integer = not normalize and np.issubdtype(values.dtype, np.integer)
    for i, j in np.ndindex(n, n):
        text = f"{values[i, j]:d}" if integer else f"{values[i, j]:.2f}" if normalize else f"{values[i, j]:g}"
        color = "white" if values[i, j] > threshold else "black"
        ax.text(j, i, text, ha="center", va="center", color=color, fontsize=9 if n <= 10 else 7)
    ax.set_xticks(range(n), labels, rotation=45 if max(map(len, labels)) > 4 else 0, ha="right")
    ax.set_yticks(range(n), [f"{label} (n={s:,g})" for label, s in zip(labels, support)])
    ax.set(xlabel="Predicted label", ylabel="True label", title=title)
    return figure


def plot_confusion_matrix(
    cm: np.ndarray, labels: list[str], path: str | Path, normalize: bool = False, title: str | None = None
) -> Path:
    """Writes `confusion_matrix_figure(cm, labels, normalize, title)` as a PNG to `path` and returns `path`."""
    return _save(confusion_matrix_figure(cm, labels, normalize=normalize, title=title), Path(path))


def roc_curves_figure(labels, probs, label_names: list[str], title: str | None = None) -> Figure:
    """One-vs-rest ROC curves, one per class, AUC and sample count in the legend, melanoma drawn thickest.

    The melanoma curve marks the operating points at 90% and 80% specificity (the `mel_sensitivity_at_spec*`
    metrics). A class without positive (or without negative) samples has no curve and says so in the legend.

    Args:
        labels (`np.ndarray` of shape `(N,)`): true label ids.
        probs (`np.ndarray` of shape `(N, num_labels)`): class probabilities.
        label_names (`list[str]`): class names in the order of `probs`' columns.
        title (`str`, *optional*): defaults to a title that says what a curve is.
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    from ..metrics import sensitivity_at_specificity

    labels, probs = np.asarray(labels), np.asarray(probs, dtype=np.float64)
    figure = Figure(figsize=(13, 7), dpi=DPI, layout="constrained")
    ax = figure.subplots()
    ax.plot([0, 1], [0, 1], color="#999999", linestyle=":", linewidth=1, label="chance (AUC 0.50)")
    colors = _class_colors(label_names)
    operating_points = []
    for i, name in enumerate(label_names):
        positive = labels == i
        full = f"{name} ({_dx_name(name)})" if _dx_name(name) != name else name
        if positive.all() or not positive.any():
            ax.plot([], [], color=colors[name], label=f"{full}: n={int(positive.sum())}, no curve")
            continue
        fpr, tpr, _ = roc_curve(positive, probs[:, i])
        auc = roc_auc_score(positive, probs[:, i])
        ax.plot(
            fpr,
            tpr,
            color=colors[name],
            linewidth=3 if name == "mel" else 1.6,
            label=f"{full}: AUC {auc:.2f}, n={int(positive.sum()):,}",
            zorder=3 if name == "mel" else 2,
        )
        if name == "mel":
            operating_points = [
                (specificity, marker, sensitivity_at_specificity(positive, probs[:, i], specificity), colors[name])
                for specificity, marker in ((0.9, "o"), (0.8, "s"))
            ]
    for specificity, marker, sensitivity, color in operating_points:
        ax.plot(
            1 - specificity,
            sensitivity,
            marker=marker,
            markersize=9,
            color=color,
            markeredgecolor="black",
            linestyle="none",
            zorder=4,
            label=f"melanoma at {specificity:.0%} specificity: sensitivity {sensitivity:.2f}",
        )
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1.01),
        xlabel="false positive rate = 1 − specificity",
        ylabel="true positive rate = sensitivity (recall)",
        title=title or f"ROC curves, each class against the rest ({len(labels):,} images)",
    )
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    figure.legend(loc="outside right upper", fontsize=9, frameon=False, title="class: AUC, images")
    return figure


def plot_roc_curves(labels, probs, label_names: list[str], path: str | Path, title: str | None = None) -> Path:
    """Writes `roc_curves_figure(labels, probs, label_names, title)` as a PNG to `path` and returns `path`."""
    return _save(roc_curves_figure(labels, probs, label_names, title=title), Path(path))


def reliability_diagram_figure(
    labels, probs, num_bins: int | None = None, title: str | None = None, before=None
) -> Figure:
    """Reliability diagram of the top label: accuracy per confidence bin against the diagonal of perfect calibration.

    Each bar is a bin of images whose top probability falls in it; its height is the share of them classified
    correctly, its count is written above it, and a black tick marks the bin's mean confidence: a bar below its tick
    (red box) is over-confident, a bar above it under-confident. The title
    gives the expected calibration error, computed over the same bins as `hf_skin.metrics.expected_calibration_error`.
    With `before` (the raw model's probabilities of a calibrated checkpoint, `probs` being the calibrated ones), the
    raw model's bins are drawn over the bars as orange points at (mean confidence, accuracy), with both ECEs.
    """
    from ..metrics import ECE_BINS, expected_calibration_error, reliability_bins

    num_bins = num_bins or ECE_BINS
    bins = reliability_bins(labels, probs, num_bins)
    ece = expected_calibration_error(labels, probs, num_bins)
    edges, count = bins["edges"], bins["count"]
    filled = count > 0
    centers, width = (edges[:-1] + edges[1:]) / 2, 1 / num_bins

    figure = Figure(figsize=(7.5, 7.5), dpi=DPI, layout="constrained")
    ax, hist = figure.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    ax.plot([0, 1], [0, 1], color="#555555", linestyle="--", linewidth=1, label="perfect calibration")
    ax.bar(
        centers[filled],
        bins["accuracy"][filled],
        width=width,
        color="#4C72B0",
        edgecolor="white",
        label="accuracy in the bin",
    )
    # Over-confidence (confidence above accuracy) as a red box above the bar; under-confidence shows as the bar
    # rising above its tick, so no box is drawn over the bar.
    over = filled & (bins["confidence"] > bins["accuracy"])
    ax.bar(
        centers[over],
        bins["confidence"][over] - bins["accuracy"][over],
        bottom=bins["accuracy"][over],
        width=width,
        color="#C44E52",
        alpha=0.35,
        edgecolor="none",
        label="over-confidence (confidence above accuracy)",
    )
    ax.plot(
        centers[filled],
        bins["confidence"][filled],
        marker="_",
        markersize=22,
        markeredgewidth=2.5,
        color="black",
        linestyle="none",
        label="mean confidence in the bin",
    )
    if before is not None:
        raw = reliability_bins(labels, before, num_bins)
        raw_filled = raw["count"] > 0
        ax.plot(
            raw["confidence"][raw_filled],
            raw["accuracy"][raw_filled],
            marker="o",
            color="#DD8452",
            linewidth=1.2,
            label=f"before calibration (ECE {expected_calibration_error(labels, before, num_bins):.3f}): "
            "accuracy at mean confidence",
        )
    num_labels = np.asarray(probs).shape[1]
    for axis in (ax, hist):  # the top probability of K classes is never below 1/K
        axis.axvspan(0, 1 / num_labels, color="#EEEEEE", zorder=0)
    note = f"top probability\nis never below\n1/{num_labels}"
    ax.text(0.5 / num_labels, 0.5, note, ha="center", fontsize=7, color="#777777")
    for x, acc, conf, n in zip(centers[filled], bins["accuracy"][filled], bins["confidence"][filled], count[filled]):
        ax.text(x, max(acc, conf) + 0.02, f"{n:,}", ha="center", va="bottom", fontsize=7, rotation=90)
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1.12),
        ylabel="accuracy (share correct)",
        title=title
        or (
            f"Reliability of the top prediction: ECE = {ece:.3f}"
            + (
                f" calibrated, {expected_calibration_error(labels, before, num_bins):.3f} before"
                if before is not None
                else ""
            )
            + f"\n({num_bins} confidence bins, {int(count.sum()):,} images; numbers above the bars: images per bin)"
        ),
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    hist.bar(centers, count, width=width, color="#8C8C8C", edgecolor="white")
    hist.set(xlabel="confidence (probability of the predicted class)", ylabel="images")
    hist.grid(axis="y", alpha=0.3)
    return figure


def plot_reliability_diagram(
    labels, probs, path: str | Path, num_bins: int | None = None, title: str | None = None, before=None
) -> Path:
    """Writes `reliability_diagram_figure(labels, probs, num_bins, title, before)` as a PNG to `path`; returns it."""
    figure = reliability_diagram_figure(labels, probs, num_bins=num_bins, title=title, before=before)
    return _save(figure, Path(path))


def subgroup_figure(tables: dict[str, list[dict]], overall: dict, min_n: int = 30) -> Figure:
    """Balanced accuracy and malignant recall per subgroup, one panel per grouping (sex, age band, localization).

    Args:
        tables (`dict[str, list[dict]]`):
            grouping name -> rows with `group`, `n`, `balanced_accuracy` and `malignant_recall`
            (as `hf_skin.evaluation.subgroup_table` gives them).
        overall (`dict`): the same keys for all images, drawn as vertical lines.
        min_n (`int`, *optional*, defaults to 30): subgroups with fewer images are drawn pale and marked.
    """
    rows_per_panel = [len(rows) for rows in tables.values()]
    figure = Figure(
        figsize=(11, 1.6 + 0.34 * sum(rows_per_panel) + 0.5 * len(tables)),
        dpi=DPI,
        layout="constrained",
    )
    axes = figure.subplots(len(tables), 1, height_ratios=[max(n, 1) for n in rows_per_panel], squeeze=False)[:, 0]
    series = (
        ("balanced_accuracy", "balanced accuracy", "#4C72B0"),
        ("malignant_recall", "malignant recall", "#C44E52"),
    )
    for ax, (grouping, rows) in zip(axes, tables.items()):
        y = np.arange(len(rows))
        for k, (key, label, color) in enumerate(series):
            values = np.array([np.nan if row[key] is None else row[key] for row in rows], dtype=float)
            small = np.array([row["n"] < min_n for row in rows])
            bars = ax.barh(
                y - 0.2 + 0.4 * k,
                np.nan_to_num(values),
                height=0.38,
                color=color,
                alpha=1.0,
                label=label if ax is axes[0] else None,
            )
            for bar, is_small in zip(bars, small):
                bar.set_alpha(0.3 if is_small else 1.0)
            texts = ax.bar_label(bars, labels=[number(v, digits=2) for v in values], padding=2, fontsize=7)
            for text, is_small in zip(texts, small):
                text.set_alpha(0.45 if is_small else 1.0)
            if overall.get(key) is not None:
                ax.axvline(overall[key], color=color, linestyle="--", linewidth=1)
        ax.set_yticks(
            y,
            [f"{row['group']} (n={row['n']:,}{', too few' if row['n'] < min_n else ''})" for row in rows],
            fontsize=8,
        )
        ax.invert_yaxis()
        ax.set_xlim(0, 1.12)
        ax.set_title(f"by {grouping}", fontsize=10, loc="left")
        ax.grid(axis="x", alpha=0.3)
    axes[-1].set_xlabel("share (dashed lines: all images)")
    axes[0].legend(loc="lower right", fontsize=8, framealpha=0.9)
    figure.suptitle(
        f"Does the model fail a group? Balanced accuracy and malignant recall (akiec/bcc/mel called malignant) "
        f"per subgroup\npale bars: fewer than {min_n} images, too few to judge; "
        f"{MISSING}: no malignant image in the group",
        fontsize=10,
    )
    return figure


def plot_subgroups(tables: dict[str, list[dict]], overall: dict, path: str | Path, min_n: int = 30) -> Path:
    """Writes `subgroup_figure(tables, overall, min_n)` as a PNG to `path` and returns `path`."""
    return _save(subgroup_figure(tables, overall, min_n=min_n), Path(path))
