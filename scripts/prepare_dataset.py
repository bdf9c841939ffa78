"""Prepare HAM10000 for training: lesion-grouped splits, data-analysis plots, a dataset card, optionally a Hub push.

    python scripts/prepare_dataset.py --source ../shared/ham10000 --output_dir data/ham10000 [--format parquet]
        [--push_to_hub user/ham10000 --private]

Arguments: `hf_skin.preparation.DatasetPreparationArguments` (or a single .json file of them).
"""

from hf_skin.cli import prepare_dataset as main

if __name__ == "__main__":
    main()
