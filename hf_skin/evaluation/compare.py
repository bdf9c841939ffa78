"""Comparing runs: one table of several runs' test metrics and their training curves, and for runs scored on the same
images a paired, lesion-level bootstrap interval of each difference (`scripts/compare.py`)."""

from __future__ import annotations

import csv
import logging
import math
import os
from pathlib import Path

import numpy as np

from ..formatting import HEADLINE_METRICS, MISSING, markdown_table, metric_name, number
from ..metrics import BOOTSTRAP_METRICS, BOOTSTRAP_RESAMPLES, bootstrap_intervals, classification_metrics
from ..runs import RunFolder

logger = logging.getLogger(__name__)

# Metrics of the comparison table: the headline ones.
COMPARE_METRICS = HEADLINE_METRICS


def load_run(run_dir: str | os.PathLike) -> dict:
    """A training run (`scripts/finetune.py` output) or an evaluation folder (`scripts/evaluate.py` output).

    Returns:
        `dict`: `metrics` (test metrics, per-class values as `recall_mel`, ...), `per_class` (label -> values, when
        saved), `log_history`, `epochs` and `best_epoch` (training runs), `model_type`, `reference_accuracy`
        (validation accuracy of always answering the commonest class, when known).
    """
    run_dir = Path(run_dir)
    folder = RunFolder(run_dir)
    # A run's test_metrics.json and an evaluation's metrics.json hold the same metrics (`score`'s): one reader.
    scored = folder.test_metrics or folder.read_json("metrics.json")
    if scored is None and folder.all_results is None:
        raise FileNotFoundError(
            f"{run_dir} has no all_results.json / test_metrics.json (a scripts/finetune.py run) nor metrics.json "
            "(a scripts/evaluate.py output): pass the output_dir of a finished run"
        )
    scored = scored or {}  # a run without a test split: its curves, no test metrics
    metrics = {k: v for k, v in scored.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    for name, values in (scored.get("per_class") or {}).items():
        metrics.update({f"{key}_{name}": value for key, value in values.items() if key != "support"})
    run = {"name": run_dir.name, "path": run_dir, "metrics": metrics, "per_class": scored.get("per_class")}
    config = folder.config or {}
    run["model_type"] = config.get("model_type")
    state = folder.trainer_state
    run["log_history"] = state.get("log_history") if state else None
    run["epochs"] = state.get("epoch") if state else None
    run["best_epoch"] = None
    if state and state.get("best_global_step") is not None:
        # The evaluation at the kept checkpoint's step (load_best_model_at_end reloads it for the test metrics).
        evals = [e for e in state["log_history"] if e.get("step") == state["best_global_step"] and "eval_loss" in e]
        run["best_epoch"] = evals[0]["epoch"] if evals else None
    validation = folder.validation_metrics
    if validation:
        support = [v["support"] for v in validation["per_class"].values()]
        run["reference_accuracy"] = max(support) / max(sum(support), 1)
    else:
        run["reference_accuracy"] = None
    return run


def compare_runs(
    run_dirs: list[str | os.PathLike],
    output_dir: str | os.PathLike = "runs/compare",
    *,
    bootstrap_resamples: int = BOOTSTRAP_RESAMPLES,
    bootstrap_seed: int = 0,
    return_pairs: bool = False,
) -> list[dict] | tuple[list[dict], list[dict]]:
    """One table of the runs' test metrics and per-class recalls, their training curves on one figure, and for each
    pair of runs scored on the same images a paired bootstrap interval of each headline metric's difference.

    Writes `comparison.csv`, `comparison.md` (best value per metric in bold; then, for each pair in the order given,
    "first − second" with its interval and a sentence saying whether it excludes 0), `paired_differences.csv` (one
    row per pair and metric) and `training_curves.png` (validation accuracy and balanced accuracy per epoch for each
    run, training loss beside it) into `output_dir`.

    The paired intervals come from each run's `predictions.csv` (written by `scripts/evaluate.py`), found by this rule
    (`find_predictions`): the folder's own `predictions.csv` (an evaluation folder); else, in a training run, its
    one `evaluation/<name>/predictions.csv`, or when there are several the one `evaluation/*-test/` (the test split
    without test-time augmentation); else none, and the run is left out of the pairs (the report says why: pass the
    evaluation folder itself to pick another). Two runs are paired when their files hold the same image ids with the
    same diagnoses; the lesions are then resampled with replacement (`hf_skin.metrics.bootstrap_intervals` with
    `baseline_probs`: both runs scored on every resample), or the images one by one when the files have no
    `lesion_id` column (older files; the report says so). Runs on different images get "not comparable", no interval.

    Args:
        run_dirs (`list`): `scripts/finetune.py` output folders and/or `scripts/evaluate.py` output folders.
        output_dir (`str` or `os.PathLike`, *optional*, defaults to `"runs/compare"`): where the files go.
        bootstrap_resamples (`int`, *optional*, defaults to 1000): resamples of each paired interval; 0 for none.
        bootstrap_seed (`int`, *optional*, defaults to 0): the same seed gives the same intervals.
        return_pairs (`bool`, *optional*, defaults to `False`): also return the pairs.

    Returns:
        `list[dict]`: one row per run (`run`, `model_type`, `epochs`, then the metrics), the rows of `comparison.csv`;
        with `return_pairs`, `(rows, pairs)`, one pair per two runs with predictions (`a`, `b` and the
        `paired_comparison` result).
    """
    from .. import plots

    if not run_dirs:
        raise ValueError("no runs to compare: pass one or more run folders")
    runs = [load_run(d) for d in run_dirs]
    names = [run["name"] for run in runs]
    if len(set(names)) < len(names):  # same folder name in different places: tell them apart by path
        names = [os.fspath(run["path"]) for run in runs]
    labels = []
    for run in runs:
        for name in run["per_class"] or {}:
            if name not in labels:
                labels.append(name)
    columns = [*COMPARE_METRICS, *[f"recall_{name}" for name in labels]]
    rows = []
    for name, run in zip(names, runs):
        row = {"run": name, "model_type": run["model_type"] or "", "epochs": run["epochs"]}
        row.update({column: run["metrics"].get(column) for column in columns})
        rows.append(row)

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    with (output_dir / "comparison.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["run", "model_type", "epochs", *columns])
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)

    best = {}
    for column in columns:
        values = [row[column] for row in rows if row[column] is not None and math.isfinite(row[column])]
        if len(set(values)) > 1:  # a tie across every run marks nothing
            best[column] = min(values) if column == "ece" else max(values)
    md_rows = []
    for row in rows:
        cells = [f"`{row['run']}`", row["model_type"], number(row["epochs"], 1)]
        for column in columns:
            text = number(row[column])
            cells.append(f"**{text}**" if column in best and row[column] == best[column] else text)
        md_rows.append(cells)
    headers = ["run", "model", "epochs", *[c.replace("_", " ") for c in columns]]
    histories = {name: run["log_history"] for name, run in zip(names, runs) if run["log_history"]}
    references = {run["reference_accuracy"] for run in runs if run["reference_accuracy"] is not None}
    text = [
        "# Runs compared\n\n",
        "Test-split metrics; per-class columns are recalls (sensitivity). Best value per column in bold "
        "(lowest for ECE). `mel sensitivity at spec90`: melanoma sensitivity at 90% specificity.\n\n",
        markdown_table(headers, md_rows, align="llr" + "r" * len(columns)) + "\n",
    ]
    if histories:
        plots.plot_training_curves(
            histories,
            output_dir / "training_curves.png",
            best_epochs={name: run["best_epoch"] for name, run in zip(names, runs) if run["best_epoch"] is not None},
            reference_accuracy=references.pop() if len(references) == 1 else None,
        )
        text.append("\n![validation accuracy and balanced accuracy per epoch](training_curves.png)\n")
    predictions = [find_predictions(run["path"]) for run in runs]
    pairs = []
    if bootstrap_resamples and len(runs) > 1:
        loaded = [read_predictions(path) if path is not None else None for path, _ in predictions]
        for i in range(len(runs)):
            for j in range(i + 1, len(runs)):
                if loaded[i] is None or loaded[j] is None:
                    continue
                pair = paired_comparison(loaded[i], loaded[j], num_resamples=bootstrap_resamples, seed=bootstrap_seed)
                pairs.append({"a": names[i], "b": names[j], **pair})
        text.append(render_paired_differences(names, predictions, pairs, bootstrap_resamples, bootstrap_seed))
        _write_paired_csv(output_dir / "paired_differences.csv", pairs)
    (output_dir / "comparison.md").write_text("".join(text))
    logger.info("Comparison of %d runs written to %s", len(runs), output_dir)
    return (rows, pairs) if return_pairs else rows


def find_predictions(run_dir: str | os.PathLike) -> tuple[Path | None, str]:
    """The `predictions.csv` a run is compared by (see `compare_runs` for the rule), and a sentence on where it came
    from or why there is none."""
    run_dir = Path(run_dir)
    if (run_dir / "predictions.csv").is_file():
        return run_dir / "predictions.csv", "its own predictions.csv"
    candidates = sorted((run_dir / "evaluation").glob("*/predictions.csv"))
    if len(candidates) > 1:
        tests = [path for path in candidates if path.parent.name.endswith("-test")]
        if len(tests) == 1:
            return tests[0], "its test-split evaluation without TTA"
        listed = ", ".join(f"`{path.parent}`" for path in candidates)
        return None, f"several evaluations ({listed}): pass the one to compare in place of the run folder"
    if candidates:
        return candidates[0], "its one evaluation"
    return None, f"no predictions.csv: evaluate it first (`python scripts/evaluate.py --model {run_dir}`)"


def read_predictions(path: str | os.PathLike) -> dict:
    """A `predictions.csv` of `evaluate_checkpoint`: `path`, `image_ids`, `lesion_ids` (`None` in files written
    before they were recorded), `labels` (diagnosis names), `label_names` and `probs` `(N, K)`."""
    path = Path(path)
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        label_names = [c.removeprefix("p_") for c in reader.fieldnames or [] if c.startswith("p_")]
        rows = list(reader)
    if not rows or not label_names or "image_id" not in rows[0] or "true" not in rows[0]:
        raise ValueError(f"{path} is not a predictions.csv of scripts/evaluate.py (image_id, true, p_<label> columns)")
    return {
        "path": path,
        "image_ids": [row["image_id"] for row in rows],
        "lesion_ids": [row["lesion_id"] for row in rows] if "lesion_id" in rows[0] else None,
        "labels": [row["true"] for row in rows],
        "label_names": label_names,
        "probs": np.array([[float(row[f"p_{name}"]) for name in label_names] for row in rows], dtype=np.float64),
    }


def paired_comparison(
    a: dict, b: dict, *, num_resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0, confidence: float = 0.95
) -> dict:
    """Paired bootstrap intervals of `metric(a) - metric(b)` for two `read_predictions` results on the same images.

    Returns:
        `dict`: `comparable` and, when not, `reason`; when comparable `n_images`, `n_lesions` (`None` without lesion
        ids), `resampled` (`"lesion"` or `"image"`), `num_resamples`, `seed` and `metrics`: metric -> `a`, `b`,
        `difference`, `low`, `high`, `excludes_zero` (`None` where no resample defines the metric).
    """
    ids_a, ids_b = a["image_ids"], b["image_ids"]
    for side in (a, b):
        if len(set(side["image_ids"])) != len(side["image_ids"]):
            return {"comparable": False, "reason": f"{side['path']} lists an image twice"}
    only_a, only_b = set(ids_a) - set(ids_b), set(ids_b) - set(ids_a)
    if only_a or only_b:
        example = sorted(only_a or only_b)[0]
        return {
            "comparable": False,
            "reason": f"not scored on the same images ({len(ids_a):,} and {len(ids_b):,} images; {len(only_a):,} only "
            f"in the first, {len(only_b):,} only in the second, e.g. {example})",
        }
    if set(a["label_names"]) != set(b["label_names"]):
        return {
            "comparable": False,
            "reason": f"the runs predict different labels ({', '.join(a['label_names'])} and "
            f"{', '.join(b['label_names'])})",
        }
    row_b = {image_id: i for i, image_id in enumerate(ids_b)}
    order = np.array([row_b[image_id] for image_id in ids_a])  # b's rows in a's order
    if [b["labels"][i] for i in order] != a["labels"]:
        differ = sum(b["labels"][i] != label for i, label in zip(order, a["labels"]))
        return {"comparable": False, "reason": f"the same images with different diagnoses ({differ:,} of them)"}
    lesions_b = [b["lesion_ids"][i] for i in order] if b["lesion_ids"] is not None else None
    if a["lesion_ids"] is not None and lesions_b is not None and a["lesion_ids"] != lesions_b:
        return {"comparable": False, "reason": "the same images grouped into different lesions"}
    lesions = a["lesion_ids"] if a["lesion_ids"] is not None else lesions_b
    label_names = a["label_names"]
    columns = [b["label_names"].index(name) for name in label_names]
    labels = np.array([label_names.index(label) for label in a["labels"]])
    probs_b = b["probs"][order][:, columns]
    kwargs = {"label_names": label_names, "num_resamples": num_resamples, "seed": seed, "confidence": confidence}
    result = bootstrap_intervals(labels, a["probs"], lesions, baseline_probs=probs_b, **kwargs)
    scores_a = classification_metrics(labels, a["probs"], label_names)
    scores_b = classification_metrics(labels, probs_b, label_names)
    metrics = {}
    for name in BOOTSTRAP_METRICS:
        if name not in scores_a:  # melanoma metrics of a model without a `mel` class
            continue
        interval = result["intervals"][name]
        low, high = interval if interval is not None else (None, None)
        metrics[name] = {
            "a": scores_a[name],
            "b": scores_b[name],
            "difference": result["estimates"][name],
            "low": low,
            "high": high,
            "excludes_zero": None if interval is None else bool(low > 0 or high < 0),
        }
    return {
        "comparable": True,
        "n_images": len(labels),
        "n_lesions": result["n_groups"] if lesions is not None else None,
        "resampled": result["resampled"],
        "num_resamples": result["num_resamples"],
        "seed": result["seed"],
        "metrics": metrics,
    }


def _signed(value: float | None) -> str:
    return MISSING if value is None or not math.isfinite(value) else f"{value:+.3f}"


def difference_sentence(a: str, b: str, metric: str, entry: dict) -> str:
    """ "`a` − `b` balanced accuracy: +0.045 [+0.012, +0.079]: the interval excludes 0, `a` is better on these
    images." (or that it includes 0, or that no resample defines the metric)."""
    head = f"`{a}` − `{b}` {metric_name(metric)}: {_signed(entry['difference'])}"
    if entry["excludes_zero"] is None:
        return f"{head}, no interval: no resample defines it."
    head += f" [{_signed(entry['low'])}, {_signed(entry['high'])}]"
    if entry["excludes_zero"]:
        better = a if entry["low"] > 0 else b
        return f"{head}: the interval excludes 0, `{better}` is better on these images."
    return f"{head}: the interval includes 0, these images do not show either run to be better."


def render_paired_differences(
    names: list[str], predictions: list[tuple[Path | None, str]], pairs: list[dict], num_resamples: int, seed: int
) -> str:
    """The "Paired differences" section of `comparison.md`."""
    out = [
        "\n## Paired differences, with 95% bootstrap intervals\n\n",
        "Each pair of runs scored on the same images (matched by image id in their `predictions.csv`), first minus "
        f"second: the test images' lesions are resampled with replacement {num_resamples:,} times (seed {seed}), all "
        "the images of a drawn lesion together (the images one by one where the files have no lesion ids, as said "
        "below), both runs are scored on every resample, and the 2.5th and 97.5th "
        "percentiles of the difference are the interval. An interval that excludes 0 says the difference is not the "
        "luck of which lesions ended up in this test split; it says nothing about other data, nor about training "
        "the same recipe again with another seed. With several pairs and metrics, expect about one interval in "
        "twenty to exclude 0 by chance alone where there is no difference. Values are computed from the predictions "
        "files, and can differ in the last digit from the table above where that comes from a training run's own "
        "test evaluation.\n\n",
        "Predictions compared:\n\n",
        *[
            f"- `{name}`: "
            + (f"`{path}` ({why})" if path is not None else f"none, {why}; left out of the pairs")
            + "\n"
            for name, (path, why) in zip(names, predictions)
        ],
    ]
    if not pairs:
        out.append("\nNo pair of runs with predictions to compare.\n")
    for pair in pairs:
        a, b = pair["a"], pair["b"]
        out.append(f"\n### `{a}` − `{b}`\n\n")
        if not pair["comparable"]:
            out.append(f"Not comparable: {pair['reason']}. No interval.\n")
            continue
        metrics = pair["metrics"]
        if pair["resampled"] == "lesion":
            unit = f"{pair['n_images']:,} images of {pair['n_lesions']:,} lesions"
        else:
            unit = (
                f"{pair['n_images']:,} images, resampled one by one: the predictions files have no `lesion_id` "
                "(written by an older scripts/evaluate.py), so the interval is too narrow where a lesion has several "
                "images; evaluate the runs again for lesion-level intervals"
            )
        out.append(f"{difference_sentence(a, b, 'balanced_accuracy', metrics['balanced_accuracy'])} ({unit}.)\n\n")
        rows = [
            [
                metric_name(name),
                number(m["a"]),
                number(m["b"]),
                _signed(m["difference"]),
                MISSING if m["excludes_zero"] is None else f"[{_signed(m['low'])}, {_signed(m['high'])}]",
                {None: MISSING, True: "**yes**", False: "no"}[m["excludes_zero"]],
            ]
            for name, m in metrics.items()
        ]
        headers = ["metric", f"`{a}`", f"`{b}`", "difference", "95% interval", "excludes 0"]
        out.append(markdown_table(headers, rows, align="lrrrrl") + "\n")
    return "".join(out)


def _write_paired_csv(path: Path, pairs: list[dict]) -> None:
    fields = ["run_a", "run_b", "comparable", "reason", "metric", "a", "b", "difference", "low", "high"]
    fields += ["excludes_zero", "n_images", "n_lesions", "resampled"]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for pair in pairs:
            base = {"run_a": pair["a"], "run_b": pair["b"], "comparable": pair["comparable"]}
            if not pair["comparable"]:
                writer.writerow({**base, "reason": pair["reason"]})
                continue
            base.update({key: pair[key] for key in ("n_images", "n_lesions", "resampled")})
            for name, m in pair["metrics"].items():
                writer.writerow({**base, "metric": name, **{k: "" if v is None else v for k, v in m.items()}})
