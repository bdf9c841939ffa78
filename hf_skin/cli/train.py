"""`hf-skin train` (`scripts/finetune.py`, `hf-skin-finetune`): train, evaluate, calibrate and save one run.

Its ~150 flags are three dataclasses' (`hf_skin.training`: the model, the data, and transformers' `TrainingArguments`
with hf-skin's own); `--help` shows them grouped by what they are for, hf-skin's and the common ones first.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

from .common import TOKEN_HELP, command_argv, configure_logging, dataclass_parser, user_errors

# --help's groups: title -> (what the group is for, its flags in the order shown). A flag in no group is one of
# transformers' TrainingArguments that hf-skin leaves as it is: they come last, under OTHER_FLAGS.
TRAIN_GROUPS: dict[str, tuple[str, tuple[str, ...]]] = {
    "model": (
        "Which network, from which weights; each --model starts from its recipe (hf_skin.training.RECIPES).",
        (
            "model",
            "model_name_or_path",
            "image_size",
            "backbone",
            "metadata_fields",
            "freeze_backbone",
            "config_overrides",
        ),
    ),
    "data and its lesion-grouped split": (
        "HAM10000-format data (a raw download, the ISIC 2018 layout, a prepared folder or a Hub dataset), split by "
        "lesion so that no lesion is in two splits.",
        (
            "dataset",
            "validation_size",
            "test_size",
            "split_seed",
            "on_missing",
            "shrink_images",
            "max_train_samples",
            "max_eval_samples",
        ),
    ),
    "training": (
        "The run folder, the schedule, the optimiser and the class balance.",
        (
            "output_dir",
            "overwrite_output_dir",
            "resume_from_checkpoint",
            "num_train_epochs",
            "max_steps",
            "per_device_train_batch_size",
            "gradient_accumulation_steps",
            "learning_rate",
            "lr_scheduler_type",
            "lr_scheduler_kwargs",
            "warmup_steps",
            "step_decay_epochs",
            "step_decay_gamma",
            "backbone_learning_rate_multiplier",
            "balance",
            "balance_power",
            "augment",
            "early_stopping_patience",
            "optim",
            "optim_args",
            "weight_decay",
            "adam_beta1",
            "adam_beta2",
            "adam_epsilon",
            "max_grad_norm",
            "label_smoothing_factor",
            "seed",
            "data_seed",
            "full_determinism",
        ),
    ),
    "evaluation, checkpoints and calibration": (
        "When the validation split is scored, which checkpoint is kept, and the calibration and referral threshold "
        "fitted on validation after training.",
        (
            "eval_strategy",
            "eval_steps",
            "per_device_eval_batch_size",
            "metric_for_best_model",
            "greater_is_better",
            "load_best_model_at_end",
            "save_strategy",
            "save_steps",
            "save_total_limit",
            "save_only_model",
            "train_metrics_samples",
            "calibration",
            "target_sensitivity",
            "int8_ready",
        ),
    ),
    "hardware and speed": (
        "Where it runs and how fast: precision, memory layout, compilation, data loading.",
        (
            "use_cpu",
            "bf16",
            "fp16",
            "tf32",
            "channels_last",
            "torch_compile",
            "torch_compile_backend",
            "torch_compile_mode",
            "activation_checkpointing",
            "auto_find_batch_size",
            "dataloader_num_workers",
            "dataloader_pin_memory",
            "dataloader_persistent_workers",
            "dataloader_prefetch_factor",
        ),
    ),
    "logging": (
        "What is logged, and where to (TensorBoard, Trackio, ...).",
        (
            "logging_strategy",
            "logging_steps",
            "logging_first_step",
            "report_to",
            "run_name",
            "project",
            "disable_tqdm",
            "log_level",
        ),
    ),
    "the Hub": (
        f"Publish the run when it ends (hf_skin.hub.push_run_to_hub, as `hf-skin push`). The token: {TOKEN_HELP}.",
        ("push_to_hub", "hub_model_id", "hub_private_repo"),
    ),
}
OTHER_FLAGS = (
    "other flags of transformers' TrainingArguments",
    "Distributed training (DDP, FSDP, DeepSpeed), more logging and evaluation settings, and the rest; see\n"
    "  https://huggingface.co/docs/transformers/main_classes/trainer#transformers.TrainingArguments",
)
# Shown nowhere: refused on the command line (see TOKEN_HELP).
HIDDEN_FLAGS = ("hub_token",)
# transformers' help of flags that hf-skin uses otherwise than the Trainer would (hf_skin.hub publishes a run once,
# when it has finished; hf_skin.training resumes a run in its own folder).
HELP = {
    "push_to_hub": "Publish the finished run once, at the end, as `hf-skin push` does (not at every save).",
    "hub_model_id": "The Hub model repo to publish to, user/name (default: the --output_dir folder's name, under the "
    "token's user).",
    "hub_private_repo": "Create the repo as private (default: the Hub's rule for the owner).",
    "resume_from_checkpoint": "A checkpoint-* folder of the run in --output_dir to go on training from.",
}


def group_flags(parser: argparse.ArgumentParser, groups: dict[str, tuple[str, tuple[str, ...]]]) -> None:
    """Shows `parser`'s flags under `groups` in `--help` instead of one group per dataclass (parsing is unchanged)."""
    actions = defaultdict(list)  # dest -> the flag and its `--no_` twin
    for action in parser._actions:
        if action.option_strings and not isinstance(action, argparse._HelpAction):
            actions[action.dest].append(action)
    for name, text in HELP.items():
        for action in actions.get(name, [])[:1]:
            action.help = text
    for name in HIDDEN_FLAGS:
        for action in actions.pop(name, []):
            action.help = argparse.SUPPRESS
    # argparse keeps a group's flags in `_group_actions`; HfArgumentParser made one group per dataclass.
    del parser._action_groups[2:]  # positionals, options (-h), then the dataclasses' groups
    parser._optionals._group_actions[:] = [a for a in parser._optionals._group_actions if a.dest == "help"]
    for title, (description, names) in groups.items():
        group = parser.add_argument_group(title, description)
        for name in names:
            group._group_actions.extend(actions.pop(name, []))
    other = parser.add_argument_group(*OTHER_FLAGS)
    for twins in actions.values():
        other._group_actions.extend(twins)


def _recipe_model(argv: list[str]) -> str:
    """The `--model` whose recipe gives the defaults `--help` shows (`parse_args` reads the same flag)."""
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--model", default="cnn")
    return pre.parse_known_args(argv)[0].model


def train_parser(argv: list[str] = (), prog: str | None = None):
    """The parser of `hf-skin train`: `hf_skin.training.parse_args`' flags with the chosen `--model`'s recipe as
    defaults, grouped by what they are for."""
    from ..training import RECIPES, DataArguments, ModelArguments, SkinTrainingArguments

    model = _recipe_model(list(argv))
    parser = dataclass_parser(
        (ModelArguments, DataArguments, SkinTrainingArguments),
        prog=prog,
        usage="%(prog)s [--model NAME] [--dataset DATA] [--output_dir DIR] [FLAG ...]\n"
        "       %(prog)s ARGS.json [FLAG ...]",
        description="Fine-tune one model on HAM10000-format data: train, keep the best checkpoint on validation, "
        "calibrate it, score the test split and save the run folder (checkpoint, metrics, figures, model card). "
        "A .json file of flags may come first (recipes/*.json, a run's run_args.json); flags after it override it. "
        f"The defaults shown are --model {model}'s recipe (%(prog)s --model NAME --help shows another's).",
        epilog="examples:\n"
        "  %(prog)s --model cnn --dataset data/synthetic_ham10000 --num_train_epochs 2\n"
        "  %(prog)s recipes/efficientnet_lite0.json --dataset ../shared/ham10000\n"
        "  accelerate launch scripts/finetune.py --model vit --dataset ../shared/ham10000   (several GPUs)",
    )
    parser.set_defaults(**RECIPES.get(model, {}), output_dir=f"runs/{model}")
    group_flags(parser, TRAIN_GROUPS)
    return parser


def finetune(argv: list[str] | None = None, *, prog: str | None = None) -> dict:
    """`hf-skin train` (`scripts/finetune.py`): train, evaluate, save (and push) one run; returns its metrics."""
    from ..training import parse_args, run

    argv = command_argv(argv)
    flags = argv[1:] if argv and argv[0].endswith(".json") else argv
    parser = train_parser(flags, prog)
    # argparse's own checks and --help here, with this parser's usage; parse_args then reads the values.
    unknown = parser.parse_known_args(flags)[1]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    with user_errors(parser):
        model_args, data_args, training_args = parse_args(argv)
        configure_logging()
        results = run(model_args, data_args, training_args)
    if training_args.process_index == 0:
        out = Path(training_args.output_dir)
        print(f"\nCheckpoint (model + processor): {out}")
        print(f"Metrics:            {out / 'all_results.json'} (full: {out / 'test_metrics.json'})")
        print(f"Confusion matrices: {out / 'test_confusion_matrix.png'}, *_normalized.png")
        if "test_balanced_accuracy" in results:
            print(
                f"Test accuracy {results['test_accuracy']:.3f}, "
                f"balanced accuracy {results['test_balanced_accuracy']:.3f}"
            )
        if "hub_url" in results:
            print(f"Published:          {results['hub_url']}")
    return results
