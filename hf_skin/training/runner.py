"""One run: `build_trainer` (model, processor, data, Trainer), and `run()`, which trains, evaluates on validation
and test (`evaluate_split`), calibrates, and keeps the run folder's record (`hf_skin.runs.RunFolder`).

Named `runner`, not `run`, so that `hf_skin.training.run` is the function alone, never this module."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from transformers import EarlyStoppingCallback, Trainer, set_seed

from ..calibration import Calibration, calibrate_model
from ..data import column_values, describe_data, for_publication
from ..families import base_checkpoint
from ..labels import DX_LABELS
from ..metrics import compute_metrics, flatten_metrics, softmax
from ..models import build_model, freeze_backbone
from ..processing import input_size, processor_for
from ..quantization import QAT_IMAGES
from ..runs import RunFolder
from .arguments import SHRINK_BELOW, DataArguments, ModelArguments, SkinTrainingArguments, run_args
from .inputs import attach_transforms, load_splits, shrink_images
from .trainer import SkinTrainer, TrainSampleMetrics

logger = logging.getLogger(__name__)

# What the checkpoint's config keeps of the referral threshold's test scores (`config.operating_point["test"]`).
OPERATING_POINT_TEST_KEYS = (
    "threshold",
    "sensitivity",
    "specificity",
    "n_malignant",
    "n_benign",
    "true_positives",
    "true_negatives",
)


def build_trainer(model_args: ModelArguments, data_args: DataArguments, training_args: SkinTrainingArguments):
    """Model, processor, data and Trainer for one run; returns `(trainer, splits)`."""
    set_seed(training_args.seed)  # before the model exists: its random initialisation is part of the run
    model = build_model(
        model_args.model,
        model_name_or_path=model_args.model_name_or_path,
        backbone=model_args.backbone,
        metadata_fields=model_args.metadata_fields,
        **model_args.config_overrides,
    )
    if model_args.freeze_backbone:
        freeze_backbone(model)
    # What it learned from, in its config: every card, page and export names it (`hf_skin.data.provenance`)
    model.config.training_data = for_publication(describe_data(data_args.dataset))  # no local paths in public
    multi_input = model_args.model == "multi-input"
    # lesion_id rides along for the run's split record; the transforms pass on only the model's inputs
    columns = ["image", "dx", "lesion_id", *(model.config.metadata_fields if multi_input else [])]
    splits = load_splits(data_args, list(dict.fromkeys(columns)))
    pretrained = base_checkpoint(model_args.model, model_args.backbone, model_args.model_name_or_path)
    train_ages = splits["train"]["age"] if multi_input and "age" in model.config.metadata_fields else None
    processor = processor_for(model, pretrained, train_ages, model_args.parsed_image_size)
    side = input_size(processor)
    if data_args.shrink_images and side is not None and side <= SHRINK_BELOW:
        splits = shrink_images(splits, 2 * side)  # headroom for zoom and rotation before the final resize
    sample_size = min(training_args.train_metrics_samples, len(splits["train"]))
    if sample_size and training_args.eval_strategy != "no":  # scored like validation: evaluation transforms
        splits["train_sample"] = splits["train"].shuffle(seed=data_args.split_seed).select(range(sample_size))
    if training_args.int8_ready:  # what --int8_ready learns from, with evaluation transforms too
        ready_size = min(QAT_IMAGES, len(splits["train"]))
        splits["int8_ready"] = splits["train"].shuffle(seed=data_args.split_seed + 1).select(range(ready_size))
    attach_transforms(splits, processor, training_args.augment)
    train_sample = splits.pop("train_sample", None)
    int8_ready_sample = splits.pop("int8_ready", None)
    train_labels = np.asarray(splits["train"].with_format(None)["dx"])
    callbacks = []
    if training_args.early_stopping_patience is not None:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=training_args.early_stopping_patience))
    trainer = SkinTrainer(
        model=model,
        args=training_args,
        train_dataset=splits["train"],
        eval_dataset=splits["validation"],
        processing_class=processor,
        compute_metrics=compute_metrics,
        callbacks=callbacks,
        train_labels=train_labels,
        int8_ready_sample=int8_ready_sample,
    )
    if train_sample is not None:
        trainer.add_callback(TrainSampleMetrics(trainer, train_sample))
    return trainer, splits


def evaluate_split(trainer: Trainer, dataset, split: str, output_dir: Path, calibration=None) -> tuple[dict, object]:
    """Full metrics of the trained model on one split, scored by `hf_skin.evaluation.score` (the shape of an
    evaluation's `metrics.json`): `{split}_metrics.json` and confusion-matrix PNGs; returns `(metrics, prediction)`
    (the Trainer's `PredictionOutput`). With the model's `calibration` (folded into it), `calibration` holds NLL,
    Brier and ECE before and after it and the raw model's metrics, and `operating_point` the referral threshold's
    sensitivity and specificity on this split."""
    from ..evaluation import json_safe, score
    from ..plots import plot_confusion_matrix

    prediction = trainer.predict(dataset, metric_key_prefix=split)
    probs = softmax(prediction.predictions)
    raw = softmax(calibration.undo(prediction.predictions)) if calibration is not None else None
    operating_point = getattr(trainer.model.config, "operating_point", None) if calibration is not None else None
    metrics = score(
        prediction.label_ids, probs, DX_LABELS, raw_probs=raw, calibration=calibration, operating_point=operating_point
    )
    if trainer.is_world_process_zero():
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / f"{split}_metrics.json").write_text(json.dumps(json_safe(metrics), indent=2) + "\n")
        cm = np.asarray(metrics["confusion_matrix"])
        for normalize, suffix in ((False, ""), (True, "_normalized")):
            plot_confusion_matrix(
                cm,
                DX_LABELS,
                output_dir / f"{split}_confusion_matrix{suffix}.png",
                normalize=normalize,
                title=f"{split} split, {len(dataset)} images" + (" (row-normalised: recall)" if normalize else ""),
            )
    return metrics, prediction


def run(model_args: ModelArguments, data_args: DataArguments, training_args: SkinTrainingArguments) -> dict:
    """Trains, evaluates on validation and test, saves model + processor into the run folder; returns the scalar
    metrics (and `hub_url` when the run was pushed).

    The run folder (`--output_dir`) must be new or empty, unless resuming (`--resume_from_checkpoint`) or replacing
    a run (`--overwrite_output_dir`): one folder, one run. It is marked `running` before anything else is written
    and `finished` only when the test metrics are in (see `hf_skin.runs`).
    """
    hub_push = None
    if training_args.push_to_hub:  # checked before training; the Trainer itself pushes nothing
        from ..hub import trainer_push_settings

        hub_push = trainer_push_settings(training_args)
    training_args.hub_token = None  # kept only in hub_push; never pickled, whatever the flags
    folder = RunFolder(training_args.output_dir)
    resume = bool(training_args.resume_from_checkpoint)
    folder.check_writable(overwrite=training_args.overwrite_output_dir, resume=resume)  # on every process
    state = training_args.distributed_state
    state.wait_for_everyone()  # no process writes before every process has checked the folder
    main = training_args.process_index == 0
    if main:
        folder.start(
            run_args(model_args, data_args, training_args),
            overwrite=training_args.overwrite_output_dir and not resume,
            world_size=training_args.world_size,
        )
    state.wait_for_everyone()
    try:
        results = _train_and_evaluate(model_args, data_args, training_args, folder, main)
    except BaseException as err:
        if main:
            folder.fail(err)
        raise
    if main:
        folder.finish()  # a push publishes only a finished run; a failed push leaves it finished, to push again
        if hub_push:
            from ..hub import push_run_to_hub

            results["hub_url"] = push_run_to_hub(folder.path, **hub_push)
            folder.finish(hub_url=results["hub_url"])
    return results


def _train_and_evaluate(model_args, data_args, training_args, folder: RunFolder, main: bool) -> dict:
    trainer, splits = build_trainer(model_args, data_args, training_args)
    if main:
        folder.record_split(
            data_args.dataset,
            data_args.split_arguments(),
            {name: column_values(split, "lesion_id") for name, split in splits.items()},
        )
    train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model()  # the best checkpoint (load_best_model_at_end), with its image processor
    trainer.save_state()
    trainer.log_metrics("train", train_result.metrics)
    trainer.save_metrics("train", train_result.metrics)

    results = dict(train_result.metrics)
    trainer.mixed_precision_off()  # validation and test metrics from fp32 arithmetic, whatever trained the model
    if training_args.int8_ready:
        trainer.make_int8_ready()
        trainer.save_model()
    trainer.share_main_process_weights()  # ... and from the checkpoint that was saved, on every process
    calibration = None
    for split in ("validation", "test"):
        if split in splits and len(splits[split]):
            metrics, prediction = evaluate_split(trainer, splits[split], split, folder.path, calibration)
            flat = {f"{split}_{key}": value for key, value in flatten_metrics(metrics).items() if key != "n"}
            if metrics["calibration"]:  # NLL / Brier / ECE before and after calibration, as test_nll_before, ...
                flat.update({f"{split}_{key}": value for key, value in metrics["calibration"]["scores"].items()})
                # The calibrated model's decisions differ from the raw one's (the prior shift moves the argmax):
                # the raw model's, for comparing with validation (raw) and with runs made before calibration.
                before = metrics["calibration"]["before"]
                flat.update({f"{split}_raw_{key}": before[key] for key in ("accuracy", "balanced_accuracy")})
            if metrics["operating_point"]:
                point = metrics["operating_point"]
                flat.update(
                    {
                        f"{split}_referral_{key}": point[key]
                        for key in ("sensitivity", "specificity")
                        if point[key] is not None  # a split without malignant (or benign) images
                    }
                )
            trainer.log_metrics(split, flat)
            trainer.save_metrics(split, flat)
            results.update(flat)
            if split == "validation":
                # Fitted on validation (the metrics above are the raw model's: what chose the checkpoint), applied
                # to test and to everything the checkpoint serves.
                calibration = calibrate_checkpoint(trainer, prediction, data_args, training_args)
            elif metrics["operating_point"]:
                trainer.model.config.operating_point["test"] = {
                    key: metrics["operating_point"][key] for key in OPERATING_POINT_TEST_KEYS
                }
                if main:
                    trainer.model.config.save_pretrained(folder.path)
    if calibration is None:
        logger.warning("No calibration: the run has no validation images to fit it on (or --calibration none).")
    return results


def calibrate_checkpoint(trainer: Trainer, prediction, data_args: DataArguments, training_args) -> Calibration | None:
    """Fits `--calibration` on the validation split's raw predictions, folds it and the referral operating point
    into the trained model and saves the checkpoint again (see `hf_skin.calibration`)."""
    if training_args.calibration == "none":
        return None
    calibration, _ = calibrate_model(
        trainer.model,
        prediction.predictions,
        prediction.label_ids,
        train_counts=np.bincount(trainer.train_labels, minlength=trainer.model.config.num_labels),
        method=training_args.calibration,
        balance=training_args.balance,
        balance_power=training_args.balance_power,
        target_prior_source=f"the class mix of the training images ({Path(str(data_args.dataset)).name})",
        target_sensitivity=training_args.target_sensitivity,
        fitted_on={"dataset": Path(str(data_args.dataset)).name, "split": "validation"},
    )
    trainer.save_model()
    return calibration
