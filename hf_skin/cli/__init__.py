"""The command lines: `hf-skin COMMAND` (`hf_skin.cli.main`), its `hf-skin-*` aliases and `scripts/*.py` call
these functions.

The library logs and never prints; what a person reads at the end of a command is printed here, and a mistake is one
`error:` line (a non-zero exit status) with advice in flag spelling, never a traceback.

- `common`: the parsers (no abbreviations, readable `--help`), the token rule, library errors as one line;
- `train`: `hf-skin train` and its grouped `--help`;
- `commands`: evaluate, calibrate, compare, push, prepare, export, synthetic;
- `dispatch`: `hf-skin` itself: the subcommands, the aliases, the exit status.
"""

from .commands import calibrate, compare, evaluate, export_onnx, prepare_dataset, push_to_hub, synthetic
from .common import (
    TOKEN_HELP,
    CommandLineError,
    configure_logging,
    flag_spelling,
    refuse_tokens,
    user_errors,
)
from .dispatch import ALIASES, COMMANDS, main, usage
from .train import TRAIN_GROUPS, finetune, group_flags, train_parser

__all__ = [
    "ALIASES",
    "COMMANDS",
    "TOKEN_HELP",
    "TRAIN_GROUPS",
    "CommandLineError",
    "calibrate",
    "compare",
    "configure_logging",
    "evaluate",
    "export_onnx",
    "finetune",
    "flag_spelling",
    "group_flags",
    "main",
    "prepare_dataset",
    "push_to_hub",
    "refuse_tokens",
    "synthetic",
    "train_parser",
    "usage",
    "user_errors",
]
