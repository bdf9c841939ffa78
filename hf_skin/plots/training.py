"""The training-curves figure: runs compared per epoch, on validation and on a sample of the training split."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from .style import _RUN_COLORS, DPI, _save


def training_curves_figure(
    histories: dict[str, list[dict]],
    best_epochs: dict[str, float] | None = None,
    reference_accuracy: float | None = None,
) -> Figure:
    """The study's figure done right: per epoch and per run, balanced accuracy and accuracy on the training sample
    (`train_sample_*`, logged by `TrainSampleMetrics`: a fixed sample of the training split, not augmented) and on
    validation, one panel each; the losses below them. One colour per run; in every panel solid with points =
    validation, dotted = training. The key has a cell of its own, clear of every curve.

    Args:
        histories (`dict[str, list[dict]]`): run name -> the Trainer's `log_history` (`trainer_state.json`).
        best_epochs (`dict[str, float]`, *optional*): run name -> epoch of the kept (best) checkpoint, starred.
        reference_accuracy (`float`, *optional*):
            Validation accuracy of always answering the most frequent class, drawn as a grey line on the accuracy
            panel: the accuracy a useless model reaches on HAM10000.
    """
    import textwrap

    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    best_epochs = best_epochs or {}
    figure = Figure(figsize=(11, 8), dpi=DPI, layout="constrained")
    (balanced, accuracy), (loss, key) = figure.subplots(2, 2)
    colors = [_RUN_COLORS[k % len(_RUN_COLORS)] for k in range(len(histories))]
    validation = {"marker": "o", "markersize": 4}
    training = {"ls": ":", "linewidth": 1.5}
    reference = {"color": "#777777", "linestyle": (0, (1, 3)), "linewidth": 1.5}
    any_train = False
    for color, (name, history) in zip(colors, histories.items()):
        for axis, metric in ((balanced, "balanced_accuracy"), (accuracy, "accuracy")):
            for prefix, style in (("eval", validation), ("train_sample", training)):
                points = [(e["epoch"], e[f"{prefix}_{metric}"]) for e in history if f"{prefix}_{metric}" in e]
                if points:
                    axis.plot(*zip(*points), color=color, **style)
                    any_train |= prefix == "train_sample"
        best = best_epochs.get(name)
        at = [e for e in history if e.get("epoch") == best and "eval_balanced_accuracy" in e]
        if at:
            star = {"marker": "*", "markersize": 16, "color": color, "mec": "black", "ls": "none", "zorder": 4}
            balanced.plot(best, at[0]["eval_balanced_accuracy"], **star)
        train_losses = [(e["epoch"], e["loss"]) for e in history if "loss" in e and "train_runtime" not in e]
        eval_losses = [(e["epoch"], e["eval_loss"]) for e in history if "eval_loss" in e]
        for points, style in ((train_losses, training), (eval_losses, validation)):
            if points:
                loss.plot(*zip(*points), color=color, **style)
    if reference_accuracy is not None:
        accuracy.axhline(reference_accuracy, **reference)
    # Run names can be whole paths (two runs with one folder name): wrapped so the key keeps to its cell.
    handles = [
        Line2D([], [], color=c, linewidth=3, label=textwrap.fill(name, 40)) for c, name in zip(colors, histories)
    ]
    handles.append(Line2D([], [], color="black", label="validation", **validation))
    if any_train:
        handles.append(Line2D([], [], color="black", label="training sample (not augmented)", **training))
    handles.append(Line2D([], [], color="black", label="training loss (augmented,\nresampled batches)", **training))
    handles.append(
        Line2D([], [], color="black", marker="*", markersize=12, ls="none", mec="black", label="kept checkpoint")
    )
    if reference_accuracy is not None:
        handles.append(
            Line2D(
                [], [], label=f"always answering the commonest\nclass: accuracy {reference_accuracy:.2f}", **reference
            )
        )
    key.axis("off")
    key.legend(handles=handles, loc="center", fontsize=9, frameon=False, ncols=1 if len(handles) <= 12 else 2)
    for axis in (balanced, accuracy, loss):
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
    balanced.set(xlabel="epoch", ylabel="balanced accuracy\n(mean per-class recall)", ylim=(0, 1))
    balanced.set_title("Balanced accuracy")
    accuracy.set(xlabel="epoch", ylabel="accuracy", ylim=(0, 1), title="Accuracy")
    loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="Loss")
    figure.suptitle(
        "Training runs compared per epoch: accuracy rewards predicting the common nevus class;\n"
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
