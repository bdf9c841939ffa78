"""The data-analysis figures: what HAM10000's metadata holds per diagnosis and split, read without decoding images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from datasets import ClassLabel, Dataset, DatasetDict
from matplotlib.figure import Figure

from .style import _SEX_COLORS, _SPLIT_COLORS, DPI, _dx_name, _save

ANALYSIS_COLUMNS = ("lesion_id", "dx", "dx_type", "age", "sex", "localization")
# Columns where a value can be missing, and the value HAM10000 uses for "not recorded" (None: a null).
MISSING_MARKERS = {"age": None, "sex": "unknown", "localization": "unknown"}


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
