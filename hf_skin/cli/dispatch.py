"""`hf-skin COMMAND ...`, the one console command, and its `hf-skin-*` aliases of before (one command each)."""

from __future__ import annotations

import sys
from pathlib import Path

from .commands import calibrate, compare, evaluate, export_onnx, prepare_dataset, push_to_hub, synthetic
from .common import CommandLineError
from .train import finetune

# `hf-skin SUBCOMMAND`: what each runs, and what `hf-skin --help` says of it.
COMMANDS = {
    "train": (finetune, "train, evaluate, calibrate and save one run (accelerate launch scripts/finetune.py: GPUs)"),
    "evaluate": (evaluate, "metrics, report and figures of a checkpoint on HAM10000-format data (default: its run's)"),
    "calibrate": (calibrate, "recalibrate a checkpoint on labelled images, into a new folder, without retraining"),
    "compare": (compare, "one table of several runs' test metrics, their curves, paired intervals of differences"),
    "prepare": (prepare_dataset, "HAM10000 -> lesion-grouped splits as save_to_disk/parquet, plots, a dataset card"),
    "export": (export_onnx, "a finished run -> ONNX (fp32, int8) and the spec a runtime needs"),
    "push": (push_to_hub, "publish a finished run as a Hub model repo with its card (--dry_run: offline, no token)"),
    "synthetic": (synthetic, "write a synthetic HAM10000-layout folder (a demo's data; it is not real lesions)"),
}
# The console commands that name one subcommand (`hf-skin-evaluate ...` is `hf-skin evaluate ...`).
ALIASES = {
    "hf-skin-finetune": "train",
    "hf-skin-evaluate": "evaluate",
    "hf-skin-calibrate": "calibrate",
    "hf-skin-compare": "compare",
    "hf-skin-push": "push",
    "hf-skin-prepare-dataset": "prepare",
    "hf-skin-export-onnx": "export",
}


def usage() -> str:
    """What `hf-skin --help` prints: the subcommands, one line each."""
    from .. import __version__

    width = max(map(len, COMMANDS))
    lines = [f"  {name:{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    return (
        "usage: hf-skin COMMAND [ARGS ...]\n\n"
        f"Fine-tune, evaluate, calibrate, export and publish skin-lesion classifiers (hf-skin {__version__}).\n\n"
        "commands:\n" + "\n".join(lines) + "\n\n`hf-skin COMMAND --help` lists a command's flags."
    )


def main(argv: list[str] | None = None) -> int:
    """The `hf-skin` console command (and its `hf-skin-*` aliases): runs one subcommand and returns 0, its exit
    status; a mistake exits non-zero with one `error:` line (`CommandLineError`, argparse's usage errors)."""
    alias = Path(sys.argv[0]).name if argv is None else None
    argv = sys.argv[1:] if argv is None else list(argv)
    if alias in ALIASES:
        name, prog = ALIASES[alias], alias
    else:
        if not argv or argv[0] in ("-h", "--help"):
            print(usage(), file=sys.stdout if argv else sys.stderr)
            return 0 if argv else 2
        if argv[0] == "--version":
            from .. import __version__

            print(f"hf-skin {__version__}")
            return 0
        name, argv = argv[0], argv[1:]
        if name not in COMMANDS:
            raise CommandLineError(f"no command {name!r}: one of {', '.join(COMMANDS)} (hf-skin --help)")
        prog = f"hf-skin {name}"
    COMMANDS[name][0](argv, prog=prog)
    return 0
