"""Compare training runs: one table of their test metrics and per-class recalls, and their curves on one figure.

python scripts/compare.py runs/cnn runs/multi-input runs/resnet101 --output_dir runs/compare
"""

import argparse
import os
import sys

if __name__ == "__main__":
    # scripts/evaluate.py would shadow the `evaluate` library that hf_skin imports: keep this folder off sys.path.
    _here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _here]

from hf_skin.evaluation import compare_runs  # noqa: E402


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", nargs="+", help="output_dir of each scripts/finetune.py (or evaluate.py) run")
    parser.add_argument("--output_dir", default="runs/compare", help="where to write the table and the figure")
    args = parser.parse_args(argv)
    rows = compare_runs(args.run_dirs, args.output_dir)
    print(f"{len(rows)} runs compared: {args.output_dir}/comparison.md, comparison.csv, training_curves.png")
    return rows


if __name__ == "__main__":
    main()
