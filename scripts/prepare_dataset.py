"""Prepare HAM10000 for training: lesion-grouped splits, data-analysis plots, a dataset card, optionally a Hub push.

    python scripts/prepare_dataset.py --source ../shared/ham10000 --output_dir data/ham10000 [--format parquet]
        [--push_to_hub user/ham10000 --private]

Arguments: `hf_skin.hub.DatasetPreparationArguments` (or a single .json file of them).
"""

import os
import sys

if __name__ == "__main__":
    # scripts/evaluate.py would shadow the `evaluate` library that hf_skin imports: keep this folder off sys.path.
    _here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _here]

from transformers import HfArgumentParser  # noqa: E402

from hf_skin.hub import DatasetPreparationArguments, prepare_dataset  # noqa: E402


def main():
    parser = HfArgumentParser(DatasetPreparationArguments)
    if len(sys.argv) == 2 and sys.argv[1].endswith(".json"):
        (args,) = parser.parse_json_file(sys.argv[1])
    else:
        (args,) = parser.parse_args_into_dataclasses()
    result = prepare_dataset(args)
    print(f"dataset ({args.format}): {', '.join(str(path) for path in result['data_files'])}")
    print(f"plots:   {', '.join(str(path) for path in result['plots'].values())}")
    print(f"card:    {result['card_path']}")
    if result["url"]:
        print(f"pushed:  {result['url']}")


if __name__ == "__main__":
    main()
