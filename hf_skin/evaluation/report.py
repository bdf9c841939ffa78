"""`report.md`: what a reader needs to judge a checkpoint from one evaluation's metrics (see `evaluate_checkpoint`):
the headline with its intervals, calibration, the referral threshold, per class, figures, subgroups, and what the
numbers do not say."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..data import is_synthetic, training_data_sentence
from ..formatting import MISSING, markdown_table, metric_name, number
from ..labels import DX_NAMES, MALIGNANT_DX
from .scoring import MIN_SUBGROUP_SIZE, wilson_interval
from .writers import ISIC_FILES

FIGURES = {
    "confusion_matrix": "confusion_matrix.png",
    "confusion_matrix_normalized": "confusion_matrix_normalized.png",
    "roc_curves": "roc_curves.png",
    "reliability_diagram": "reliability_diagram.png",
    "subgroups": "subgroups.png",
}
TRANSFER_NOTE = (
    "HAM10000 consists of dermatoscopic images (taken through a dermatoscope, with magnification and polarised "
    "light) of pigmented lesions from two clinics, in Vienna and Queensland, of mostly fair-skinned patients; the "
    "class mix of its test split is not the mix a clinic or a screening programme sees. These numbers say how the "
    "model does on more of the same. They do **not** transfer to smartphone or other clinical (non-dermatoscopic) "
    "photos, to other cameras and dermatoscopes, to darker skin types, or to lesions HAM10000 does not cover. A model "
    "that should be used elsewhere has to be tested there. Research software: not a medical device, not a diagnosis."
)


def _interval_text(metrics: dict, key: str) -> str:
    interval = ((metrics.get("bootstrap") or {}).get("intervals") or {}).get(key)
    return MISSING if interval is None else f"{number(interval[0])}–{number(interval[1])}"


def bootstrap_note(bootstrap: dict | None) -> str:
    """The paragraph under the headline table that says what its intervals are (and are not)."""
    if bootstrap is None:
        return "No intervals: evaluated with `--bootstrap_resamples 0`.\n"
    settings = (
        f"{bootstrap['num_resamples']:,} resamples, seed {bootstrap['seed']} (the same seed gives the same intervals)"
    )
    if bootstrap["resampled"] == "lesion":
        note = (
            f"95% intervals: percentile bootstrap over the split's {bootstrap['n_lesions']:,} lesions "
            f"({bootstrap['n_images']:,} images), {settings}. Each resample draws {bootstrap['n_lesions']:,} lesions "
            "with replacement and keeps all the images of each: the images of one lesion are not independent evidence."
        )
    else:
        note = (
            f"95% intervals: percentile bootstrap over the {bootstrap['n_images']:,} images one by one, {settings}. "
            "The data has no `lesion_id`, so the images of one lesion count as independent: the intervals are too "
            "narrow wherever a lesion has several images."
        )
    note += (
        " The intervals say how much a number would move with another draw of lesions like these; they say nothing "
        "about other clinics, cameras or training runs."
    )
    undefined = [f"{metric_name(name)} in {count:,}" for name, count in bootstrap["undefined"].items() if count]
    if undefined:
        note += (
            f" Resamples that left a metric undefined (no image of a class drawn), left out: {', '.join(undefined)}."
        )
    return note + "\n"


def _fitted_on(fitted_on: dict | None) -> str:
    fitted_on = fitted_on or {}
    where = " ".join(f"`{fitted_on[key]}`" for key in ("dataset",) if fitted_on.get(key))
    split = fitted_on.get("split")
    n = f", {fitted_on['n']:,} images" if fitted_on.get("n") else ""
    return f"the {split} split of {where}{n}" if split and where else f"validation images{n}"


def calibration_section(metrics: dict) -> str:
    """The report's calibration section: the checkpoint's calibration and its scores before and after."""
    calibration = metrics.get("calibration")
    if calibration is None:
        return (
            "\n## Calibration\n\nThis checkpoint is not calibrated: its probabilities are the raw model's (its ECE "
            "is above, its reliability diagram below). `scripts/calibrate.py` fits a calibration on validation "
            "images without retraining.\n"
        )
    scores, before = calibration["scores"], calibration["before"]
    method = calibration["method"]
    fitted_on = calibration.get("fitted_on") or {}
    dataset_name = Path(os.fspath(metrics.get("dataset", "")).rstrip("/")).name
    in_sample = fitted_on.get("split") == metrics.get("split") and fitted_on.get("dataset") == dataset_name
    how = {
        "prior": "the prior shift that undoes training's class rebalancing",
        "temperature": f"a temperature of {calibration['temperature']:.3f}",
        "prior+temperature": f"the prior shift that undoes training's class rebalancing and a temperature of "
        f"{calibration['temperature']:.3f}",
        "none": "nothing (method none)",
    }[method]
    rows = [
        [metric_name("nll"), number(scores["nll_before"], 4), number(scores["nll_after"], 4), "lower is better"],
        [metric_name("brier"), number(scores["brier_before"], 4), number(scores["brier_after"], 4), "lower is better"],
        [metric_name("ece"), number(scores["ece_before"]), number(scores["ece_after"]), "lower is better"],
        *(
            [metric_name(key), number(before[key]), number(metrics[key]), note]
            for key, note in (("accuracy", "top-class decisions change too"), ("balanced_accuracy", ""))
        ),
    ]
    return (
        "\n## Calibration\n\n"
        f"Every probability in this report is the calibrated checkpoint's: {how} (`{method}`), fitted on "
        f"{_fitted_on(calibration['fitted_on'])}, never on test. {calibration['description']} The raw model "
        "(calibration undone) on the same images:\n\n"
        + markdown_table(["on these images", "raw model", "calibrated", ""], rows, align="lrrl")
        + "\n\n"
        + (
            "Undoing the rebalancing's shift moves probability back to the common classes: accuracy usually rises "
            "and balanced accuracy, which weighs the rare classes as much as nevi, can fall. "
            if "prior" in method and calibration.get("balance", "none") != "none"
            else ""
        )
        + (
            "The temperature and the threshold were fitted on single images; here they apply to probabilities "
            "averaged over the 8 TTA views, which are less sure, so the calibration holds less exactly. "
            if metrics.get("tta")
            else ""
        )
        + (
            "**These are the images the calibration was fitted on**: the calibrated scores are in-sample and "
            "flatter than they would be on new images. "
            if in_sample
            else ""
        )
        + "The reliability diagram shows both models.\n"
    )


def referral_section(metrics: dict) -> str:
    """The report's section on the checkpoint's referral threshold, scored on the evaluated images."""
    point = metrics.get("operating_point")
    if point is None:
        return ""
    validation = point["validation"]
    sens_lo, sens_hi = point["sensitivity_interval"]
    spec_lo, spec_hi = point["specificity_interval"]
    rows = [
        [
            "these images",
            f"{number(point['sensitivity'])} ({number(sens_lo)}–{number(sens_hi)})",
            f"{number(point['specificity'])} ({number(spec_lo)}–{number(spec_hi)})",
            f"{point['n_malignant']:,} / {point['n_benign']:,}",
        ],
        ["validation (where it was chosen)", number(validation["sensitivity"]), number(validation["specificity"]), ""],
    ]
    return (
        '\n## Referral threshold: "see a dermatologist"\n\n'
        f"The checkpoint advises a dermatologist when its probability of a malignant class (akiec, bcc, mel) is at "
        f"least **{point['threshold']:.2%}**, the threshold chosen on validation images to flag at least "
        f"{point['target_sensitivity']:.0%} of malignant lesions. Sensitivity: the share of malignant images it "
        "flags; specificity: the share of benign ones it does not (95% Wilson intervals).\n\n"
        + markdown_table(["", "sensitivity", "specificity", "malignant / benign images"], rows, align="lrrr")
        + "\n"
    )


def _provenance(metrics: dict) -> str:
    """What the model learned from and what it is scored on, said truly (older metrics.json files say neither)."""
    if "training_data" not in metrics:
        return ""
    scored = metrics.get("evaluated_data")
    scored_text = (
        "synthetic lesions drawn by hf-skin (not real skin)" if is_synthetic(scored) else f"`{metrics['dataset']}`"
    )
    learned = training_data_sentence(metrics["training_data"])
    return f"**What it learned from.** {learned} Scored here on {scored_text}.\n\n"


def _transfer_note(evaluated_data: dict | None) -> str:
    if is_synthetic(evaluated_data):
        return (
            "These images are synthetic: the numbers say how the model does on hf-skin's drawn lesions, and nothing "
            "about real skin. Research software: not a medical device, not a diagnosis."
        )
    return TRANSFER_NOTE


def render_report(metrics: dict, overall: dict | None = None) -> str:
    """`report.md` from the metrics `evaluate_checkpoint` returns; `overall` (`group_scores` of every image) is the
    last row of each subgroup table."""
    per_class = metrics["per_class"]
    label_names = list(per_class)
    cm = np.asarray(metrics["confusion_matrix"])
    n = int(cm.sum())
    commonest = label_names[int(cm.sum(axis=1).argmax())]
    majority = cm.sum(axis=1).max() / max(n, 1)
    tta = ", test-time augmentation (8 flips/rotations averaged)" if metrics.get("tta") else ""
    meaning = {
        "accuracy": f"share of images classified correctly; always answering '{commonest}' would score "
        f"{majority:.3f} here",
        "balanced_accuracy": f"mean recall over the classes (ISIC 2018's ranking metric); chance is "
        f"{1 / max(1, int((cm.sum(axis=1) > 0).sum())):.3f}",
        "f1_macro": "F1 averaged over classes, each counting the same",
        "f1_weighted": "F1 averaged over images (dominated by nv)",
        "auc_macro": "one-vs-rest ranking quality, 0.5 = chance",
        **{
            f"mel_sensitivity_at_spec{spec}": "share of melanomas caught with a threshold on the melanoma "
            f"probability that clears {spec}% of non-melanomas"
            for spec in (90, 80)
        },
        "ece": "gap between confidence and accuracy (0 = the probabilities can be taken at face value)",
    }
    headline = []
    for key, how in meaning.items():
        name, value = metric_name(key), number(metrics.get(key))
        if key == "balanced_accuracy":  # the ranking metric stands out
            name, value = f"**{name}**", f"**{value}**"
        headline.append([name, value, _interval_text(metrics, key), how])
    out = [
        f"# Evaluation of `{metrics['model']}`\n\n",
        f"On `{metrics['dataset']}`, **{metrics['split']}** split: {n:,} images{tta}. "
        f"Model inputs: image{''.join(', ' + f for f in metrics.get('metadata_fields', []))}.\n\n",
        _provenance(metrics),
        "> **What this does not tell you.** " + _transfer_note(metrics.get("evaluated_data")) + "\n\n",
        "## Headline\n\n",
        markdown_table(["metric", "value", "95% interval", "how to read it"], headline, align="lrrl") + "\n\n",
        bootstrap_note(metrics.get("bootstrap")),
        calibration_section(metrics),
        referral_section(metrics),
        "\n## Per class\n\n",
        "Sensitivity is the recall: the share of the class's images found. Intervals are 95% Wilson intervals; "
        "wide ones mean too few images to be sure.\n\n",
    ]
    rows = []
    for i, name in enumerate(label_names):
        m = per_class[name]
        support, found = int(m["support"]), int(cm[i, i])
        negatives = n - support
        true_neg = round(m["specificity"] * negatives)
        sens_lo, sens_hi = wilson_interval(found, support)
        spec_lo, spec_hi = wilson_interval(true_neg, negatives)
        rows.append(
            [
                f"{name}{' ⚠' if name in MALIGNANT_DX else ''}",
                DX_NAMES.get(name, name),
                f"{support:,}",
                f"{number(m['recall'] if support else None)} ({number(sens_lo)}–{number(sens_hi)})",
                f"{number(m['specificity'])} ({number(spec_lo)}–{number(spec_hi)})",
                number(m["precision"]),
                number(m["f1"]),
                number(m["auc"]),
            ]
        )
    out.append(
        markdown_table(
            ["class", "diagnosis", "images", "sensitivity (95% CI)", "specificity (95% CI)", "precision", "F1", "AUC"],
            rows,
            align="llrrrrrr",
        )
        + "\n"
    )
    out.append("\n⚠ malignant (akiec is an in-situ carcinoma or its precursor).\n")
    out += [
        "\n## Figures\n\n",
        "| confusion matrix | row-normalised (diagonal = sensitivity) |\n| --- | --- |\n",
        f"| ![confusion matrix]({FIGURES['confusion_matrix']}) "
        f"| ![row-normalised confusion matrix]({FIGURES['confusion_matrix_normalized']}) |\n\n",
        "| ROC curves, one class against the rest | reliability of the predicted probability |\n| --- | --- |\n",
        f"| ![ROC curves]({FIGURES['roc_curves']}) | ![reliability diagram]({FIGURES['reliability_diagram']}) |\n\n",
        "Files: " + ", ".join(f"[{f}]({f})" for f in FIGURES.values()) + ", [metrics.json](metrics.json), "
        "[predictions.csv](predictions.csv)"
        + (
            f"; in the ISIC 2018 Task 3 format, for the challenge's scorer: "
            f"[{ISIC_FILES['predictions']}]({ISIC_FILES['predictions']}) and "
            f"[{ISIC_FILES['ground_truth']}]({ISIC_FILES['ground_truth']}) (the scorer gives the balanced accuracy "
            "and AUCs above; its per-class sensitivity and specificity call a class when its probability is above "
            "0.5, not when it is the top class as in the table above, and so differ from them)"
            if metrics.get("isic_files")
            else ""
        )
        + ".\n",
        "\n## Subgroups: does the model fail a group?\n\n",
        f"Malignant recall: the share of akiec/bcc/mel images predicted as any of the three (flagged for a doctor). "
        f"Groups with fewer than {MIN_SUBGROUP_SIZE} images are marked *too few*: their numbers swing with a "
        "single image and should not be read as a difference; read each recall with its count of images beside it. "
        "Balanced accuracy is over the classes present in the group. A dash: no image of that kind in the group.\n\n",
        f"![subgroups]({FIGURES['subgroups']})\n",
    ]
    header = ["group", "images", "accuracy", "balanced accuracy", "melanoma recall (n)", "malignant recall (n)"]

    def row(name, s):
        flag = " *too few*" if s["n"] < MIN_SUBGROUP_SIZE else ""
        return [
            f"{name}{flag}",
            f"{s['n']:,}",
            number(s["accuracy"]),
            number(s["balanced_accuracy"]),
            f"{number(s['mel_recall'])} ({s['n_mel']})",
            f"{number(s['malignant_recall'])} ({s['n_malignant']})",
        ]

    for grouping, groups in metrics.get("subgroups", {}).items():
        rows = [row(g["group"], g) for g in groups]
        if overall is not None:
            rows.append(row("**all**", overall))
        out += [f"\n### By {grouping}\n\n", markdown_table(header, rows) + "\n"]
    return "".join(out)
