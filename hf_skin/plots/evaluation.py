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
    """One-vs-rest ROC curves as small multiples: one panel per class, its curve in its colour over the other classes'
    curves in grey, its AUC and image count in the panel's title.

    One panel per class rather than one axes for all: good classes' curves all run along the top-left corner, where
    on a shared axes they hide under each other (and under melanoma's). The melanoma panel marks the operating points
    at 90% and 80% specificity (the `mel_sensitivity_at_spec*` metrics). A class without positive (or without
    negative) samples has an empty panel that says so. The key sits in a cell of its own, clear of every curve.

    Args:
        labels (`np.ndarray` of shape `(N,)`): true label ids.
        probs (`np.ndarray` of shape `(N, num_labels)`): class probabilities.
        label_names (`list[str]`): class names in the order of `probs`' columns.
        title (`str`, *optional*): defaults to a title that says what a curve is.
    """
    import textwrap

    from matplotlib.lines import Line2D
    from sklearn.metrics import roc_auc_score, roc_curve

    from ..metrics import sensitivity_at_specificity

    labels, probs = np.asarray(labels), np.asarray(probs, dtype=np.float64)
    colors = _class_colors(label_names)
    curves = {}  # name -> (fpr, tpr, auc), or None without positives or without negatives
    for i, name in enumerate(label_names):
        positive = labels == i
        if positive.all() or not positive.any():
            curves[name] = None
            continue
        fpr, tpr, _ = roc_curve(positive, probs[:, i])
        curves[name] = (fpr, tpr, roc_auc_score(positive, probs[:, i]))

    n = len(label_names)
    ncols = min(4, n + 1)  # + 1: the key's cell
    nrows = -(-(n + 1) // ncols)
    figure = Figure(figsize=(2.7 * ncols + 0.5, 2.9 * nrows + 0.7), dpi=DPI, layout="constrained")
    axes = figure.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False).ravel()
    chance = {"color": "#999999", "linestyle": ":", "linewidth": 1}
    context = {"color": "#C8C8C8", "linewidth": 0.9, "zorder": 1}
    operating_points = []
    for i, (ax, name) in enumerate(zip(axes, label_names)):
        count = int((labels == i).sum())
        full = _dx_name(name)
        subtitle = textwrap.fill(full, 30) + "\n" if full != name else ""
        if curves[name] is None:  # an empty panel: the reason in its middle, nothing drawn under it
            reason = "no image of this class" if count == 0 else "every image is of this class"
            ax.text(0.5, 0.5, f"{reason}:\nno ROC curve", ha="center", va="center", fontsize=9)
            ax.set_title(f"{name}: no curve\n{subtitle}{count:,} images", fontsize=9)
        else:
            ax.plot([0, 1], [0, 1], **chance)
            for other, curve in curves.items():
                if other != name and curve is not None:
                    ax.plot(curve[0], curve[1], **context)
            fpr, tpr, auc = curves[name]
            ax.plot(fpr, tpr, color=colors[name], linewidth=2.2, zorder=3, label=f"{name}: AUC {auc:.2f}, n={count:,}")
            ax.set_title(f"{name}: AUC {auc:.2f}\n{subtitle}{count:,} images", fontsize=9)
        if name == "mel" and curves[name] is not None:
            for specificity, marker in ((0.9, "o"), (0.8, "s")):
                sensitivity = sensitivity_at_specificity(labels == i, probs[:, i], specificity)
                operating_points.append((specificity, marker, sensitivity))
                ax.plot(
                    1 - specificity,
                    sensitivity,
                    marker=marker,
                    markersize=7,
                    color=colors[name],
                    markeredgecolor="black",
                    linestyle="none",
                    zorder=4,
                )
        ax.set(xlim=(0, 1), ylim=(0, 1.02), xticks=[0, 0.5, 1], yticks=[0, 0.5, 1])
        ax.set_aspect("equal")
        ax.grid(alpha=0.3)
        if i + ncols >= n:  # no panel below this one: it carries the x tick labels
            ax.xaxis.set_tick_params(labelbottom=True)
    for ax in axes[n:]:
        ax.axis("off")
    handles = [
        Line2D([], [], color="#555555", linewidth=2.2, label="the panel's class"),
        Line2D([], [], label="the other classes", **context),
        Line2D([], [], label="chance (AUC 0.50)", **chance),
    ]
    mel_color = colors.get("mel", "#C44E52")
    handles += [
        Line2D(
            [],
            [],
            marker=marker,
            markersize=7,
            color=mel_color,
            markeredgecolor="black",
            linestyle="none",
            label=f"melanoma at {specificity:.0%}\nspecificity: sensitivity {sensitivity:.2f}",
        )
        for specificity, marker, sensitivity in operating_points
    ]
    axes[n].legend(handles=handles, loc="center", fontsize=8.5, frameon=False)
    figure.supxlabel("false positive rate = 1 − specificity", fontsize=10)
    figure.supylabel("true positive rate = sensitivity", fontsize=10)
    figure.suptitle(title or f"ROC curves, each class against the rest ({len(labels):,} images)", fontsize=11)
    return figure


def plot_roc_curves(labels, probs, label_names: list[str], path: str | Path, title: str | None = None) -> Path:
    """Writes `roc_curves_figure(labels, probs, label_names, title)` as a PNG to `path` and returns `path`."""
    return _save(roc_curves_figure(labels, probs, label_names, title=title), Path(path))


def reliability_diagram_figure(
    labels, probs, num_bins: int | None = None, title: str | None = None, before=None
) -> Figure:
    """Reliability diagram of the top label: accuracy per confidence bin against the diagonal of perfect calibration.

    Each bar is a bin of images whose top probability falls in it; its height is the share of them classified
    correctly, and a black tick marks the bin's mean confidence: a bar below its tick (red box) is over-confident, a
    bar above it under-confident. The panel below counts the images per bin, the count written above each bar. The
    title gives the expected calibration error, computed over the same bins as
    `hf_skin.metrics.expected_calibration_error`. With `before` (the raw model's probabilities of a calibrated
    checkpoint, `probs` being the calibrated ones), the raw model's bins are drawn over the bars as orange points at
    (mean confidence, accuracy), with both ECEs. The key sits below the panels, clear of the bars.
    """
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    from ..metrics import ECE_BINS, expected_calibration_error, reliability_bins

    num_bins = num_bins or ECE_BINS
    bins = reliability_bins(labels, probs, num_bins)
    ece = expected_calibration_error(labels, probs, num_bins)
    edges, count = bins["edges"], bins["count"]
    filled = count > 0
    centers, width = (edges[:-1] + edges[1:]) / 2, 1 / num_bins

    figure = Figure(figsize=(7.5, 8.2), dpi=DPI, layout="constrained")
    ax, hist = figure.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    diagonal = {"color": "#555555", "linestyle": "--", "linewidth": 1}
    ax.plot([0, 1], [0, 1], **diagonal)
    accuracy_style = {"facecolor": "#4C72B0", "edgecolor": "white"}
    ax.bar(centers[filled], bins["accuracy"][filled], width=width, **accuracy_style)
    # Over-confidence (confidence above accuracy) as a red box above the bar; under-confidence shows as the bar
    # rising above its tick, so no box is drawn over the bar.
    over = filled & (bins["confidence"] > bins["accuracy"])
    over_style = {"facecolor": "#C44E52", "alpha": 0.35, "edgecolor": "none"}
    ax.bar(
        centers[over],
        bins["confidence"][over] - bins["accuracy"][over],
        bottom=bins["accuracy"][over],
        width=width,
        **over_style,
    )
    tick = {"marker": "_", "markersize": 22, "markeredgewidth": 2.5, "color": "black", "linestyle": "none"}
    ax.plot(centers[filled], bins["confidence"][filled], **tick)
    # The key's entries are built here rather than taken from the artists: an empty bar container (no over-confident
    # bin) would give its entry matplotlib's default colour instead of the red box's.
    handles = [
        Patch(label="accuracy in the bin (bar)", **accuracy_style),
        Line2D([], [], label="mean confidence in the bin (tick)", **tick | {"markersize": 14}),
        Patch(label="over-confidence: confidence above accuracy", **over_style),
        Line2D([], [], label="perfect calibration", **diagonal),
    ]
    if before is not None:
        raw = reliability_bins(labels, before, num_bins)
        raw_filled = raw["count"] > 0
        raw_style = {"marker": "o", "color": "#DD8452", "linewidth": 1.2}
        # unclipped: a bin with no correct image sits on the axis and keeps its whole point
        ax.plot(raw["confidence"][raw_filled], raw["accuracy"][raw_filled], clip_on=False, zorder=4, **raw_style)
        handles.append(
            Line2D(
                [],
                [],
                label=f"before calibration (ECE {expected_calibration_error(labels, before, num_bins):.3f}): "
                "accuracy at mean confidence",
                **raw_style,
            )
        )
    num_labels = np.asarray(probs).shape[1]
    for axis in (ax, hist):  # the top probability of K classes is never below 1/K
        axis.axvspan(0, 1 / num_labels, color="#EEEEEE", zorder=0)
    note = f"top probability\nis never below\n1/{num_labels}"
    ax.text(0.5 / num_labels, 0.5, note, ha="center", fontsize=7, color="#777777")
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1.02),
        ylabel="accuracy (share correct)",
        title=title
        or (
            f"Reliability of the top prediction: ECE = {ece:.3f}"
            + (
                f" calibrated, {expected_calibration_error(labels, before, num_bins):.3f} before"
                if before is not None
                else ""
            )
            + f"\n({num_bins} confidence bins, {int(count.sum()):,} images; below: images per bin)"
        ),
    )
    ax.grid(alpha=0.3)
    # The counts go over the count panel's bars, where no line or point of the upper panel can cover them.
    bars = hist.bar(centers[filled], count[filled], width=width, color="#8C8C8C", edgecolor="white")
    hist.bar_label(bars, labels=[f"{n:,}" for n in count[filled]], padding=1, fontsize=7)
    hist.set_ylim(0, max(count.max(), 1) * 1.25)
    hist.set(xlabel="confidence (probability of the predicted class)", ylabel="images")
    hist.grid(axis="y", alpha=0.3)
    figure.legend(handles=handles, loc="outside lower center", ncols=2, fontsize=8, frameon=False)
    return figure


def plot_reliability_diagram(
    labels, probs, path: str | Path, num_bins: int | None = None, title: str | None = None, before=None
) -> Path:
    """Writes `reliability_diagram_figure(labels, probs, num_bins, title, before)` as a PNG to `path`; returns it."""
    figure = reliability_diagram_figure(labels, probs, num_bins=num_bins, title=title, before=before)
    return _save(figure, Path(path))


def subgroup_figure(tables: dict[str, list[dict]], overall: dict, min_n: int = 30) -> Figure:
    """Balanced accuracy and malignant recall per subgroup, one panel per grouping (sex, age band, localization).

    The key sits below the panels, clear of the bars; the values written at the bars' ends stand on white, so the
    dashed lines of all images never run through them.

    Args:
        tables (`dict[str, list[dict]]`):
            grouping name -> rows with `group`, `n`, `balanced_accuracy` and `malignant_recall`
            (as `hf_skin.evaluation.subgroup_table` gives them).
        overall (`dict`): the same keys for all images, drawn as vertical lines.
        min_n (`int`, *optional*, defaults to 30): subgroups with fewer images are drawn pale and marked.
    """
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    rows_per_panel = [len(rows) for rows in tables.values()]
    figure = Figure(
        figsize=(10, 2.2 + 0.34 * sum(rows_per_panel) + 0.5 * len(tables)),
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
            bars = ax.barh(y - 0.2 + 0.4 * k, np.nan_to_num(values), height=0.38, color=color, alpha=1.0, label=label)
            for bar, is_small in zip(bars, small):
                bar.set_alpha(0.3 if is_small else 1.0)
            texts = ax.bar_label(
                bars,
                labels=[number(v, digits=2) for v in values],
                padding=2,
                fontsize=7,
                bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.6},
                zorder=3,
            )
            for text, is_small in zip(texts, small):
                text.set_alpha(0.45 if is_small else 1.0)
            if overall.get(key) is not None:
                ax.axvline(overall[key], color=color, linestyle="--", linewidth=1, zorder=2)
        ax.set_yticks(
            y,
            [f"{row['group']} (n={row['n']:,}{', too few' if row['n'] < min_n else ''})" for row in rows],
            fontsize=8,
        )
        ax.set_ylim(len(rows) - 0.5, -0.5)  # first row on top, the same margin in every panel
        ax.set_xlim(0, 1.12)
        ax.set_title(f"by {grouping}", fontsize=10, loc="left")
        ax.grid(axis="x", alpha=0.3)
    axes[-1].set_xlabel("share")
    handles = [Patch(color=color, label=label) for _, label, color in series]
    handles += [
        Line2D(
            [],
            [],
            color=color,
            linestyle="--",
            linewidth=1,
            label=f"{label}, all images: {number(overall[key], digits=2)}",
        )
        for key, label, color in series
        if overall.get(key) is not None
    ]
    handles.append(Patch(color="#8C8C8C", alpha=0.3, label=f"pale: fewer than {min_n} images, too few to judge"))
    figure.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=8, frameon=False)
    figure.suptitle(
        "Does the model fail a group? Balanced accuracy and malignant recall (akiec/bcc/mel called malignant) "
        f"per subgroup\n{MISSING}: no malignant image in the group",
        fontsize=10,
    )
    return figure


def plot_subgroups(tables: dict[str, list[dict]], overall: dict, path: str | Path, min_n: int = 30) -> Path:
    """Writes `subgroup_figure(tables, overall, min_n)` as a PNG to `path` and returns `path`."""
    return _save(subgroup_figure(tables, overall, min_n=min_n), Path(path))
