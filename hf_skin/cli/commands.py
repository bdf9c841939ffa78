"""The commands besides `train`: `evaluate`, `calibrate`, `compare`, `push`, `prepare`, `export` and `synthetic`.

Each parses its flags, calls the library, and prints what a person reads at the end; each returns its result to a
caller in Python (`scripts/*.py`, tests), while the console command (`hf_skin.cli.main`) returns an exit status.
"""

from __future__ import annotations

import logging
from pathlib import Path

from .common import (
    TOKEN_HELP,
    CommandLineError,
    CommandParser,
    command_argv,
    configure_logging,
    dataclass_parser,
    parse_dataclass,
    user_errors,
)


def evaluate(argv: list[str] | None = None, *, prog: str | None = None) -> dict:
    """`hf-skin evaluate` (`scripts/evaluate.py`): metrics, report and figures of a checkpoint on HAM10000-format
    data, by default the data its run trained on."""
    from ..evaluation import EvaluationArguments, run_evaluation

    argv = command_argv(argv)
    parser = dataclass_parser(
        EvaluationArguments,
        prog=prog,
        description="Evaluate a checkpoint on HAM10000-format data: metrics.json, report.md, predictions.csv and "
        "figures. A run folder is scored on its own data and lesion-grouped split unless told otherwise.",
    )
    with user_errors(parser):
        args = parse_dataclass(parser, argv)
        configure_logging()
        metrics = run_evaluation(args)
    intervals = (metrics.get("bootstrap") or {}).get("intervals") or {}

    def value(key: str) -> str:
        interval = intervals.get(key)
        return f"{metrics[key]:.3f}" + (f" (95% interval {interval[0]:.3f}–{interval[1]:.3f})" if interval else "")

    print(
        f"{args.split} split of {args.dataset}, {metrics['n']:,} images: accuracy {value('accuracy')}, "
        f"balanced accuracy {value('balanced_accuracy')}\nReport, metrics and figures in {args.output_dir} "
        f"(open {args.output_dir}/report.md)"
    )
    return metrics


def calibrate(argv: list[str] | None = None, *, prog: str | None = None) -> dict:
    """`hf-skin calibrate` (`scripts/calibrate.py`): a trained checkpoint recalibrated on labelled images, into a new
    folder."""
    from ..evaluation import RecalibrationArguments, recalibrate

    argv = command_argv(argv)
    parser = dataclass_parser(
        RecalibrationArguments,
        prog=prog,
        description="Recalibrate a trained checkpoint without retraining: a new temperature, the prior shift to a "
        "deployment's class mix and the referral threshold, fitted on labelled images (by default the run's own "
        "validation split), into a new folder.",
    )
    with user_errors(parser):
        args = parse_dataclass(parser, argv)
        configure_logging()
        record = recalibrate(args)
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
    print(f"Recalibrated checkpoint: {args.output_dir} (score it on test: hf-skin evaluate --model {args.output_dir})")
    return record


def compare(argv: list[str] | None = None, *, prog: str | None = None) -> list[dict]:
    """`hf-skin compare` (`scripts/compare.py`): one table of several runs' test metrics, their training curves on
    one figure, and paired bootstrap intervals of the differences between runs scored on the same images."""
    from ..evaluation import compare_runs, difference_sentence
    from ..metrics import BOOTSTRAP_RESAMPLES

    parser = CommandParser(
        prog=prog,
        description="Compare training runs: one table of their test metrics and per-class recalls, their training "
        "curves on one figure, and for each pair scored on the same images (their predictions.csv from "
        "hf-skin evaluate) a paired, lesion-level bootstrap interval of each difference.",
    )
    parser.add_argument(
        "run_dirs",
        nargs="+",
        metavar="RUN_DIR",
        help="output_dir of each hf-skin train run (its evaluation/<name>/predictions.csv is used for the "
        "intervals: the only one, or the one named *-test) or of an hf-skin evaluate run",
    )
    parser.add_argument("--output_dir", default="runs/compare", help="where to write the table and the figure")
    parser.add_argument(
        "--bootstrap_resamples",
        type=int,
        default=BOOTSTRAP_RESAMPLES,
        help="resamples of the lesions behind each paired interval (0: no intervals)",
    )
    parser.add_argument("--bootstrap_seed", type=int, default=0, help="the same seed gives the same intervals")
    args = parser.parse_args(command_argv(argv))
    if args.bootstrap_resamples < 0:
        parser.error(f"--bootstrap_resamples must be 0 (no intervals) or more, not {args.bootstrap_resamples}")
    configure_logging()
    with user_errors(parser):  # no run, an unreadable predictions.csv
        rows, pairs = compare_runs(
            args.run_dirs,
            args.output_dir,
            bootstrap_resamples=args.bootstrap_resamples,
            bootstrap_seed=args.bootstrap_seed,
            return_pairs=True,
        )
    print(f"{len(rows)} runs compared: {args.output_dir}/comparison.md, comparison.csv, training_curves.png")
    for pair in pairs:
        if pair["comparable"]:
            print(difference_sentence(pair["a"], pair["b"], "balanced_accuracy", pair["metrics"]["balanced_accuracy"]))
        else:
            print(f"`{pair['a']}` − `{pair['b']}`: not comparable, {pair['reason']}")
    return rows


def push_to_hub(argv: list[str] | None = None, *, prog: str | None = None):
    """`hf-skin push` (`scripts/push_to_hub.py`): publish a finished run as a Hub model repo (or, with `--dry_run`,
    show the card and say what a push would upload and delete); returns the repo URL, or the `PushPlan` of a dry
    run."""
    from huggingface_hub.errors import HfHubHTTPError

    from ..hub import check_repo_id, plan_run_push, push_run_to_hub
    from ..runs import CARD_FILE

    parser = CommandParser(
        prog=prog,
        description="Publish a finished training run on the Hugging Face Hub: weights, config, processor, modeling "
        "code, metrics, confusion matrices and a model card, in one commit that also deletes the repo's files the run "
        f"does not have. The token: {TOKEN_HELP}.",
    )
    parser.add_argument("run_dir", help="The --output_dir of a finished hf-skin train run.")
    parser.add_argument("repo_id", help="The Hub model repo, user/name or org/name (created when missing).")
    parser.add_argument("--private", action="store_true", help="Create the repo as private.")
    parser.add_argument(
        "--dry_run",
        action="store_true",
        help="Show the model card it would publish and the files it would upload and delete, and change nothing "
        "(neither the Hub nor the run folder). Needs neither a token nor the network: what only the Hub knows is "
        "said to be unknown.",
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
    args = parser.parse_args(command_argv(argv))
    configure_logging()
    card_choice = {"overwrite_card": args.overwrite_card, "keep_card": args.keep_card}
    with user_errors(parser):  # no run, no token, an edited card, a bad repo id, no Hub: one line
        check_repo_id(args.repo_id)
        if args.dry_run:
            plan = plan_run_push(args.run_dir, args.repo_id, **card_choice)
            print(f"The model card it would publish ({CARD_FILE}):\n\n{plan.card_text.rstrip()}\n")
            print(plan.describe())
            print(f"Dry run: nothing was changed, neither on the Hub nor in {args.run_dir}.")
            return plan
        try:
            url = push_run_to_hub(args.run_dir, args.repo_id, private=args.private or None, **card_choice)
        except HfHubHTTPError as err:  # the log has already said that the run folder is intact
            raise CommandLineError(
                f"the Hub refused the push ({err}): check that the token has write access to {args.repo_id}, then "
                "push again"
            ) from None
    print(f"pushed: {url}")
    return url


def prepare_dataset(argv: list[str] | None = None, *, prog: str | None = None) -> dict:
    """`hf-skin prepare` (`scripts/prepare_dataset.py`): splits, plots, a dataset card, optionally a Hub push."""
    from ..preparation import DatasetPreparationArguments
    from ..preparation import prepare_dataset as prepare

    argv = command_argv(argv)
    parser = dataclass_parser(
        DatasetPreparationArguments,
        prog=prog,
        description="Prepare HAM10000-format data for training and sharing: lesion-grouped splits saved with "
        "save_to_disk or as parquet, data-analysis plots, a dataset card, and optionally a push to the Hub.",
    )
    with user_errors(parser):
        args = parse_dataclass(parser, argv)
        configure_logging()
        result = prepare(args)
    print(f"dataset ({args.format}): {', '.join(str(path) for path in result['data_files'])}")
    print(f"plots:   {', '.join(str(path) for path in result['plots'].values())}")
    print(f"card:    {result['card_path']}")
    if result["url"]:
        print(f"pushed:  {result['url']}")
    return result


def synthetic(argv: list[str] | None = None, *, prog: str | None = None) -> Path:
    """`hf-skin synthetic` (`python -m hf_skin.synthetic OUT_DIR`): a synthetic HAM10000 folder (raw download
    layout)."""
    import csv
    from collections import Counter

    from ..labels import DX_LABELS
    from ..synthetic import make_synthetic_ham10000

    parser = CommandParser(
        prog=prog,
        description="Write a synthetic HAM10000 folder (the raw download's layout): learnable, drawn lesions for "
        "demos and tests. A model trained on it knows nothing about real skin.",
    )
    parser.add_argument("out_dir", help="A new folder.")
    parser.add_argument("--num_lesions", type=int, default=600, help="Lesions to draw (default 600).")
    parser.add_argument("--seed", type=int, default=0, help="The same seed draws the same folder (default 0).")
    parser.add_argument("--no_masks", action="store_true", help="Skip the segmentation masks.")
    args = parser.parse_args(command_argv(argv))
    with user_errors(parser):
        out_dir = make_synthetic_ham10000(args.out_dir, args.num_lesions, args.seed, with_masks=not args.no_masks)
    with open(out_dir / "HAM10000_metadata.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    images = Counter(r["dx"] for r in rows)
    lesions = Counter(r["dx"] for r in {r["lesion_id"]: r for r in rows}.values())
    print(f"Wrote {len(rows)} images of {sum(lesions.values())} lesions to {out_dir}")
    for dx in DX_LABELS:
        print(f"  {dx:6s} {lesions[dx]:5d} lesions {images[dx]:6d} images")
    return out_dir


def export_onnx(argv: list[str] | None = None, *, prog: str | None = None) -> dict:
    """`hf-skin export` (`scripts/export_onnx.py`): a finished run -> ONNX (+ int8) and its spec; prints the files
    and the parity."""
    from ..export import MAX_BALANCED_ACCURACY_DROP, MIN_AGREEMENT, QUANTIZATION_CHOICES, export_run

    parser = CommandParser(
        prog=prog,
        description="Export a finished training run to ONNX: model.onnx (fp32, dynamic batch axis), with --quantize "
        "int8 also model_int8.onnx (onnxruntime's static quantisation, per channel, calibrated on the run's training "
        "images and measured against fp32 on its validation images; a warning when it misses the targets, "
        f"{100 * MIN_AGREEMENT:g}% top-1 agreement with fp32 and balanced accuracy within "
        f"{MAX_BALANCED_ACCURACY_DROP:g}: train with --int8_ready for a model made for int8), and hf_skin_export.json "
        "(inputs, preprocessing, labels, metadata encoding, calibration and operating point). "
        "SkinClassifier.from_pretrained(OUT_DIR) serves it without torch.",
    )
    parser.add_argument("run_dir", help="The --output_dir of a finished hf-skin train run.")
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
    args = parser.parse_args(command_argv(argv))
    for name in ("calibration_images", "validation_images"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name} must be at least 1, not {value}")
    configure_logging()
    for name in ("onnx_ir", "onnxscript"):  # the exporter's passes log every rewrite at INFO
        logging.getLogger(name).setLevel(logging.WARNING)
    with user_errors(parser):
        spec = export_run(
            args.run_dir,
            args.out_dir,
            quantize=args.quantize,
            dataset=args.dataset,
            calibration_images=args.calibration_images,
            validation_images=args.validation_images,
        )
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
