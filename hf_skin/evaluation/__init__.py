"""Evaluating a checkpoint on HAM10000-format data (metrics, subgroups, figures, a report), comparing training runs,
and recalibrating a checkpoint without retraining.

`evaluate_checkpoint` runs any hf-skin checkpoint, or any HAM10000 image classifier on the Hub, through the same
`SkinClassifier` that serves it, so the numbers are those a user of the model gets, each headline number with a
lesion-level bootstrap interval, and writes the predictions in the ISIC 2018 challenge's format beside its own.
`compare_runs` puts the test metrics and training curves of several runs side by side and, for runs scored on the same
images, gives a paired bootstrap interval of each difference. `recalibrate` fits a new calibration and referral
threshold on labelled images.

Modules: `split` (which images: the run's own split and its guard), `arguments`, `predict`, `scoring` (the one
scorer), `writers`, `report`, `checkpoint` (`evaluate_checkpoint`), `compare`, `recalibrate`.
"""

from .arguments import EvaluationArguments, default_output_dir
from .checkpoint import evaluate_checkpoint, run_evaluation
from .compare import (
    COMPARE_METRICS,
    compare_runs,
    difference_sentence,
    find_predictions,
    load_run,
    paired_comparison,
    read_predictions,
    render_paired_differences,
)
from .predict import TTA_VIEWS, metadata_words, model_label_ids, predict_dataset, tta_views, view_probabilities
from .recalibrate import CALIBRATION_FILE, RecalibrationArguments, recalibrate
from .report import FIGURES, TRANSFER_NOTE, bootstrap_note, calibration_section, referral_section, render_report
from .scoring import (
    AGE_BANDS,
    AGE_MISSING,
    MIN_SUBGROUP_SIZE,
    age_band,
    bootstrap_summary,
    calibration_summary,
    group_scores,
    operating_point_summary,
    score,
    subgroup_groups,
    subgroup_table,
    wilson_interval,
)
from .split import SPLIT_CHOICES, check_no_training_lesions, load_eval_split, run_split
from .writers import ISIC_FILES, json_safe, write_isic_2018, write_predictions

__all__ = [
    "AGE_BANDS",
    "AGE_MISSING",
    "CALIBRATION_FILE",
    "COMPARE_METRICS",
    "FIGURES",
    "ISIC_FILES",
    "MIN_SUBGROUP_SIZE",
    "SPLIT_CHOICES",
    "TRANSFER_NOTE",
    "TTA_VIEWS",
    "EvaluationArguments",
    "RecalibrationArguments",
    "age_band",
    "bootstrap_note",
    "bootstrap_summary",
    "calibration_section",
    "calibration_summary",
    "check_no_training_lesions",
    "compare_runs",
    "default_output_dir",
    "difference_sentence",
    "evaluate_checkpoint",
    "find_predictions",
    "group_scores",
    "json_safe",
    "load_eval_split",
    "load_run",
    "metadata_words",
    "model_label_ids",
    "operating_point_summary",
    "paired_comparison",
    "predict_dataset",
    "read_predictions",
    "recalibrate",
    "referral_section",
    "render_paired_differences",
    "render_report",
    "run_evaluation",
    "run_split",
    "score",
    "subgroup_groups",
    "subgroup_table",
    "tta_views",
    "view_probabilities",
    "wilson_interval",
    "write_isic_2018",
    "write_predictions",
]
