"""Fine-tuning on HAM10000 with the Trainer, one concern per module:

- `arguments`: the argument dataclasses, each `--model`'s recipe, `parse_args` (flags and argument files);
- `inputs`: the splits a run reads, small images downsized once, augmentation and the batch transforms;
- `trainer`: `SkinTrainer` (oversampling sampler or class weights, step decay, `--int8_ready`) and its callback;
- `runner`: `build_trainer`, `run()` and `evaluate_split`, the run folder's steps.
"""

from .arguments import (
    AUGMENTATIONS,
    BALANCE_MODES,
    RECIPES,
    SHRINK_BELOW,
    DataArguments,
    ModelArguments,
    SkinTrainingArguments,
    parse_args,
    run_args,
)
from .inputs import attach_transforms, build_augmentation, load_splits, shrink_images
from .runner import build_trainer, calibrate_checkpoint, evaluate_split, run
from .trainer import BalancedSampler, SkinTrainer, TrainSampleMetrics, class_balance_weights

__all__ = [
    "AUGMENTATIONS",
    "BALANCE_MODES",
    "RECIPES",
    "SHRINK_BELOW",
    "BalancedSampler",
    "DataArguments",
    "ModelArguments",
    "SkinTrainer",
    "SkinTrainingArguments",
    "TrainSampleMetrics",
    "attach_transforms",
    "build_augmentation",
    "build_trainer",
    "calibrate_checkpoint",
    "class_balance_weights",
    "evaluate_split",
    "load_splits",
    "parse_args",
    "run",
    "run_args",
    "shrink_images",
]
