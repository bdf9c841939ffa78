"""Fine-tune an hf-skin model on HAM10000.

accelerate launch scripts/finetune.py --model cnn --dataset /path/to/HAM10000
python scripts/finetune.py args.json
"""

# hf_skin.cli, imported first, keeps scripts/evaluate.py from shadowing the `evaluate` library.
from hf_skin.cli import finetune as main

if __name__ == "__main__":
    main()
