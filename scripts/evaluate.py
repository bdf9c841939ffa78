"""Evaluate an hf-skin checkpoint on HAM10000-format data: metrics.json, report.md and figures.

python scripts/evaluate.py --model runs/cnn --dataset /path/to/HAM10000 [--split test|validation|train|all] [--tta]
python scripts/evaluate.py args.json
"""

import os
import sys

if __name__ == "__main__":
    # Run as a script, this file's folder comes first on sys.path, where this file would shadow the `evaluate`
    # library that hf_skin imports: take the folder off before importing anything else.
    _here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _here]

from transformers import HfArgumentParser  # noqa: E402

from hf_skin.evaluation import EvaluationArguments, run_evaluation  # noqa: E402


def main() -> dict:
    parser = HfArgumentParser(EvaluationArguments)
    if len(sys.argv) == 2 and sys.argv[1].endswith(".json"):
        (args,) = parser.parse_json_file(sys.argv[1])
    else:
        (args,) = parser.parse_args_into_dataclasses()
    metrics = run_evaluation(args)
    print(
        f"{args.split} split, {metrics['n']:,} images: accuracy {metrics['accuracy']:.3f}, "
        f"balanced accuracy {metrics['balanced_accuracy']:.3f}\nReport, metrics and figures in {args.output_dir} "
        f"(open {args.output_dir}/report.md)"
    )
    return metrics


if __name__ == "__main__":
    main()
