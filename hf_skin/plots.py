"""Figures for the data analysis and the evaluation: one PNG per figure, drawn without a display.

Figures are built on `matplotlib.figure.Figure` directly, not `pyplot`: no global backend switch (a notebook that
imports hf_skin keeps its own), no figure left open, and the same code runs headless on a server.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from datasets import ClassLabel, Dataset, DatasetDict
from matplotlib.figure import Figure

DPI = 120
ANALYSIS_COLUMNS = ("lesion_id", "dx", "dx_type", "age", "sex", "localization")
# Columns where a value can be missing, and the value HAM10000 uses for "not recorded" (None: a null).
MISSING_MARKERS = {"age": None, "sex": "unknown", "localization": "unknown"}
_SPLIT_COLORS = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3"]
_SEX_COLORS = {"male": "#4C72B0", "female": "#DD8452", "unknown": "#BBBBBB"}


def metadata_frame(data: Dataset | DatasetDict) -> pd.DataFrame:
    """The metadata columns of `data` as one DataFrame, without decoding a single image.

    Args:
        data (`Dataset` or `DatasetDict`):
            HAM10000 as `hf_skin.data.load_ham10000` returns it (any subset of `ANALYSIS_COLUMNS` is fine).

    Returns:
        `pd.DataFrame`: one row per image, a `split` column first (`"all"` for a single `Dataset`), `ClassLabel`
        columns as ordered categoricals that keep the dataset's label order (empty classes included).
    """
    splits = list(data.items()) if isinstance(data, DatasetDict) else [("all", data)]
    frames = []
    for split, ds in splits:
        columns = [c for c in ANALYSIS_COLUMNS if c in ds.column_names]
        frame = ds.select_columns(columns).to_pandas()
        for column in columns:
            if isinstance(ds.features[column], ClassLabel):
                frame[column] = pd.Categorical.from_codes(frame[column], categories=ds.features[column].names)
        frame.insert(0, "split", split)
        frames.append(frame)
    frame = pd.concat(frames, ignore_index=True)
    frame["split"] = pd.Categorical(frame["split"], categories=[split for split, _ in splits])
    return frame


def missing_counts(frame: pd.DataFrame) -> pd.DataFrame:
    """Missing (null) or `"unknown"` values per metadata column (rows) and split (columns)."""
    columns = [c for c in MISSING_MARKERS if c in frame]
    missing = pd.DataFrame({c: frame[c].isna() | (frame[c].astype(object) == MISSING_MARKERS[c]) for c in columns})
    return missing.groupby(frame["split"], observed=False).sum().T


def data_analysis_figures(data: Dataset | DatasetDict, log_scale: bool = False) -> dict[str, Figure]:
    """The study's data-analysis figures, by name (the PNG file stem `plot_data_analysis` gives each).

    Args:
        data (`Dataset` or `DatasetDict`): HAM10000; per-split bars when it is a `DatasetDict`.
        log_scale (`bool`, *optional*, defaults to `False`): log-scale count axes (nv outnumbers df 60 to 1).

    Returns:
        `dict[str, Figure]`: `class_counts`, `missing_values`, and `age_by_dx`, `sex_by_dx`, `localization_by_dx`
        when the data has those columns.
    """
    frame = metadata_frame(data)
    n_lesions = f", {frame['lesion_id'].nunique():,} lesions" if "lesion_id" in frame else ""
    counts = pd.crosstab(frame["dx"], frame["split"], dropna=False)
    per_split = frame.groupby("split", observed=False)
    split_labels = [f"{split}\n{n:,} images" for split, n in per_split.size().items()]
    if "lesion_id" in frame:
        split_labels = [f"{label}\n{n:,} lesions" for label, n in zip(split_labels, per_split["lesion_id"].nunique())]
    figures = {
        "class_counts": _grouped_barh(
            counts,
            title=f"Images per diagnosis{' and split' if counts.shape[1] > 1 else ''} "
            f"({len(frame):,} images{n_lesions})",
            xlabel="images",
            row_labels=[f"{dx} ({_dx_name(dx)})" for dx in counts.index],
            legend_labels=split_labels,
            log_scale=log_scale,
        )
    }
    if "age" in frame:
        figures["age_by_dx"] = _age_by_dx(frame)
    if "sex" in frame:
        figures["sex_by_dx"] = _sex_by_dx(frame)
    if "localization" in frame:
        figures["localization_by_dx"] = _localization_by_dx(frame)
    missing = missing_counts(frame)
    totals = frame["split"].value_counts().reindex(missing.columns)
    figures["missing_values"] = _grouped_barh(
        missing,
        title="Missing metadata: null age, sex or localization 'unknown'",
        xlabel="images with the value missing",
        row_labels=[
            f"{c}: {'null' if MISSING_MARKERS[c] is None else repr(MISSING_MARKERS[c])}" for c in missing.index
        ],
        annotate=lambda value, split: f"{value:,} ({value / max(totals[split], 1):.1%})",
    )
    return figures


def plot_data_analysis(data: Dataset | DatasetDict, out_dir: str | Path, log_scale: bool = False) -> dict[str, Path]:
    """Writes the data-analysis figures of `data_analysis_figures` as `out_dir/{name}.png`.

    Works from the metadata columns only, so it takes about a second on the whole of HAM10000.

    Returns:
        `dict[str, Path]`: figure name -> PNG path.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return {
        name: _save(figure, out_dir / f"{name}.png")
        for name, figure in data_analysis_figures(data, log_scale=log_scale).items()
    }


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


def _save(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI)
    return path


def _dx_name(dx: str) -> str:
    from .data import DX_NAMES

    return DX_NAMES.get(dx, dx)


def _grouped_barh(table, *, title, xlabel, row_labels, legend_labels=None, log_scale=False, annotate=None) -> Figure:
    """Horizontal bars, one group per row of `table` (top to bottom), one bar per column (split), values written."""
    annotate = annotate or (lambda value, split: f"{value:,}")
    legend_labels = legend_labels or [str(split) for split in table.columns]
    n_rows, n_cols = table.shape
    height = 0.8 / n_cols
    figure = Figure(figsize=(11, 1.2 + 0.28 * n_rows * max(n_cols, 2)), dpi=DPI, layout="constrained")
    ax = figure.subplots()
    y = np.arange(n_rows)
    for k, split in enumerate(table.columns):
        offsets = y - 0.4 + height * (k + 0.5)
        values = table[split].to_numpy()
        bars = ax.barh(
            offsets, values, height=height, label=legend_labels[k], color=_SPLIT_COLORS[k % len(_SPLIT_COLORS)]
        )
        ax.bar_label(bars, labels=[annotate(int(v), split) for v in values], padding=3, fontsize=8)
    ax.set_yticks(y, row_labels)
    ax.invert_yaxis()  # first row on top, the order a reader scans
    if log_scale:
        ax.set_xscale("log")
    ax.set_xlim(right=ax.get_xlim()[1] * (3 if log_scale else 1.15))  # room for the value labels
    ax.set(xlabel=xlabel, title=title)
    ax.grid(axis="x", alpha=0.3)
    if n_cols > 1:
        ax.legend(title="split", loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    return figure


def _age_by_dx(frame: pd.DataFrame) -> Figure:
    groups = [(dx, frame.loc[frame["dx"] == dx, "age"].dropna().to_numpy()) for dx in _categories(frame["dx"])]
    figure = Figure(figsize=(10, 5), dpi=DPI, layout="constrained")
    ax = figure.subplots()
    ax.boxplot([ages for _, ages in groups], showmeans=True, meanprops={"markerfacecolor": "white"})
    ax.set_xticks(range(1, len(groups) + 1), [f"{dx}\nn={len(ages):,}" for dx, ages in groups])
    n_missing = int(frame["age"].isna().sum())
    ax.set(
        xlabel="diagnosis",
        ylabel="age (years)",
        title=f"Age by diagnosis (box: quartiles, triangle: mean; {n_missing:,} images without age left out)",
    )
    ax.grid(axis="y", alpha=0.3)
    return figure


def _sex_by_dx(frame: pd.DataFrame) -> Figure:
    counts = pd.crosstab(frame["dx"], frame["sex"], dropna=False)
    shares = counts.div(counts.sum(axis=1).clip(lower=1), axis=0)
    figure = Figure(figsize=(10, 4.5), dpi=DPI, layout="constrained")
    ax = figure.subplots()
    y, left = np.arange(len(shares)), np.zeros(len(shares))
    for sex in shares.columns:
        bars = ax.barh(y, shares[sex], left=left, label=sex, color=_SEX_COLORS.get(sex))
        ax.bar_label(bars, labels=[f"{v:.0%}" if v >= 0.05 else "" for v in shares[sex]], label_type="center")
        left += shares[sex].to_numpy()
    ax.set_yticks(y, [f"{dx} (n={n:,})" for dx, n in counts.sum(axis=1).items()])
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.xaxis.set_major_formatter("{x:.0%}")
    ax.set(xlabel="share of the diagnosis' images", title="Sex by diagnosis")
    ax.legend(ncols=len(shares.columns), loc="upper center", bbox_to_anchor=(0.5, -0.15), frameon=False)
    return figure


def _localization_by_dx(frame: pd.DataFrame) -> Figure:
    counts = pd.crosstab(frame["dx"], frame["localization"], dropna=False)
    shares = counts.div(counts.sum(axis=1).clip(lower=1), axis=0)
    figure = Figure(figsize=(13, 5.5), dpi=DPI, layout="constrained")
    ax = figure.subplots()
    image = ax.imshow(shares.to_numpy(), cmap="Blues", vmin=0, vmax=max(shares.to_numpy().max(), 0.01), aspect="auto")
    figure.colorbar(image, ax=ax, label="share of the diagnosis' images", format="{x:.0%}")
    for (i, j), share in np.ndenumerate(shares.to_numpy()):
        if counts.iat[i, j]:
            color = "white" if share > image.norm.vmax / 2 else "black"
            ax.text(
                j, i, f"{share:.0%}" if share >= 0.01 else "<1%", ha="center", va="center", fontsize=8, color=color
            )
    ax.set_xticks(range(shares.shape[1]), shares.columns.astype(str), rotation=40, ha="right")
    ax.set_yticks(range(shares.shape[0]), [f"{dx} (n={n:,})" for dx, n in counts.sum(axis=1).items()])
    ax.set(
        xlabel="localization (body site)", ylabel="diagnosis", title="Body site by diagnosis (each row sums to 100%)"
    )
    return figure


def _categories(series: pd.Series) -> list:
    return list(series.cat.categories) if isinstance(series.dtype, pd.CategoricalDtype) else sorted(series.unique())


# ---------------------------------------------------------------------------------------------------------------
# Evaluation figures


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

    from .metrics import sensitivity_at_specificity

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
    from .metrics import ECE_BINS, expected_calibration_error, reliability_bins

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
            texts = ax.bar_label(
                bars, labels=["n/a" if np.isnan(v) else f"{v:.2f}" for v in values], padding=2, fontsize=7
            )
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
        f"per subgroup\npale bars: fewer than {min_n} images, too few to judge; n/a: no malignant image in the group",
        fontsize=10,
    )
    return figure


def plot_subgroups(tables: dict[str, list[dict]], overall: dict, path: str | Path, min_n: int = 30) -> Path:
    """Writes `subgroup_figure(tables, overall, min_n)` as a PNG to `path` and returns `path`."""
    return _save(subgroup_figure(tables, overall, min_n=min_n), Path(path))


def training_curves_figure(
    histories: dict[str, list[dict]],
    best_epochs: dict[str, float] | None = None,
    reference_accuracy: float | None = None,
) -> Figure:
    """The study's figure done right: per epoch and per run, balanced accuracy and accuracy on the training sample
    (`train_sample_*`, logged by `TrainSampleMetrics`: a fixed sample of the training split, not augmented) and on
    validation, one panel each; the losses beside them. One colour per run; solid = validation, dotted = training.

    Args:
        histories (`dict[str, list[dict]]`): run name -> the Trainer's `log_history` (`trainer_state.json`).
        best_epochs (`dict[str, float]`, *optional*): run name -> epoch of the kept (best) checkpoint, starred.
        reference_accuracy (`float`, *optional*):
            Validation accuracy of always answering the most frequent class, drawn as a grey line on the accuracy
            panel: the accuracy a useless model reaches on HAM10000.
    """
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    best_epochs = best_epochs or {}
    figure = Figure(figsize=(16, 5.6), dpi=DPI, layout="constrained")
    balanced, accuracy, loss = figure.subplots(1, 3, width_ratios=[5, 5, 4])
    colors = [_RUN_COLORS[k % len(_RUN_COLORS)] for k in range(len(histories))]
    any_train = False
    for color, (name, history) in zip(colors, histories.items()):
        for axis, metric in ((balanced, "balanced_accuracy"), (accuracy, "accuracy")):
            for prefix, style in (("eval", {"marker": "o", "markersize": 4}), ("train_sample", {"ls": ":"})):
                points = [(e["epoch"], e[f"{prefix}_{metric}"]) for e in history if f"{prefix}_{metric}" in e]
                if points:
                    axis.plot(*zip(*points), color=color, **style)
                    any_train |= prefix == "train_sample"
        best = best_epochs.get(name)
        at = [e for e in history if e.get("epoch") == best and "eval_balanced_accuracy" in e]
        if at:
            star = {"marker": "*", "markersize": 16, "color": color, "mec": "black", "ls": "none"}
            balanced.plot(best, at[0]["eval_balanced_accuracy"], **star)
        train_losses = [(e["epoch"], e["loss"]) for e in history if "loss" in e and "train_runtime" not in e]
        eval_losses = [(e["epoch"], e["eval_loss"]) for e in history if "eval_loss" in e]
        for points, style in ((train_losses, "-"), (eval_losses, ":")):
            if points:
                loss.plot(*zip(*points), color=color, ls=style)
    if reference_accuracy is not None:
        accuracy.axhline(reference_accuracy, color="#777777", linestyle=(0, (1, 3)), linewidth=1.5)
        accuracy.annotate(
            f"always answering the commonest class: {reference_accuracy:.2f}",
            (0, reference_accuracy),
            xycoords=("axes fraction", "data"),
            xytext=(4, 4),
            textcoords="offset points",
            fontsize=8,
            color="#555555",
        )
    run_handles = [Line2D([], [], color=c, linewidth=3, label=name) for c, name in zip(colors, histories)]
    style_handles = [Line2D([], [], color="black", marker="o", markersize=4, label="validation")]
    if any_train:
        style_handles.append(Line2D([], [], color="black", ls=":", label="training sample (not augmented)"))
    style_handles.append(
        Line2D([], [], color="black", marker="*", markersize=12, ls="none", mec="black", label="kept checkpoint")
    )
    balanced.legend(handles=run_handles + style_handles, fontsize=8, loc="lower right", framealpha=0.9)
    for axis in (balanced, accuracy, loss):
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
    balanced.set(xlabel="epoch", ylabel="balanced accuracy (mean per-class recall)", ylim=(0, 1))
    balanced.set_title("Balanced accuracy")
    accuracy.set(xlabel="epoch", ylabel="accuracy", ylim=(0, 1), title="Accuracy")
    loss.legend(
        handles=[
            Line2D([], [], color="black", label="training loss (augmented, resampled batches)"),
            Line2D([], [], color="black", ls=":", label="validation loss"),
        ],
        fontsize=8,
        loc="best",
    )
    loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="Loss")
    figure.suptitle(
        "Training runs compared per epoch: accuracy rewards predicting the common nevus class; "
        "balanced accuracy (mean per-class recall) does not",
        fontsize=11,
    )
    return figure


def plot_training_curves(
    histories: dict[str, list[dict]],
    path: str | Path,
    best_epochs: dict[str, float] | None = None,
    reference_accuracy: float | None = None,
) -> Path:
    """Writes `training_curves_figure(histories, best_epochs, reference_accuracy)` as a PNG to `path`."""
    return _save(training_curves_figure(histories, best_epochs, reference_accuracy), Path(path))


_RUN_COLORS = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C"]


def _class_colors(label_names: list[str]) -> dict[str, str]:
    """Fixed colours per HAM10000 class (melanoma red) so every figure reads the same; others from tab10."""
    fixed = {"akiec": "#8172B3", "bcc": "#DD8452", "bkl": "#937860", "df": "#55A868", "mel": "#C44E52"}
    fixed |= {"nv": "#4C72B0", "vasc": "#DA8BC3"}
    spare = iter(_RUN_COLORS)
    return {name: fixed.get(name) or next(spare, "#333333") for name in label_names}
