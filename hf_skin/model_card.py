"""The model card (README.md) of a finished training run, rendered from `model_card_template.md` with the run's own
numbers, and the markdown tables the cards and reports share.

Building a card reads the run folder's files and imports neither torch nor transformers' model code: a card can be
made (and a run pushed) on a machine that only publishes. hf-skin remembers the card it last wrote into a run
folder (`CARD_HASH_FILE`), so that a README.md edited by hand is not replaced without saying so.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .data.provenance import is_synthetic, training_data_sentence
from .families import STUDY_CNN, base_checkpoint
from .formatting import HEADLINE_METRICS, markdown_table, metric_name, number
from .labels import DX_LABELS, DX_NAMES, HAM10000_CITATION, MALIGNANT_DX
from .locations import is_hub_id
from .processing.sizes import resolve_input_size
from .processing.spec import normalisation, pixel_grid
from .runs import CARD_FILE, RUN_ARGS_FILE, RunFolder, RunFolderError

logger = logging.getLogger(__name__)


MODEL_CARD_TEMPLATE = Path(__file__).with_name("model_card_template.md")
# Below this many test images, a class's per-class numbers are too uncertain to lean on (said so in the card).
SMALL_SUPPORT = 30
FAMILY_NAMES = {
    "hf_skin_cnn": "the HAM10000 study's CNN (`SkinCNN`)",
    "hf_skin_multi_input": "a multi-input model (`SkinMultiInput`)",
    "resnet": "ResNet",
    "vit": "Vision Transformer (ViT)",
    "timm_wrapper": "a timm model",
}
# What the headline table adds to a metric's name.
HEADLINE_NOTES = {"balanced_accuracy": "mean recall", "auc_macro": "one-vs-rest", "ece": "lower is better"}
# model-index entries, in the metric ids the Hub knows: (key in test_metrics.json, type, name, args)
MODEL_INDEX_METRICS = (
    ("accuracy", "accuracy", "Accuracy", None),
    ("balanced_accuracy", "balanced_accuracy", "Balanced accuracy", None),
    ("f1_macro", "f1", "Macro F1", {"average": "macro"}),
)
HYPERPARAMETERS = (  # (argument, shown as); shown when set to something other than nothing, off or NEUTRAL
    ("model", "model family"),
    ("model_name_or_path", "base checkpoint"),
    ("backbone", "backbone (multi-input)"),
    ("metadata_fields", "metadata (multi-input)"),
    ("config_overrides", "config overrides"),
    ("freeze_backbone", "frozen backbone"),
    ("num_train_epochs", "epochs"),
    ("max_steps", "max steps"),
    ("per_device_train_batch_size", "batch size per device"),
    ("gradient_accumulation_steps", "gradient accumulation steps"),
    ("learning_rate", "learning rate"),
    ("backbone_learning_rate_multiplier", "backbone learning-rate multiplier"),
    ("optim", "optimizer"),
    ("weight_decay", "weight decay"),
    ("lr_scheduler_type", "learning-rate schedule"),
    ("warmup_steps", "warmup"),
    ("step_decay_epochs", "step decay every (epochs)"),
    ("step_decay_gamma", "step decay factor"),
    ("balance", "class balancing"),
    ("balance_power", "balancing power"),
    ("augment", "augmentation"),
    ("early_stopping_patience", "early stopping patience"),
    ("metric_for_best_model", "checkpoint chosen by (validation)"),
    ("bf16", "bf16"),
    ("fp16", "fp16"),
    ("seed", "seed"),
    ("max_train_samples", "train images used (subset)"),
    ("max_eval_samples", "validation/test images used (subset)"),
)
NEUTRAL = {"backbone_learning_rate_multiplier": 1.0, "gradient_accumulation_steps": 1, "max_steps": -1}
# Shown only together with the argument they qualify.
QUALIFIES = {"step_decay_gamma": "step_decay_epochs", "balance_power": "balance"}
# Not shown when the other argument is set: step decay replaces the named schedule.
REPLACED_BY = {"lr_scheduler_type": "step_decay_epochs"}


def _base_model(args: dict[str, Any] | None) -> str | None:
    """The pretrained checkpoint a run started from (Hub id or local path), `None` for a model trained from scratch."""
    if not args:
        return None
    return base_checkpoint(args.get("model"), args.get("backbone"), args.get("model_name_or_path"))


def _parameter_count(run_dir: Path) -> int:
    from safetensors import safe_open

    total = 0
    for path in run_dir.glob("*.safetensors"):
        with safe_open(path, framework="numpy") as weights:
            total += sum(math.prod(weights.get_slice(name).get_shape()) for name in weights.keys())
    return total


def _family(config: dict) -> str:
    family = _cnn_name(config) if config.get("model_type") == "hf_skin_cnn" else None
    family = family or FAMILY_NAMES.get(config.get("model_type"), f"`{(config.get('architectures') or ['?'])[0]}`")
    if config.get("model_type") == "timm_wrapper":
        family = f"timm's `{config.get('architecture')}` (loads as `TimmWrapperForImageClassification`; needs `timm`)"
    if config.get("model_type") == "hf_skin_multi_input":
        backbone_config = config.get("backbone_config", {})
        backbone = backbone_config.get("model_type")
        backbone_name = _cnn_name(backbone_config) if backbone == "hf_skin_cnn" else None
        fields = ", ".join(config.get("metadata_fields", []))
        family += (
            f" that reads {fields} beside the image, over {backbone_name or FAMILY_NAMES.get(backbone, backbone)} "
            "as backbone"
        )
    return family


def _cnn_name(config: dict) -> str:
    """The study's CNN when the config is the study's (32 px, conv 32 -> conv 64, flatten), else what differs."""
    changed = [f"{key} {config[key]}" for key, value in STUDY_CNN.items() if key in config and config[key] != value]
    if not changed:
        return FAMILY_NAMES["hf_skin_cnn"]
    return f"hf-skin's CNN (`SkinCNN`; the study's CNN with {', '.join(changed)})"


def _input_description(run_dir: Path) -> str:
    processor = RunFolder(run_dir).read_json("preprocessor_config.json") or {}
    size = processor.get("size") or {}
    resolved = resolve_input_size(size)
    if resolved is None:
        text = "the model's input size"
    elif size.get("height"):
        text = f"{resolved[1]}×{resolved[0]} pixels (width × height), the whole image resized"
    else:
        text = f"{resolved[1]}×{resolved[0]} pixels"
    metadata = RunFolder(run_dir).read_json("metadata_processor.json")
    if metadata:
        text += "; age, sex and body site as a person types them, anything missing or not understood as unknown"
    return text


def _usage(repo_id: str, config: dict) -> str:
    custom = config.get("model_type", "").startswith("hf_skin")
    if config.get("model_type") == "hf_skin_multi_input":
        lines = [
            "from hf_skin.inference import SkinClassifier  # needs hf-skin installed",
            "",
            f'classifier = SkinClassifier.from_pretrained("{repo_id}")',
            'classifier.predict("lesion.jpg", age="45", sex="female", localization="back")',
        ]
    else:
        lines = [
            "from transformers import pipeline",
            "",
            f'classifier = pipeline("image-classification", model="{repo_id}"{", trust_remote_code=True" * custom})',
            'classifier("lesion.jpg")  # [{"label": "nv", "score": ...}, ...]',
        ]
    if custom:
        lines += [
            "",
            "# The modeling code is in this repository: without hf-skin installed, trust_remote_code=True loads it",
            "from transformers import AutoModelForImageClassification",
            "",
            f'model = AutoModelForImageClassification.from_pretrained("{repo_id}", trust_remote_code=True)',
        ]
    return "\n".join(lines)


def _labels_table(config: dict, test_metrics: dict) -> str:
    id2label = config.get("id2label") or dict(enumerate(DX_LABELS))
    rows = []
    for i in sorted(id2label, key=int):
        dx = id2label[i]
        support = test_metrics.get("per_class", {}).get(dx, {}).get("support", "")
        rows.append([i, dx, DX_NAMES.get(dx, dx), "yes" if dx in MALIGNANT_DX else "no", support])
    return markdown_table(["id", "label", "diagnosis", "malignant", "test images"], rows, align="rlllr")


def _headline_name(key: str) -> str:
    note = HEADLINE_NOTES.get(key)
    return metric_name(key, capitalize=True) + (f" ({note})" if note else "")


def _metrics_table(test_metrics: dict, validation_metrics: dict | None) -> str:
    header = ["metric", "test"] + (["validation"] if validation_metrics else [])
    rows = [
        [_headline_name(key), number(test_metrics[key])]
        + ([number(validation_metrics.get(key))] if validation_metrics else [])
        for key in HEADLINE_METRICS
        if key in test_metrics
    ]
    return markdown_table(header, rows)


def _int8_ready_text(config: dict, processor: dict) -> str:
    """The card's paragraph on int8-ready weights (training's `--int8_ready`), empty for other models. `processor`:
    the saved image processor's settings, which say whether int8 holds the input's pixels exactly."""
    ready = config.get("int8_ready")
    if not ready:
        return ""
    before = ready.get("image_mean_before")
    int8_model = "Its static per-channel int8 model (what `scripts/export_onnx.py --quantize int8` tries first)"
    if pixel_grid(normalisation(processor)) is None:
        inputs = f". {int8_model} differs from it only by the rounding of its input and activations."
    else:
        why = (
            f"its normalisation mean was rounded from {', '.join(f'{m:g}' for m in before)} to a whole pixel value"
            if before
            else "its normalisation puts them on int8's grid"
        )
        inputs = f"; 8-bit pixels are int8 numbers too ({why}). {int8_model} differs from it only by the rounding of "
        inputs += "activations."
    return (
        "**int8-ready.** After training, a copy of the model learned its logits through onnxruntime's int8 rounding "
        f"({ready['steps']} steps on {ready['training_images']:,} training images, learning rate "
        f"{ready['learning_rate']:g}) and kept its rounded weights: this checkpoint's weights are int8 numbers"
        f"{inputs} The metrics above are this model's; the best validation score that chose the checkpoint is the "
        "model's before this step."
    )


def _calibration_text(config: dict, test_metrics: dict) -> str:
    """The card's paragraph on the checkpoint's calibration and referral threshold (see `hf_skin.calibration`)."""
    calibration, point = config.get("calibration"), config.get("operating_point")
    if not calibration:
        return (
            "**Calibration.** None: the probabilities are the raw model's. If it was trained with oversampling or "
            "class weights they over-call the rare classes; `scripts/calibrate.py` calibrates it without retraining."
        )
    parts = [
        f"**Calibration.** `{calibration['method']}`, fitted on the validation split and folded into the classifier "
        f"head (every runtime applies it): temperature {calibration['temperature']:.3f}"
        + (
            f", and the prior shift from the training's sampling mix back to {calibration['target_prior_source']}"
            if "prior" in calibration["method"]
            else ""
        )
        + ". The validation column above is the raw model's, before the calibration that was fitted on it."
    ]
    summary = test_metrics.get("calibration") or {}
    # a run trained before training scored with hf_skin.evaluation.score wrote the scores flat, the raw model apart
    raw = summary.get("before") or test_metrics.get("raw")
    if raw:
        parts.append(
            f"The metrics above are the calibrated model's; the prior shift moves some decisions to the common "
            f"classes, and the raw model scored test accuracy {raw['accuracy']:.3f}, balanced accuracy "
            f"{raw['balanced_accuracy']:.3f}."
        )
    scores = summary.get("scores") or (summary if "nll_before" in summary else None)
    if scores:
        parts.append(
            f"On test, negative log-likelihood {scores['nll_before']:.3f} → {scores['nll_after']:.3f}, Brier score "
            f"{scores['brier_before']:.3f} → {scores['brier_after']:.3f}, expected calibration error "
            f"{scores['ece_before']:.3f} → {scores['ece_after']:.3f} (raw → calibrated)."
        )
    if point:
        text = (
            f"**Referral threshold.** The advice to see a dermatologist is given when the probability of a malignant "
            f"class (akiec, bcc, mel) is at least {point['threshold']:.2%}, chosen on validation to flag at least "
            f"{point['target_sensitivity']:.0%} of malignant lesions (sensitivity {point['sensitivity']:.3f}, "
            f"specificity {point['specificity']:.3f} there)"
        )
        test = test_metrics.get("operating_point")
        if test and test.get("sensitivity") is not None:
            text += f"; on test, sensitivity {test['sensitivity']:.3f} and specificity {test['specificity']:.3f}"
        parts.append(text + ".")
    return "\n\n".join(parts)


def _per_class_table(test_metrics: dict) -> str:
    keys = ("precision", "recall", "specificity", "f1", "auc")
    rows = [
        [dx, DX_NAMES.get(dx, dx), *(number(m[key]) for key in keys), m["support"]]
        for dx, m in test_metrics.get("per_class", {}).items()
    ]
    header = ["class", "diagnosis", "precision", "recall", "specificity", "F1", "AUC", "support"]
    return markdown_table(header, rows, align="llrrrrrr")


def _rare_classes(test_metrics: dict) -> str:
    supports = {dx: m["support"] for dx, m in test_metrics.get("per_class", {}).items()}
    total = sum(supports.values())
    small = sorted((n, dx) for dx, n in supports.items() if n < SMALL_SUPPORT)
    counts = ", ".join(f"{DX_NAMES.get(dx, dx)} ({dx}) {n}" for n, dx in sorted((n, dx) for dx, n in supports.items()))
    text = f"The test split holds {total:,} images: {counts}."
    if small:
        listed = ", ".join(dx for _, dx in small)
        text += (
            f" With fewer than {SMALL_SUPPORT} test images, the per-class numbers of {listed} rest on a handful of "
            "lesions and could be far off in either direction."
        )
    return text


def _hyperparameters_table(args: dict[str, Any] | None) -> str:
    if not args:
        return f"_This run has no `{RUN_ARGS_FILE}` (it predates it): its hyperparameters were not recorded._"
    lines = ["| hyperparameter | value |", "| --- | --- |"]
    for key, name in HYPERPARAMETERS:
        value = args.get(key)
        if value in (None, False, 0, [], {}, "", "none") or value == NEUTRAL.get(key):
            continue
        if key in QUALIFIES and args.get(QUALIFIES[key]) in (None, 0, "none"):
            continue
        if key in REPLACED_BY and args.get(REPLACED_BY[key]) not in (None, 0):
            continue
        if key in ("backbone", "metadata_fields") and args.get("model") != "multi-input":
            continue
        if key == "model_name_or_path" and not is_hub_id(value):
            value = f"a local checkpoint ({Path(value).name})"
        if isinstance(value, (list, dict)):
            value = json.dumps(value)
        lines.append(f"| {name} | `{value}` |")
    lines.append("")
    lines.append(f"Every argument of the run is in `{RUN_ARGS_FILE}`: `python scripts/finetune.py {RUN_ARGS_FILE}`.")
    return "\n".join(lines)


def _split_description(args: dict[str, Any] | None, run: RunFolder) -> str:
    test_n = sum(m["support"] for m in run.test_metrics.get("per_class", {}).values())
    sizes = f"the test split has {test_n:,} images"
    if run.validation_metrics:
        val_n = sum(m["support"] for m in run.validation_metrics.get("per_class", {}).values())
        sizes = f"the validation split has {val_n:,} images and {sizes}"
    if not args:
        return f"Lesion-grouped splits by hf-skin ({sizes}); the seed was not recorded."
    return (
        f"HAM10000 holds several images of many lesions, so the data was split **by lesion**, not by image: every "
        f"image of a lesion is in the same split, so the model is never tested on a lesion it saw in training. The "
        f"split is stratified by diagnosis (`hf_skin.data.load_ham10000`, seed {args.get('split_seed')}), with about "
        f"{args.get('validation_size', 0):.0%} of the lesions in validation and {args.get('test_size', 0):.0%} in "
        f"test; {sizes}."
    )


def _data_description(args: dict[str, Any] | None, training_data: dict | None) -> tuple[str, str | None]:
    """(text, Hub dataset id or `None`): from the checkpoint's `training_data` (what it really learned from), else,
    for a run made before it was recorded, from its arguments."""
    if training_data is not None:
        sentence = training_data_sentence(training_data)
        kind, location = training_data.get("kind"), training_data.get("location")
        if is_synthetic(training_data):
            return (
                f"{sentence} The lesions were drawn by `python -m hf_skin.synthetic` in the HAM10000 release's "
                "layout; every metric on this card is measured on more synthetic images.",
                None,
            )
        if kind == "hub":
            link = f"[`{location}`](https://huggingface.co/datasets/{location})"
            return f"{sentence} Loaded from the Hub dataset {link}.", location
        return f"{sentence} Loaded from a local copy ({Path(str(location)).name}).", None
    dataset = (args or {}).get("dataset")
    text = (
        "HAM10000 (Tschandl et al. 2018): 10,015 dermatoscopic images of 7,470 pigmented lesions, 7 diagnoses, "
        "from the Medical University of Vienna and a skin-cancer practice in Queensland; more than half confirmed by "
        "histopathology."
    )
    if is_hub_id(dataset):
        return (
            text + f" Loaded from the Hub dataset [`{dataset}`](https://huggingface.co/datasets/{dataset}).",
            dataset,
        )
    if dataset:
        return text + " Loaded from a local copy in the HAM10000 format.", None
    return text, None


def _training_results(run: RunFolder) -> str:
    state = run.trainer_state or {}
    if not state:
        return ""
    epochs = state.get("epoch")
    text = f"Trained for {epochs:g} epoch{'s' * (epochs != 1)}" if epochs is not None else "Trained"
    text += f" ({state.get('global_step')} optimizer steps)"
    if state.get("best_metric") is not None:
        text += f"; best validation {_best_metric_name(run)} {number(state['best_metric'])}"
    return text + ". The loss and validation curves are in `trainer_state.json`."


def _best_metric_name(run: RunFolder) -> str:
    return (run.args or {}).get("metric_for_best_model") or "balanced_accuracy"


def model_card(run_dir: str | os.PathLike, *, repo_id: str | None = None) -> ModelCard:
    """The model card (README.md) of a finished `scripts/finetune.py` run, from `model_card_template.md`.

    Every number comes from the run's files: test metrics (`model-index` metadata, tables), `run_args.json`
    (hyperparameters, split seed, base model), `trainer_state.json` (epochs, best validation score).

    Args:
        run_dir (`str` or `os.PathLike`): the run's `--output_dir`.
        repo_id (`str`, *optional*): the Hub repo it is published as (name of the model, usage snippet).
    """
    run = RunFolder(run_dir).require_finished()
    model_name = (repo_id or run.path.resolve().name).split("/")[-1]
    training_data = (run.config or {}).get("training_data")
    synthetic = is_synthetic(training_data)
    data_text, dataset_id = _data_description(run.args, training_data)
    base = _base_model(run.args)
    eval_results = [
        EvalResult(
            task_type="image-classification",
            task_name="Image Classification",
            dataset_type="synthetic" if synthetic else dataset_id or "ham10000",
            dataset_name="synthetic lesions (hf-skin), not real skin" if synthetic else "HAM10000",
            dataset_split="test",
            metric_type=metric_type,
            metric_name=name,
            metric_value=run.test_metrics[key],
            metric_args=metric_args,
        )
        for key, metric_type, name, metric_args in MODEL_INDEX_METRICS
        if run.test_metrics.get(key) is not None and not math.isnan(run.test_metrics[key])
    ]
    card_data = ModelCardData(
        model_name=model_name,
        license="cc-by-nc-4.0",
        library_name="transformers",
        pipeline_tag="image-classification",
        tags=["hf-skin", "image-classification", "synthetic-data", "demo"]
        if synthetic
        else ["hf-skin", "image-classification", "medical", "dermatology", "skin-lesion", "dermoscopy", "ham10000"],
        datasets=[dataset_id] if dataset_id else None,
        base_model=base if is_hub_id(base) else None,
        metrics=[metric_type for _, metric_type, _, _ in MODEL_INDEX_METRICS],
        eval_results=eval_results or None,
    )
    if run.args is None:
        origin = f"from a starting point that was not recorded (the run has no {RUN_ARGS_FILE})"
    elif base is None:
        origin = "trained from scratch (random initialisation)"
    elif is_hub_id(base):
        origin = f"fine-tuned from [`{base}`](https://huggingface.co/{base})"
    else:
        origin = f"fine-tuned from a local checkpoint ({Path(base).name})"
    summary = (
        f"A skin-lesion classifier for dermoscopic images: {_family(run.config)}, {origin}, with "
        f"{_parameter_count(run.path):,} parameters. It sorts an image into HAM10000's seven diagnoses. "
        + (f"{training_data_sentence(training_data)} " if training_data is not None else "")
        + "Test "
        f"balanced accuracy {number(run.test_metrics.get('balanced_accuracy', float('nan')))}, accuracy "
        f"{number(run.test_metrics.get('accuracy', float('nan')))} (see [Evaluation](#evaluation)). Trained with "
        "hf-skin."
    )
    figures = [
        (name, caption)
        for name, caption in (
            ("test_confusion_matrix.png", "Confusion matrix on the test split (counts)"),
            ("test_confusion_matrix_normalized.png", "Confusion matrix on the test split, rows normalised (recall)"),
        )
        if (run.path / name).is_file()
    ]
    best = run.trainer_state.get("best_metric") if run.trainer_state else None
    best_metric_text = f"best validation {_best_metric_name(run)}" + (f" {number(best)}" if best is not None else "")
    subset = (run.args or {}).get("max_eval_samples")
    return ModelCard.from_template(
        card_data,
        template_path=str(MODEL_CARD_TEMPLATE),
        model_name=model_name,
        summary=summary,
        usage=_usage(repo_id or "path/to/this/folder", run.config),
        input_description=_input_description(run.path),
        labels_table=_labels_table(run.config, run.test_metrics),
        rare_classes=_rare_classes(run.test_metrics),
        dx_type_warning="dx_type" in run.config.get("metadata_fields", []),
        synthetic_warning=training_data_sentence(training_data) if synthetic else None,
        data_description=data_text,
        split_description=_split_description(run.args, run),
        hyperparameters_table=_hyperparameters_table(run.args),
        training_results=_training_results(run),
        test_size_text=f" (a subset of {subset} images)" if subset else "",
        best_metric_text=best_metric_text,
        metrics_table=_metrics_table(run.test_metrics, run.validation_metrics),
        per_class_table=_per_class_table(run.test_metrics),
        calibration_text=_calibration_text(run.config, run.test_metrics),
        int8_ready_text=_int8_ready_text(run.config, run.read_json("preprocessor_config.json") or {}),
        figures=figures,
        citation=HAM10000_CITATION,
    )


# ----------------------------------------------------------------------------------------------------------------
# The card in the run folder

# sha256 of the README.md hf-skin last wrote into a run folder: a README.md that differs from it was edited by hand.
CARD_HASH_FILE = ".hf_skin_card.sha256"


class EditedCardError(RunFolderError):
    """The run folder's README.md is not the card hf-skin last wrote there: replacing it would lose someone's edits."""


def card_is_edited(run_dir: str | os.PathLike, card: ModelCard | None = None) -> bool:
    """Whether `run_dir/README.md` exists and is neither the card hf-skin last wrote there nor `card`.

    A README.md that hf-skin did not write (no `CARD_HASH_FILE`), e.g. one written by hand, counts as edited unless
    it is `card` itself.
    """
    run_dir = Path(run_dir)
    readme = run_dir / CARD_FILE
    if not readme.is_file():
        return False
    content = readme.read_bytes()
    if card is not None and content == str(card).encode():
        return False
    marker = run_dir / CARD_HASH_FILE
    recorded = marker.read_text().strip() if marker.is_file() else None
    return hashlib.sha256(content).hexdigest() != recorded


def edited_card_message(run_dir: str | os.PathLike) -> str:
    return (
        f"{Path(run_dir) / CARD_FILE} is not the model card hf-skin last wrote there (it was edited by hand, or "
        "written by something else): pushing would replace it. Publish it as it is with --keep_card "
        "(keep_card=True), or replace it with the generated card with --overwrite_card (overwrite_card=True)"
    )


def save_model_card(card: ModelCard, run_dir: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Writes `card` as `run_dir/README.md` and records its sha256 in `CARD_HASH_FILE`.

    Args:
        card (`ModelCard`): e.g. from `model_card(run_dir)`.
        run_dir (`str` or `os.PathLike`): the run folder.
        overwrite (`bool`, *optional*, defaults to `False`):
            Replace a README.md that was edited by hand (`card_is_edited`); without it that is an `EditedCardError`.

    Returns:
        `Path`: the README.md written.
    """
    run_dir = Path(run_dir)
    readme = run_dir / CARD_FILE
    if card_is_edited(run_dir, card):
        if not overwrite:
            raise EditedCardError(edited_card_message(run_dir))
        logger.warning("Replacing the hand-edited %s with the generated model card (overwrite)", readme)
    card.save(readme)
    (run_dir / CARD_HASH_FILE).write_text(hashlib.sha256(readme.read_bytes()).hexdigest() + "\n")
    return readme
