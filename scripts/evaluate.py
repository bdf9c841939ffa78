"""Evaluate an hf-skin checkpoint on HAM10000-format data: metrics.json, report.md and figures.

python scripts/evaluate.py --model runs/cnn --dataset /path/to/HAM10000 [--split test|validation|train|all] [--tta]
python scripts/evaluate.py args.json
"""

from hf_skin.cli import evaluate as main

if __name__ == "__main__":
    main()
