"""The command lines: `hf-skin SUBCOMMAND` (and its `hf-skin-*` aliases) and `scripts/*.py` call these functions.

The library logs and never prints; what a person reads at the end of a command is printed here, and a mistake is one
`error:` line (a non-zero exit status), with advice in flag spelling. Tokens are never taken from a command line
(shell history and process lists keep them): every command reads `HF_TOKEN` or the `hf auth login` token.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import re
import sys
from pathlib import Path

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# The token arguments of transformers' and hf-skin's parsers, and how a token looks: refused in any spelling.
TOKEN_NAMES = ("hub_token", "token")
TOKEN_VALUE = re.compile(r"\bhf_[A-Za-z0-9]{16,}")
TOKEN_HELP = "set HF_TOKEN in the environment or run `hf auth login` instead"
# The library's messages name its Python arguments (`on_missing='skip'`); a command line's user reads flags.
_PYTHON_ARGUMENT = re.compile(r"\b(on_missing|with_masks|resplit)=(['\"]?)(\w+)\2")


def _hub_errors() -> tuple[type[Exception], ...]:
    from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError

    return LocalTokenNotFoundError, HfHubHTTPError, ConnectionError


HUB_ERRORS = _hub_errors()  # a missing token, a refused or failed request, an unreachable Hub: one line, no traceback


class CommandLineError(SystemExit):
    """A command-line mistake: one `error:` line, exit status 1, no traceback."""

    def __init__(self, message: str):
        super().__init__(f"error: {message}")


def configure_logging() -> None:
    import datasets

    logging.basicConfig(format=LOG_FORMAT, level=logging.INFO)
    datasets.utils.logging.set_verbosity_warning()


def _token_name(name: str) -> bool:
    """Whether a flag or argument-file key names a token, in any spelling: `--hub-token`, `--HUB_TOKEN`, `--hubtoken`,
    or a prefix argparse would once have expanded (`--hub_tok`, `--tok`)."""
    name = name.split("=", 1)[0].lstrip("-").replace("-", "_").lower()
    squashed = name.replace("_", "")
    return any(
        name == token or squashed == token.replace("_", "") or (len(name) >= 3 and token.startswith(name))
        for token in TOKEN_NAMES
    )


def refuse_tokens(argv: list[str]) -> None:
    """One policy for every command: no token on the command line or in an argument file, in any spelling."""
    for arg in argv:
        if arg.startswith("-") and _token_name(arg):
            raise CommandLineError(f"{arg.split('=', 1)[0]} is not accepted on the command line: {TOKEN_HELP}")
        if TOKEN_VALUE.search(arg):
            raise CommandLineError(f"an argument looks like a Hugging Face token (hf_...): remove it, {TOKEN_HELP}")
        if arg.endswith(".json") and Path(arg).is_file():
            try:
                values = json.loads(Path(arg).read_text())
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue  # the parser names the problem
            if isinstance(values, dict) and any(
                (_token_name(k) or k.endswith("_token")) and v for k, v in values.items()
            ):
                raise CommandLineError(f"{arg} holds a token: remove it, {TOKEN_HELP}")


def flag_spelling(message: str) -> str:
    """A library message in a command line's words: `on_missing='skip'` -> `--on_missing skip`."""

    def flag(match: re.Match) -> str:
        name, value = match.group(1), match.group(3)
        if value in ("True", "False"):
            return f"--{name}" if value == "True" else f"--no_{name}"
        return f"--{name} {value}"

    return _PYTHON_ARGUMENT.sub(flag, message)


def user_errors(command):
    """Runs a command; an error written for its user (a bad file, folder, value or id) becomes one `error:` line in
    flag spelling instead of a traceback (`HF_SKIN_TRACEBACK=1` shows the traceback)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from .locations import HubUnavailableError
        from .runs import RunFolderError

        try:
            return command(*args, **kwargs)
        except (ValueError, FileNotFoundError, NotADirectoryError, HubUnavailableError, RunFolderError) as err:
            if os.environ.get("HF_SKIN_TRACEBACK"):
                raise
            raise CommandLineError(flag_spelling(str(err))) from None

    return wrapper


def _argv(argv: list[str] | None) -> list[str]:
    argv = sys.argv[1:] if argv is None else list(argv)
    refuse_tokens(argv)
    return argv


def _dataclass_args(cls, argv: list[str]):
    from transformers import HfArgumentParser

    parser = HfArgumentParser(cls, allow_abbrev=False)
    if len(argv) == 1 and argv[0].endswith(".json"):
        return parser.parse_json_file(argv[0])[0]
    return parser.parse_args_into_dataclasses(args=argv)[0]


@user_errors
def finetune(argv: list[str] | None = None) -> dict:
    """`scripts/finetune.py`: train, evaluate, save (and push) one run."""
    from .pretrained import HubUnavailableError
    from .runs import RunFolderError
    from .training import parse_args, run

    argv = _argv(argv)
    configure_logging()
    try:
        model_args, data_args, training_args = parse_args(argv)
        results = run(model_args, data_args, training_args)
    except (HubUnavailableError, RunFolderError, *HUB_ERRORS) as err:  # what was asked for, the ways forward
        raise CommandLineError(str(err)) from None
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


@user_errors
def evaluate(argv: list[str] | None = None) -> dict:
    """`scripts/evaluate.py`: metrics, report and figures of a checkpoint on HAM10000-format data."""
    from .evaluation import EvaluationArguments, run_evaluation
    from .runs import RunFolderError

    argv = _argv(argv)
    configure_logging()
    try:
        args = _dataclass_args(EvaluationArguments, argv)
        metrics = run_evaluation(args)
    except RunFolderError as err:
        raise CommandLineError(str(err)) from None
    intervals = (metrics.get("bootstrap") or {}).get("intervals") or {}

    def value(key: str) -> str:
        interval = intervals.get(key)
        return f"{metrics[key]:.3f}" + (f" (95% interval {interval[0]:.3f}–{interval[1]:.3f})" if interval else "")

    print(
        f"{args.split} split, {metrics['n']:,} images: accuracy {value('accuracy')}, "
        f"balanced accuracy {value('balanced_accuracy')}\nReport, metrics and figures in {args.output_dir} "
        f"(open {args.output_dir}/report.md)"
    )
    return metrics


@user_errors
def calibrate(argv: list[str] | None = None) -> dict:
    """`scripts/calibrate.py`: a trained checkpoint recalibrated on labelled images, into a new folder."""
    from .calibration import CalibrationError
    from .evaluation import RecalibrationArguments, recalibrate
    from .runs import RunFolderError

    argv = _argv(argv)
    configure_logging()
    try:
        args = _dataclass_args(RecalibrationArguments, argv)
        record = recalibrate(args)
    except (CalibrationError, RunFolderError) as err:
        raise CommandLineError(str(err)) from None
    calibration, point = record["calibration"], record["operating_point"]
    scores = calibration["scores"]
    print(
        f"Calibrated ({calibration['method']}) on {record['n']:,} images of {record['dataset']} ({record['split']}): "
        f"temperature {calibration['temperature']:.3f}; NLL {scores['nll_before']:.4f} -> {scores['nll_after']:.4f}, "
        f"ECE {scores['ece_before']:.4f} -> {scores['ece_after']:.4f} on these images"
    )
    if point:
        print(
            f"Referral threshold {point['threshold']:.2%} (sensitivity {point['sensitivity']:.3f}, specificity "
            f"{point['specificity']:.3f} on these images)"
        )
    print(f"Recalibrated checkpoint: {args.output_dir} (evaluate it on test with scripts/evaluate.py)")
    return record


@user_errors
def compare(argv: list[str] | None = None) -> list[dict]:
    """`scripts/compare.py`: one table of several runs' test metrics, their training curves on one figure, and paired
    bootstrap intervals of the differences between runs scored on the same images."""
    from .evaluation import compare_runs, difference_sentence
    from .metrics import BOOTSTRAP_RESAMPLES

    parser = argparse.ArgumentParser(
        allow_abbrev=False,
        prog="compare.py",
        description="Compare training runs: one table of their test metrics and per-class recalls, their training "
        "curves on one figure, and for each pair scored on the same images (their predictions.csv from "
        "scripts/evaluate.py) a paired, lesion-level bootstrap interval of each difference.",
    )
    parser.add_argument(
        "run_dirs",
        nargs="+",
        help="output_dir of each scripts/finetune.py run (its evaluation/<name>/predictions.csv is used for the "
        "intervals: the only one, or the one named *-test) or of a scripts/evaluate.py run",
    )
    parser.add_argument("--output_dir", default="runs/compare", help="where to write the table and the figure")
    parser.add_argument(
        "--bootstrap_resamples",
        type=int,
        default=BOOTSTRAP_RESAMPLES,
        help="resamples of the lesions behind each paired interval (0: no intervals)",
    )
    parser.add_argument("--bootstrap_seed", type=int, default=0, help="the same seed gives the same intervals")
    args = parser.parse_args(_argv(argv))
    if args.bootstrap_resamples < 0:
        parser.error(f"--bootstrap_resamples must be 0 (no intervals) or more, not {args.bootstrap_resamples}")
    configure_logging()
    try:
        rows, pairs = compare_runs(
            args.run_dirs,
            args.output_dir,
            bootstrap_resamples=args.bootstrap_resamples,
            bootstrap_seed=args.bootstrap_seed,
            return_pairs=True,
        )
    except (FileNotFoundError, ValueError) as err:  # no run, an unreadable predictions.csv: one line, no traceback
        raise CommandLineError(str(err)) from None
    print(f"{len(rows)} runs compared: {args.output_dir}/comparison.md, comparison.csv, training_curves.png")
    for pair in pairs:
        if pair["comparable"]:
            print(difference_sentence(pair["a"], pair["b"], "balanced_accuracy", pair["metrics"]["balanced_accuracy"]))
        else:
            print(f"`{pair['a']}` − `{pair['b']}`: not comparable, {pair['reason']}")
    return rows


@user_errors
def push_to_hub(argv: list[str] | None = None):
    """`scripts/push_to_hub.py`: publish a finished run as a Hub model repo (or, with `--dry_run`, say what a push
    would upload and delete); returns the repo URL, or the `PushPlan` of a dry run."""
    from huggingface_hub.errors import HfHubHTTPError

    from .hub import check_repo_id, plan_run_push, push_run_to_hub
    from .runs import CARD_FILE, RunFolderError

    parser = argparse.ArgumentParser(
        allow_abbrev=False,
        prog="push_to_hub.py",
        description="Publish a finished training run on the Hugging Face Hub: weights, config, processor, modeling "
        "code, metrics, confusion matrices and a model card, in one commit that also deletes the repo's files the run "
        f"does not have. The token: {TOKEN_HELP}.",
    )
    parser.add_argument("run_dir", help="The --output_dir of a finished scripts/finetune.py run.")
    parser.add_argument("repo_id", help="The Hub model repo, user/name or org/name (created when missing).")
    parser.add_argument("--private", action="store_true", help="Create the repo as private.")
    parser.add_argument(
        "--dry_run",
        action="store_true",
        help="List what the push would upload and delete, and change nothing (neither the Hub nor the run folder).",
    )
    card = parser.add_mutually_exclusive_group()
    card.add_argument(
        "--overwrite_card",
        action="store_true",
        help="Replace the run folder's README.md with the generated model card even if it was edited by hand.",
    )
    card.add_argument(
        "--keep_card",
        action="store_true",
        help="Publish the run folder's README.md as it is (a hand-edited card); generate one only if there is none.",
    )
    args = parser.parse_args(_argv(argv))
    configure_logging()
    card_choice = {"overwrite_card": args.overwrite_card, "keep_card": args.keep_card}
    try:
        check_repo_id(args.repo_id)
    except ValueError as err:
        raise CommandLineError(str(err)) from None
    try:
        if args.dry_run:
            plan = plan_run_push(args.run_dir, args.repo_id, **card_choice)
            print(f"Dry run, nothing was changed.\n{plan.describe()}")
            print(f"\nThe model card it would publish ({CARD_FILE}):\n\n{plan.card_text}")
            return plan
        url = push_run_to_hub(args.run_dir, args.repo_id, private=args.private or None, **card_choice)
    except HfHubHTTPError as err:  # the log has already said that the run folder is intact
        raise CommandLineError(
            f"the Hub refused the push ({err}): check that the token has write access to {args.repo_id}, then push "
            "again"
        ) from None
    except (RunFolderError, FileNotFoundError, *HUB_ERRORS) as err:  # no run, no token, an edited card, no Hub
        raise CommandLineError(str(err)) from None
    print(f"pushed: {url}")
    return url


@user_errors
def prepare_dataset(argv: list[str] | None = None) -> dict:
    """`scripts/prepare_dataset.py`: splits, plots, a dataset card, optionally a Hub push."""
    from .preparation import DatasetPreparationArguments, OutputFolderError
    from .preparation import prepare_dataset as prepare

    args = _dataclass_args(DatasetPreparationArguments, _argv(argv))
    configure_logging()
    try:
        result = prepare(args)
    except OutputFolderError as err:
        raise CommandLineError(str(err)) from None
    print(f"dataset ({args.format}): {', '.join(str(path) for path in result['data_files'])}")
    print(f"plots:   {', '.join(str(path) for path in result['plots'].values())}")
    print(f"card:    {result['card_path']}")
    if result["url"]:
        print(f"pushed:  {result['url']}")
    return result


@user_errors
def synthetic(argv: list[str] | None = None) -> Path:
    """`python -m hf_skin.synthetic OUT_DIR`: a synthetic HAM10000 folder (raw download layout)."""
    import csv
    from collections import Counter

    from .data import DX_LABELS
    from .synthetic import make_synthetic_ham10000

    parser = argparse.ArgumentParser(
        allow_abbrev=False,
        prog="python -m hf_skin.synthetic",
        description="Write a synthetic HAM10000 folder (raw download layout).",
    )
    parser.add_argument("out_dir")
    parser.add_argument("--num_lesions", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no_masks", action="store_true", help="skip the segmentation masks")
    args = parser.parse_args(argv)
    out_dir = make_synthetic_ham10000(args.out_dir, args.num_lesions, args.seed, with_masks=not args.no_masks)
    with open(out_dir / "HAM10000_metadata.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    images = Counter(r["dx"] for r in rows)
    lesions = Counter(r["dx"] for r in {r["lesion_id"]: r for r in rows}.values())
    print(f"Wrote {len(rows)} images of {sum(lesions.values())} lesions to {out_dir}")
    for dx in DX_LABELS:
        print(f"  {dx:6s} {lesions[dx]:5d} lesions {images[dx]:6d} images")
    return out_dir


@user_errors
def export_onnx(argv: list[str] | None = None) -> dict:
    """`scripts/export_onnx.py`: a finished run -> ONNX (+ int8) and its spec; prints the files and the parity."""
    from .export import MAX_BALANCED_ACCURACY_DROP, MIN_AGREEMENT, QUANTIZATION_CHOICES, ExportError, export_run
    from .runs import RunFolderError

    parser = argparse.ArgumentParser(
        allow_abbrev=False,
        prog="export_onnx.py",
        description="Export a finished training run to ONNX: model.onnx (fp32, dynamic batch axis), with --quantize "
        "int8 also model_int8.onnx (onnxruntime's static quantisation, per channel, calibrated on the run's training "
        "images and measured against fp32 on its validation images; a warning when it misses the targets, "
        f"{100 * MIN_AGREEMENT:g}% top-1 agreement with fp32 and balanced accuracy within "
        f"{MAX_BALANCED_ACCURACY_DROP:g}: train with --int8_ready for a model made for int8), and hf_skin_export.json "
        "(inputs, preprocessing, labels, metadata encoding, calibration and operating point). "
        "SkinClassifier.from_pretrained(OUT_DIR) serves it without torch.",
    )
    parser.add_argument("run_dir", help="The --output_dir of a finished scripts/finetune.py run.")
    parser.add_argument("out_dir", help="A new or empty folder, or an earlier export's folder (replaced).")
    parser.add_argument("--quantize", choices=QUANTIZATION_CHOICES, help="Also write an int8 model.")
    parser.add_argument(
        "--dataset", help="The HAM10000 folder the run trained on, if not where its run_args.json says."
    )
    parser.add_argument(
        "--calibration_images", type=int, default=256, help="Training-split images that calibrate int8 (default 256)."
    )
    parser.add_argument(
        "--validation_images",
        type=int,
        default=None,
        help="Validation-split images for the parity check and int8's agreement (default: the whole split).",
    )
    args = parser.parse_args(_argv(argv))
    for name in ("calibration_images", "validation_images"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name} must be at least 1, not {value}")
    configure_logging()
    for name in ("onnx_ir", "onnxscript"):  # the exporter's passes log every rewrite at INFO
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        spec = export_run(
            args.run_dir,
            args.out_dir,
            quantize=args.quantize,
            dataset=args.dataset,
            calibration_images=args.calibration_images,
            validation_images=args.validation_images,
        )
    except (ExportError, RunFolderError, FileNotFoundError) as err:
        raise CommandLineError(str(err)) from None
    for precision, entry in spec["models"].items():
        check = entry.get("parity") or entry.get("validation") or {}
        against = "PyTorch" if precision == "fp32" else "fp32"
        inputs = "validation" if check.get("balanced_accuracy") is not None else "random"
        how = " (static, per channel)" if precision == "int8" else ""
        print(
            f"{precision}{how}: {Path(args.out_dir) / entry['file']} ({entry['bytes'] / 2**20:.1f} MiB); on "
            f"{check.get('n')} {inputs} inputs, top-1 agreement with {against} {check.get('top1_agreement', 0):.4f}, "
            f"max probability difference {check.get('max_probability_difference', 0):.2g}"
        )
    print(f"spec: {Path(args.out_dir) / 'hf_skin_export.json'}")
    return spec


# `hf-skin SUBCOMMAND`: what each runs, and what `hf-skin --help` says of it.
COMMANDS = {
    "train": (
        finetune,
        "train, evaluate and save one run (scripts/finetune.py; accelerate launch it for more processes)",
    ),
    "evaluate": (evaluate, "metrics, report and figures of a checkpoint on HAM10000-format data (default: its run's)"),
    "calibrate": (calibrate, "recalibrate a checkpoint on labelled images, into a new folder, without retraining"),
    "compare": (compare, "one table of several runs' test metrics, their curves, paired intervals of differences"),
    "prepare": (
        prepare_dataset,
        "HAM10000 -> lesion-grouped splits as save_to_disk/parquet, plots and a dataset card",
    ),
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
    width = max(map(len, COMMANDS))
    lines = [f"  {name:{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    return (
        "usage: hf-skin COMMAND [ARGS ...]   (hf-skin COMMAND --help for its flags)\n\n"
        "Fine-tune, evaluate, calibrate, export and publish skin-lesion classifiers on HAM10000.\n\ncommands:\n"
        + "\n".join(lines)
    )


def main(argv: list[str] | None = None) -> int:
    """The `hf-skin` console command (and its `hf-skin-*` aliases): runs one subcommand and returns 0; a mistake
    exits non-zero with one `error:` line."""
    command = ALIASES.get(Path(sys.argv[0]).name) if argv is None else None
    argv = sys.argv[1:] if argv is None else list(argv)
    if command is None:
        if not argv or argv[0] in ("-h", "--help"):
            print(usage(), file=sys.stdout if argv else sys.stderr)
            return 0 if argv else 2
        command, argv = argv[0], argv[1:]
        if command not in COMMANDS:
            raise CommandLineError(f"no command {command!r}: one of {', '.join(COMMANDS)} (hf-skin --help)")
    COMMANDS[command][0](argv)
    return 0
