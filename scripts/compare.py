"""Compare training runs: one table of their test metrics and per-class recalls, their curves on one figure, and for
each pair scored on the same images (their scripts/evaluate.py predictions.csv) a paired lesion-level bootstrap
interval of each headline metric's difference, said in words.

python scripts/compare.py runs/cnn runs/multi-input runs/resnet101 --output_dir runs/compare
"""

from hf_skin.cli import compare as main

if __name__ == "__main__":
    main()
