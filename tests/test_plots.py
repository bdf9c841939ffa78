import numpy as np
import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, Value
from PIL import Image as PILImage

from hf_skin.formatting import MISSING
from hf_skin.labels import DX_LABELS, LOCALIZATION_LABELS, SEX_LABELS
from hf_skin.plots import (
    confusion_matrix_figure,
    data_analysis_figures,
    metadata_frame,
    missing_counts,
    plot_confusion_matrix,
    plot_data_analysis,
)

FEATURES = Features(
    {
        "image": Image(),
        "lesion_id": Value("string"),
        "dx": ClassLabel(names=DX_LABELS),
        "age": Value("float32"),
        "sex": ClassLabel(names=SEX_LABELS),
        "localization": ClassLabel(names=LOCALIZATION_LABELS),
    }
)


def _split(rows: list[tuple[str, float | None, str, str]], prefix: str) -> Dataset:
    """rows of (dx, age, sex, localization); the image bytes are not an image: decoding one would raise."""
    return Dataset.from_dict(
        {
            "image": [{"bytes": b"not an image", "path": None}] * len(rows),
            "lesion_id": [f"{prefix}_{i // 2}" for i in range(len(rows))],
            "dx": [DX_LABELS.index(dx) for dx, *_ in rows],
            "age": [age for _, age, *_ in rows],
            "sex": [SEX_LABELS.index(sex) for _, _, sex, _ in rows],
            "localization": [LOCALIZATION_LABELS.index(loc) for *_, loc in rows],
        },
        features=FEATURES,
    )


@pytest.fixture
def tiny_ham() -> DatasetDict:
    train = [("nv", 40.0, "male", "back")] * 6 + [("mel", None, "female", "face"), ("mel", 70.0, "unknown", "back")]
    train += [("df", 35.0, "female", "unknown"), ("bcc", 80.0, "male", "face")]
    test = [("nv", 30.0, "female", "back"), ("nv", None, "female", "unknown"), ("mel", 60.0, "male", "trunk")]
    return DatasetDict({"train": _split(train, "tr"), "test": _split(test, "te")})


def test_metadata_frame_keeps_label_order_and_splits(tiny_ham):
    frame = metadata_frame(tiny_ham)
    assert list(frame["dx"].cat.categories) == DX_LABELS  # empty classes stay, in canonical order
    assert frame.groupby("split", observed=False).size().to_dict() == {"train": 10, "test": 3}
    assert "image" not in frame
    assert (metadata_frame(tiny_ham["test"])["split"] == "all").all()


def test_missing_counts(tiny_ham):
    missing = missing_counts(metadata_frame(tiny_ham))
    assert missing.loc["age"].to_dict() == {"train": 1, "test": 1}
    assert missing.loc["sex"].to_dict() == {"train": 1, "test": 0}
    assert missing.loc["localization"].to_dict() == {"train": 1, "test": 1}


def test_data_analysis_figures_draw_the_data(tiny_ham):
    figures = data_analysis_figures(tiny_ham)
    assert set(figures) == {"class_counts", "age_by_dx", "sex_by_dx", "localization_by_dx", "missing_values"}

    bars = {c.get_label(): list(c.datavalues) for c in figures["class_counts"].axes[0].containers}
    train_bars, test_bars = (next(v for k, v in bars.items() if k.startswith(split)) for split in ("train", "test"))
    assert train_bars == [0, 1, 0, 1, 2, 6, 0]  # akiec bcc bkl df mel nv vasc
    assert test_bars == [0, 0, 0, 0, 1, 2, 0]

    shares = figures["localization_by_dx"].axes[0].images[0].get_array()
    nonempty = [DX_LABELS.index(dx) for dx in ("bcc", "df", "mel", "nv")]
    np.testing.assert_allclose(shares[nonempty].sum(axis=1), 1.0)
    assert shares[DX_LABELS.index("nv"), LOCALIZATION_LABELS.index("back")] == pytest.approx(7 / 8)

    sex_ax = figures["sex_by_dx"].axes[0]
    widths = np.array([[bar.get_width() for bar in c] for c in sex_ax.containers])  # (sex, dx)
    np.testing.assert_allclose(widths[:, nonempty].sum(axis=0), 1.0)
    assert widths[SEX_LABELS.index("female"), DX_LABELS.index("mel")] == pytest.approx(1 / 3)

    # one box per diagnosis, over the ages present (missing ages left out and counted in the title)
    age_ax = figures["age_by_dx"].axes[0]
    ticks = [t.get_text() for t in age_ax.get_xticklabels()]
    assert ticks == [f"{dx}\nn={n}" for dx, n in zip(DX_LABELS, [0, 1, 0, 1, 2, 7, 0])]
    assert "2 images without age" in age_ax.get_title()


def test_plot_data_analysis_writes_readable_pngs(tiny_ham, tmp_path):
    paths = plot_data_analysis(tiny_ham, tmp_path / "plots", log_scale=True)
    assert {p.name for p in paths.values()} == {f"{name}.png" for name in paths}
    for path in paths.values():
        assert path.parent == tmp_path / "plots"
        with PILImage.open(path) as png:
            assert png.format == "PNG"
            assert png.width >= 800 and png.height >= 300  # sized to be read, not a thumbnail


def test_confusion_matrix_normalised_rows_are_recall():
    cm = np.array([[8, 2, 0], [1, 3, 0], [0, 0, 0]])
    figure = confusion_matrix_figure(cm, ["mel", "nv", "vasc"], normalize=True)
    ax = figure.axes[0]
    drawn = ax.images[0].get_array()
    np.testing.assert_allclose(drawn.sum(axis=1), [1.0, 1.0, 0.0])  # a class without samples stays 0, no NaN
    np.testing.assert_allclose(np.diag(drawn), [0.8, 0.75, 0.0])
    texts = [t.get_text() for t in ax.texts]
    assert texts[:3] == ["0.80", "0.20", "0.00"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["mel (n=10)", "nv (n=4)", "vasc (n=0)"]
    assert ax.get_xlabel() == "Predicted label" and ax.get_ylabel() == "True label"


def test_confusion_matrix_counts_and_png(tmp_path):
    cm = np.array([[5, 1], [2, 7]])
    ax = confusion_matrix_figure(cm, ["a", "b"], title="Test set").axes[0]
    assert [t.get_text() for t in ax.texts] == ["5", "1", "2", "7"]
    assert ax.get_title() == "Test set"
    path = plot_confusion_matrix(cm, ["a", "b"], tmp_path / "cm" / "confusion.png", normalize=True)
    with PILImage.open(path) as png:
        assert png.format == "PNG" and png.width >= 300


def test_confusion_matrix_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match=r"shape \(2, 2\) but 3 labels"):
        confusion_matrix_figure(np.eye(2), ["a", "b", "c"])


def _drawn(figure):
    """The figure laid out and drawn (as savefig would), and its renderer, to measure what lands where."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return canvas.get_renderer()


def assert_keys_clear_of_data(figure):
    """Every legend lies inside the figure (not clipped) and outside every panel that shows data."""
    renderer = _drawn(figure)
    legends = [*figure.legends, *(ax.get_legend() for ax in figure.axes if ax.get_legend() is not None)]
    assert legends, "the figure has no key"
    panels = [ax for ax in figure.axes if ax.axison and (ax.lines or ax.patches or ax.collections)]
    assert panels
    page = figure.bbox
    for legend in legends:
        box = legend.get_window_extent(renderer)
        assert page.x0 <= box.x0 and box.x1 <= page.x1 and page.y0 <= box.y0 and box.y1 <= page.y1, "key clipped"
        for ax in panels:
            title = ax.get_title() or ax.get_title(loc="left")
            assert not box.overlaps(ax.get_window_extent(renderer)), f"the key covers the panel {title!r}"


def test_roc_curves_give_each_class_a_panel_of_its_own():
    from sklearn.metrics import roc_auc_score

    from hf_skin.plots import roc_curves_figure

    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 4, 5], [10, 12, 15, 40])  # no bkl, df or vasc
    probs = rng.dirichlet(np.ones(7), size=len(labels))
    probs[labels == 4, 4] += 0.5
    figure = roc_curves_figure(labels, probs, DX_LABELS)
    panels = {ax.get_title().split(":")[0]: ax for ax in figure.axes if ax.axison}
    assert list(panels) == DX_LABELS  # one panel per class, in label order
    mel_auc = roc_auc_score(labels == 4, probs[:, 4])
    assert panels["mel"].get_title() == f"mel: AUC {mel_auc:.2f}\nMelanoma\n15 images"
    assert panels["vasc"].get_title() == "vasc: no curve\nVascular lesion\n0 images"
    assert not panels["vasc"].lines and [t.get_text() for t in panels["vasc"].texts] == [
        "no image of this class:\nno ROC curve"
    ]
    for name in ("akiec", "bcc", "mel", "nv"):
        ax = panels[name]
        own = [line for line in ax.lines if line.get_label().startswith(f"{name}: AUC")]
        assert len(own) == 1, f"{name}'s panel draws {len(own)} curves of its own"
        # the class's curve lies on top, in colour; the other classes' curves are grey context beneath it
        others = [line for line in ax.lines if line is not own[0] and len(line.get_xdata()) > 2]
        assert len(others) == 3
        curves = [line for line in ax.lines if line is not own[0] and line.get_linestyle() != "None"]  # not markers
        assert all(line.get_zorder() < own[0].get_zorder() for line in curves)
        assert all(line.get_color() == "#C8C8C8" for line in others) and own[0].get_color() != "#C8C8C8"
        assert own[0].get_xdata()[0] == 0 and own[0].get_ydata()[-1] == 1  # a ROC curve from (0, 0) to (1, 1)
    legend = [t.get_text() for t in figure.axes[len(DX_LABELS)].get_legend().get_texts()]
    assert any(t.startswith("melanoma at 90%\nspecificity: sensitivity") for t in legend)
    assert_keys_clear_of_data(figure)


def test_reliability_diagram_bars_are_bin_accuracies():
    from hf_skin.metrics import expected_calibration_error
    from hf_skin.plots import reliability_diagram_figure

    # 10 images at confidence 0.95 (6 right), 10 at 0.55 (5 right)
    labels = np.array([0] * 6 + [1] * 4 + [0] * 5 + [1] * 5)
    probs = np.array([[0.95, 0.05]] * 10 + [[0.55, 0.45]] * 10)
    figure = reliability_diagram_figure(labels, probs, num_bins=10)
    ax, hist = figure.axes
    accuracy_bars = ax.containers[0]
    assert [round(bar.get_height(), 6) for bar in accuracy_bars] == [0.5, 0.6]
    assert [round(bar.get_x() + bar.get_width() / 2, 6) for bar in accuracy_bars] == [0.55, 0.95]
    gaps = ax.containers[1]
    assert [round(bar.get_height(), 6) for bar in gaps] == [0.05, 0.35]  # confidence - accuracy
    assert f"ECE = {expected_calibration_error(labels, probs, 10):.3f}" in ax.get_title()
    assert "ECE = 0.200" in ax.get_title()  # (0.05 + 0.35) / 2
    # the counts stand over the count panel's bars, where no line or point of the upper panel can cover them
    assert [t.get_text() for t in hist.texts] == ["10", "10"]
    assert not [t for t in ax.texts if t.get_text().isdigit()]
    assert sum(bar.get_height() for bar in hist.containers[0]) == 20
    assert_keys_clear_of_data(figure)


def test_reliability_diagram_key_shows_the_red_box_even_when_no_bin_is_over_confident():
    from matplotlib.colors import to_rgba

    from hf_skin.plots import reliability_diagram_figure

    labels = np.array([0] * 10 + [1] * 10)  # every image right: no bin over-confident, no red box drawn
    probs = np.array([[0.95, 0.05]] * 10 + [[0.45, 0.55]] * 10)
    before = np.array([[0.99, 0.01]] * 10 + [[0.2, 0.8]] * 10)
    figure = reliability_diagram_figure(labels, probs, num_bins=10, before=before)
    assert len(figure.axes[0].containers[1]) == 0
    (legend,) = figure.legends
    entries = dict(zip((t.get_text() for t in legend.get_texts()), legend.legend_handles))
    box = next(handle for text, handle in entries.items() if text.startswith("over-confidence"))
    assert box.get_facecolor() == pytest.approx(to_rgba("#C44E52", 0.35))
    assert any(text.startswith("before calibration (ECE 0.") for text in entries)
    assert_keys_clear_of_data(figure)


def test_training_curves_draw_train_and_validation_per_run_and_epoch(tmp_path):
    from hf_skin.plots import plot_training_curves, training_curves_figure

    def history(balanced, accuracy, losses, train_sample=True):
        log = []
        for epoch, (b, a, loss) in enumerate(zip(balanced, accuracy, losses), start=1):
            log.append({"epoch": float(epoch), "loss": loss, "step": epoch * 10})
            log.append(
                {"epoch": float(epoch), "eval_balanced_accuracy": b, "eval_accuracy": a, "eval_loss": loss + 0.3}
            )
            if train_sample:  # TrainSampleMetrics' entry: the training sample scored like validation
                log.append(
                    {
                        "epoch": float(epoch),
                        "train_sample_balanced_accuracy": b + 0.1,
                        "train_sample_accuracy": a + 0.1,
                    }
                )
        log.append({"epoch": 3.0, "train_loss": 1.0, "train_runtime": 5.0, "step": 30})  # the summary: not a point
        return log

    histories = {
        "a": history([0.2, 0.4, 0.5], [0.6, 0.7, 0.72], [1.5, 1.0, 0.8]),
        # a run from before train_sample_*, named by its whole path (two runs with one folder name): the key wraps it
        "/home/someone/experiments/hf-skin/runs/efficientnet_lite0_balanced_sampler_lr3e-4": history(
            [0.3, 0.3], [0.5, 0.6], [2, 1], train_sample=False
        ),
    }
    figure = training_curves_figure(histories, best_epochs={"a": 3.0}, reference_accuracy=0.67)
    balanced, accuracy, loss, key = figure.axes

    def lines(axis):
        return [
            (list(line.get_xdata()), [round(y, 6) for y in line.get_ydata()], line.get_linestyle())
            for line in axis.lines
        ]

    assert ([1.0, 2.0, 3.0], [0.2, 0.4, 0.5], "-") in lines(balanced)  # run a, validation, solid
    assert ([1.0, 2.0, 3.0], [0.3, 0.5, 0.6], ":") in lines(balanced)  # run a, training sample, dotted
    assert ([1.0, 2.0], [0.3, 0.3], "-") in lines(balanced)
    assert ([3.0], [0.5], "None") in lines(balanced)  # the star at the kept checkpoint
    assert ([1.0, 2.0, 3.0], [0.6, 0.7, 0.72], "-") in lines(accuracy)
    assert ([1.0, 2.0, 3.0], [0.7, 0.8, 0.82], ":") in lines(accuracy)
    assert len(lines(balanced)) == 4 and [0.67, 0.67] in [line[1] for line in lines(accuracy)]
    # one style rule in every panel, the loss's included: validation solid with points, training dotted
    assert ([1.0, 2.0, 3.0], [1.5, 1.0, 0.8], ":") in lines(loss)  # training loss, no summary point
    assert ([1.0, 2.0, 3.0], [1.8, 1.3, 1.1], "-") in lines(loss)  # validation loss
    assert all(
        line.get_marker() == "o"
        for axis in (balanced, accuracy, loss)
        for line in axis.lines
        if line.get_linestyle() == "-"
    )
    assert_keys_clear_of_data(figure)
    assert not key.axison and key.get_legend() is not None
    assert "always answering the commonest\nclass: accuracy 0.67" in [
        t.get_text() for t in key.get_legend().get_texts()
    ]
    assert "balanced accuracy" in figure.get_suptitle()
    path = plot_training_curves(histories, tmp_path / "curves.png")
    assert path.stat().st_size > 20_000


def test_subgroup_figure_bars_and_small_groups():
    from hf_skin.plots import subgroup_figure

    rows = [
        {"group": "male", "n": 120, "balanced_accuracy": 0.6, "malignant_recall": 0.8},
        {"group": "unknown", "n": 4, "balanced_accuracy": 0.25, "malignant_recall": None},
    ]
    figure = subgroup_figure({"sex": rows}, {"balanced_accuracy": 0.55, "malignant_recall": 0.7}, min_n=30)
    ax = figure.axes[0]
    balanced, malignant = ax.containers
    assert [bar.get_width() for bar in balanced] == [0.6, 0.25] and [bar.get_width() for bar in malignant] == [0.8, 0]
    assert [bar.get_alpha() for bar in balanced] == [1.0, 0.3]  # too small to judge: pale
    assert [t.get_text() for t in ax.get_yticklabels()] == ["male (n=120)", "unknown (n=4, too few)"]
    assert MISSING in [t.get_text() for t in ax.texts]  # no malignant image in the group: no recall


def test_subgroup_figure_keeps_bars_and_values_uncovered():
    from matplotlib.colors import to_rgba

    from hf_skin.plots import subgroup_figure

    def row(group, n, balanced, malignant):
        return {"group": group, "n": n, "balanced_accuracy": balanced, "malignant_recall": malignant}

    # long bars in a short panel: where an inner key would sit
    tables = {
        "sex": [row("male", 822, 0.95, 0.97), row("female", 660, 0.93, 0.96), row("unknown", 20, 0.99, 1.0)],
        "age band": [row("<30", 156, 0.72, 0.81), row("30–44", 345, 0.70, 0.71), row("≥75", 146, 0.98, 1.0)],
    }
    overall = {"balanced_accuracy": 0.71, "malignant_recall": 0.80}
    figure = subgroup_figure(tables, overall, min_n=30)
    assert_keys_clear_of_data(figure)
    entries = [t.get_text() for t in figure.legends[0].get_texts()]
    assert "balanced accuracy, all images: 0.71" in entries and "malignant recall, all images: 0.80" in entries
    for ax in figure.axes:
        # the dashed lines of all images pass beneath the values written at the bars' ends, each on white
        top_line = max(line.get_zorder() for line in ax.lines)
        for text in ax.texts:
            assert text.get_zorder() > top_line
            assert text.get_bbox_patch() is not None and text.get_bbox_patch().get_facecolor() == to_rgba("white")
